"""Receiving one upload on a connection: exactly SIZE raw bytes, then the answer.

An ``UploadReceiver`` lives from the ``/send`` header's line end until the
upload is answered. It takes the raw bytes the connection reads (never more
than SIZE), or hands the connection's socket to a pump thread
(``take_over``) so the reactor never touches the data; it watches that the
bytes keep coming (no silence of ``upload_stall_timeout``, and at least
``upload_min_rate`` bytes a second over any ``upload_rate_window``: a
reservation of disk space cannot be held by a byte now and then); and once
the SIZE-th byte is in it tells its connection to go back to lines, then
finishes the sink (check, store, answer, announce) and fires ``done``. A
refused upload's bytes go to a ``Discard`` sink the same way.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer, tcp
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from chat import events as ev
from chat.config import LimitSettings
from chat.filestore import FileStore
from chat.pump import Pumped, PumpEnd
from chat.transfer import Sink, Upload

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

    __slots__ = ("_clock", "_finish", "_limits", "_owner", "_pace", "_samples", "_stall",
                 "_store", "done", "left", "sink")

    def __init__(
        self,
        owner: Receiving,
        sink: Sink,
        size: int,
        finish: Callable[[], defer.Deferred[Any]],
        store: FileStore,
        clock: IReactorTime,
        limits: LimitSettings,
    ) -> None:
        self._owner = owner
        self.sink: Sink | None = sink
        self.left = size
        self._finish = finish
        self._store = store
        self._clock = clock
        self._limits = limits
        self._stall: Any = None
        self._pace: Any = None
        #: (when, bytes received by then), a quarter window apart.
        self._samples: deque[tuple[float, int]] = deque()
        #: Fires once the upload has been answered (or discarded).
        self.done: defer.Deferred[None] = defer.Deferred()

    @property
    def _timeout(self) -> float:
        return self._limits.upload_stall_timeout

    def start(self, transport: Any) -> None:
        """Begin: a zero-byte upload is complete at once; others are timed."""
        if self.left == 0:
            self._complete()
            return
        transport.bufferSize = RAW_READ_BYTES  # bigger reads while a file streams in
        self._stall = self._clock.callLater(self._timeout, self._stalled)
        if self._limits.upload_min_rate:
            self._sample()

    def _sample(self) -> None:
        """Every quarter window: fewer bytes than the minimum rate over the window ends it."""
        self._pace = None
        if self.sink is None:
            return
        now, window = self._clock.seconds(), self._limits.upload_rate_window
        received = self.sink.received
        self._samples.append((now, received))
        while len(self._samples) > 1 and self._samples[1][0] <= now - window:
            self._samples.popleft()
        then, before = self._samples[0]
        if now - then >= window and received - before < self._limits.upload_min_rate * window:
            self._owner.close("upload too slow", say=ev.error(
                "upload_stalled", "send", rate=self._limits.upload_min_rate, window=window,
                received=received - before, missing=self.left,
            ))
            return
        self._pace = self._clock.callLater(window / 4, self._sample)

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
        if self._stall is not None and self._stall.active():
            self._stall.cancel()  # the pump times silence itself; the pace is still ours
        self._stall = None
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
        for call in (self._stall, self._pace):
            if call is not None and call.active():
                call.cancel()
        self._stall = self._pace = None


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
