"""HTTP connections of the file port: no request body, caps on connections, deadlines.

What one client can cost the port is bounded (``[limits]``, ``http_*``):

- No request takes a body, except those the site's *body taker* claims (the
  upload endpoint, ``chat.httpupload``), which stream theirs straight into it.
  Any other that declares one (``Content-Length`` over 0, or any
  ``Transfer-Encoding``), whatever its method, is answered ``413`` and the
  connection closed as soon as its headers are in. The server stops reading
  there: body bytes that came in the same read as the headers are dropped with
  the connection, the rest is never read, and no body is ever written to
  memory or disk (Twisted's default spools one to a temporary file). Twisted's
  own framing checks answer a malformed length with a bare ``400``.
- While a claimed body streams in, its taker can hold reading
  (``hold_body``): the transport stays paused, whatever Twisted's own
  write-side flow control does meanwhile. A taker that refuses a body already
  on its way has the channel *linger*: read and drop it for a moment
  (``LINGER_SECONDS``, ``LINGER_BYTES``) before closing, so that a client
  still sending reads the answer instead of a connection reset.
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

from collections.abc import Iterable
from typing import Protocol

from twisted.internet import protocol
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server

from chat.config import LimitSettings
from chat.limits import AddressLimiter

TEXT_PLAIN = "text/plain; charset=utf-8"
#: After refusing a body that is on its way, read and drop what still comes for
#: this long, or this much, before closing: a close with unread bytes resets the
#: connection, and a client still sending (no ``Expect: 100-continue``) would
#: see the reset and never the answer. Nothing of it is kept.
LINGER_SECONDS = 2.0
LINGER_BYTES = 8 * 1024 * 1024


def plain_response(
    code: int,
    phrase: str,
    text: str,
    *,
    body: bool = True,
    content_type: str = TEXT_PLAIN,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A whole response (``text/plain`` unless told) that ends the connection.

    Written straight to the transport: it answers requests that never reach a
    resource, some of them before Twisted has parsed a request line, others
    before their body is read. ``headers`` are ASCII, without CR or LF.
    """
    data = text.encode("utf-8")
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head = (
        f"HTTP/1.1 {code} {phrase}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {content_type}\r\n"
        f"{extra}"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode("ascii")
    return head + data if body else head


class RequestBody(Protocol):
    """Where a claimed request's body goes, chunk by chunk, as it is read."""

    def write(self, data: bytes) -> None:
        """The next bytes of the body (never more than its ``Content-Length``)."""

    def lost(self) -> None:
        """The connection is gone (before, during or after the body)."""


class BodyTaker(Protocol):
    """The part of a site that takes request bodies (``chat.httpupload.HttpUploads``)."""

    def claims(self, request_line: bytes) -> bool:
        """Whether the request with this request line is the taker's to answer."""

    def take(self, request: BodylessRequest, length: int | None) -> RequestBody:
        """Check a claimed request whose head is in (``length``: Twisted's, None
        for chunked); refuse it (``request.refuse``) or get ready for its body."""


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
    """A request that never stores a body: one that declares a body gets 413,
    unless the site's body taker claims it, and then the body streams into that.

    ``HTTPChannel.allHeadersReceived`` calls ``gotLength`` with the declared
    length once the headers are in and before any body byte is handled, so the
    answer goes out and the connection closes before the body is read.
    """

    channel: FileChannel
    refused = False
    #: Where the body goes, for a request the site's body taker claimed.
    body: RequestBody | None = None

    def gotLength(self, length: int | None) -> None:
        # Never Twisted's BytesIO or temporary file: a claimed body goes to its
        # taker chunk by chunk (handleContentChunk), any other is refused.
        self.content = Discard()
        taker = getattr(self.channel.site, "body_taker", None)
        if taker is not None and taker.claims(self.channel.request_head):
            self.body = taker.take(self, length)
            return
        if length == 0 and not self.requestHeaders.hasHeader(b"transfer-encoding"):
            return
        declared = "a chunked body" if length is None else f"a body of {length} bytes"
        self.refuse(
            413, "Content Too Large", "This server takes no request body.\n",
            why=f"declares {declared}",
        )

    def refuse(
        self,
        code: int,
        phrase: str,
        text: str,
        why: str,
        *,
        content_type: str = TEXT_PLAIN,
        headers: Iterable[tuple[str, str]] = (),
        linger: bool = False,
    ) -> None:
        """Answer at once and close; the body, if any, is never taken (``linger``:
        see ``FileChannel.refuse``)."""
        self.refused = True
        # Twisted answers "Expect: 100-continue" right after gotLength; a client
        # must not be invited to send a body that will not be read.
        self.requestHeaders.removeHeader(b"expect")
        if self.channel is not None:  # None once the connection is gone
            self.channel.refuse(
                code, phrase, text, why=why, content_type=content_type, headers=headers,
                linger=linger,
            )

    def handleContentChunk(self, data: bytes) -> None:
        if self.body is not None:
            self.body.write(data)
        else:
            self.content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused:
            # Already answered. Twisted still calls this when the framing says the
            # (empty) body is complete, e.g. "Transfer-Encoding: identity".
            return
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self.body is not None:
            self.body.lost()


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
        #: The request line of the request being read or answered, cut for logs;
        #: whole (within the header caps) for the body taker.
        self.request_line = b""
        self.request_head = b""
        #: Why reading is held for a claimed body (``hold_body``); paused while any.
        self._holds: set[str] = set()
        #: Twisted paused reading because the peer is not taking our writes.
        self._write_blocked = False
        self._saved_idle: float | None = None
        self._head_bytes = 0
        self._head_lines = 0
        # The head deadline runs while a request's head is awaited and has
        # started (or, for the first request, from the connection's start).
        self._awaiting_head = True
        self._head_started = False
        self._head_timer: IDelayedCall | None = None
        self._abort_timer: IDelayedCall | None = None
        #: Answered: nothing read from now on reaches Twisted.
        self._closing = False
        self._close_started = False
        self._linger_timer: IDelayedCall | None = None
        self._lingered = 0

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
            # Answered and closing: whatever still arrives is dropped unread.
            if self._linger_timer is not None:
                self._lingered += len(data)
                if self._lingered > LINGER_BYTES:
                    self._linger_end()
            return
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
                self.request_head = line
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

    def headerReceived(self, line: bytes) -> bool:
        name, colon, value = line.partition(b":")
        if colon and name.lower() == b"content-length":
            digits = value.strip(b" \t")
            if digits.isdigit() and len(digits) > 19:
                # Twisted's int() raises past 4300 digits (out of dataReceived: a
                # traceback and a dropped connection); a length this long is over
                # every limit, and 19 nines say so as well, as a 413.
                line = name + b": " + b"9" * 19
        return bool(super().headerReceived(line))

    def allHeadersReceived(self) -> None:
        self._stop_head_timer()
        self._awaiting_head = False
        self._head_started = False
        self._head_bytes = self._head_lines = 0
        super().allHeadersReceived()

    def requestDone(self, request: http.Request) -> None:
        # Before Twisted replays pipelined bytes into the next request's head.
        self._awaiting_head = True
        self.request_line = self.request_head = b""
        super().requestDone(request)

    # --- a claimed body: holding reading, the idle timer ---

    def hold_body(self, reason: str) -> None:
        """Stop reading the body until ``release_body(reason)`` (and every other hold)."""
        if not self._holds and self.transport is not None:
            self.transport.pauseProducing()
        self._holds.add(reason)

    def release_body(self, reason: str) -> None:
        if reason not in self._holds:
            return
        self._holds.discard(reason)
        if not self._holds and not self._write_blocked and not self._closing:
            self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        # The transport's write buffer is full: Twisted stops reading too.
        self._write_blocked = True
        super().pauseProducing()

    def resumeProducing(self) -> None:
        # Twisted resumes reading when the peer takes our writes again, and knows
        # nothing of a body's holds: keep it paused while one is held.
        self._write_blocked = False
        super().resumeProducing()
        if self._holds and self.transport is not None:
            self.transport.pauseProducing()

    def suspend_idle(self) -> None:
        """No idle timer while a body streams in: its taker times the body itself
        (the stall rule), and a held read is no idle peer."""
        saved = self.setTimeout(None)
        if saved is not None:
            self._saved_idle = saved

    def restore_idle(self) -> None:
        """The idle timer as it was before ``suspend_idle``. Twisted stops it again
        while the request is answered and restores it after."""
        saved, self._saved_idle = self._saved_idle, None
        if saved is not None and not self._closing:
            self.setTimeout(saved)

    # --- closing ---

    def refuse(
        self,
        code: int,
        phrase: str,
        text: str,
        why: str,
        *,
        content_type: str = TEXT_PLAIN,
        headers: Iterable[tuple[str, str]] = (),
        linger: bool = False,
    ) -> None:
        """Answer ``code`` with ``text`` and close, passing nothing more to Twisted.

        ``linger``: a refused body may be on its way; read and drop it for up to
        ``LINGER_SECONDS`` or ``LINGER_BYTES`` (or until the client closes), so
        that the client gets the answer rather than a reset. Without it, reading
        stops at once.
        """
        if self._closing:
            return
        # Escaped: a request line is the client's bytes, and logs reach a terminal.
        line = self.request_line.decode("latin-1").encode("unicode_escape").decode("ascii")
        self.logger.info(
            "HTTP {code} to {host} ({why}): {line}",
            code=code, host=self.host, why=why, line=line or "no request line",
        )
        head_only = self.request_line.split(b" ", 1)[0] == b"HEAD"
        self.transport.write(plain_response(
            code, phrase, text, body=not head_only, content_type=content_type, headers=headers
        ))
        if linger:
            self._linger()
        else:
            self.loseConnection()

    @property
    def lingering(self) -> bool:
        """Answered, and dropping what the client still sends before closing."""
        return self._linger_timer is not None

    def _linger(self) -> None:
        self._closing = True
        self._stop_head_timer()
        self.setTimeout(None)
        self._holds.clear()
        self._linger_timer = self.callLater(LINGER_SECONDS, self._linger_end)
        if not self._write_blocked:
            self.transport.resumeProducing()  # a held read would keep the bytes unread

    def _linger_end(self) -> None:
        if self._linger_timer is not None and self._linger_timer.active():
            self._linger_timer.cancel()
        self._linger_timer = None
        self.loseConnection()

    def loseConnection(self) -> None:
        """Close once the answer is written. Every close of this port comes here.

        The transport stops reading at once (``loseConnection`` does that), so a
        body behind a refused head stays in the kernel, unread, until the close
        resets it. A peer that does not take even the short answer is cut after
        ``abortTimeout`` seconds (Twisted's, 15).
        """
        if self._close_started:
            return  # once: Twisted's path may follow ours (and a second unregister fails)
        self._close_started = self._closing = True
        self._stop_head_timer()
        if self._linger_timer is not None and self._linger_timer.active():
            self._linger_timer.cancel()
        self._linger_timer = None
        if self.abortTimeout is not None:
            self._abort_timer = self.callLater(self.abortTimeout, self._abort)
        super().loseConnection()

    def _abort(self) -> None:
        self._abort_timer = None
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._closing = self._close_started = True
        self._stop_head_timer()
        if self._linger_timer is not None and self._linger_timer.active():
            self._linger_timer.cancel()
        self._linger_timer = None
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
    """The file site: ``BodylessRequest``, ``FileChannel``, connection caps, and
    the one part that takes request bodies (``body_taker``; None: none does)."""

    requestFactory = BodylessRequest
    displayTracebacks = False
    noisy = False
    logger = Logger()  # not ``log``: Site.log(request) writes the access log

    def __init__(
        self,
        root: resource.Resource,
        clock: IReactorTime,
        limits: LimitSettings,
        body_taker: BodyTaker | None = None,
    ):
        # Twisted's idle timer (TimeoutMixin) runs on ``reactor``; 0 turns it off.
        super().__init__(root, timeout=limits.http_idle_timeout or None, reactor=clock)
        self.limits = limits
        self.body_taker = body_taker
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
