"""Uploads over HTTP: ``PUT /upload/NAME`` (or ``POST``), streamed into the file store.

The same path as ``/send`` (``chat.files``): the same size limit, name rules,
quotas, disk margin, stall rule, temporary file, checks and announcement; only
the wire differs. ``HttpUploads`` is the file site's body taker
(``chat.httpchannel``): it claims upload requests by their request line and,
once a request's head is in and before a byte of its body is read, checks

1. the framing and the headers: a ``Content-Length`` (411 without one; a
   chunked body is never taken), the size limit (413 naming it), the name in
   the path, ``X-CRC32``, a SHA-256 digest (``Repr-Digest`` or
   ``Content-Digest``, RFC 9530, or the older ``Digest``), no content coding;
2. who uploads: ``Authorization: Bearer KEY`` (a connected user's session
   key) or ``Basic`` (an account's name and password, checked off the reactor
   and throttled together with the chat's logins): 401, 429, 403 for a ban;
3. ``FileService.offer``: the room, quotas, disk space (409, 403, 429, 507).

A refusal is answered at once with ``Connection: close`` and the body is never
read (``Expect: 100-continue`` gets its final answer, no ``100``). An accepted
body streams into the ``Upload`` as Twisted reads it, never into Twisted's
request spool, with reading paused while the upload's disk queue is full, and
is timed by the ``/send`` stall rule (``UploadReceiver``): too slow and it is
discarded with a 408. After the last byte ``FileService.complete`` checks,
stores and announces it, and the request is answered ``201 Created`` (text,
or JSON for ``Accept: application/json``). A connection lost before the last
byte stores and announces nothing; an upload sent with ``X-CRC32`` keeps what
arrived (``chat.partials``, as ``/send`` does) and a ``PUT`` with
``Content-Range: bytes OFFSET-LAST/SIZE`` continues it (409 and
``Upload-Offset`` if OFFSET is not what the server holds).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from twisted.internet import defer, task
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.http_headers import Headers
from zope.interface import implementer

from chat import events as ev
from chat import wire
from chat.accounts import Accounts
from chat.config import LimitSettings
from chat.files import FileService
from chat.httpchannel import TEXT_PLAIN, BodylessRequest, FileChannel
from chat.limits import Exempt, LoginThrottle
from chat.partials import resume_owner
from chat.quotas import uploader_key
from chat.render import REFUSALS, JsonRenderer, error_text
from chat.sanitize import for_log
from chat.transfer import Upload, decode_file_name
from chat.units import human_size, plural
from chat.uploads import UploadReceiver

#: The methods that upload (exactly so: HTTP methods are case-sensitive).
UPLOAD_METHODS = (b"PUT", b"POST")
JSON = "application/json"
REALM = "lanchat"
CHALLENGE_BEARER = f'Bearer realm="{REALM}"'
CHALLENGE_BASIC = f'Basic realm="{REALM}", charset="UTF-8"'

_RENDER = JsonRenderer()


# --- reading a request's head ----------------------------------------------------------


@dataclass(frozen=True)
class UploadLine:
    """What the request line of an upload says."""

    method: bytes
    #: The NAME in ``/upload/NAME``, still percent-encoded ("" if none).
    name: str
    version: bytes


def upload_line(request_line: bytes) -> UploadLine | None:
    """The upload a request line asks for, or None if it is not an upload.

    The first path segment is compared percent-decoded, as Twisted's resource
    lookup does, so a request is claimed exactly when it would reach
    ``/upload``; the rest is the name, left encoded for ``decode_file_name``.
    """
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[0] not in UPLOAD_METHODS:
        return None
    path = parts[1].split(b"?", 1)[0]
    if not path.startswith(b"/"):
        return None  # absolute-form and "*": Twisted would not route them here either
    first, _, rest = path[1:].partition(b"/")
    if unquote_to_bytes(first) != b"upload":
        return None
    # Twisted has checked the target is printable ASCII.
    return UploadLine(parts[0], rest.decode("ascii", "replace"), parts[2])


class BadRequest(Exception):
    """A request header that cannot be taken; the message says why."""


def declared_crc(headers: Headers) -> int | None:
    """``X-CRC32``: exactly 8 hex digits, as ``/send`` takes them (None if absent)."""
    values = headers.getRawHeaders(b"x-crc32")
    if not values:
        return None
    if len(values) > 1 or not re.fullmatch(rb"[0-9A-Fa-f]{8}", values[0]):
        raise BadRequest("X-CRC32 must be exactly 8 hex digits.")
    return int(values[0], 16)


def declared_range(headers: Headers, length: int) -> tuple[int, int] | None:
    """``Content-Range: bytes FIRST-LAST/SIZE`` (RFC 9110) of a resumed PUT: ``(FIRST, SIZE)``.

    The body must be exactly bytes FIRST to LAST of a file of SIZE bytes, so
    ``LAST - FIRST + 1`` is the ``Content-Length``. None if absent.
    """
    values = headers.getRawHeaders(b"content-range")
    if not values:
        return None
    found = re.fullmatch(rb"bytes ([0-9]{1,20})-([0-9]{1,20})/([0-9]{1,20})", values[0].strip())
    if len(values) > 1 or found is None:
        raise BadRequest("Content-Range must be bytes FIRST-LAST/SIZE (FIRST: the offset).")
    first, last, size = (int(v) for v in found.groups())
    if not first <= last < size or last - first + 1 != length:
        raise BadRequest(
            "Content-Range must name exactly the body's bytes: LAST - FIRST + 1 = "
            "Content-Length, and LAST below SIZE."
        )
    return first, size


def _sha256_value(encoded: bytes, field: str) -> bytes:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{field}: sha-256 is not valid base64.") from None
    if len(raw) != 32:
        raise BadRequest(f"{field}: sha-256 must be 32 bytes, not {len(raw)}.")
    return raw


def declared_sha256(headers: Headers) -> bytes | None:
    """The SHA-256 the client declares for the body, if any (32 bytes).

    ``Repr-Digest`` and ``Content-Digest`` (RFC 9530: a dictionary whose
    values are byte sequences, ``sha-256=:BASE64:``; the two are the same here,
    as no content coding is taken) and the older ``Digest`` (RFC 3230:
    ``SHA-256=BASE64``). Other algorithms are ignored; a malformed sha-256
    value, or two that disagree, is a bad request.
    """
    found: set[bytes] = set()
    for key, field in ((b"repr-digest", "Repr-Digest"), (b"content-digest", "Content-Digest")):
        for value in headers.getRawHeaders(key, []):
            for member in value.split(b","):  # base64 has no comma
                name, _, item = member.strip().partition(b"=")
                if name.strip() != b"sha-256":  # structured-field keys are lowercase
                    continue
                item = item.split(b";", 1)[0].strip()  # parameters say nothing here
                if len(item) < 2 or item[:1] != b":" or item[-1:] != b":":
                    raise BadRequest(f"{field}: sha-256 must be a byte sequence, :BASE64:.")
                found.add(_sha256_value(item[1:-1], field))
    for value in headers.getRawHeaders(b"digest", []):
        for member in value.split(b","):
            name, _, item = member.strip().partition(b"=")
            if name.strip().lower() == b"sha-256":
                found.add(_sha256_value(item.strip(), "Digest"))
    if len(found) > 1:
        raise BadRequest("The SHA-256 digests given disagree.")
    return found.pop() if found else None


@dataclass(frozen=True)
class Bearer:
    key: str


@dataclass(frozen=True)
class Basic:
    name: str
    password: str


def credentials(values: list[bytes] | None) -> Bearer | Basic | None:
    """What one ``Authorization`` header holds (None: none, several, or unusable)."""
    if not values or len(values) != 1:
        return None
    scheme, _, rest = values[0].strip().partition(b" ")
    rest = rest.strip()
    if not rest:
        return None
    if scheme.lower() == b"bearer":
        return Bearer(rest.decode("ascii", "replace"))
    if scheme.lower() == b"basic":
        try:
            raw = base64.b64decode(rest, validate=True)
        except (binascii.Error, ValueError):
            return None
        name, colon, password = raw.partition(b":")
        if not colon or not name:
            return None
        # "replace", never "surrogateescape": a lone surrogate breaks logs and SQLite.
        return Basic(name.decode("utf-8", "replace"), password.decode("utf-8", "replace"))
    return None


def wants_json(values: list[bytes] | None) -> bool:
    """Whether ``Accept`` asks for ``application/json`` (with a q above 0)."""
    for value in values or []:
        for item in value.split(b","):
            media, *params = item.split(b";")
            if media.strip().lower() != JSON.encode():
                continue
            for param in params:
                key, _, q = param.strip().partition(b"=")
                if key.strip().lower() == b"q":
                    try:
                        return float(q) > 0
                    except ValueError:
                        return False
            return True
    return False


# --- answers ----------------------------------------------------------------------------

#: The HTTP status of each error code an upload can end with.
_STATUS: dict[str, tuple[int, str]] = {
    "bad_request": (400, "Bad Request"),
    "unauthorised": (401, "Unauthorized"),
    "bad_session": (401, "Unauthorized"),
    "bad_password": (401, "Unauthorized"),
    "banned": (403, "Forbidden"),
    "upload_stalled": (408, "Request Timeout"),
    "not_in_room": (409, "Conflict"),
    "length_required": (411, "Length Required"),
    "too_large": (413, "Content Too Large"),
    "unsupported_coding": (415, "Unsupported Media Type"),
    "crc_mismatch": (422, "Unprocessable Content"),
    "digest_mismatch": (422, "Unprocessable Content"),
    "too_many_attempts": (429, "Too Many Requests"),
    "bad_offset": (409, "Conflict"),
    "store_failed": (500, "Internal Server Error"),
    "internal": (500, "Internal Server Error"),
}
#: ... and of each reason a well-formed upload is ``refused`` for (``name_*``: 400).
_REFUSED_STATUS: dict[str, tuple[int, str]] = {
    "quota": (403, "Forbidden"),
    "daily_quota": (403, "Forbidden"),
    "in_progress": (409, "Conflict"),
    "reservation": (429, "Too Many Requests"),
    "disk": (507, "Insufficient Storage"),
}


def status_of(error: ev.Error) -> tuple[int, str]:
    if error.code == "refused":
        reason = str(error.params.get("reason", ""))
        if reason.startswith("name_"):
            return 400, "Bad Request"
        return _REFUSED_STATUS.get(reason, (403, "Forbidden"))
    return _STATUS.get(error.code, (400, "Bad Request"))


def words(error: ev.Error) -> str:
    """The words of an upload's error. A refusal says nothing was read: the
    chat's own words ("the bytes are discarded") describe ``/send``."""
    if error.code == "refused" and error.text is None:
        template = REFUSALS.get(str(error.params.get("reason")))
        if template is not None:
            values = dict(error.params)
            for key in ("limit", "size", "quota", "used"):
                if isinstance(values.get(key), int):
                    values[f"{key}_human"] = human_size(values[key])
            try:
                return template.format_map(values) + " Nothing was read or stored."
            except (KeyError, ValueError):
                pass
    return error_text(error)


