"""Which ``history`` reply is which, what a reconnect missed, and the lag.

The server answers a connection's lines in order, so ``history`` replies
come back in the order the requests went out: a queue of what each was for
tells them apart, and the server's own replays of recent messages (one
follows each ``participants``) come before any answer. Every reply names its
room, and goes to that room's pane. On a reconnect the replays of rooms the
client knew are skipped: it asks ``/history after ID`` (ID: the last event
it saw there) for exactly what was said while it was away, room by room
(``roomflow``), or once on a server without rooms. A ``/history`` the user
types is merged where its messages belong and brought into view.
Every request also times its answer, and a quiet ``/history after ID``
every ``PROBE_INTERVAL`` seconds keeps that round trip — the lag in the
status bar — current (it costs the server one line and returns nothing new
unless something is on its way).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import task

from chat import events as ev

#: Seconds between lag probes while online.
PROBE_INTERVAL = 30.0


@dataclass
class Request:
    #: ``user`` (typed), ``missed`` (after a reconnect) or ``probe`` (lag)
    kind: str
    #: when the line was written (the outbox may hold it a moment)
    sent: float | None = None


@dataclass(frozen=True)
class Placement:
    """How a reply's messages go into the pane."""

    #: the separator's words (``None``: no separator)
    label: str | None
    #: bring them into view
    show: bool = False
    #: write them to the local log
    log: bool = False
    #: say so when nothing was new
    report: bool = False


USER = Placement("history", show=True, report=True)
REPLAY = Placement("history")
MISSED = Placement("missed while away", log=True)
QUIET = Placement(None)


class HistoryFlow:
    """Requests in flight on this connection, and the lag measured from their answers."""

    def __init__(
        self,
        clock: Any,
        send: Callable[[str, Callable[[], None]], None],
        merge: Callable[[Sequence[ev.Event], Placement, str | None], None],
    ) -> None:
        self.clock = clock
        self.send = send
        self.merge = merge
        self.pending: deque[Request] = deque()
        #: replays announced (a ``participants`` comes before each) and not yet here
        self.replays = 0
        #: the rooms (lower case; ``None``: a server without rooms) whose replay is skipped:
        #: after a reconnect, a catch-up brings what they missed
        self.skip: set[str | None] = set()
        #: the highest event id seen: where a catch-up starts
        self.last_id: int | None = None
        #: the last round trip, in seconds
        self.lag: float | None = None
        self._probe = task.LoopingCall(self.probe)
        self._probe.clock = clock

    def seen(self, event_id: int) -> None:
        if self.last_id is None or event_id > self.last_id:
            self.last_id = event_id

    def welcome(self, skip: set[str | None]) -> None:
        """Registered: nothing is in flight; the replays of ``skip``'s rooms are not wanted."""
        self.pending.clear()
        self.replays, self.skip = 0, set(skip)

    def catch_up(self, after: int | None = None) -> None:
        """Ask for what was said after ``after`` (default: the last event seen) in the
        server's current room."""
        after = self.last_id if after is None else after
        if after is not None:
            self._ask("missed", f"after {after}")

    def start(self) -> None:
        """Time the lag from the start (unless a request already will), then every so often."""
        self.probe()
        if not self._probe.running:
            self._probe.start(PROBE_INTERVAL, now=False)

    def greeted(self) -> None:
        """A ``participants``: the server's replay of recent messages follows it."""
        self.replays += 1

    def lost(self) -> None:
        self.pending.clear()
        self.replays = 0
        self.lag = None
        if self._probe.running:
            self._probe.stop()

    def ask(self, args: str) -> None:
        """A ``/history`` the user typed (already checked)."""
        self._ask("user", args)

    def probe(self) -> None:
        """Time a cheap round trip, unless a request is already out (it will do)."""
        if not self.pending:
            # Nothing new, cheaply: after the last id seen, or none of the last messages.
            self._ask("probe", "0" if self.last_id is None else f"after {self.last_id}")

    def _ask(self, kind: str, args: str) -> None:
        request = Request(kind)

        def sent() -> None:
            request.sent = self.clock.seconds()

        self.pending.append(request)
        self.send(f"/history {args}".rstrip(), sent)

    def refused(self) -> None:
        """The server refused a ``/history``: that request gets no reply."""
        if self.pending:
            self.pending.popleft()

    def reply(self, event: ev.History) -> None:
        room = event.room.lower() if event.room else None
        if self.replays:
            self.replays -= 1
            if room in self.skip:
                self.skip.discard(room)  # each room replays once on the way in
            else:
                self.merge(event.messages, REPLAY, event.room)
            return
        request = self.pending.popleft() if self.pending else Request("user")
        if request.sent is not None:
            self.lag = self.clock.seconds() - request.sent
        placement = {"missed": MISSED, "probe": QUIET}.get(request.kind, USER)
        self.merge(event.messages, placement, event.room)

    def lag_now(self) -> float | None:
        """The lag to show: the last round trip, or longer if an answer is overdue."""
        waiting = [self.clock.seconds() - r.sent for r in self.pending if r.sent is not None]
        overdue = max(waiting, default=0.0)
        if self.lag is None:
            return overdue or None
        return max(self.lag, overdue)
