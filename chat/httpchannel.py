"""HTTP connections of the file port: no request body, caps on connections, deadlines.

What one client can cost the port is bounded (``[limits]``, ``http_*``):

- No request takes a body. One that declares one (``Content-Length`` over 0,
  or any ``Transfer-Encoding``), whatever its method, is answered ``413`` and
  the connection closed as soon as its headers are in. The server stops
  reading there: body bytes that came in the same read as the headers are
  dropped with the connection, the rest is never read, and no body is ever
  written to memory or disk (Twisted's default spools one to a temporary
  file). Twisted's own framing checks answer a malformed length with a bare
  ``400``.
- Connections are counted per address (at once, and new ones a minute) and in
  all, apart from the chat port's count; one over a cap gets ``503`` with the
  reason and is closed.
- The request line and headers must arrive within ``http_header_timeout`` of
  the connection's start (for later requests on a kept-alive connection, of
  their first byte), else ``408`` and a close (no answer if nothing at all was
  sent); a connection idle between requests is closed after
  ``http_idle_timeout``. More than ``http_max_header_bytes`` of head or
  ``http_max_headers`` header lines is ``431`` and a close.

Every timer runs on the clock given to ``FileSite``.
"""

from __future__ import annotations

from twisted.internet import protocol
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server

from chat.config import LimitSettings
from chat.limits import AddressLimiter


