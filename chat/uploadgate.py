"""An HTTP upload's way in: the head's checks, then who uploads, then the offer.

All of it happens once a request's head is in and before a byte of its body
is read. ``check_head`` takes the framing and the declared headers (a
``Content-Length``, ``Content-Range``, the size limit, the name in the path,
no content coding, ``X-CRC32``, a SHA-256 digest) into an ``UploadHead``, or
the error to refuse with. A ``Gate`` then decides who uploads: not a banned
address, and ``Authorization: Bearer KEY`` (a connected user's session key)
or ``Basic`` (an account's name and password, checked off the reactor and
throttled together with the chat's logins, a failure answered later the more
there were); and hands the request it guards (``Gated``: the
``IncomingUpload``) the ``FileService`` offer to make as that uploader.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import task
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from chat import events as ev
from chat import wire
from chat.accounts import Accounts
from chat.filestore import FileStore
from chat.partials import resume_owner
from chat.quotas import uploader_key
from chat.sanitize import for_log
from chat.transfer import Upload, decode_file_name
from chat.uploadanswers import upload_error
from chat.uploadheaders import (
    BadRequest,
    Basic,
    Bearer,
    UploadLine,
    credentials,
    declared_crc,
    declared_range,
    declared_sha256,
)

if TYPE_CHECKING:
    from chat.httpupload import HttpUploads

#: An upload offered as its uploader (``FileService.offer`` or ``offer_as``).
Offer = Callable[[wire.Send, IPushProducer], Upload | ev.Error]


# --- the head -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadHead:
    """What a checked head says of the upload."""

    #: The file's name, decoded from the path.
    name: str
    #: The whole file's size and where this body starts (``Content-Range``).
    size: int
    offset: int
    crc: int | None
    #: The declared SHA-256 (hex): the upload checks it where it hashes anyway.
    want_sha: str | None


def check_head(
    line: UploadLine, length: int | None, headers: Headers, store: FileStore
) -> UploadHead | ev.Error:
    """The head's checks in order: the first that fails is the answer."""
    if length is None or headers.hasHeader(b"transfer-encoding") or not (
        headers.hasHeader(b"content-length")
    ):
        return upload_error(
            "length_required",
            "An upload needs a Content-Length (a chunked body is not taken).",
        )
    try:
        resumed = declared_range(headers, length)
    except BadRequest as e:
        return upload_error("bad_request", str(e))
    offset, size = resumed if resumed is not None else (0, length)
    if resumed is not None and line.method != b"PUT":
        return upload_error("bad_request", "Only a PUT continues an upload (Content-Range).")
    too_large = store.too_large(size)
    if too_large is not None:
        return too_large
    if not line.name:
        return upload_error("bad_request", "Name the file in the path: PUT /upload/NAME.")
    name, why = decode_file_name(line.name)
    if why is not None:
        return ev.error("refused", "upload", size=length, **why)
    assert name is not None
    for value in headers.getRawHeaders(b"content-encoding", []):
        if any(c.strip().lower() not in (b"", b"identity") for c in value.split(b",")):
            return upload_error(
                "unsupported_coding",
                "The body is stored as it is sent: no Content-Encoding is taken.",
            )
    try:
        crc = declared_crc(headers)
        want = declared_sha256(headers)
    except BadRequest as e:
        return upload_error("bad_request", str(e))
    if resumed is not None and crc is None:
        return upload_error(
            "bad_request", "A Content-Range continues an upload sent with X-CRC32: send it too."
        )
    return UploadHead(name, size, offset, crc, want.hex() if want is not None else None)


# --- who uploads --------------------------------------------------------------------------


