"""HTTP uploads: ``PUT /upload/NAME`` (and ``POST``) into the file store.

In memory (``StringTransport``, ``task.Clock``): the head's checks and what
each refusal says, before a byte of the body is read; the body streaming into
the upload (never into Twisted's spool), a held read while a password is
checked, the stall rule, digests, an interrupted body, and the file notice in
the uploader's room. Against a real process with real ``curl``: with a key,
without, a wrong key, over the limit (413 before the body), a wrong
``X-CRC32`` or digest, an interrupted upload (and one with ``X-CRC32`` resumed
with ``Content-Range``), an account's password, and the server's memory over a
200 MB PUT.

The real-process tests run ``python -m chat``'s own ``main`` with the
``site(...)`` wiring that ``chat/server.py`` is to get (``WIRING``);
``test_the_plain_server_*`` run the unpatched ``python -m chat``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import http as twisted_http
from twisted.web.http_headers import Headers

from chat import events as ev
from chat.http import site
from chat.httpchannel import LINGER_BYTES, LINGER_SECONDS, FileSite
from chat.transfer import HIGH_WATER
from chat.uploadanswers import status_of
from chat.uploadheaders import (
    BadRequest,
    Basic,
    Bearer,
    credentials,
    declared_crc,
    declared_range,
    declared_sha256,
    upload_line,
    wants_json,
)
from tests.support import (
    DEADLINE,
    RELAXED_TOML,
    LineClient,
    MemoryServer,
    RealServer,
    kill_quietly,
    memory_server,
    readable,
    relaxed_config,
)

#: A download that is not there: a 404 with a Content-Length (a page would be chunked).
MISSING = f"/files/{'0' * 32}/x.txt"
BODY = bytes(range(256)) * 1000  # 256000 bytes: several reads, and not all one byte


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def crc_hex(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "name"),
    [
        (b"PUT /upload/report.pdf HTTP/1.1", "report.pdf"),
        (b"POST /upload/a%20b.txt?x=1 HTTP/1.1", "a%20b.txt"),
        (b"PUT /%75pload/x HTTP/1.0", "x"),  # Twisted decodes the segment too
        (b"PUT /upload/ HTTP/1.1", ""),
        (b"PUT /upload HTTP/1.1", ""),
        (b"PUT /upload/a/b HTTP/1.1", "a/b"),  # refused later: "/" is no name
        (b"GET /upload/x HTTP/1.1", None),
        (b"put /upload/x HTTP/1.1", None),  # methods are case-sensitive
        (b"PUT /uploads/x HTTP/1.1", None),
        (b"PUT //upload/x HTTP/1.1", None),
        (b"PUT http://h/upload/x HTTP/1.1", None),
        (b"PUT /files/x/y HTTP/1.1", None),
    ],
)
def test_which_request_lines_are_uploads(line: bytes, name: str | None) -> None:
    found = upload_line(line)
    assert (found.name if found else None) == name


def headers(**fields: str) -> Headers:
    h = Headers()
    for key, value in fields.items():
        h.addRawHeader(key.replace("_", "-").encode(), value.encode())
    return h


def test_x_crc32_is_exactly_8_hex_digits() -> None:
    assert declared_crc(headers()) is None
    assert declared_crc(headers(X_CRC32="DEADbeef")) == 0xDEADBEEF
    for bad in ("1234567", "123456789", "0x123456", "1234 678", "\uff11" * 8):
        with pytest.raises(BadRequest):
            declared_crc(headers(X_CRC32=bad))


def test_digests_rfc_9530_and_the_older_digest_header() -> None:
    raw = hashlib.sha256(b"x").digest()
    b64 = base64.b64encode(raw).decode()
    assert declared_sha256(headers()) is None
    assert declared_sha256(headers(Repr_Digest=f"sha-256=:{b64}:")) == raw
    assert declared_sha256(headers(Content_Digest=f"sha-512=:AAAA:, sha-256=:{b64}:")) == raw
    assert declared_sha256(headers(Repr_Digest=f"sha-256=:{b64}:;x=1")) == raw
    assert declared_sha256(headers(Digest=f"SHA-256={b64}")) == raw
    assert declared_sha256(headers(Digest=f"md5=abc, sha-256={b64}")) == raw
    assert declared_sha256(headers(Repr_Digest="sha-512=:AAAA:")) is None  # others ignored
    assert declared_sha256(headers(Repr_Digest=f"sha-256=:{b64}:", Digest=f"sha-256={b64}")) == raw
    other = base64.b64encode(hashlib.sha256(b"y").digest()).decode()
    for bad in (
        {"Repr_Digest": f"sha-256={b64}"},  # not a byte sequence
        {"Repr_Digest": "sha-256=:not base64!:"},
        {"Repr_Digest": "sha-256=:AAAA:"},  # 3 bytes
        {"Digest": "sha-256=%%%"},
        {"Repr_Digest": f"sha-256=:{b64}:", "Digest": f"sha-256={other}"},  # disagree
    ):
        with pytest.raises(BadRequest):
            declared_sha256(headers(**bad))


def test_content_range_names_exactly_the_body() -> None:
    assert declared_range(headers(), 10) is None
    assert declared_range(headers(Content_Range="bytes 5-14/20"), 10) == (5, 20)
    assert declared_range(headers(Content_Range="bytes 0-9/10"), 10) == (0, 10)
    for bad, length in (
        ("bytes 5-14/20", 9),  # not the body's length
        ("bytes 5-20/20", 16),  # past the end
        ("bytes 9-5/20", 1),
        ("bytes */20", 0),
        ("bytes 5-14", 10),
        ("items 5-14/20", 10),
        ("bytes +5-14/20", 10),
    ):
        with pytest.raises(BadRequest):
            declared_range(headers(Content_Range=bad), length)


def test_credentials() -> None:
    def basic(raw: bytes) -> list[bytes]:
        return [b"Basic " + base64.b64encode(raw)]

    assert credentials(None) is None
    assert credentials([b"Bearer abc"]) == Bearer("abc")
    assert credentials([b"bearer   abc "]) == Bearer("abc")
    assert credentials(basic(b"carol:pass:word")) == Basic("carol", "pass:word")
    assert credentials(basic(b"carol:\xff")) == Basic("carol", "\ufffd")
    for bad in ([b"Bearer"], [b"Basic !!!"], basic(b"nocolon"), basic(b":pw"),
                [b"Digest x"], [b"Bearer a", b"Bearer b"]):
        assert credentials(bad) is None


def test_accept_json() -> None:
    assert not wants_json(None)
    assert not wants_json([b"*/*"])
    assert wants_json([b"application/json"])
    assert wants_json([b"text/html, Application/JSON;q=0.5"])
    assert not wants_json([b"application/json;q=0"])


def test_statuses() -> None:
    def refused(reason: str) -> ev.Error:
        return ev.error("refused", "send", reason=reason, size=1)

    assert status_of(refused("name_dots"))[0] == 400
    assert status_of(refused("quota"))[0] == 403
    assert status_of(refused("daily_quota"))[0] == 403
    assert status_of(refused("reservation"))[0] == 429
    assert status_of(refused("disk"))[0] == 507
    assert status_of(ev.error("too_large", limit=1))[0] == 413
    assert status_of(ev.error("crc_mismatch"))[0] == 422
    assert status_of(ev.error("not_in_room"))[0] == 409
    assert status_of(ev.error("upload_stalled"))[0] == 408
    assert status_of(ev.error("store_failed"))[0] == 500


# --- in memory -----------------------------------------------------------------------------


class Peer:
    """One client connection to the site, in memory."""

    def __init__(self, file_site: FileSite, host: str = "192.0.2.1", port: int = 40000) -> None:
        address = IPv4Address("TCP", host, port)
        proto = file_site.buildProtocol(address)
        assert proto is not None
        self.proto: Any = proto
        self.transport = StringTransport(peerAddress=address)
        self.proto.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    @property
    def closing(self) -> bool:
        """Closed, or answered and only dropping what still comes before closing."""
        return bool(self.transport.disconnecting) or self.proto.lingering

    @property
    def paused(self) -> bool:
        return self.transport.producerState == "paused"

    def lost(self) -> None:
        self.proto.connectionLost(Failure(ConnectionDone()))


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str:
        (value,) = self.headers[name]
        return value

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        assert self.header("content-type") == "application/json"
        return json.loads(self.body)


def responses(data: bytes) -> list[Response]:
    """Every response in ``data`` (interim ones too), by Content-Length or chunks."""
    out = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, head
        lines = head.decode("latin-1").split("\r\n")
        fields: dict[str, list[str]] = {}
        for line in lines[1:]:
            key, value = line.split(": ", 1)
            fields.setdefault(key.lower(), []).append(value)
        body = b""
        if fields.get("transfer-encoding") == ["chunked"]:
            while True:
                size, _, data = data.partition(b"\r\n")
                n = int(size, 16)
                body, data = body + data[:n], data[n + 2 :]
                if n == 0:
                    break
        else:
            length = int(fields.get("content-length", ["0"])[0])
            body, data = data[:length], data[length:]
        out.append(Response(int(lines[0].split(" ")[1]), fields, body))
    return out


def response(data: bytes) -> Response:
    (only,) = responses(data)
    return only


def request_head(
    target: str = "/upload/report.pdf", size: int | None = None, method: str = "PUT",
    fields: dict[str, str] | None = None,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: chat.example"]
    if size is not None:
        lines.append(f"Content-Length: {size}")
    lines += [f"{k}: {v}" for k, v in (fields or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Stack:
    """The chat in memory and the HTTP site over it, with the server's wiring."""

    def __init__(self, tmp_path: Path, accounts: Any = None, **limits: Any) -> None:
        config = relaxed_config()
        config.limits.exempt_addresses = []
        for key, value in limits.items():
            assert hasattr(config.limits, key), key
            setattr(config.limits, key, value)
        self.server: MemoryServer = memory_server(tmp_path, config)
        factory = self.server.factory
        self.site = site(
            factory.files, self.server.clock, config.limits,
            accounts=accounts or factory.accounts, throttle=factory.door.throttle,
        )
        self.data = tmp_path
        self._bytes_in = 0

    @property
    def clock(self) -> Any:
        return self.server.clock

    def peer(self, host: str = "192.0.2.1") -> Peer:
        self._bytes_in = self.server.service.stats.bytes_in
        return Peer(self.site, host)

    def key(self, name: str) -> str:
        user = self.server.service.registry.get(name)
        assert user is not None
        return user.session

    def stored(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (self.data / "files").iterdir()}

    def temporary(self) -> list[str]:
        return [p.name for p in (self.data / "tmp").iterdir()]

    @property
    def bytes_in(self) -> int:
        """Bytes in (as the console counts them) since the last peer connected."""
        return self.server.service.stats.bytes_in - self._bytes_in

    def put(
        self, data: bytes, key: str | None, target: str = "/upload/report.pdf",
        fields: dict[str, str] | None = None, method: str = "PUT",
    ) -> tuple[Peer, Response]:
        peer = self.peer()
        more = dict(fields or {})
        if key is not None:
            more["Authorization"] = f"Bearer {key}"
        peer.send(request_head(target, len(data), method, more) + data)
        return peer, response(peer.take())


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    s.server.store.close()