def plain_response(code: int, phrase: str, text: str, *, body: bool = True) -> bytes:
    """A whole ``text/plain`` response that ends the connection (``Connection: close``).

    Written straight to the transport: it answers requests that never reach a
    resource, some of them before Twisted has parsed a request line.
    """
    data = text.encode("utf-8")
    head = (
        f"HTTP/1.1 {code} {phrase}\r\n"
        "Connection: close\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode("ascii")
    return head + data if body else head


class Discard:
    """A request's ``content`` that keeps nothing: an empty body, whatever is written.

    ``twisted.web`` would otherwise give a request a ``BytesIO``, or a temporary
    file for a body over ~100 KiB, and write the body into it before any
    resource sees the request. ``dropped`` counts what was handed to it: none,
    as the channel stops reading first, but this holds whatever the framing does.
    """

    dropped = 0

    def write(self, data: bytes) -> None:
        self.dropped += len(data)

    def read(self, size: int = -1) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        pass


class BodylessRequest(server.Request):
    """A request that never stores a body: one that declares a body gets 413.

    ``HTTPChannel.allHeadersReceived`` calls ``gotLength`` with the declared
    length once the headers are in and before any body byte is handled, so the
    answer goes out and the connection closes before the body is read.
    """

    channel: FileChannel
    refused = False

    def gotLength(self, length: int | None) -> None:
        # The seam for an upload endpoint: this is where a request that may take
        # a body (by method and path; the channel's request line is in
        # ``channel.request_line``) would get a streaming sink with its own size,
        # rate and disk checks instead of ``Discard``. Nothing takes one today.
        self.content = Discard()
        if length == 0 and not self.requestHeaders.hasHeader(b"transfer-encoding"):
            return
        self.refused = True
        # Twisted answers "Expect: 100-continue" right after this call; a client
        # must not be invited to send a body that will not be read.
        self.requestHeaders.removeHeader(b"expect")
        declared = "a chunked body" if length is None else f"a body of {length} bytes"
        self.channel.refuse(
            413, "Content Too Large", "This server takes no request body.\n",
            why=f"declares {declared}",
        )

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused:
            # Already answered. Twisted still calls this when the framing says the
            # (empty) body is complete, e.g. "Transfer-Encoding: identity".
            return
        super().requestReceived(command, path, version)


class FileChannel(http.HTTPChannel):
    """One HTTP connection with this port's caps and deadlines.

    The header caps are Twisted's own ``maxHeaders`` and ``totalHeadersSize``
    (a bare 400), set on the instance as a backstop; ``lineReceived`` counts
    first, a little more strictly (line ends included), to answer 431 with a
    reason. ``MAX_LENGTH`` bounds one unfinished line the same way.
    """

    site: FileSite
    logger = Logger()

    def __init__(self, limits: LimitSettings) -> None:
        super().__init__()
        self.limits = limits
        self.host: str | None = None  # the peer's address, set by the site
        self.maxHeaders = limits.http_max_headers
        self.totalHeadersSize = limits.http_max_header_bytes
        self.MAX_LENGTH = limits.http_max_header_bytes
        #: The request line of the request being read or answered (for logs and the seam).
        self.request_line = b""
        self._head_bytes = 0
        self._head_lines = 0
        # The head deadline runs while a request's head is awaited and has
        # started (or, for the first request, from the connection's start).
        self._awaiting_head = True
        self._head_started = False
        self._head_timer: IDelayedCall | None = None
        self._abort_timer: IDelayedCall | None = None
        self._closing = False

    # --- the head deadline ---

    def connectionMade(self) -> None:
        super().connectionMade()
        self._start_head_timer()  # absolute from the start, bytes or none

    def _start_head_timer(self) -> None:
        timeout = self.limits.http_header_timeout
        if self._head_timer is None and timeout > 0 and not self._closing:
            self._head_timer = self.callLater(timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None and self._head_timer.active():
            self._head_timer.cancel()
        self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._head_started:
            self.logger.info("HTTP connection from {host} sent nothing; closed", host=self.host)
            self.loseConnection()  # nothing was asked: nothing to answer
            return
        timeout = self.limits.http_header_timeout
        seconds = "1 second" if timeout == 1 else f"{timeout:g} seconds"
        self.refuse(
            408, "Request Timeout",
            f"The request headers did not arrive within {seconds}.\n",
            why="headers too slow",
        )

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return  # answered and closing: whatever still arrives is dropped unread
        if data and self._awaiting_head:
            self._head_begins()
        super().dataReceived(data)

    def _head_begins(self) -> None:
        # A later request's deadline counts from its first byte (the idle
        # timeout covers the wait before it); a trickle cannot move it.
        self._head_started = True
        self._start_head_timer()

    # --- header caps ---

    def lineReceived(self, line: bytes) -> None:
        # Only a request's head is read in line mode: HTTPChannel reads bodies,
        # and what a client pipelines behind a request, in raw mode.
        if self._closing:
            return
        self._head_begins()  # for pipelined bytes taken up after a response
        self._head_bytes += len(line) + 2
        if line:
            self._head_lines += 1
            if self._head_lines == 1:
                self.request_line = line[:200]
        limits = self.limits
        if self._head_bytes > limits.http_max_header_bytes:
            self.refuse(
                431, "Request Header Fields Too Large",
                f"The request headers are too large (at most "
                f"{limits.http_max_header_bytes} bytes).\n",
                why="header bytes",
            )
            return
        if self._head_lines - 1 > limits.http_max_headers:
            self.refuse(
                431, "Request Header Fields Too Large",
                f"Too many request header fields (at most {limits.http_max_headers}).\n",
                why="header count",
            )
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        # LineReceiver's default closes without a word.
        if self._head_lines == 0:
            self.request_line = line[:200]
        self.refuse(
            431, "Request Header Fields Too Large",
            f"The request headers are too large (at most "
            f"{self.limits.http_max_header_bytes} bytes).\n",
            why="header line",
        )

    def allHeadersReceived(self) -> None:
        self._stop_head_timer()
        self._awaiting_head = False
        self._head_started = False
        self._head_bytes = self._head_lines = 0
        super().allHeadersReceived()

    def requestDone(self, request: http.Request) -> None:
        # Before Twisted replays pipelined bytes into the next request's head.
        self._awaiting_head = True
        self.request_line = b""
        super().requestDone(request)

    # --- closing ---

    def refuse(self, code: int, phrase: str, text: str, why: str) -> None:
        """Answer ``code`` with ``text`` and close, reading nothing more."""
        if self._closing:
            return
        # Escaped: a request line is the client's bytes, and logs reach a terminal.
        line = self.request_line.decode("latin-1").encode("unicode_escape").decode("ascii")
        self.logger.info(
            "HTTP {code} to {host} ({why}): {line}",
            code=code, host=self.host, why=why, line=line or "no request line",
        )
        head_only = self.request_line.split(b" ", 1)[0] == b"HEAD"
        self.transport.write(plain_response(code, phrase, text, body=not head_only))
        self.loseConnection()

    def loseConnection(self) -> None:
        """Close once the answer is written. Every close of this port comes here.

        The transport stops reading at once (``loseConnection`` does that), so a
        body behind a refused head stays in the kernel, unread, until the close
        resets it. A peer that does not take even the short answer is cut after
        ``abortTimeout`` seconds (Twisted's, 15).
        """
        if self._closing:
            return  # once: Twisted's path may follow ours (and a second unregister fails)
        self._closing = True
        self._stop_head_timer()
        if self.abortTimeout is not None:
            self._abort_timer = self.callLater(self.abortTimeout, self._abort)
        super().loseConnection()

    def _abort(self) -> None:
        self._abort_timer = None
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._closing = True
        self._stop_head_timer()
        if self._abort_timer is not None and self._abort_timer.active():
            self._abort_timer.cancel()
        self._abort_timer = None
        try:
            super().connectionLost(reason)
        finally:
            self.site.connection_closed(self)


class _Refused(protocol.Protocol):
    """Says why a connection is turned away (503), and closes it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        self.transport.write(plain_response(503, "Service Unavailable", self.reason + "\n"))
        self.transport.loseConnection()


class FileSite(server.Site):
    """The download site: ``BodylessRequest``, ``FileChannel``, connection caps."""

    requestFactory = BodylessRequest
    displayTracebacks = False
    noisy = False
    logger = Logger()  # not ``log``: Site.log(request) writes the access log

    def __init__(self, root: resource.Resource, clock: IReactorTime, limits: LimitSettings):
        # Twisted's idle timer (TimeoutMixin) runs on ``reactor``; 0 turns it off.
        super().__init__(root, timeout=limits.http_idle_timeout or None, reactor=clock)
        self.limits = limits
        self.limiter = AddressLimiter(
            clock,
            per_address=limits.http_max_connections_per_address,
            per_minute=limits.http_max_new_connections_per_minute,
            total=limits.http_max_connections,
            exempt=limits.exempt_addresses,
            max_tracked=limits.max_tracked_addresses,
        )
        self.channels: set[FileChannel] = set()

    def buildProtocol(self, addr: IAddress | None) -> protocol.Protocol | None:  # type: ignore
        host = getattr(addr, "host", None)
        refusal = self.limiter.refusal(host)
        if refusal is not None:
            self.logger.info(
                "Refused an HTTP connection from {host}: {why}", host=host, why=refusal
            )
            refused = _Refused(refusal)
            refused.factory = self
            return refused
        channel = super().buildProtocol(addr)
        channel.host = host
        self.limiter.opened(host)
        self.channels.add(channel)
        return channel

    def protocol(self) -> FileChannel:  # type: ignore[override]
        # Called by Factory.buildProtocol. A plain HTTPChannel rather than
        # Twisted's HTTP/1.1-or-2 wrapper: the caps above are HTTP/1.1 code, and
        # no endpoint here offers h2 by ALPN anyway.
        return FileChannel(self.limits)

    def connection_closed(self, channel: FileChannel) -> None:
        if channel in self.channels:
            self.channels.discard(channel)
            self.limiter.closed(channel.host)
