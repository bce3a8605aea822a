"""Uploads over HTTP: ``PUT /upload/NAME`` (or ``POST``), streamed into the file store.

The same path as ``/send`` (``chat.files``): the same size limit, name rules,
quotas, disk margin, stall rule, temporary file, checks and announcement; only
the wire differs. ``HttpUploads`` is the file site's body taker
(``chat.httpchannel``): it claims upload requests by their request line
(``chat.uploadheaders``) and makes each an ``IncomingUpload``, which, once the
head is in and before a byte of the body is read, passes its ``Gate``
(``chat.uploadgate``: the head's checks, who uploads, then
``FileService.offer``). A refusal is answered at once with ``Connection:
close`` and the body is never read (``Expect: 100-continue`` gets its final
answer, no ``100``; the words and statuses are ``chat.uploadanswers``'). An
accepted body streams into the ``Upload`` as Twisted reads it, never into
Twisted's request spool, with reading paused while the upload's disk queue is
full, and is timed by the ``/send`` stall rule (``UploadReceiver``): too slow
and it is discarded with a 408. After the last byte ``FileService.complete``
checks, stores and announces it, and ``UploadResource`` answers the request
``201 Created`` (text, or JSON for ``Accept: application/json``). A connection
lost before the last byte stores and announces nothing; an upload sent with
``X-CRC32`` keeps what arrived (``chat.partials``, as ``/send`` does) and a
``PUT`` with ``Content-Range: bytes OFFSET-LAST/SIZE`` continues it (409 and
``Upload-Offset`` if OFFSET is not what the server holds).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from zope.interface import implementer

from chat import events as ev
from chat import wire
from chat.accounts import Accounts
from chat.config import LimitSettings
from chat.files import FileService
from chat.httpchannel import TEXT_PLAIN, BodylessRequest, FileChannel
from chat.limits import Exempt, LoginThrottle
from chat.sanitize import for_log
from chat.transfer import Upload
from chat.units import plural
from chat.uploadanswers import (
    CHALLENGE_BASIC,
    CHALLENGE_BEARER,
    error_body,
    file_url,
    status_of,
    stored_body,
    upload_error,
)
from chat.uploadgate import Gate, Offer, UploadHead, check_head
from chat.uploadheaders import UploadLine, upload_line, wants_json
from chat.uploads import UploadReceiver

# --- one upload request ----------------------------------------------------------------


@implementer(IPushProducer)
class _Holding:
    """An upload's view of its HTTP connection: pausing it holds reading.

    Detached once the body is in (or gone): the upload's disk queue may drain
    later, and by then reading belongs to the next request on the connection,
    whose upload holds under a reason of its own.
    """

    def __init__(self, channel: FileChannel) -> None:
        self._channel = channel
        self._reason = f"disk {id(self):x}"
        self._attached = True

    def pauseProducing(self) -> None:
        if self._attached:
            self._channel.hold_body(self._reason)

    def resumeProducing(self) -> None:
        if self._attached:
            self._channel.release_body(self._reason)

    def stopProducing(self) -> None:
        self.resumeProducing()

    def detach(self) -> None:
        self._channel.release_body(self._reason)
        self._attached = False


class IncomingUpload:
    """One upload request: let in by its ``Gate``, then its body streamed, then answered.

    ``state``: ``checking`` (the head is in, nothing read), ``waiting`` (a
    password is being checked: reading is held, and what came in the head's
    read is kept, one read at most), ``streaming``, ``storing`` (every byte
    is in), ``answered`` (a refusal went out; the connection closes) and
    ``closed`` (the connection is gone). It is also the ``UploadReceiver``'s
    connection (``chat.uploads.Receiving``).
    """

    log = Logger()

    def __init__(
        self, uploads: HttpUploads, request: BodylessRequest, line: UploadLine,
        length: int | None,
    ) -> None:
        self._uploads = uploads
        self._request = request
        self._channel: FileChannel = request.channel
        self._line = line
        self.length = length
        self.host = self._channel.host
        self.json = wants_json(request.requestHeaders.getRawHeaders(b"accept"))
        self.state = "checking"
        self.who = ""
        self.name = ""
        #: What the head declares, once its checks are passed.
        self._head: UploadHead | None = None
        self._pending: list[bytes] = []
        self._holding = _Holding(self._channel)
        self._receiver: UploadReceiver | None = None
        self._upload: Upload | None = None
        self._buffer_size: Any = None
        self._continue = False
        #: The answer once known (``uploaded`` or an error); None if the request
        #: was answered directly or its connection is gone.
        self.outcome: defer.Deferred[ev.Event | None] = defer.Deferred()

    # --- the way in ---

    def begin(self) -> None:
        headers = self._request.requestHeaders
        expect = headers.getRawHeaders(b"expect")
        # Twisted would answer "100 Continue" as soon as gotLength returns; the
        # client is invited to send only once the upload is accepted (_accept).
        headers.removeHeader(b"expect")
        self._continue = bool(expect) and expect[0].lower() == b"100-continue" and (
            self._line.version == b"HTTP/1.1"
        )
        # No idle timer while checking and streaming: the stall rule times the body.
        self._channel.suspend_idle()
        head = check_head(self._line, self.length, headers, self._uploads.files.store)
        if isinstance(head, ev.Error):
            self.refuse(head)
            return
        self._head = head
        self.name = head.name
        Gate(self._uploads, self, head).open(headers)

    # uploadgate.Gated

    def wait(self) -> None:
        self.state = "waiting"
        self._channel.hold_body("auth")

    def offer(self, who: str, offer: Offer) -> None:
        """An upload sent with ``X-CRC32`` is kept if interrupted (``chat.partials``, as
        for ``/send``); ``Content-Range`` continues it where the server says it stopped."""
        head = self._head
        assert head is not None
        self.who = who
        send = wire.Send(self._line.name, head.size, head.crc, head.offset)
        result = offer(send, self._holding)
        if isinstance(result, ev.Error) and result.code == "bad_offset":
            held = int(result.params.get("offset", 0))
            self.refuse(
                upload_error(
                    "bad_offset",
                    f"The server holds {plural(held, 'byte')} of this upload: continue with "
                    f"Content-Range: bytes {held}-{head.size - 1}/{head.size} (or send it "
                    "all without one). Nothing was read.",
                    offset=held, size=head.size,
                ),
                headers=[("Upload-Offset", str(held))],
            )
        elif isinstance(result, ev.Error):
            self.refuse(result)
        else:
            self._accept(result)

    def _accept(self, upload: Upload) -> None:
        assert self.length is not None
        uploads = self._uploads
        self._upload = upload
        self.state = "streaming"
        self.log.info(
            "HTTP upload of {name} ({size} bytes) by {who} from {host}",
            name=for_log(self.name), size=self.length, who=for_log(self.who), host=self.host,
        )
        transport = self._channel.transport
        self._buffer_size = getattr(transport, "bufferSize", None)
        self._receiver = UploadReceiver(
            self, upload, self.length, self._finish, uploads.files.store, uploads.clock,
            uploads.limits,
        )
        if self._continue and self.length:
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._receiver.start(transport)
        pending, self._pending = self._pending, []
        for chunk in pending:
            self.write(chunk)
        self._channel.release_body("auth")

    # --- the body ---

    def write(self, data: bytes) -> None:
        """Body bytes as Twisted reads them (never more than ``Content-Length``)."""
        if self.state == "waiting":
            # Only what arrived in the head's read: reading is held meanwhile.
            self._pending.append(data)
            return
        if self.state != "streaming" or self._receiver is None:
            return  # refused or gone: dropped, never stored
        self._uploads.files.chat.stats.bytes_in += len(data)
        self._receiver.write(data)

    def lost(self) -> None:
        """The connection is gone: before the last byte, the upload is discarded."""
        state, self.state = self.state, "closed"
        self._pending = []
        self._holding.detach()
        if state == "streaming" and self._receiver is not None:
            self._receiver.abort("connection lost")
        if state != "storing" and not self.outcome.called:
            self.outcome.callback(None)

    # chat.uploads.Receiving

    @property
    def transport(self) -> Any:
        return self._channel.transport

    def hold(self, reason: str) -> None:
        self._channel.hold_body(reason)

    def release(self, reason: str) -> None:
        self._channel.release_body(reason)

    def received(self, n: int) -> None:
        self._uploads.files.chat.stats.bytes_in += n

    def all_received(self) -> None:
        self.state = "storing"
        self._holding.detach()
        transport = self._channel.transport
        if self._buffer_size is not None and transport is not None:
            transport.bufferSize = self._buffer_size  # UploadReceiver.start raised it
        self._channel.restore_idle()

    def close(self, reason: str, *, say: ev.Event | None = None, abort: bool = False) -> None:
        """The stall rule ends the upload: answer if we still can, discard, close."""
        receiver = self._receiver
        error = say if isinstance(say, ev.Error) else upload_error("upload_stalled", reason)
        self.refuse(error, why=reason)
        if receiver is not None:
            receiver.abort(reason)

    def _finish(self) -> defer.Deferred[Any]:
        """Every byte is in: check, store, answer (into ``outcome``) and announce.

        The upload checks the CRC-32 and SHA-256 on its worker threads, where it
        computes them anyway (``crc_mismatch``, ``digest_mismatch``: nothing stored).
        """
        upload = self._upload
        assert upload is not None
        # No owner: the uploader's own chat connections hear the notice too,
        # in either mode (the HTTP answer is all the uploading side gets).
        return self._uploads.files.complete(upload, None, self._answer)

    def _answer(self, event: ev.Event) -> None:
        result = "stored" if isinstance(event, ev.Uploaded) else getattr(event, "code", "?")
        self.log.info(
            "HTTP upload of {name} by {who} from {host}: {result}",
            name=for_log(self.name), who=for_log(self.who), host=self.host, result=result,
        )
        if not self.outcome.called:
            self.outcome.callback(event)

    # --- answers ---

    def refuse(
        self, error: ev.Error, *, why: str | None = None, invalid_token: bool = False,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Answer ``error`` at once and close: the rest of the body is never read."""
        if self.state in ("answered", "closed"):
            return
        self.state = "answered"
        self._pending = []
        self._holding.detach()
        code, phrase = status_of(error)
        extra = list(headers)
        if code == 401:
            bearer = CHALLENGE_BEARER + (', error="invalid_token"' if invalid_token else "")
            extra.append(("WWW-Authenticate", bearer))
            if self._uploads.accounts is not None:
                extra.append(("WWW-Authenticate", CHALLENGE_BASIC))
        body, content_type = error_body(error, self.json)
        # A body may be on its way (every state that can refuse is before its
        # end): drop it a little while, so the client reads this, not a reset.
        self._request.refuse(
            code, phrase, body, why=why or error.code, content_type=content_type, headers=extra,
            linger=self.length != 0,
        )
        if not self.outcome.called:
            self.outcome.callback(None)

    def respond(self, event: ev.Event | None) -> None:
        """The answer to a request whose body was read: 201, or the error (kept alive)."""
        request = self._request
        if event is None or self.state == "closed" or request.finished:
            return
        if isinstance(event, ev.Uploaded):
            request.setResponseCode(201, b"Created")
            request.setHeader(b"location", file_url(event.file).encode("utf-8"))
            body, content_type = stored_body(event.file, self.json)
        else:
            assert isinstance(event, ev.Error)
            code, phrase = status_of(event)
            request.setResponseCode(code, phrase.encode("ascii"))
            body, content_type = error_body(event, self.json)
        data = body.encode("utf-8")
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"content-length", str(len(data)).encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        request.write(data)
        request.finish()

    def internal(self, failure: Failure, what: str) -> None:
        self.log.failure("HTTP upload: {what} failed", failure, what=what)
        self.refuse(ev.error("internal", "upload"))


