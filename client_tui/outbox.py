"""Lines to the server, paced so that its flood control never holds them back or cuts us.

The server charges each line one token plus one per ``FLOOD_LINE_BYTES``
bytes, from a bucket of ``FLOOD_BURST`` tokens refilled at ``FLOOD_RATE`` a
second, and cuts a connection whose held-back input passes 16 KiB
(docs/protocol.md, "Limits"). ``Outbox`` keeps the same bucket on this side
and writes a line only when the server would read it at once, so a pasted
page goes out at the server's pace instead of piling up there. Lines the
user wrote (typed or pasted) wait for the connection when it is down; the
client's own (answers to pings, history requests) belong to one connection
and are dropped with it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IDelayedCall

# The server's defaults (chat.config.LimitSettings; tests check they agree).
FLOOD_BURST = 5
FLOOD_RATE = 2.0
FLOOD_LINE_BYTES = 512
#: The longest line the server takes (longer ones are dropped with an error).
MAX_LINE_BYTES = 4096
#: Tokens that floating-point refills may miss by.
EPSILON = 1e-9


def line_cost(text: str) -> int:
    """Tokens the server charges for ``text``."""
    return 1 + len(text.encode("utf-8")) // FLOOD_LINE_BYTES


@dataclass
class Outgoing:
    text: str
    #: the user's words: kept while the connection is down
    kept: bool
    #: called when the line is written (a history request times its answer from here)
    sent: Callable[[], None] | None = None


class Outbox:
    """A queue of lines drained at the server's flood-control pace."""

    def __init__(self, clock: Any, changed: Callable[[], None] = lambda: None) -> None:
        self.clock = clock
        self.changed = changed
        self.queue: deque[Outgoing] = deque()
        self._write: Callable[[str], None] | None = None
        self._level = float(FLOOD_BURST)
        self._at = 0.0
        self._timer: IDelayedCall | None = None

    def open(self, write: Callable[[str], None]) -> None:
        """A connection is registered: the server's bucket for it starts full."""
        self._write = write
        self._level, self._at = float(FLOOD_BURST), self.clock.seconds()
        self._drain()

    def close(self) -> None:
        """The connection is gone: keep only the user's words."""
        self._write = None
        self._cancel_timer()
        self.queue = deque(item for item in self.queue if item.kept)

    def send(
        self, text: str, kept: bool = True, sent: Callable[[], None] | None = None
    ) -> Outgoing:
        item = Outgoing(text, kept, sent)
        self.queue.append(item)
        self._drain()
        return item

    def last_waiting(self) -> Outgoing | None:
        """The line that goes out last, if it has not gone yet (nothing is queued behind it)."""
        return self.queue[-1] if self.queue else None

    @contextmanager
    def first(self) -> Iterator[None]:
        """Lines sent inside go out before those already waiting (in the order sent):
        what a reconnect must say before the user's lines held through the outage."""
        held, self.queue = self.queue, deque()
        try:
            yield
        finally:
            self.queue.extend(held)
            self._drain()

    def waiting(self) -> int:
        """The user's lines not yet written."""
        return sum(1 for item in self.queue if item.kept)

    def drop(self) -> int:
        """Forget the user's lines still waiting (``/cancel``); how many there were."""
        dropped = self.waiting()
        self.queue = deque(item for item in self.queue if not item.kept)
        self.changed()
        return dropped

    def _refill(self) -> None:
        now = self.clock.seconds()
        self._level = min(float(FLOOD_BURST), self._level + (now - self._at) * FLOOD_RATE)
        self._at = now

    def _drain(self) -> None:
        self._cancel_timer()
        wrote = False
        while self.queue and self._write is not None:
            self._refill()
            # A line dearer than the whole burst goes once the bucket is full.
            cost = min(line_cost(self.queue[0].text), FLOOD_BURST)
            if self._level < cost - EPSILON:
                # (At least a millisecond: a wait below the clock's resolution never ends.)
                wait = max((cost - self._level) / FLOOD_RATE, 0.001)
                self._timer = self.clock.callLater(wait, self._drain)
                break
            item = self.queue.popleft()
            self._level -= line_cost(item.text)
            self._write(item.text)
            wrote = True
            if item.sent is not None:
                item.sent()
        if wrote:
            self.changed()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