class Gated(Protocol):
    """What a ``Gate`` needs of the upload request it guards (``IncomingUpload``)."""

    host: str
    #: ``waiting`` while a password is checked; anything else once answered or gone.
    state: str
    log: Logger

    def wait(self) -> None:
        """A password is being checked: hold reading meanwhile."""

    def offer(self, who: str, offer: Offer) -> None:
        """``who`` uploads: make the offer as them (and accept or refuse the body)."""

    def refuse(
        self, error: ev.Error, *, why: str | None = None, invalid_token: bool = False,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None: ...

    def internal(self, failure: Failure, what: str) -> None: ...


class Gate:
    """Who uploads: a ban by address, a session key, or an account's password."""

    def __init__(self, uploads: HttpUploads, upload: Gated, head: UploadHead) -> None:
        self._uploads = uploads
        self._upload = upload
        self._want_sha = head.want_sha
        self.host = upload.host

    def open(self, headers: Headers) -> None:
        uploads = self._uploads
        upload = self._upload
        accounts = uploads.accounts
        if accounts is not None:
            ban = accounts.banned(host=self.host)
            if ban is not None:
                upload.refuse(ev.error("banned", "upload", until=ban.until, reason=ban.reason))
                return
        given = headers.getRawHeaders(b"authorization")
        found = credentials(given)
        if isinstance(found, Bearer):
            d = uploads.files.chat.find_session(found.key)
            if not d.called:  # another node's user: asked of Redis
                upload.wait()
            d.addCallback(self._bearer).addErrback(upload.internal, "session")
        elif isinstance(found, Basic) and accounts is not None:
            self._login(found, accounts)
        else:
            how = "a session key (Authorization: Bearer KEY; /session shows yours)"
            if accounts is not None:
                how += " or an account's name and password (HTTP Basic)"
            said = "Unusable credentials" if given else "No credentials"
            upload.refuse(upload_error("unauthorised", f"{said}: an upload needs {how}."))

    def _bearer(self, user: Any) -> None:
        upload, uploads = self._upload, self._uploads
        if user is None:
            upload.refuse(ev.error("bad_session", "upload"), invalid_token=True)
            return
        key = uploader_key(self.host, user.name, uploads.shared, user.account)
        holder = resume_owner(self.host, user.name, user.account)
        upload.offer(
            user.name,
            lambda send, p: uploads.files.offer(
                user, key, send, p, holder, expected_sha256=self._want_sha
            ),
        )

    def _login(self, given: Basic, accounts: Accounts) -> None:
        """An account's password: off the reactor, throttled like a chat login."""
        upload = self._upload
        throttle = self._uploads.throttle
        keys = throttle.keys(given.name, self.host)
        wait = throttle.refused_for(*keys)
        if wait > 0:
            seconds = math.ceil(wait)
            upload.refuse(
                ev.error("too_many_attempts", "upload", wait=seconds),
                headers=[("Retry-After", str(seconds))],
            )
            return
        delay = throttle.delay(*keys)
        upload.wait()
        d = accounts.verify(given.name, given.password)
        d.addCallback(self._checked, given, keys, delay)
        d.addErrback(upload.internal, "checking a password")

    def _checked(self, good: bool, given: Basic, keys: tuple[str, ...], delay: float) -> None:
        uploads = self._uploads
        upload = self._upload
        throttle = uploads.throttle
        # Counted even if the client has gone: hanging up must not buy guesses.
        if not good:
            throttle.failed(*keys)
            upload.log.info(
                "Failed HTTP upload login for {name} from {host}",
                name=for_log(given.name), host=self.host,
            )
        else:
            throttle.succeeded(given.name, self.host)
        if upload.state != "waiting":
            return
        if not good:
            def wrong() -> None:
                if upload.state == "waiting":
                    upload.refuse(ev.error("bad_password", "upload"))

            # As at the chat's door: a failure is answered later the more there were.
            if delay > 0:
                task.deferLater(uploads.clock, delay, wrong)  # type: ignore[arg-type]
            else:
                wrong()
            return
        assert uploads.accounts is not None
        ban = uploads.accounts.banned(name=given.name)
        if ban is not None:
            upload.refuse(ev.error("banned", "upload", until=ban.until, reason=ban.reason))
            return
        key = uploader_key(self.host, given.name, uploads.shared, account=True)
        holder = resume_owner(self.host, given.name, account=True)
        user = uploads.files.chat.registry.get(given.name)
        if user is not None and user.account:
            # Connected: as that user, into their current room.
            upload.offer(
                user.name,
                lambda send, p: uploads.files.offer(
                    user, key, send, p, holder, expected_sha256=self._want_sha
                ),
            )
        else:
            room = uploads.files.chat.rooms.settings.default
            upload.offer(
                given.name,
                lambda send, p: uploads.files.offer_as(
                    given.name, room, key, send, p, holder, expected_sha256=self._want_sha
                ),
            )
