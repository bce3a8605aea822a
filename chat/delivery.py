"""Delivery: every byte the chat sends to a connection, in order, stored before it is sent.

What the chat says in one reactor turn is one *batch*: broadcasts to every
member, and replies to one connection, in the order they were made. A batch
is committed to the history database in one transaction (its messages, and
the highest event id it hands out) off the reactor thread, and only then
written to the sockets: no one ever receives a line that a crash could take
back, and no id is handed out twice. While one batch commits, the next one
gathers what follows (group commit), so a busy server makes fewer, larger
transactions and fewer, larger writes.

Each recipient gets one write per batch, and broadcast bytes are rendered
once per mode for all of them (the per-recipient ``transport.write`` was the
hot spot, see bench/README.md). A member who arrives mid-batch starts at its
arrival (what came before is in its history replay); one who leaves gets
what came before its leave; one who switches mode gets each event in the
mode it had when the event was made. A reply to a connection with nothing
queued goes out at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat import events as ev
from chat.sanitize import for_log

#: Seconds between attempts to commit a batch the database refused.
RETRY_DELAY = 1.0
#: Event ids are recorded as used this many at a time, like a database
#: sequence's cache: a batch of joins and leaves needs no transaction of its
#: own, and a restart skips at most this many ids (never reuses one).
ID_BLOCK = 1000

#: ``commit(messages, reserved)``: write the messages and (unless None) the id
#: high-water mark, in one transaction.
Commit = Callable[[list[ev.Event], int | None], "defer.Deferred[None]"]


class Peer(Protocol):
    """What delivery needs of a connection."""

    mode: str

    def send(self, data: bytes) -> None: ...


class Renderer(Protocol):
    echo_own: bool

    def render(self, event: ev.Event, viewer: str | None = None) -> bytes: ...


class _Batch:
    """One turn's output: broadcasts, replies, and who was there for which."""

    __slots__ = (
        "direct", "ends", "events", "history", "last_id", "modes", "observed", "origins",
        "rendered", "starts", "waiters",
    )

    def __init__(self) -> None:
        #: Broadcasts: (event, the member who caused it or None).
        self.events: list[tuple[ev.Event, Any]] = []
        #: Replies to one connection, rendered when made: (position in events, bytes).
        self.direct: dict[Peer, list[tuple[int, bytes]]] = {}
        #: Members that arrived during the batch, and where.
        self.starts: dict[Peer, int] = {}
        #: Members that left during the batch: where, and who they were.
        self.ends: dict[Peer, tuple[int, Any]] = {}
        #: Members that switched mode: [(from position, mode), ...].
        self.modes: dict[Peer, list[tuple[int, str]]] = {}
        self.origins: set[Any] = set()
        #: Messages for the history table, and the highest id handed out.
        self.history: list[ev.Event] = []
        self.last_id = 0
        self.observed: list[ev.Event] = []
        self.rendered: dict[str, list[bytes]] = {}
        self.waiters: list[defer.Deferred[None]] = []