@pytest.fixture
def no_spool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail on any temporary file made by ``twisted.web.http`` (it spools bodies to one)."""

    def spool(*args: Any, **kw: Any) -> Any:
        raise AssertionError("a request body was about to be spooled to disk")

    monkeypatch.setattr(twisted_http.tempfile, "TemporaryFile", spool)


def file_events(conn: Any) -> list[dict[str, Any]]:
    return [e for e in conn.events() if e["type"] == "file"]


def test_a_put_with_a_session_key_is_stored_announced_and_answered_201(
    stack: Stack, no_spool: None
) -> None:
    alice = stack.server.user("alice", "json")
    bob = stack.server.user("bob", "json")
    peer = stack.peer()
    head = request_head(size=len(BODY), fields={"Authorization": f"Bearer {stack.key('alice')}"})
    peer.send(head + BODY[:1000])
    assert peer.take() == b"" and stack.temporary()  # streaming into DATA/tmp
    for i in range(1000, len(BODY), 65536):
        peer.send(BODY[i : i + 65536])
    got = response(peer.take())
    assert got.status == 201
    (file_id,) = stack.stored()
    assert stack.stored()[file_id] == BODY and stack.temporary() == []
    url = f"http://127.0.0.1:8001/files/{file_id}/report.pdf"
    assert got.header("location") == url
    assert got.text == (
        f"Stored report.pdf: id {file_id}, 256000 bytes, CRC-32 {crc_hex(BODY)}.\n{url}\n"
    )
    assert stack.bytes_in == len(BODY)  # counted as the chat port's are
    # Everyone in the room hears it, the uploader's own chat connection too.
    for conn in (alice, bob):
        (event,) = file_events(conn)
        assert (event["sender"], event["room"], event["file_id"]) == ("alice", "#lobby", file_id)
        assert event["sha256"] == hashlib.sha256(BODY).hexdigest()
    # Kept alive, with its idle timer back; the next request is answered.
    assert not peer.closing and peer.proto.timeOut == 30
    peer.send(f"GET {MISSING} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert response(peer.take()).status == 404


def test_json_is_answered_with_the_uploaded_event(stack: Stack) -> None:
    stack.server.user("alice", "json")
    _, got = stack.put(b"abc", stack.key("alice"), fields={"Accept": "application/json"})
    assert got.status == 201
    event = got.json()
    assert event["type"] == "uploaded"
    assert (event["file"]["name"], event["file"]["size"], event["file"]["crc32"]) == (
        "report.pdf", 3, crc_hex(b"abc"),
    )
    assert got.header("location") == event["file"]["url"]


def test_post_of_a_raw_body_and_an_empty_file(stack: Stack) -> None:
    stack.server.user("alice", "json")
    form = {"Content-Type": "application/x-www-form-urlencoded"}  # curl --data-binary's
    _, got = stack.put(b"a=1&b=2", stack.key("alice"), "/upload/form.txt", form, "POST")
    assert got.status == 201
    _, got = stack.put(b"", stack.key("alice"), "/upload/empty.txt")
    assert got.status == 201 and "0 bytes" in got.text
    assert sorted(stack.stored().values()) == [b"", b"a=1&b=2"]


def test_odd_names_are_percent_decoded(stack: Stack) -> None:
    stack.server.user("alice", "json")
    _, got = stack.put(b"x", stack.key("alice"), "/upload/na%C3%AFve%20r%C3%A9sum%C3%A9.txt")
    assert got.status == 201 and got.text.startswith("Stored naïve résumé.txt: id ")
    assert got.header("location").endswith("/na%C3%AFve%20r%C3%A9sum%C3%A9.txt")


def test_the_file_goes_to_the_uploaders_current_room(stack: Stack) -> None:
    alice = stack.server.user("alice", "json")
    bob = stack.server.user("bob", "json")
    alice.line("/join #dev")
    alice.take()
    _, got = stack.put(b"x", stack.key("alice"))
    assert got.status == 201
    (event,) = file_events(alice)
    assert event["room"] == "#dev"
    assert file_events(bob) == []


def test_without_credentials_401_names_both_ways(stack: Stack) -> None:
    peer, got = stack.put(BODY, None)
    assert got.status == 401 and peer.closing
    assert got.headers["www-authenticate"] == [
        'Bearer realm="lanchat"', 'Basic realm="lanchat", charset="UTF-8"',
    ]
    assert got.header("connection") == "close"
    assert "Authorization: Bearer KEY" in got.text
    assert stack.bytes_in == 0 and stack.temporary() == []


def test_a_refused_body_is_dropped_a_moment_so_the_answer_is_read(stack: Stack) -> None:
    peer = stack.peer()
    peer.send(request_head(size=len(BODY)) + BODY[:1000])
    assert response(peer.take()).status == 401
    # Still reading, to drop: closing on unread bytes would reset the connection
    # under a client that is still sending, and it would never see the 401.
    assert peer.proto.lingering and not peer.transport.disconnecting and not peer.paused
    peer.send(BODY[1000:])
    assert peer.take() == b"" and stack.bytes_in == 0 and stack.temporary() == []
    stack.clock.advance(LINGER_SECONDS)
    assert peer.transport.disconnecting and not peer.proto.lingering
    # A client that keeps sending is cut at the byte cap.
    peer = stack.peer()
    peer.send(request_head(size=10**8))
    peer.send(b"\0" * LINGER_BYTES)
    assert not peer.transport.disconnecting
    peer.send(b"\0")
    assert peer.transport.disconnecting


def test_a_wrong_key_is_401_invalid_token(stack: Stack) -> None:
    stack.server.user("alice", "json")
    peer, got = stack.put(BODY, "0" * 32, fields={"Accept": "application/json"})
    assert got.status == 401 and peer.closing
    assert got.headers["www-authenticate"][0] == 'Bearer realm="lanchat", error="invalid_token"'
    assert got.json()["code"] == "bad_session"
    assert stack.stored() == {} and stack.bytes_in == 0


def test_no_content_length_is_411_and_nothing_is_read(stack: Stack) -> None:
    stack.server.user("alice", "json")
    auth = {"Authorization": f"Bearer {stack.key('alice')}"}
    for fields in (auth, {**auth, "Transfer-Encoding": "chunked"}):
        peer = stack.peer()
        peer.send(request_head(size=None, fields=fields) + b"5\r\nhello\r\n0\r\n\r\n")
        got = response(peer.take())
        assert got.status == 411 and peer.closing
        assert "Content-Length" in got.text
    assert stack.bytes_in == 0 and stack.stored() == {}


def test_over_the_limit_is_413_before_the_body_and_without_a_100(tmp_path: Path) -> None:
    stack = Stack(tmp_path, max_upload_bytes=1000)
    stack.server.user("alice", "json")
    peer = stack.peer()
    fields = {"Authorization": f"Bearer {stack.key('alice')}", "Expect": "100-continue"}
    peer.send(request_head(size=1001, fields=fields) + b"x" * 500)
    got = response(peer.take())  # only the final answer: no "100 Continue"
    assert got.status == 413 and peer.closing
    assert got.text == "The file is too large: the limit is 1000 bytes (1000 B).\n"
    peer.send(b"x" * 501)  # the rest, if it came, is never read
    request = peer.proto.requests[0]
    assert request.content.dropped == 0  # nothing fell through to Twisted's content
    assert stack.bytes_in == 0 and stack.temporary() == [] and stack.stored() == {}


def test_a_content_length_of_thousands_of_digits_is_413(stack: Stack) -> None:
    # int() refuses over 4300 digits: Twisted's parser would raise out of dataReceived.
    for target, words in (("/upload/x", "the limit is 1073741824 bytes"),
                          (MISSING, "takes no request body")):
        peer = stack.peer()
        peer.send(f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {'9' * 5000}\r\n\r\n"
                  .encode())
        got = response(peer.take())
        assert got.status == 413 and words in got.text and peer.closing


def test_expect_100_continue_is_invited_only_once_accepted(stack: Stack) -> None:
    stack.server.user("alice", "json")
    peer = stack.peer()
    fields = {"Authorization": f"Bearer {stack.key('alice')}", "Expect": "100-continue"}
    peer.send(request_head(size=3, fields=fields))
    assert peer.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    peer.send(b"abc")
    assert response(peer.take()).status == 201
    # Refused: the final answer straight away, no 100 first.
    peer = stack.peer()
    peer.send(request_head(size=3, fields={"Expect": "100-continue"}))
    assert response(peer.take()).status == 401


@pytest.mark.parametrize(
    ("target", "fields", "status", "words"),
    [
        ("/upload/", {}, 400, "Name the file in the path"),
        ("/upload/..", {}, 400, "'..' is not a file name."),
        ("/upload/a%2Fb", {}, 400, "A file name cannot hold '/'"),
        ("/upload/x", {"X-CRC32": "xyz"}, 400, "X-CRC32 must be exactly 8 hex digits."),
        ("/upload/x", {"Repr-Digest": "sha-256=:AAAA:"}, 400, "sha-256 must be 32 bytes"),
        ("/upload/x", {"Content-Encoding": "gzip"}, 415, "no Content-Encoding"),
    ],
)
def test_bad_requests_are_refused_before_the_body(
    stack: Stack, target: str, fields: dict[str, str], status: int, words: str
) -> None:
    stack.server.user("alice", "json")
    peer, got = stack.put(BODY, stack.key("alice"), target, fields)
    assert got.status == status and peer.closing
    assert words in got.text, got.text
    assert stack.bytes_in == 0 and stack.temporary() == []


def test_refusals_by_quota_disk_and_room(tmp_path: Path) -> None:
    stack = Stack(tmp_path, user_quota_bytes=10)
    alice = stack.server.user("alice", "json")
    _, got = stack.put(b"x" * 11, stack.key("alice"))
    assert got.status == 403 and got.text.startswith("Your upload quota of 10 B would be")
    assert got.text.endswith("Nothing was read or stored.\n")
    stack.server.factory.files.store.disk_margin = 1 << 60
    _, got = stack.put(b"x", stack.key("alice"))
    assert got.status == 507 and "Not enough disk space" in got.text
    stack.server.factory.files.store.disk_margin = 0
    alice.line("/part #lobby")
    _, got = stack.put(b"x", stack.key("alice"), fields={"Accept": "application/json"})
    assert got.status == 409 and got.json()["code"] == "not_in_room"
    assert stack.stored() == {} and stack.temporary() == []


def test_a_wrong_crc_is_422_and_nothing_is_stored_or_announced(stack: Stack) -> None:
    alice = stack.server.user("alice", "json")
    peer, got = stack.put(BODY, stack.key("alice"), fields={"X-CRC32": "00000000"})
    assert got.status == 422
    assert got.text == (
        f"CRC-32 mismatch: you declared 00000000, the bytes have {crc_hex(BODY)}. "
        "Nothing was stored.\n"
    )
    assert stack.stored() == {} and stack.temporary() == [] and file_events(alice) == []
    assert not peer.closing  # the whole body was read: the connection can go on
    _, got = stack.put(BODY, stack.key("alice"), fields={"X-CRC32": crc_hex(BODY).upper()})
    assert got.status == 201


@pytest.mark.parametrize(
    "fields",
    [
        {"Repr-Digest": f"sha-256=:{sha256_b64(BODY)}:"},
        {"Content-Digest": f"sha-256=:{sha256_b64(BODY)}:"},
        {"Digest": f"SHA-256={sha256_b64(BODY)}"},
    ],
)
def test_a_right_digest_is_stored(stack: Stack, fields: dict[str, str]) -> None:
    stack.server.user("alice", "json")
    _, got = stack.put(BODY, stack.key("alice"), fields=fields)
    assert got.status == 201 and list(stack.stored().values()) == [BODY]


def test_a_wrong_digest_is_422_and_nothing_is_stored_or_announced(stack: Stack) -> None:
    alice = stack.server.user("alice", "json")
    fields = {"Repr-Digest": f"sha-256=:{sha256_b64(b'other')}:", "Accept": "application/json"}
    _, got = stack.put(BODY, stack.key("alice"), fields=fields)
    assert got.status == 422
    error = got.json()
    assert error["code"] == "digest_mismatch"
    want, have = hashlib.sha256(b"other").hexdigest(), hashlib.sha256(BODY).hexdigest()
    assert error["text"] == (
        f"SHA-256 mismatch: you declared {want}, the bytes have {have}. Nothing was stored."
    )
    assert stack.stored() == {} and stack.temporary() == [] and file_events(alice) == []
    assert stack.server.factory.files.store.uploads == set()


def test_an_interrupted_upload_stores_and_announces_nothing(stack: Stack) -> None:
    alice = stack.server.user("alice", "json")
    peer = stack.peer()
    head = request_head(size=len(BODY), fields={"Authorization": f"Bearer {stack.key('alice')}"})
    peer.send(head + BODY[:100_000])
    assert len(stack.temporary()) == 1
    peer.lost()
    assert stack.temporary() == [] and stack.stored() == {} and file_events(alice) == []
    assert stack.server.factory.files.store.uploads == set()


def partials(stack: Stack) -> list[str]:
    return sorted(p.suffix for p in (stack.data / "partial").iterdir())


def test_an_interrupted_upload_with_a_crc_is_kept_and_continued_by_content_range(
    stack: Stack,
) -> None:
    alice = stack.server.user("alice", "json")
    auth = {"Authorization": f"Bearer {stack.key('alice')}", "X-CRC32": crc_hex(BODY)}
    peer = stack.peer()
    peer.send(request_head(size=len(BODY), fields=auth) + BODY[:100_000])
    peer.lost()
    assert partials(stack) == [".json", ".part"] and stack.stored() == {}
    assert file_events(alice) == []
    rest = BODY[100_000:]
    # A wrong offset: 409, the right one in Upload-Offset and the JSON body; nothing read.
    wrong = {**auth, "Accept": "application/json",
             "Content-Range": f"bytes 99000-{len(BODY) - 1}/{len(BODY)}"}
    _, got = stack.put(BODY[99_000:], None, fields=wrong)
    assert got.status == 409 and got.header("upload-offset") == "100000"
    error = got.json()
    assert (error["code"], error["offset"]) == ("bad_offset", 100_000)
    assert f"Content-Range: bytes 100000-{len(BODY) - 1}/{len(BODY)}" in error["text"]
    assert partials(stack) == [".json", ".part"]
    # Without the CRC it started with, a Content-Range cannot be matched to it.
    no_crc = {"Authorization": auth["Authorization"],
              "Content-Range": f"bytes 100000-{len(BODY) - 1}/{len(BODY)}"}
    _, got = stack.put(rest, None, fields=no_crc)
    assert got.status == 400 and "X-CRC32" in got.text
    right = {**auth, "Content-Range": f"bytes 100000-{len(BODY) - 1}/{len(BODY)}"}
    _, got = stack.put(rest, None, fields=right)
    assert got.status == 201, got
    assert list(stack.stored().values()) == [BODY]
    assert partials(stack) == [] and len(file_events(alice)) == 1


def test_a_stalled_upload_is_408_and_discarded(tmp_path: Path) -> None:
    stack = Stack(tmp_path, upload_stall_timeout=60.0, upload_min_rate=0)
    alice = stack.server.user("alice", "json")
    peer = stack.peer()
    head = request_head(size=len(BODY), fields={"Authorization": f"Bearer {stack.key('alice')}"})
    peer.send(head + BODY[:1000])
    stack.clock.advance(59)
    peer.send(BODY[1000:2000])  # a byte resets the timer
    stack.clock.advance(59)
    assert peer.take() == b"" and not peer.closing
    stack.clock.advance(1)
    got = response(peer.take())
    assert got.status == 408 and peer.closing
    assert got.text == (
        "No upload data for 60 seconds (254000 bytes missing); the upload is discarded.\n"
    )
    assert stack.temporary() == [] and stack.stored() == {} and file_events(alice) == []


def test_a_too_slow_upload_is_408_and_discarded(tmp_path: Path) -> None:
    stack = Stack(tmp_path, upload_min_rate=1000, upload_rate_window=20.0)
    stack.server.user("alice", "json")
    peer = stack.peer()
    head = request_head(size=len(BODY), fields={"Authorization": f"Bearer {stack.key('alice')}"})
    peer.send(head)
    sent = 0
    while not peer.closing and sent < len(BODY):
        peer.send(BODY[sent : sent + 500])  # 500 bytes a second: half the minimum
        sent += 500
        stack.clock.advance(1)
    got = response(peer.take())
    assert got.status == 408 and "The upload is too slow" in got.text
    assert sent <= 30 * 500
    assert stack.temporary() == [] and stack.stored() == {}


def test_the_idle_timer_does_not_cut_a_slow_but_live_body(tmp_path: Path) -> None:
    stack = Stack(tmp_path, http_idle_timeout=5.0, upload_min_rate=0)
    stack.server.user("alice", "json")
    peer = stack.peer()
    head = request_head(size=3, fields={"Authorization": f"Bearer {stack.key('alice')}"})
    peer.send(head + b"a")
    stack.clock.advance(30)  # six idle timeouts, half the stall timeout
    assert not peer.closing
    peer.send(b"bc")
    assert response(peer.take()).status == 201
    assert peer.proto.timeOut == 5.0  # back for the wait before the next request
    stack.clock.advance(5)
    assert peer.closing


class ManualDisk:
    """The upload pool, run when the test says: each job on a thread of its own (as
    the real pool would; nothing lowers the test thread's priority), results
    handed back to the test's thread as ``callFromThread`` would."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, tuple[Any, ...]]] = []
        self.calls: list[tuple[Any, tuple[Any, ...]]] = []

    def callInThread(self, fn: Any, *args: Any) -> None:
        self.jobs.append((fn, args))

    def call_from_thread(self, fn: Any, *args: Any) -> None:
        self.calls.append((fn, args))

    def catch_up(self) -> None:
        while self.jobs or self.calls:
            jobs, self.jobs = self.jobs, []
            for fn, args in jobs:
                worker = threading.Thread(target=fn, args=args)
                worker.start()
                worker.join()
            calls, self.calls = self.calls, []
            for fn, args in calls:
                fn(*args)


def test_a_full_disk_queue_pauses_reading_until_it_drains(stack: Stack) -> None:
    disk = ManualDisk()
    store = stack.server.factory.files.store
    store.pool, store.call_from_thread = disk, disk.call_from_thread  # type: ignore[assignment]
    stack.server.user("alice", "json")
    data = BODY * 40  # 10 MB
    peer = stack.peer()
    auth = {"Authorization": f"Bearer {stack.key('alice')}"}
    peer.send(request_head(size=len(data), fields=auth))
    sent = pauses = drained = 0
    while sent < len(data):
        if peer.paused:
            # Paused as soon as the upload's queue passed its high-water mark:
            # at most that much (and one read) is held in memory.
            assert HIGH_WATER < stack.bytes_in - drained <= HIGH_WATER + 65536
            pauses += 1
            disk.catch_up()
            drained = stack.bytes_in
            assert not peer.paused
            continue
        peer.send(data[sent : sent + 65536])
        sent += 65536
    disk.catch_up()
    assert pauses == 2
    assert response(peer.take()).status == 201
    assert list(stack.stored().values()) == [data]


def test_holding_reading_survives_twisteds_write_side_resume(stack: Stack) -> None:
    peer = stack.peer()
    channel = peer.proto
    channel.hold_body("disk")
    assert peer.paused
    channel.pauseProducing()  # the peer is not reading our writes...
    channel.resumeProducing()  # ...and now it is: Twisted would read again
    assert peer.paused
    channel.hold_body("auth")
    channel.release_body("disk")
    assert peer.paused
    channel.release_body("auth")
    assert not peer.paused
    channel.release_body("auth")  # twice is harmless
    assert not peer.paused


def test_other_paths_still_take_no_body_and_get_is_405(stack: Stack) -> None:
    stack.server.user("alice", "json")
    peer, got = stack.put(b"abc", stack.key("alice"), f"/files/{'0' * 32}/x")
    assert got.status == 413 and got.text == "This server takes no request body.\n"
    peer = stack.peer()
    peer.send(b"GET /upload/x HTTP/1.1\r\nHost: x\r\n\r\n")
    got = response(peer.take())
    assert got.status == 405 and got.header("allow") == "PUT, POST"
    peer.send(b"GET /upload/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert response(peer.take()).status == 413


def test_a_pipelined_request_after_an_upload_is_answered(stack: Stack) -> None:
    stack.server.user("alice", "json")
    peer = stack.peer()
    fields = {"Authorization": f"Bearer {stack.key('alice')}"}
    peer.send(request_head(size=3, fields=fields) + b"abc" + request_head(MISSING, 0, "GET"))
    first, second = responses(peer.take())
    assert (first.status, second.status) == (201, 404)


# --- accounts (HTTP Basic) --------------------------------------------------------------


def basic(name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


def make_account(stack: Stack, name: str, password: str) -> None:
    d = stack.server.factory.accounts.create(name, password)
    assert d.called


def test_an_account_not_connected_shares_into_the_default_room(stack: Stack) -> None:
    make_account(stack, "carol", "correct horse")
    bob = stack.server.user("bob", "json")
    _, got = stack.put(b"hello", None, fields=basic("carol", "correct horse"))
    assert got.status == 201
    (event,) = file_events(bob)
    assert (event["sender"], event["room"]) == ("carol", "#lobby")
    assert stack.server.factory.files.store.quotas.today("account:carol") == 5


def test_a_connected_account_uploads_as_itself(stack: Stack) -> None:
    make_account(stack, "carol", "correct horse")
    carol = stack.server.connect()
    carol.line("/proto json")
    carol.line("/login carol correct horse")
    carol.line("/join #dev")
    carol.take()
    _, got = stack.put(b"hello", None, fields=basic("carol", "correct horse"))
    assert got.status == 201
    (event,) = file_events(carol)
    assert (event["sender"], event["room"]) == ("carol", "#dev")


def test_wrong_passwords_are_401_later_and_later_then_429(stack: Stack) -> None:
    make_account(stack, "carol", "correct horse")
    for attempt in range(5):
        peer = stack.peer()
        peer.send(request_head(size=3, fields=basic("carol", "wrong")) + b"abc")
        if attempt > 1:  # answered later the more failures there were (as at the chat's door)
            assert peer.take() == b"" and peer.paused
            stack.clock.advance(attempt - 1)
        got = response(peer.take())
        assert got.status == 401 and got.text == "Wrong password.\n"
        assert len(got.headers["www-authenticate"]) == 2
    peer, got = stack.put(b"abc", None, fields=basic("carol", "correct horse"))
    wait = int(got.header("retry-after"))  # the lockout (300 s) since the fifth failure
    assert got.status == 429 and 290 < wait <= 300
    assert f"try again in {wait} seconds" in got.text
    assert stack.stored() == {}


class SlowAccounts:
    """Accounts whose password check answers when the test says."""

    def __init__(self) -> None:
        self.checks: list[defer.Deferred[bool]] = []

    def verify(self, name: str, password: str) -> defer.Deferred[bool]:
        d: defer.Deferred[bool] = defer.Deferred()
        self.checks.append(d)
        return d

    def banned(self, name: str | None = None, host: str | None = None) -> None:
        return None


def test_reading_is_held_while_a_password_is_checked(tmp_path: Path) -> None:
    accounts = SlowAccounts()
    stack = Stack(tmp_path, accounts=accounts)
    peer = stack.peer()
    peer.send(request_head(size=len(BODY), fields=basic("carol", "pw")) + BODY[:5000])
    assert peer.paused and peer.take() == b"" and stack.temporary() == []
    accounts.checks[0].callback(True)
    assert not peer.paused and len(stack.temporary()) == 1  # the 5000 bytes went in
    peer.send(BODY[5000:])
    assert response(peer.take()).status == 201
    assert list(stack.stored().values()) == [BODY]
    # A wrong password: the 401, and reading resumes (to drop the rest).
    peer = stack.peer()
    peer.send(request_head(size=10, fields=basic("carol", "pw")) + b"01234")
    accounts.checks[1].callback(False)
    assert response(peer.take()).status == 401 and not peer.paused
    # Gone while the check runs: nothing is stored, and the late answer is harmless.
    peer = stack.peer()
    peer.send(request_head(size=10, fields=basic("carol", "pw")) + b"01234")
    peer.lost()
    accounts.checks[2].callback(True)
    assert stack.temporary() == [] and len(stack.stored()) == 1


def test_a_banned_address_is_403(stack: Stack) -> None:
    stack.server.user("alice", "json")
    stack.server.factory.accounts.ban("address", "192.0.2.1", None, "spam", "op")
    _, got = stack.put(b"x", stack.key("alice"))
    assert got.status == 403 and "banned" in got.text


# --- a real process, real curl ------------------------------------------------------------

#: How chat/server.py is to call ``site``; these tests patch it in until it does.
WIRING = """
import sys

import chat.server as server
from chat import http

built = []
_build_factory = server.build_factory


def build_factory(*args, **kw):
    built.append(_build_factory(*args, **kw))
    return built[-1]


def site(files, clock, limits, **wired):
    factory = built[-1]
    wired.setdefault("accounts", factory.accounts)
    wired.setdefault("throttle", factory.door.throttle)
    return http.site(files, clock, limits, **wired)


server.build_factory = build_factory
server.site = site
from chat.cli import main

sys.exit(main(sys.argv[1:]))
"""


class WiredServer(RealServer):
    """``python -m chat``'s ``main`` with ``WIRING``, on ephemeral loopback ports."""

    def __init__(self, data_dir: Path, limits: str = "") -> None:
        self.data_dir = data_dir
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        toml = data_dir.parent / f"{data_dir.name}.toml"
        toml.write_text(RELAXED_TOML + limits)
        args = [
            sys.executable, "-c", WIRING, "--no-console",
            "--listen", "tcp:0:interface=127.0.0.1", "--http", "tcp:0:interface=127.0.0.1",
            "--data-dir", str(data_dir), "--config", str(toml),
        ]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.log: list[str] = []
        self._partial = b""
        self.ports: dict[str, int] = {}
        self.wait_log(lambda: {"chat", "http"} <= set(self.ports), what="listening lines")


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WiredServer]:
    server = WiredServer(tmp_path_factory.mktemp("upload") / "data")
    try:
        yield server
    finally:
        kill_quietly(server)


def join(server: RealServer, name: str) -> tuple[LineClient, str]:
    """A JSON chat client and its session key."""
    c = LineClient(server.port)
    c.send_line("/proto json")
    c.send_line(name)
    welcome = json.loads(c.expect('"type":"welcome"'))
    return c, welcome["session"]


@dataclass
class Curled:
    status: int
    body: str
    #: Request body bytes curl managed to send.
    sent: int
    stderr: bytes


def curl(*args: str, timeout: float = 120) -> Curled:
    """``curl -sS ARGS``: the status, the response body and what curl sent."""
    proc = subprocess.run(
        ["curl", "-sS", "-o", "-", "-w", "\n%{http_code} %{size_upload}", *args],
        capture_output=True, timeout=timeout,
    )
    body, _, tail = proc.stdout.decode("utf-8", "replace").rpartition("\n")
    status, sent = tail.split(" ")
    return Curled(int(status), body, int(sent), proc.stderr)


def upload_url(server: RealServer, name: str = "") -> str:
    return f"http://127.0.0.1:{server.http_port}/upload/{name}"


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def until_marker(c: LineClient, marker: str) -> list[dict[str, Any]]:
    """Say ``marker``; every event that reached ``c`` before it comes back."""
    c.send_line(marker)
    seen = []
    while True:
        event = json.loads(c.read_line())
        if event["type"] == "message" and event["text"] == marker:
            return seen
        seen.append(event)


def wait_for(condition: Any, what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` (a directory, say) until it holds, up to a deadline."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_curl_upload_with_a_key_reaches_the_room(wired: WiredServer, tmp_path: Path) -> None:
    alice, key = join(wired, "alice")
    bob, _ = join(wired, "bob")
    report = tmp_path / "report.pdf"
    data = os.urandom(3 * 1024 * 1024 + 7)
    report.write_bytes(data)
    got = curl("-T", str(report), "-H", f"Authorization: Bearer {key}", upload_url(wired))
    assert got.status == 201, got
    stored, url = got.body.splitlines()
    assert stored.startswith("Stored report.pdf: id ") and stored.endswith(
        f", 3145735 bytes, CRC-32 {crc_hex(data)}."
    )
    event = bob.expect_event("file", name="report.pdf")
    assert (event["sender"], event["room"], event["url"]) == ("alice", "#lobby", url)
    alice.expect_event("file", name="report.pdf")
    got = subprocess.run(["curl", "-sS", "--fail", "-o", "-", url], capture_output=True)
    assert got.stdout == data
    got = curl("-T", str(report), "-H", f"Authorization: Bearer {key}",
               "-H", "Accept: application/json", upload_url(wired, "again.pdf"))
    assert got.status == 201 and json.loads(got.body)["file"]["name"] == "again.pdf"
    alice.close()
    bob.close()


def test_curl_without_a_key_or_with_a_wrong_one_is_401(
    wired: WiredServer, tmp_path: Path
) -> None:
    f = tmp_path / "x.txt"
    f.write_bytes(b"x" * 5000)
    before = names(wired.data_dir / "files")
    got = curl("-v", "-T", str(f), upload_url(wired))
    assert got.status == 401 and "an upload needs a session key" in got.body
    assert b'WWW-Authenticate: Basic realm="lanchat"' in got.stderr
    got = curl("-T", str(f), "-H", "Authorization: Bearer nope", upload_url(wired))
    assert got.status == 401 and got.body == "Unknown or expired session key.\n"
    assert names(wired.data_dir / "files") == before


def test_curl_over_the_limit_is_413_before_the_body(wired: WiredServer, tmp_path: Path) -> None:
    _, key = join(wired, "dave")
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(2 * 1024**3)  # sparse: 2 GiB to send, over the 1 GiB limit
    before = names(wired.data_dir / "files")
    for extra in (["-H", "Expect:"], []):  # sent at once, or after waiting for a 100
        got = curl("-T", str(big), "-H", f"Authorization: Bearer {key}", *extra,
                   upload_url(wired), timeout=60)
        assert got.status == 413, got
        assert "the limit is 1073741824 bytes" in got.body
        # Only what the kernel's socket buffers took before the answer: never read.
        assert got.sent < 64 * 1024 * 1024, got.sent
        assert names(wired.data_dir / "tmp") == set()
    assert names(wired.data_dir / "files") == before
    wired.wait_for_log(r"HTTP 413 to 127\.0\.0\.1 \(too_large\): PUT /upload/big\.bin")


def test_curl_with_a_wrong_crc_stores_nothing(wired: WiredServer, tmp_path: Path) -> None:
    erin, key = join(wired, "erin")
    f = tmp_path / "notes.txt"
    f.write_bytes(b"notes " * 1000)
    before = names(wired.data_dir / "files")
    got = curl("-T", str(f), "-H", f"Authorization: Bearer {key}",
               "-H", "X-CRC32: 00000000", upload_url(wired))
    assert got.status == 422 and got.body.startswith("CRC-32 mismatch: you declared 00000000")
    assert names(wired.data_dir / "files") == before
    assert names(wired.data_dir / "tmp") == set()
    assert [e for e in until_marker(erin, "after the crc") if e["type"] == "file"] == []
    erin.close()


def test_curl_with_a_wrong_digest_stores_nothing_and_a_right_one_201(
    wired: WiredServer, tmp_path: Path
) -> None:
    """Checked by the upload's worker, where the SHA-256 is computed anyway."""
    gina, key = join(wired, "gina")
    f = tmp_path / "digest.bin"
    data = os.urandom(2 * 1024 * 1024 + 3)
    f.write_bytes(data)
    wrong, right = hashlib.sha256(b"other").hexdigest(), hashlib.sha256(data).hexdigest()
    before = names(wired.data_dir / "files")
    got = curl("-T", str(f), "-H", f"Authorization: Bearer {key}",
               "-H", f"Digest: sha-256={sha256_b64(b'other')}", upload_url(wired))
    assert got.status == 422, got
    assert got.body == (
        f"SHA-256 mismatch: you declared {wrong}, the bytes have {right}. Nothing was stored.\n"
    )
    assert names(wired.data_dir / "files") == before
    assert names(wired.data_dir / "tmp") == set()
    assert [e for e in until_marker(gina, "after the digest") if e["type"] == "file"] == []
    got = curl("-T", str(f), "-H", f"Authorization: Bearer {key}", "-H", "Accept: application/json",
               "-H", f"Repr-Digest: sha-256=:{sha256_b64(data)}:", upload_url(wired))
    assert got.status == 201, got
    stored = json.loads(got.body)["file"]
    assert stored["sha256"] == right
    assert (wired.data_dir / "files" / stored["file_id"]).read_bytes() == data
    gina.close()


def test_an_interrupted_upload_leaves_nothing(wired: WiredServer) -> None:
    frank, key = join(wired, "frank")
    before = names(wired.data_dir / "files")
    sock = socket.create_connection(("127.0.0.1", wired.http_port), timeout=DEADLINE)
    sock.sendall(
        f"PUT /upload/half.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Length: {10 * 1024 * 1024}\r\n\r\n".encode() + b"\0" * (1024 * 1024)
    )
    tmp = wired.data_dir / "tmp"
    wait_for(lambda: names(tmp) != set(), "the temporary file")
    sock.close()
    wait_for(lambda: names(tmp) == set(), "the temporary file to go")
    wired.wait_for_log(r"Upload half\.bin discarded \(connection lost\)")
    assert names(wired.data_dir / "files") == before
    assert [e for e in until_marker(frank, "after the cut") if e["type"] == "file"] == []
    frank.close()


def test_curl_interrupted_then_resumed_with_content_range(
    wired: WiredServer, tmp_path: Path
) -> None:
    hana, key = join(wired, "hana")
    f = tmp_path / "big.bin"
    data = os.urandom(8 * 1024 * 1024 + 11)
    f.write_bytes(data)
    size, crc = len(data), crc_hex(data)
    auth = ["-H", f"Authorization: Bearer {key}", "-H", f"X-CRC32: {crc}"]
    # Cut short: at 1 MB/s curl gives up after a second, a few MB short.
    cut = curl("-T", str(f), *auth, "--limit-rate", "1M", "-m", "1", upload_url(wired))
    assert cut.status in (0, 100) and 0 < cut.sent < size, cut  # no final answer
    wired.wait_for_log(r"Upload big\.bin kept to be resumed")
    assert names(wired.data_dir / "tmp") == set()
    # Where to go on from: a wrong guess says it (409, Upload-Offset).
    one = tmp_path / "one"
    one.write_bytes(data[-1:])
    last = f"Content-Range: bytes {size - 1}-{size - 1}/{size}"
    got = curl("-v", "-T", str(one), *auth, "-H", last, "-H", "Accept: application/json",
               upload_url(wired, "big.bin"))
    assert got.status == 409, got
    held = json.loads(got.body)["offset"]
    assert 0 < held <= cut.sent and f"Upload-Offset: {held}".encode() in got.stderr
    rest = tmp_path / "rest"
    rest.write_bytes(data[held:])
    got = curl("-T", str(rest), *auth, "-H", f"Content-Range: bytes {held}-{size - 1}/{size}",
               "-H", "Accept: application/json", upload_url(wired, "big.bin"))
    assert got.status == 201, got
    stored = json.loads(got.body)["file"]
    assert (stored["size"], stored["crc32"]) == (size, crc)
    assert (wired.data_dir / "files" / stored["file_id"]).read_bytes() == data
    assert hana.expect_event("file", name="big.bin")["size"] == size
    assert names(wired.data_dir / "partial") == set()
    hana.close()


def test_curl_with_an_accounts_password(wired: WiredServer, tmp_path: Path) -> None:
    carol, _ = join(wired, "carol")
    carol.send_line("/register correct horse")
    carol.expect("is an account now")
    carol.close()
    bob, _ = join(wired, "bobby")
    f = tmp_path / "minutes.txt"
    f.write_bytes(b"minutes")
    got = curl("-T", str(f), "-u", "carol:correct horse", upload_url(wired))
    assert got.status == 201, got
    event = bob.expect_event("file", name="minutes.txt")
    assert (event["sender"], event["room"]) == ("carol", "#lobby")
    got = curl("-T", str(f), "-u", "carol:wrong", upload_url(wired))
    assert got.status == 401 and got.body == "Wrong password.\n"
    bob.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_a_200_mb_put_keeps_the_servers_memory_flat(wired: WiredServer, tmp_path: Path) -> None:
    _, key = join(wired, "gina")
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(200 * 1000 * 1000)
    before = highest = rss_kib(wired.proc.pid)
    proc = subprocess.Popen(
        ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-T", str(big),
         "-H", f"Authorization: Bearer {key}", upload_url(wired)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    end = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < end:
        highest = max(highest, rss_kib(wired.proc.pid))
        readable(proc.stdout.fileno(), 0.005)  # type: ignore[union-attr]
    out, err = proc.communicate(timeout=DEADLINE)
    assert out.endswith(b"\n201"), (out, err)
    grown = (highest - before) / 1024
    print(f"RSS {before / 1024:.1f} MiB before, {highest / 1024:.1f} MiB at most: +{grown:.1f}")
    assert grown < 16, grown  # measured: +7 to +9 MiB (a 4 MiB queue, reads, the allocator)


# --- the server as chat/server.py builds it -------------------------------------------------


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    server = RealServer(tmp_path_factory.mktemp("plain") / "data")
    try:
        yield server
    finally:
        kill_quietly(server)


def test_the_plain_server_takes_an_upload_with_a_key(plain: RealServer, tmp_path: Path) -> None:
    alice, key = join(plain, "alice")
    f = tmp_path / "report.pdf"
    f.write_bytes(b"%PDF" * 1000)
    got = curl("-T", str(f), "-H", f"Authorization: Bearer {key}", upload_url(plain))
    assert got.status == 201, got
    alice.expect_event("file", name="report.pdf")
    alice.close()


def test_the_plain_server_takes_an_accounts_password(plain: RealServer, tmp_path: Path) -> None:
    """Fails until chat/server.py passes ``accounts`` and ``throttle`` to ``site``."""
    carol, _ = join(plain, "carol")
    carol.send_line("/register correct horse")
    carol.expect("is an account now")
    carol.close()
    f = tmp_path / "minutes.txt"
    f.write_bytes(b"minutes")
    got = curl("-T", str(f), "-u", "carol:correct horse", upload_url(plain))
    assert got.status == 201, f"{got}: is site() wired with accounts= and throttle=?"