def _error(code: str, text: str, **params: Any) -> ev.Error:
    """An error of this endpoint's own, worded here (``render`` knows only the chat's)."""
    return ev.Error(code, "upload", params, text)


def error_body(error: ev.Error, as_json: bool) -> tuple[str, str]:
    """``(body, content type)`` of an error answer."""
    error = dataclasses.replace(error, command="upload", text=words(error))
    if as_json:
        return _RENDER.render(error).decode("utf-8").rstrip("\r\n") + "\n", JSON
    return error.text + "\n", TEXT_PLAIN  # type: ignore[operator]


def file_url(info: ev.FileInfo) -> str:
    """The file's URL; relative if the server does not know its own address."""
    return info.url or f"/files/{info.file_id}/{quote(info.name, safe='')}"


def stored_body(info: ev.FileInfo, as_json: bool) -> tuple[str, str]:
    """``(body, content type)`` of a ``201 Created``."""
    if as_json:
        return _RENDER.render(ev.Uploaded(info)).decode("utf-8").rstrip("\r\n") + "\n", JSON
    return (
        f"Stored {info.name}: id {info.file_id}, {plural(info.size, 'byte')}, "
        f"CRC-32 {info.crc32}.\n{file_url(info)}\n"
    ), TEXT_PLAIN


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
    """One upload request: checked and authorised, then its body streamed, then answered.

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
        self._crc: int | None = None
        #: The whole file's size and where this body starts (``Content-Range``).
        self._size = length or 0
        self._offset = 0
        #: The declared SHA-256 (hex): the upload checks it where it hashes anyway.
        self._want_sha: str | None = None
        self._pending: list[bytes] = []
        self._holding = _Holding(self._channel)
        self._receiver: UploadReceiver | None = None
        self._upload: Upload | None = None
        self._buffer_size: Any = None
        self._continue = False
        #: The answer once known (``uploaded`` or an error); None if the request
        #: was answered directly or its connection is gone.
        self.outcome: defer.Deferred[ev.Event | None] = defer.Deferred()

    # --- checking ---

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
        problem = self._check(headers)
        if problem is not None:
            self.refuse(problem)
            return
        self._authorise(headers)

    def _check(self, headers: Headers) -> ev.Error | None:
        if self.length is None or headers.hasHeader(b"transfer-encoding") or not (
            headers.hasHeader(b"content-length")
        ):
            return _error(
                "length_required",
                "An upload needs a Content-Length (a chunked body is not taken).",
            )
        try:
            resumed = declared_range(headers, self.length)
        except BadRequest as e:
            return _error("bad_request", str(e))
        if resumed is not None:
            self._offset, self._size = resumed
            if self._line.method != b"PUT":
                return _error("bad_request", "Only a PUT continues an upload (Content-Range).")
        too_large = self._uploads.files.store.too_large(self._size)
        if too_large is not None:
            return too_large
        if not self._line.name:
            return _error("bad_request", "Name the file in the path: PUT /upload/NAME.")
        name, why = decode_file_name(self._line.name)
        if why is not None:
            return ev.error("refused", "upload", size=self.length, **why)
        assert name is not None
        self.name = name
        for value in headers.getRawHeaders(b"content-encoding", []):
            if any(c.strip().lower() not in (b"", b"identity") for c in value.split(b",")):
                return _error(
                    "unsupported_coding",
                    "The body is stored as it is sent: no Content-Encoding is taken.",
                )
        try:
            self._crc = declared_crc(headers)
            want = declared_sha256(headers)
            self._want_sha = want.hex() if want is not None else None
        except BadRequest as e:
            return _error("bad_request", str(e))
        if resumed is not None and self._crc is None:
            return _error(
                "bad_request", "A Content-Range continues an upload sent with X-CRC32: send it too."
            )
        return None

    def _authorise(self, headers: Headers) -> None:
        uploads = self._uploads
        accounts = uploads.accounts
        if accounts is not None:
            ban = accounts.banned(host=self.host)
            if ban is not None:
                self.refuse(ev.error("banned", "upload", until=ban.until, reason=ban.reason))
                return
        given = headers.getRawHeaders(b"authorization")
        found = credentials(given)
        if isinstance(found, Bearer):
            user = uploads.files.chat.by_session(found.key)
            if user is None:
                self.refuse(ev.error("bad_session", "upload"), invalid_token=True)
                return
            self.who = user.name
            key = uploader_key(self.host, user.name, uploads.shared, user.account)
            holder = resume_owner(self.host, user.name, user.account)
            self._offer(
                lambda send, p: uploads.files.offer(
                    user, key, send, p, holder, expected_sha256=self._want_sha
                )
            )
        elif isinstance(found, Basic) and accounts is not None:
            self._login(found, accounts)
        else:
            how = "a session key (Authorization: Bearer KEY; /session shows yours)"
            if accounts is not None:
                how += " or an account's name and password (HTTP Basic)"
            said = "Unusable credentials" if given else "No credentials"
            self.refuse(_error("unauthorised", f"{said}: an upload needs {how}."))

    def _login(self, given: Basic, accounts: Accounts) -> None:
        """An account's password: off the reactor, throttled like a chat login."""
        throttle = self._uploads.throttle
        keys = throttle.keys(given.name, self.host)
        wait = throttle.refused_for(*keys)
        if wait > 0:
            seconds = math.ceil(wait)
            self.refuse(
                ev.error("too_many_attempts", "upload", wait=seconds),
                headers=[("Retry-After", str(seconds))],
            )
            return
        delay = throttle.delay(*keys)
        self.state = "waiting"
        self._channel.hold_body("auth")
        d = accounts.verify(given.name, given.password)
        d.addCallback(self._checked, given, keys, delay)
        d.addErrback(self._internal, "checking a password")

    def _checked(self, good: bool, given: Basic, keys: tuple[str, ...], delay: float) -> None:
        uploads = self._uploads
        throttle = uploads.throttle
        # Counted even if the client has gone: hanging up must not buy guesses.
        if not good:
            throttle.failed(*keys)
            self.log.info(
                "Failed HTTP upload login for {name} from {host}",
                name=for_log(given.name), host=self.host,
            )
        else:
            throttle.succeeded(given.name, self.host)
        if self.state != "waiting":
            return
        if not good:
            def wrong() -> None:
                if self.state == "waiting":
                    self.refuse(ev.error("bad_password", "upload"))

            # As at the chat's door: a failure is answered later the more there were.
            if delay > 0:
                task.deferLater(self._uploads.clock, delay, wrong)  # type: ignore[arg-type]
            else:
                wrong()
            return
        assert uploads.accounts is not None
        ban = uploads.accounts.banned(name=given.name)
        if ban is not None:
            self.refuse(ev.error("banned", "upload", until=ban.until, reason=ban.reason))
            return
        key = uploader_key(self.host, given.name, uploads.shared, account=True)
        holder = resume_owner(self.host, given.name, account=True)
        user = uploads.files.chat.registry.get(given.name)
        if user is not None and user.account:
            # Connected: as that user, into their current room.
            self.who = user.name
            self._offer(
                lambda send, p: uploads.files.offer(
                    user, key, send, p, holder, expected_sha256=self._want_sha
                )
            )
        else:
            self.who = given.name
            room = uploads.files.chat.rooms.settings.default
            self._offer(
                lambda send, p: uploads.files.offer_as(
                    given.name, room, key, send, p, holder, expected_sha256=self._want_sha
                )
            )

    def _offer(self, offer: Callable[[wire.Send, IPushProducer], Upload | ev.Error]) -> None:
        """An upload sent with ``X-CRC32`` is kept if interrupted (``chat.partials``, as
        for ``/send``); ``Content-Range`` continues it where the server says it stopped."""
        send = wire.Send(self._line.name, self._size, self._crc, self._offset)
        result = offer(send, self._holding)
        if isinstance(result, ev.Error) and result.code == "bad_offset":
            held = int(result.params.get("offset", 0))
            self.refuse(
                _error(
                    "bad_offset",
                    f"The server holds {plural(held, 'byte')} of this upload: continue with "
                    f"Content-Range: bytes {held}-{self._size - 1}/{self._size} (or send it "
                    "all without one). Nothing was read.",
                    offset=held, size=self._size,
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
        error = say if isinstance(say, ev.Error) else _error("upload_stalled", reason)
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

    def _internal(self, failure: Failure, what: str) -> None:
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