class Delivery:
    """The ordered, stored-then-sent output of the whole chat."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        renderers: dict[str, Renderer],
        commit: Commit,
        last_id: Callable[[], int],
        *,
        coalesce: bool,
    ) -> None:
        """``coalesce``: gather a reactor turn into one batch (the server), or
        deliver each event at once (in-memory tests)."""
        self._clock = clock
        self.renderers = renderers
        self._commit = commit
        self._last_id = last_id
        self._coalesce = coalesce
        #: Who hears broadcasts: connection -> user, in order of arrival.
        self.members: dict[Peer, Any] = {}
        self._open: _Batch | None = None
        self._committing: _Batch | None = None
        #: Every id up to this one is recorded as (possibly) used.
        self._reserved = last_id()
        self._turn: IDelayedCall | None = None
        #: Called with every chat event once it has been delivered (the console).
        self.observers: list[Callable[[ev.Event], None]] = []

    # --- members ---

    def add_member(self, peer: Peer, user: Any) -> None:
        """``peer`` hears broadcasts from now on (not those already made)."""
        for batch in self._queued():
            batch.starts[peer] = len(batch.events)
        self.members[peer] = user

    def remove_member(self, peer: Peer) -> None:
        """``peer`` hears no more broadcasts; those already made still reach it."""
        user = self.members.pop(peer, None)
        if user is None:
            return
        for batch in self._queued():
            batch.ends.setdefault(peer, (len(batch.events), user))

    def mode_changed(self, peer: Peer, old: str) -> None:
        """``peer.mode`` just changed: what was made before stays in ``old``."""
        for batch in self._queued():
            switches = batch.modes.setdefault(peer, [(0, old)])
            if batch is self._open:
                switches.append((len(batch.events), peer.mode))

    # --- output ---

    def broadcast(self, event: ev.Event, origin: Any = None) -> None:
        """``event`` to every member; ``origin`` hears it only if its mode echoes."""
        batch = self._batch()
        batch.events.append((event, origin))
        if origin is not None:
            batch.origins.add(origin)
        self._account(batch, event)
        if not self._coalesce:
            self._seal()

    def reply(self, peer: Peer, event: ev.Event, viewer: str | None = None) -> None:
        """``event`` to one connection, after everything already queued for it."""
        data = self.renderers[peer.mode].render(event, viewer)
        if not self._concerns(peer):
            _send(peer, data)
            return
        batch = self._batch()
        batch.direct.setdefault(peer, []).append((len(batch.events), data))
        if not self._coalesce:
            self._seal()

    def private(self, event: ev.Event, to: Iterable[tuple[Peer, str]]) -> None:
        """A chat event for a few connections (``(peer, viewer)``), numbered like the rest."""
        batch = self._batch()
        for peer, viewer in to:
            data = self.renderers[peer.mode].render(event, viewer)
            batch.direct.setdefault(peer, []).append((len(batch.events), data))
        self._account(batch, event)
        if not self._coalesce:
            self._seal()

    def delivered(self, peer: Peer) -> defer.Deferred[None]:
        """Fires once everything queued for ``peer`` so far has been written to it."""
        if not self._concerns(peer):
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        (self._open or self._committing).waiters.append(d)  # type: ignore[union-attr]
        return d

    def drain(self) -> defer.Deferred[None]:
        """Fires once everything queued has been stored and delivered (shutdown)."""
        if self._open is None and self._committing is None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        (self._open or self._committing).waiters.append(d)  # type: ignore[union-attr]
        self._seal()
        return d

    # --- batches ---

    def _queued(self) -> list[_Batch]:
        return [b for b in (self._committing, self._open) if b is not None]

    def _concerns(self, peer: Peer) -> bool:
        """Whether ``peer`` may have output queued (so a reply must wait its turn)."""
        return any(
            peer in b.direct or peer in b.ends or (b.events and peer in self.members)
            for b in self._queued()
        )

    def _batch(self) -> _Batch:
        if self._open is None:
            self._open = _Batch()
            if self._coalesce and self._committing is None:
                self._turn = self._clock.callLater(0, self._turn_ended)
        return self._open

    def _account(self, batch: _Batch, event: ev.Event) -> None:
        if event.historic:
            batch.history.append(event)
        batch.last_id = max(batch.last_id, getattr(event, "id", 0))
        batch.observed.append(event)

    def _turn_ended(self) -> None:
        self._turn = None
        self._seal()

    def _seal(self) -> None:
        """Commit the open batch, unless one is committing (it follows that one)."""
        if self._open is None or self._committing is not None:
            return
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None
        batch, self._open = self._open, None
        self._committing = batch
        self._store(batch)

    def _store(self, batch: _Batch) -> None:
        reserve = self._reserved
        if batch.last_id > reserve:
            reserve = batch.last_id + ID_BLOCK
        if not batch.history and reserve == self._reserved:
            self._stored(None, batch, reserve)
            return
        d = self._commit(batch.history, reserve if reserve != self._reserved else None)
        d.addCallbacks(
            self._stored, self._store_failed, (batch, reserve), errbackArgs=(batch,)
        )

    def _store_failed(self, failure: Failure, batch: _Batch) -> None:
        # Delivered means stored: the batch waits (and the chat with it) rather
        # than reach anyone unrecorded. The log says why.
        self.log.failure(
            "Storing {n} chat events failed; retrying in {delay}s",
            failure, n=len(batch.observed), delay=RETRY_DELAY,
        )
        self._clock.callLater(RETRY_DELAY, self._store, batch)

    def _stored(self, _: object, batch: _Batch, reserved: int) -> None:
        self._reserved = max(self._reserved, reserved)
        self._committing = None
        try:
            self._deliver(batch)
        finally:
            if self._open is not None:
                self._seal()

    def _deliver(self, batch: _Batch) -> None:
        whole: dict[str, bytes] = {}  # mode -> the batch as one write
        special = batch.starts.keys() | batch.ends.keys() | batch.modes.keys() | batch.direct.keys()
        silent = {mode for mode, r in self.renderers.items() if not r.echo_own}
        origins = batch.origins
        for peer, user in self.members.items():
            if peer in special or (user in origins and peer.mode in silent):
                _send(peer, self._part(batch, peer, user))
            elif batch.events:
                data = whole.get(peer.mode)
                if data is None:
                    data = whole[peer.mode] = b"".join(self._lines(batch, peer.mode))
                _send(peer, data)
        for peer in special - self.members.keys():
            left = batch.ends.get(peer)
            _send(peer, self._part(batch, peer, left[1] if left else None))
        for waiter in batch.waiters:
            waiter.callback(None)
        for event in batch.observed:
            for observer in self.observers:
                observer(event)

    def _part(self, batch: _Batch, peer: Peer, user: Any) -> bytes:
        """What ``peer`` gets of ``batch``: its window of broadcasts, its replies."""
        start = batch.starts.get(peer, 0)
        end = batch.ends[peer][0] if peer in batch.ends else len(batch.events)
        if peer not in self.members and peer not in batch.ends:
            start = end = 0  # never a member of this batch (replies only)
        switches = batch.modes.get(peer)
        replies = batch.direct.get(peer)
        events = batch.events
        if switches is None and replies is None:  # the common case: one mode, no replies
            lines = self._lines(batch, peer.mode)
            if user is None or self.renderers[peer.mode].echo_own:
                return b"".join(lines[start:end])
            return b"".join([lines[i] for i in range(start, end) if events[i][1] is not user])
        switches = switches or [(0, peer.mode)]
        replies = replies or []
        out: list[bytes] = []
        r = 0
        for i in range(start, end):
            while r < len(replies) and replies[r][0] <= i:
                out.append(replies[r][1])
                r += 1
            mode = next(m for at, m in reversed(switches) if at <= i)
            if events[i][1] is user and user is not None and not self.renderers[mode].echo_own:
                continue
            out.append(self._lines(batch, mode)[i])
        out.extend(data for _, data in replies[r:])
        return b"".join(out)

    def _lines(self, batch: _Batch, mode: str) -> list[bytes]:
        """One rendering per broadcast of the batch in ``mode``, each made once."""
        out = batch.rendered.setdefault(mode, [])
        for event, _ in batch.events[len(out) :]:
            try:
                out.append(self.renderers[mode].render(event))
            except Exception:
                self.log.failure("Rendering {type} failed", type=event.type)
                out.append(b"")
        return out


def _send(peer: Peer, data: bytes) -> None:
    """Write to one connection; its failure is its own, never the broadcast's."""
    if data:
        try:
            peer.send(data)
        except Exception:
            Delivery.log.failure("Delivery to {peer} failed", peer=for_log(peer))
