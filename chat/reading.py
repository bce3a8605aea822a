"""A connection's input, taken in order: lines, raw bytes, holds, one command at a time.

``Reader`` owns the ``LineFramer`` and decides when the connection may act
on what it has read. Reading is *held* for named reasons (flood control, a
client not reading its output, an upload's disk queue, a pump thread owning
the socket), and while a command is being answered (``wait``) no further
line is acted on: lines behind it stay read but untouched, so answers and
effects follow the order the commands came, however TCP cut the bytes. The
raw bytes of the upload a ``/send`` declared still flow while that ``/send``
waits for its answer: they are part of it. The transport stops reading
whenever the connection cannot act, so what waits in memory is bounded by
one read.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet import defer

from chat.framing import LineFramer, TooLong
from chat.wire import State

#: No holds (one shared object: an empty frozenset is 216 bytes, per connection).
_NOTHING: frozenset[str] = frozenset()


class Reading(Protocol):
    """What the reader drives."""

    state: State
    transport: Any

    def raw_left(self) -> int:
        """How many raw bytes the upload in progress still wants (state RAW)."""

    def raw(self, data: bytes) -> None: ...

    def line(self, line: bytes | TooLong) -> None: ...

    def after_input(self) -> None:
        """Everything that could be acted on has been: check what waits."""


class Reader:
    """Input for one connection, acted on in order and only when it may be."""

    __slots__ = ("_conn", "_holds", "_paused", "_processing", "_waiting", "eof", "framer")

    def __init__(self, conn: Reading, max_line: int) -> None:
        self._conn = conn
        self.framer = LineFramer(max_line)
        #: Why reading is held (flood, output, upload, pump); empty when reading.
        self._holds = _NOTHING
        #: The answer of the command being carried out: later lines wait for it.
        self._waiting: defer.Deferred[Any] | None = None
        self._paused = False
        self._processing = False
        #: The client closed its sending side.
        self.eof = False

    def feed(self, data: bytes) -> None:
        self.framer.feed(data)
        self.process()

    def end(self) -> None:
        """The client will send nothing more."""
        self.eof = True
        self.process()

    def held(self, reason: str | None = None) -> bool:
        return reason in self._holds if reason else bool(self._holds)

    def paused(self) -> bool:
        """Whether nothing can be acted on now (and the transport is not read)."""
        # A /send waits for its answer, but the bytes of its own upload are read.
        return bool(self._holds) or (
            self._waiting is not None and self._conn.state is not State.RAW
        )

    def hold(self, reason: str) -> None:
        self._holds = self._holds | {reason}
        self.update()

    def release(self, reason: str) -> None:
        if reason in self._holds:
            self._holds = self._holds - {reason} or _NOTHING
            self.update()
            self.process()

    def wait(self, answer: defer.Deferred[Any]) -> None:
        """Act on no further line until ``answer`` fires."""
        self._waiting = answer
        self.update()
        answer.addBoth(self._answered, answer)

    def _answered(self, result: object, answer: defer.Deferred[Any]) -> object:
        if self._waiting is answer:
            self._waiting = None
            self.update()
            self.process()
        return result

    def update(self) -> None:
        """Pause or resume the transport to match what the connection can act on."""
        paused = self.paused()
        if paused != self._paused and self._conn.state is not State.CLOSED:
            self._paused = paused
            if paused:
                self._conn.transport.pauseProducing()
            else:
                self._conn.transport.resumeProducing()

    def process(self) -> None:
        """Act on what has been read, as far as holds and the command in progress allow."""
        if self._processing:
            return  # called back from inside the loop: the loop goes on
        conn, framer = self._conn, self.framer
        self._processing = True
        try:
            while conn.state is not State.CLOSED and not self._holds:
                if conn.state is State.RAW:
                    chunk = framer.take(conn.raw_left())
                    if not chunk:
                        break
                    conn.raw(chunk)
                    continue
                if self._waiting is not None:
                    break
                line = framer.next_line()
                if line is None:
                    break
                conn.line(line)
        finally:
            self._processing = False
        if conn.state is not State.CLOSED:
            conn.after_input()