class HttpUploads:
    """The file site's body taker: ``PUT`` and ``POST /upload/NAME``.

    ``accounts`` (and ``throttle``, shared with the chat's door so failures
    count together) let accounts upload with HTTP Basic; without them only
    session keys do. ``shared``: the addresses whose quotas go by user name
    (``limits.exempt_addresses``, as on the chat port).
    """

    def __init__(
        self,
        files: FileService,
        clock: IReactorTime,
        limits: LimitSettings,
        *,
        accounts: Accounts | None = None,
        throttle: LoginThrottle | None = None,
        shared: Exempt | None = None,
    ) -> None:
        self.files = files
        self.clock = clock
        self.limits = limits
        self.accounts = accounts
        self.throttle = throttle or LoginThrottle(
            clock, limits.login_failures, limits.login_window, limits.login_lockout,
            limits.max_tracked_addresses,
        )
        self.shared = shared if shared is not None else Exempt(limits.exempt_addresses)

    def claims(self, request_line: bytes) -> bool:
        return upload_line(request_line) is not None

    def take(self, request: BodylessRequest, length: int | None) -> IncomingUpload:
        line = upload_line(request.channel.request_head)
        assert line is not None
        body = IncomingUpload(self, request, line, length)
        body.begin()
        return body


class UploadResource(resource.Resource):
    """``/upload/NAME``: where a claimed request, its body read, gets its answer."""

    isLeaf = True
    log = Logger()

    def render_PUT(self, request: BodylessRequest) -> Any:
        body = request.body
        if not isinstance(body, IncomingUpload):
            # Only a request the channel claimed reaches here with PUT or POST
            # (the same request line decides both); anything else is a bug.
            request.setResponseCode(500)
            return b"Internal error.\n"
        d = body.outcome.addCallback(body.respond)
        d.addErrback(self._failed, request)
        return server.NOT_DONE_YET

    render_POST = render_PUT

    def render_GET(self, request: server.Request) -> bytes:
        request.setResponseCode(405, b"Method Not Allowed")
        request.setHeader(b"allow", b"PUT, POST")
        request.setHeader(b"content-type", TEXT_PLAIN.encode("ascii"))
        return b"Upload with PUT /upload/NAME (or POST), the file as the body.\n"

    render_HEAD = render_GET

    def _failed(self, failure: Failure, request: server.Request) -> None:
        self.log.failure("HTTP upload answer failed", failure)
        if not request.finished and not request.startedWriting:
            request.setResponseCode(500)
            request.finish()
