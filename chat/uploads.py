"""Receiving one upload on a connection: exactly SIZE raw bytes, then the answer.

An ``UploadReceiver`` lives from the ``/send`` header's line end until the
upload is answered. It takes the raw bytes the connection reads (never more
than SIZE), or hands the connection's socket to a pump thread
(``take_over``) so the reactor never touches the data; it watches for a
stall; and once the SIZE-th byte is in it tells its connection to go back to
lines, then finishes the sink (check, store, answer, announce) and fires
``done``. A refused upload's bytes go to a ``Discard`` sink the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer, tcp
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from chat import events as ev
from chat.pump import Pumped, PumpEnd
from chat.transfer import FileStore, Sink, Upload

#: Read size while an upload streams in through the reactor.
RAW_READ_BYTES = 256 * 1024


class Receiving(Protocol):
    """What an upload needs of its connection."""

    transport: Any

    def hold(self, reason: str) -> None: ...

    def release(self, reason: str) -> None: ...

    def received(self, n: int) -> None:
        """``n`` more bytes arrived past the reactor (statistics, liveness)."""

    def all_received(self) -> None:
        """The SIZE-th byte is in: back to reading lines."""

    def close(self, reason: str, *, say: ev.Event | None = None, abort: bool = False) -> None: ...


class UploadReceiver:
    """One upload's raw bytes on one connection, and its answer."""

    log = Logger()

    __slots__ = ("_clock", "_finish", "_owner", "_stall", "_store", "_timeout", "done", "left",
                 "sink")

    def __init__(
        self,
        owner: Receiving,
        sink: Sink,
        size: int,
        finish: Callable[[], defer.Deferred[Any]],
        store: FileStore,
        clock: IReactorTime,
        stall_timeout: float,
    ) -> None:
        self._owner = owner
        self.sink: Sink | None = sink
        self.left = size
        self._finish = finish
        self._store = store
        self._clock = clock
        self._timeout = stall_timeout
        self._stall: Any = None
        #: Fires once the upload has been answered (or discarded).
        self.done: defer.Deferred[None] = defer.Deferred()

    def start(self, transport: Any) -> None:
        """Begin: a zero-byte upload is complete at once; others are timed for stalls."""
        if self.left == 0:
            self._complete()
            return
        transport.bufferSize = RAW_READ_BYTES  # bigger reads while a file streams in
        self._stall = self._clock.callLater(self._timeout, self._stalled)

    def write(self, data: bytes) -> None:
        """Bytes from the connection; never more than ``left``."""
        assert self.sink is not None and len(data) <= self.left
        if not data:
            return
        self.left -= len(data)
        self.sink.write(data)
        if self._stall is not None and self._stall.active():
            self._stall.reset(self._timeout)
        if self.left == 0:
            self._complete()

    def take_over(self, transport: Any) -> None:
        """Let a thread read the rest straight from the socket, where that can be done.

        Only a plain socket transport can hand its reads over (TLS must
        decrypt on the reactor); at most ``MAX_PUMPS`` uploads are pumped.
        Reading stays held until the pump reports back.
        """
        sink = self.sink
        if not (
            isinstance(sink, Upload)
            and not sink.pumping
            and isinstance(transport, tcp.Connection)
            and self._store.may_pump()
        ):
            return
        try:
            pumped = sink.pump(os.dup(transport.fileno()), self.left, self._timeout)
        except (OSError, RuntimeError) as e:  # out of descriptors or threads
            self.log.warn("Upload read by the reactor: no pump ({why})", why=e)
            return
        self._cancel_stall()  # the pump times a stall itself
        self._owner.hold("pump")
        pumped.addCallback(self._pumped, sink)

    def _pumped(self, result: Pumped, sink: Upload) -> None:
        if self.sink is not sink:
            return  # discarded meanwhile (connection lost, server stopping)
        self.left -= result.received
        self._owner.received(result.received)
        if result.end is PumpEnd.COMPLETE:
            self._complete()
            self._owner.release("pump")
        elif result.end is PumpEnd.STALLED:
            self._stalled()
        elif result.end is not PumpEnd.STOPPED:
            # A short upload: closing discards it (connectionLost aborts the sink).
            self._owner.transport.loseConnection()

    def _stalled(self) -> None:
        self._stall = None
        if self.sink is not None and self.left:
            self._owner.close("upload stalled", say=ev.error(
                "upload_stalled", "send", timeout=self._timeout, missing=self.left
            ))

    def _complete(self) -> None:
        self._cancel_stall()
        self.sink = None
        self._owner.all_received()
        d = self._finish()
        d.chainDeferred(self.done)

    def abort(self, why: str) -> None:
        """The connection is gone before the last byte: discard what arrived."""
        self._cancel_stall()
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.abort(why)
            if not self.done.called:
                self.done.callback(None)

    def _cancel_stall(self) -> None:
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None


@implementer(IPushProducer)
class HoldReading:
    """An upload's view of its connection: pausing it holds reading (the disk is behind)."""

    def __init__(self, conn: Receiving, reason: str) -> None:
        self._conn = conn
        self._reason = reason

    def pauseProducing(self) -> None:
        self._conn.hold(self._reason)

    def resumeProducing(self) -> None:
        self._conn.release(self._reason)

    def stopProducing(self) -> None:
        self._conn.release(self._reason)
