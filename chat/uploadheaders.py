"""Reading an HTTP upload's head: the request line, the declared checks, the credentials.

Pure parsing, no I/O: ``upload_line`` says whether a request line asks for
``/upload`` (and the NAME it gives); ``declared_crc`` (``X-CRC32``),
``declared_range`` (``Content-Range`` of a resumed ``PUT``) and
``declared_sha256`` (``Repr-Digest``, ``Content-Digest`` or the older
``Digest``) read what the client declares for the body, raising
``BadRequest`` with the words to answer when a header cannot be taken;
``credentials`` reads ``Authorization`` (``Bearer`` or ``Basic``); and
``wants_json`` reads ``Accept``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from twisted.web.http_headers import Headers

#: The methods that upload (exactly so: HTTP methods are case-sensitive).
UPLOAD_METHODS = (b"PUT", b"POST")
JSON = "application/json"


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
