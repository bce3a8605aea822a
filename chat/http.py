"""Shared files over HTTP: ``GET`` and ``HEAD /files/ID/NAME``; uploads to ``/upload/NAME``.

The id is what counts; the name must match the stored one so a URL reads
well, and a wrong name is a 404. Responses carry a length, an ETag, a
``Content-Disposition`` that is safe for any name, ``application/octet-stream``
and ``nosniff``. One byte range is honoured (so ``curl -C -`` resumes); a
request for several ranges gets the whole file, never a response larger than
it. There are no listings and no path reaches outside the store.

Uploads (``PUT``/``POST /upload/NAME``) are ``chat.httpupload``'s; the
connections themselves (no request body but an upload's, caps, deadlines) are
``chat.httpchannel``'s. ``site`` puts the three together.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http, pages, resource, server, static

from chat import events as ev
from chat.accounts import Accounts
from chat.config import LimitSettings
from chat.files import FileService
from chat.httpchannel import FileSite
from chat.httpupload import HttpUploads, UploadResource
from chat.limits import LoginThrottle
from chat.transfer import Counting, Transfer

#: One byte range. ASCII digits only (``\d`` would take any Unicode digit), and
#: few enough that ``int`` never meets a number too long to convert.
_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})", re.IGNORECASE)
_FILE_ID = re.compile(r"[0-9a-f]{32}")


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the exact name in RFC 5987 form."""
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\%' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def parse_range(header: str | bytes, size: int) -> tuple[int, int] | str | None:
    """One satisfiable ``(first, last)``, None to send it all, or ``"unsatisfiable"``.

    Twisted hands header values over as ``bytes``; they are read as Latin-1.
    A header that is not one well-formed range is ignored (the whole file).
    """
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    header = header.strip().replace(" ", "")
    if "," in header:
        return None  # several ranges: collapsed into the whole file
    m = _RANGE.fullmatch(header)
    if not m or (not m[1] and not m[2]):
        return None
    if not m[1]:
        length = int(m[2])
        if length == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    first = int(m[1])
    last = int(m[2]) if m[2] else size - 1
    if m[2] and first > last:
        return None  # syntactically invalid (RFC 9110 14.1.1): ignored
    if first >= size:
        return "unsatisfiable"
    return first, min(last, size - 1)


class FileResource(resource.Resource):
    """``/files/ID/NAME``."""

    isLeaf = True
    log = Logger()

    def __init__(self, files: FileService, clock: IReactorTime) -> None:
        super().__init__()
        self.files = files
        self.clock = clock

    def render_HEAD(self, request: server.Request) -> Any:
        return self.render_GET(request)

    def render_GET(self, request: server.Request) -> Any:
        path = request.postpath
        if len(path) != 2 or not _FILE_ID.fullmatch(path[0].decode("ascii", "replace")):
            return self._not_found(request)
        file_id = path[0].decode("ascii")
        name = path[1].decode("utf-8", "replace")
        d = self.files.find(file_id)
        d.addCallback(self._found, request, name)
        d.addErrback(self._failed, request)
        return server.NOT_DONE_YET

    def _not_found(self, request: server.Request) -> bytes:
        request.setResponseCode(http.NOT_FOUND)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"No such file.\n"

    def _failed(self, failure: Any, request: server.Request) -> None:
        self.log.failure("HTTP download failed", failure)
        if not request.finished and not request.startedWriting:
            request.setResponseCode(http.INTERNAL_SERVER_ERROR)
            request.finish()

    def _found(self, info: ev.FileInfo | None, request: server.Request, name: str) -> None:
        if request._disconnected:  # private (docs/architecture.md): the client left meanwhile
            return
        if info is None or info.name != name:
            request.write(self._not_found(request))
            request.finish()
            return
        if info.removed or info.expired:
            request.setResponseCode(http.GONE)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.write(b"This file was removed.\n" if info.removed
                          else b"This file has expired.\n")
            request.finish()
            return
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-disposition", content_disposition(info.name).encode())
        request.setHeader(b"accept-ranges", b"bytes")
        request.setHeader(b"cache-control", b"private, max-age=31536000, immutable")
        if request.setETag(f'"{info.sha256[:32]}"'.encode()) == http.CACHED:
            request.finish()
            return
        size = info.size
        first, last = 0, size - 1
        header = request.getHeader(b"range")
        if_range = request.getHeader(b"if-range")
        etag = f'"{info.sha256[:32]}"'.encode()
        if header is not None and (if_range is None or if_range.strip() == etag):
            wanted = parse_range(header, size)
            if wanted == "unsatisfiable":
                request.setResponseCode(http.REQUESTED_RANGE_NOT_SATISFIABLE)
                request.setHeader(b"content-range", f"bytes */{size}".encode())
                request.setHeader(b"content-length", b"0")
                request.finish()
                return
            if isinstance(wanted, tuple):
                first, last = wanted
                request.setResponseCode(http.PARTIAL_CONTENT)
                request.setHeader(b"content-range", f"bytes {first}-{last}/{size}".encode())
        length = max(0, last - first + 1)
        request.setHeader(b"content-length", str(length).encode())
        if request.method == b"HEAD" or length == 0:
            request.finish()
            return
        store = self.files.store
        f = open(store.path(info.file_id), "rb")
        transfer = Transfer(
            f"http {request.getClientAddress().host}", info.name, "down", length,
            self.clock.seconds(),
        )
        store.active[id(transfer)] = transfer

        def finished(_: object) -> None:
            store.active.pop(id(transfer), None)
            f.close()

        request.notifyFinish().addBoth(finished)
        producer = static.SingleRangeStaticProducer(Counting(request, transfer), f, first, length)
        producer.start()


# --- what one client can cost the port ------------------------------------------------


class _Root(resource.Resource):
    """``/files/`` and ``/upload/``; every other path is a plain 404."""

    def getChild(self, path: bytes, request: server.Request) -> resource.IResource:
        # Twisted's default (NoResource) is deprecated for not escaping HTML.
        return pages.notFound(
            "No such page", "Files are under /files/ID/NAME; uploads go to /upload/NAME."
        )

    def render_GET(self, request: server.Request) -> bytes:
        return self.getChild(b"", request).render(request)  # type: ignore[no-any-return]

    render_HEAD = render_GET


def site(
    files: FileService,
    clock: IReactorTime,
    limits: LimitSettings,
    *,
    accounts: Accounts | None = None,
    throttle: LoginThrottle | None = None,
) -> FileSite:
    """The HTTP port's site: downloads, and uploads by session key, or with
    ``accounts`` also by an account's password (``throttle``: the chat door's,
    so failed passwords count together; a throttle of its own if not given)."""
    root = _Root()
    root.putChild(b"files", FileResource(files, clock))
    root.putChild(b"upload", UploadResource())
    uploads = HttpUploads(files, clock, limits, accounts=accounts, throttle=throttle)
    return FileSite(root, clock, limits, body_taker=uploads)
