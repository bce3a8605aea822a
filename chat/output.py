"""A connection's way out: its send queue, the queue's limits, and downloads.

Every byte for a client goes through ``Output.write``. When the transport
holds more than ``send_queue_soft_bytes`` for a client that is not reading,
the connection's own commands wait (reading is held) so a request in a loop
cannot amplify; past ``send_queue_bytes`` the client is cut. A download
takes the wire whole: its header and exactly its bytes, with every other line
for that client held back until the last byte is out, so bytes and lines
never interleave. A download the client abandons (closing mid-file, the
TUI's ``/cancel``) is a normal end, not an error.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from chat import events as ev
from chat.config import LimitSettings
from chat.filestore import FileStore


class Sender(Protocol):
    def hold(self, reason: str) -> None: ...

    def release(self, reason: str) -> None: ...

    def overflowed(self) -> None:
        """Over the send queue cap: the client must be cut (not from inside a broadcast)."""


class Output:
    """The send queue of one connection, and the downloads that take its wire."""

    __slots__ = ("_cut", "_held", "_held_bytes", "_limits", "_over_soft", "_owner",
                 "_transport")

    def __init__(self, owner: Sender, transport: Any, limits: LimitSettings) -> None:
        self._owner = owner
        self._transport = transport
        self._limits = limits
        #: Whether the transport's buffer is over the soft limit (or cannot tell: TLS).
        self._over_soft = False
        self._cut = False
        self._held: list[bytes] | None = None  # only while a download has the wire
        self._held_bytes = 0
        # Above the soft limit the transport pauses our watch: commands wait.
        transport.bufferSize = limits.send_queue_soft_bytes
        self._watch()

    def write(self, data: bytes) -> None:
        if self._cut:
            return
        if self._held is not None:
            self._held.append(data)
            self._held_bytes += len(data)
        else:
            self._transport.write(data)
        if (self._over_soft or self.sending) and self.queued() > self._limits.send_queue_bytes:
            self._cut = True
            self._owner.overflowed()

    @property
    def sending(self) -> bool:
        """A download has the wire: other output waits (held) until its last byte."""
        return self._held is not None

    def queued(self) -> int:
        """Bytes written for this client that it has not read yet."""
        return queued(self._transport) + self._held_bytes

    def paused(self, paused: bool) -> None:
        """The transport's buffer went over (or back under) the soft limit."""
        self._over_soft = paused or ISSLTransport.providedBy(self._transport)
        if paused:
            self._owner.hold("output")
        else:
            self._owner.release("output")

    def _watch(self) -> None:
        # Over TLS a registered producer stalls the handshake (seen with
        # Twisted 26.10), so there the queue is checked on every write.
        if ISSLTransport.providedBy(self._transport):
            self._over_soft = True
        else:
            self._transport.registerProducer(_OutputWatch(self), True)

    def end(self) -> None:
        """Close once the queue is written (the watch must go: Twisted's
        ``loseConnection`` waits for a paused producer that will never write)."""
        if not self.sending and not ISSLTransport.providedBy(self._transport):
            self._transport.unregisterProducer()
        self._transport.loseConnection()

    def download(
        self, header: bytes, files: FileStore, f: Any, info: ev.FileInfo, offset: int, user: str
    ) -> defer.Deferred[None]:
        """Write ``header``, then the open file ``f``; fires after its last byte.

        The file's producer takes the transport meanwhile; the soft-limit
        watch (and the output held for this client) come back after.
        """
        assert not self.sending
        self._transport.unregisterProducer()
        self.paused(False)
        self._transport.write(header)
        self._held = []
        d = files.send_file(f, info, offset, self._transport, user)
        return d.addBoth(self._downloaded)

    def _downloaded(self, result: object) -> None:
        held, self._held, self._held_bytes = self._held or [], None, 0
        if isinstance(result, Failure):
            # The producer was stopped: the client went away mid-file (its
            # transport is being torn down, so nothing is registered again).
            return
        self._watch()  # FileSender unregistered itself after the last byte
        self._transport.writeSequence(held)


def queued(transport: Any) -> int:
    """Bytes a Twisted transport holds for its peer (0 if it cannot tell)."""
    # FileDescriptor's dataBuffer and offset are public; _tempDataLen is the
    # size of writes not yet joined into dataBuffer (see docs/architecture.md).
    for t in (transport, getattr(transport, "transport", None)):
        try:
            return len(t.dataBuffer) - t.offset + t._tempDataLen
        except AttributeError:
            continue
    return 0


@implementer(IPushProducer)
class _OutputWatch:
    """Registered on the transport to hear when its buffer crosses the soft limit."""

    def __init__(self, output: Output) -> None:
        self._output = output

    def pauseProducing(self) -> None:
        self._output.paused(True)

    def resumeProducing(self) -> None:
        self._output.paused(False)

    def stopProducing(self) -> None:
        pass
