"""Hardening, second round, section 1: what one client can cost the HTTP file port.

In memory (``StringTransport`` and ``task.Clock``): a request body is refused
with 413 before it is read or stored, slow and oversized heads are cut, idle
connections close, and connections are capped per address and in all. Against
the real server: the same with ``curl`` and raw sockets, watching the server's
descriptors and the disk.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import http as twisted_http

from chat.http import site
from chat.httpchannel import BodylessRequest, Discard, FileChannel, FileSite
from tests.support import DEADLINE, RealServer, memory_server, readable, relaxed_config, running
from tests.test_transfer_integration import http_url, payload, sha, upload

MISSING = f"/files/{'0' * 32}/x.txt"


# --- in memory ----------------------------------------------------------------------


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

    def output(self) -> bytes:
        return self.transport.value()

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    def lost(self) -> None:
        """The transport has closed (a real one calls this once it has flushed)."""
        self.proto.connectionLost(Failure(ConnectionDone()))

    def request(self) -> BodylessRequest:
        (request,) = self.proto.requests
        assert isinstance(request, BodylessRequest)
        return request


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def headers_and_body(data: bytes) -> tuple[dict[bytes, bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    return {k.lower(): v for k, v in fields.items()}, body


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator[Any]:
    """``make_site(**limits)``: the real site over an in-memory chat stack and a clock."""
    servers: list[Any] = []

    def make(**limits: Any) -> tuple[FileSite, task.Clock]:
        config = relaxed_config()
        config.limits.exempt_addresses = []
        for key, value in limits.items():
            assert hasattr(config.limits, key), key
            setattr(config.limits, key, value)
        data = tmp_path / f"s{len(servers)}"
        data.mkdir()
        server = memory_server(data, config)
        servers.append(server)
        return site(server.factory.files, server.clock, config.limits), server.clock

    yield make
    for server in servers:
        server.store.close()


@pytest.fixture
def no_temp_files(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail on any temporary file made by ``twisted.web.http`` (it spools bodies to one)."""
    made: list[str] = []

    def spool(*args: Any, **kw: Any) -> Any:
        made.append("TemporaryFile")
        raise AssertionError("a request body was about to be spooled to disk")

    monkeypatch.setattr(twisted_http.tempfile, "TemporaryFile", spool)
    return made


def test_the_site_is_built_from_the_limits(make_site: Any) -> None:
    file_site, clock = make_site(http_max_headers=7, http_max_header_bytes=999)
    peer = Peer(file_site)
    assert isinstance(file_site, FileSite) and isinstance(peer.proto, FileChannel)
    assert file_site.requestFactory is BodylessRequest
    assert (peer.proto.maxHeaders, peer.proto.totalHeadersSize, peer.proto.MAX_LENGTH) == (
        7, 999, 999,
    )
    # Twisted's class attributes are untouched for every other HTTP server.
    assert (twisted_http.HTTPChannel.maxHeaders, twisted_http.HTTPChannel.totalHeadersSize) == (
        500, 16384,
    )
    assert file_site.reactor is clock and peer.proto.timeOut == 30.0


def test_a_plain_get_is_still_answered_and_kept_alive(make_site: Any) -> None:
    file_site, _ = make_site()
    peer = Peer(file_site)
    for _ in range(2):
        peer.send(f"GET {MISSING} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        assert status(peer.output()) == 404
        assert b"No such file." in peer.output()
        peer.transport.clear()
    assert not peer.closing


def test_a_declared_body_is_413_and_closes_without_reading_or_spooling(
    make_site: Any, no_temp_files: list[str]
) -> None:
    file_site, _ = make_site()
    peer = Peer(file_site)
    peer.send(b"GET /files/x/y HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
    out = peer.output()
    assert out.startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    fields, body = headers_and_body(out)
    assert fields[b"connection"] == b"close"
    assert fields[b"content-type"] == b"text/plain; charset=utf-8"
    assert body == b"This server takes no request body.\n"
    assert fields[b"content-length"] == str(len(body)).encode()
    assert peer.closing
    request = peer.request()
    assert isinstance(request.content, Discard) and request.refused
    # A body sent anyway, in the same segment or later, is dropped unread.
    for _ in range(64):
        peer.send(b"\0" * 65536)
    assert request.content.dropped == 0 and request.content.read() == b""
    assert peer.output() == out  # nothing more: the request never reached a resource
    assert no_temp_files == []
    peer.lost()
    assert file_site.limiter.connections == 0


def test_body_bytes_in_the_same_segment_as_the_head_are_not_stored(
    make_site: Any, no_temp_files: list[str]
) -> None:
    file_site, _ = make_site()
    peer = Peer(file_site)
    peer.send(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n")
    out = peer.output()
    assert status(out) == 413 and out.count(b"HTTP/1.1") == 1  # the pipelined GET is not read
    content = peer.request().content
    assert isinstance(content, Discard) and content.dropped == 0 and content.read() == b""
    assert no_temp_files == []


@pytest.mark.parametrize(
    "framing",
    [b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity",
     b"Content-Length: 1\r\nExpect: 100-continue"],
    ids=["chunked", "identity", "expect-100"],
)
def test_other_body_framings_are_413(
    make_site: Any, no_temp_files: list[str], framing: bytes
) -> None:
    file_site, _ = make_site()
    peer = Peer(file_site)
    peer.send(b"GET " + MISSING.encode() + b" HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n")
    peer.send(b"5\r\nhello\r\n0\r\n\r\n")
    out = peer.output()
    assert out.startswith(b"HTTP/1.1 413 ") and peer.closing
    assert b"100 Continue" not in out  # the client is never invited to send it
    assert out.count(b"HTTP/1.1") == 1
    assert isinstance(peer.request().content, Discard)
    assert no_temp_files == []


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH"])
def test_any_method_with_a_body_is_413(make_site: Any, method: bytes) -> None:
    file_site, _ = make_site()
    peer = Peer(file_site)
    peer.send(method + b" /files/x/y HTTP/1.1\r\nContent-Length: 300000000\r\n\r\n" + b"x" * 1000)
    assert status(peer.output()) == 413 and peer.closing


def test_head_with_a_body_gets_413_without_a_response_body(make_site: Any) -> None:
    file_site, _ = make_site()
    peer = Peer(file_site)
    peer.send(b"HEAD /files/x/y HTTP/1.1\r\nContent-Length: 10\r\n\r\n")
    fields, body = headers_and_body(peer.output())
    assert status(peer.output()) == 413 and body == b""
    assert fields[b"content-length"] == b"35" and peer.closing


@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: abc", b"Content-Length: -1", b"Content-Length: +5",
     b"Content-Length: 5\r\nContent-Length: 5", b"Content-Length: 5\r\nTransfer-Encoding: chunked",
     b"Transfer-Encoding: gzip"],
    ids=["letters", "negative", "plus", "twice", "both", "unknown-coding"],
)
def test_a_malformed_length_is_400(
    make_site: Any, no_temp_files: list[str], framing: bytes
) -> None:
    file_site, _ = make_site()
    peer = Peer(file_site)
    peer.send(b"GET / HTTP/1.1\r\n" + framing + b"\r\n\r\n" + b"x" * 100_000)
    assert peer.output() == b"HTTP/1.1 400 Bad Request\r\n\r\n"  # Twisted's own answer
    assert peer.closing and no_temp_files == []


# --- deadlines ------------------------------------------------------------------------


def test_a_header_trickle_is_cut_at_the_header_deadline(make_site: Any) -> None:
    file_site, clock = make_site(http_header_timeout=10.0)
    peer = Peer(file_site)
    peer.send(b"G")
    clock.advance(5)
    peer.send(b"E")  # a byte every 5 s keeps Twisted's idle timer happy
    clock.advance(4.9)
    assert not peer.closing
    clock.advance(0.1)  # 10 s after the connection opened, however lively it was
    out = peer.output()
    assert out.startswith(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n")
    assert headers_and_body(out)[1] == b"The request headers did not arrive within 10 seconds.\n"
    assert peer.closing
    peer.send(b"T / HTTP/1.1\r\n\r\n")  # too late: dropped unread
    assert peer.output() == out


def test_a_silent_connection_is_closed_at_the_header_deadline_without_a_word(
    make_site: Any,
) -> None:
    file_site, clock = make_site(http_header_timeout=10.0)
    peer = Peer(file_site)
    clock.advance(9.9)
    assert not peer.closing
    clock.advance(0.1)
    assert peer.closing and peer.output() == b""


def test_a_kept_alive_connection_idles_until_the_idle_timeout(make_site: Any) -> None:
    file_site, clock = make_site(http_header_timeout=10.0, http_idle_timeout=30.0)
    peer = Peer(file_site)
    peer.send(f"GET {MISSING} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status(peer.output()) == 404
    peer.transport.clear()
    clock.advance(29.9)  # the header deadline does not run while nothing arrives
    assert not peer.closing
    clock.advance(0.1)
    assert peer.closing and peer.output() == b""  # closed quietly


def test_the_next_requests_deadline_counts_from_its_first_byte(make_site: Any) -> None:
    file_site, clock = make_site(http_header_timeout=10.0, http_idle_timeout=30.0)
    peer = Peer(file_site)
    peer.send(b"GET / HTTP/1.1\r\n\r\n")
    assert status(peer.output()) == 404
    peer.transport.clear()
    clock.advance(20)
    peer.send(b"G")
    for _ in range(3):
        clock.advance(3)
        peer.send(b"E")  # each byte resets Twisted's idle timer; the deadline holds
    assert not peer.closing
    clock.advance(1)
    assert status(peer.output()) == 408 and peer.closing


def test_pipelined_requests_are_answered_in_order(make_site: Any) -> None:
    file_site, clock = make_site()
    peer = Peer(file_site)
    peer.send(b"GET / HTTP/1.1\r\n\r\nGET /files HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\n\r\n")
    assert peer.output().count(b"HTTP/1.1 404 ") == 3 and not peer.closing
    clock.advance(10)  # no request is half read: no deadline runs
    assert not peer.closing


def test_a_refused_connection_is_aborted_if_it_never_takes_the_answer(make_site: Any) -> None:
    file_site, clock = make_site()
    peer = Peer(file_site)
    peer.send(b"GET / HTTP/1.1\r\nContent-Length: 9\r\n\r\n")
    assert peer.closing and not peer.transport.disconnected
    clock.advance(15)  # Twisted's abortTimeout
    assert peer.transport.disconnected


# --- header caps ----------------------------------------------------------------------


def test_too_many_headers_are_431(make_site: Any) -> None:
    file_site, _ = make_site(http_max_headers=64)
    ok, over = Peer(file_site), Peer(file_site, port=40001)
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(64))
    ok.send(b"GET / HTTP/1.1\r\n" + fields + b"\r\n")
    assert status(ok.output()) == 404 and not ok.closing
    over.send(b"GET / HTTP/1.1\r\n" + fields + b"X-64: v\r\n")
    out = over.output()
    assert out.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert headers_and_body(out)[1] == b"Too many request header fields (at most 64).\n"
    assert over.closing


def test_too_large_headers_are_431(make_site: Any) -> None:
    file_site, _ = make_site(http_max_header_bytes=16384)
    many = Peer(file_site)
    many.send(b"GET / HTTP/1.1\r\n" + b"X-A: " + b"a" * 8000 + b"\r\nX-B: " + b"b" * 8000)
    assert not many.closing  # still under the cap
    many.send(b"\r\nX-C: " + b"c" * 400 + b"\r\n")
    assert status(many.output()) == 431 and many.closing
    assert headers_and_body(many.output())[1] == (
        b"The request headers are too large (at most 16384 bytes).\n"
    )
    # One line that never ends is cut as soon as it passes the cap, not when it ends.
    endless = Peer(file_site, port=40001)
    endless.send(b"GET / HTTP/1.1\r\nCookie: ")
    for _ in range(5):
        endless.send(b"x" * 4000)
    assert status(endless.output()) == 431 and endless.closing
    # A long request line too.
    long_line = Peer(file_site, port=40002)
    long_line.send(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n")
    assert status(long_line.output()) == 431 and long_line.closing


# --- connection caps ------------------------------------------------------------------


def test_the_per_address_cap_refuses_with_503_and_counts_down(make_site: Any) -> None:
    file_site, _ = make_site(http_max_connections_per_address=3)
    peers = [Peer(file_site, port=40000 + i) for i in range(3)]
    other = Peer(file_site, host="192.0.2.2")
    refused = Peer(file_site, port=40010)
    assert refused.output() == (
        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 52\r\n\r\n"
        b"Too many connections from your address (at most 3).\n"
    )
    assert refused.closing
    assert not any(p.closing for p in [*peers, other])
    assert file_site.limiter.current == {"192.0.2.1": 3, "192.0.2.2": 1}
    peers[0].lost()
    again = Peer(file_site, port=40011)
    assert again.output() == b"" and not again.closing
    for p in [*peers[1:], other, again]:
        p.lost()
    assert file_site.limiter.connections == 0 and file_site.limiter.current == {}


def test_the_total_cap_refuses_with_503(make_site: Any) -> None:
    file_site, _ = make_site(http_max_connections=2)
    first = Peer(file_site, host="192.0.2.1")
    Peer(file_site, host="192.0.2.2")
    full = Peer(file_site, host="192.0.2.3")
    assert status(full.output()) == 503 and full.closing
    assert headers_and_body(full.output())[1] == b"The server is full; try again later.\n"
    first.lost()
    assert Peer(file_site, host="192.0.2.3").output() == b""


def test_the_http_per_minute_cap(make_site: Any) -> None:
    file_site, clock = make_site(http_max_new_connections_per_minute=5)
    for i in range(5):
        Peer(file_site, port=40000 + i).lost()
    late = Peer(file_site, port=40100)
    assert status(late.output()) == 503
    assert b"at most 5 a minute" in late.output()
    clock.advance(61)
    assert Peer(file_site, port=40101).output() == b""


def test_exempt_networks_have_no_per_address_cap(make_site: Any) -> None:
    file_site, _ = make_site(http_max_connections_per_address=1, exempt_addresses=["10.0.0.0/8"])
    peers = [Peer(file_site, host="10.1.2.3", port=40000 + i) for i in range(5)]
    assert not any(p.closing for p in peers)
    Peer(file_site, host="192.0.2.1")
    assert status(Peer(file_site, host="192.0.2.1", port=40001).output()) == 503


def test_http_and_chat_counts_are_separate(tmp_path: Path) -> None:
    config = relaxed_config()
    config.limits.exempt_addresses = []
    config.limits.max_connections_per_address = 1
    config.limits.http_max_connections_per_address = 1
    server = memory_server(tmp_path, config)
    try:
        file_site = site(server.factory.files, server.clock, config.limits)
        server.connect()  # the chat port's one
        assert Peer(file_site, host="127.0.0.1").output() == b""
        assert file_site.limiter is not server.factory.limiter
    finally:
        server.store.close()


# --- against the real server ----------------------------------------------------------


def limits_toml(tmp_path: Path, **limits: Any) -> Path:
    def value(v: Any) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(f'"{x}"' for x in v) + "]"
        return repr(v)

    path = tmp_path / "http-limits.toml"
    path.write_text("[limits]\n" + "".join(f"{k} = {value(v)}\n" for k, v in limits.items()))
    return path


def limited(tmp_path: Path, **limits: Any) -> Any:
    base: dict[str, Any] = {
        "flood_burst": 100000, "max_new_connections_per_minute": 1000,
        "max_connections_per_address": 1000, "exempt_addresses": [],
    }
    return running(
        tmp_path / "data", "--config", str(limits_toml(tmp_path, **{**base, **limits})),
        relaxed=False,
    )


def shared_file(server: RealServer, data: bytes) -> dict[str, Any]:
    client = server.client("alice", json_mode=True)
    try:
        return upload(client, "notes.bin", data)
    finally:
        client.close()


def curl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout)


def tree_bytes(root: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*"))


def deleted_files(pid: int) -> list[str]:
    """What the process holds open that is unlinked (how a spooled body shows up)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.endswith("(deleted)"):
            found.append(target)
    return found


def read_until_closed(sock: socket.socket, timeout: float = DEADLINE) -> bytes:
    """Everything the server sends until it closes (a reset after its answer counts)."""
    data = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data
        except TimeoutError:
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the server did not close; got {data[:200]!r}")


#: How far the disk's free space may drop meanwhile: other processes share the disk,
#: and a spooled body (256 MiB here, 600 MiB a second before this round) is far more.
DISK_SLACK = 128 * 1024 * 1024


class Watch:
    """Samples the server's unlinked open files and the disk's free space."""

    def __init__(self, server: RealServer) -> None:
        self.pid = server.proc.pid
        self.path = server.data_dir
        self.free_before = self.lowest_free = shutil.disk_usage(self.path).free
        self.spooled: list[str] = []

    def sample(self) -> None:
        self.spooled += deleted_files(self.pid)
        self.lowest_free = min(self.lowest_free, shutil.disk_usage(self.path).free)

    def check(self) -> None:
        self.sample()
        assert self.spooled == []
        assert self.free_before - self.lowest_free < DISK_SLACK


def test_curl_upload_to_a_file_url_is_413_and_nothing_reaches_the_disk(tmp_path: Path) -> None:
    data = payload(256 * 1024, seed=5)
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(256 * 1024 * 1024)  # sparse: 256 MiB to send, no disk used here
    with limited(tmp_path) as server:
        url = http_url(server, shared_file(server, data)["url"])
        before, watch = tree_bytes(server.data_dir), Watch(server)
        for extra in ([], ["-H", "Expect:"]):  # curl waits for a 100 reply, or sends at once
            proc = subprocess.Popen(
                ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--data-binary", f"@{big}",
                 *extra, url],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            end = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < end:
                watch.sample()
                readable(proc.stdout.fileno(), 0.01)  # type: ignore[union-attr]
            out, err = proc.communicate(timeout=DEADLINE)
            assert out.endswith(b"This server takes no request body.\n\n413"), (out, err)
        watch.check()
        assert tree_bytes(server.data_dir) - before < 1024 * 1024
        got = curl("--fail", "-o", "-", url)
        assert got.returncode == 0 and sha(got.stdout) == sha(data)
        server.wait_for_log(r"HTTP 413 to 127\.0\.0\.1 \(declares a body of 268435456 bytes\)")


def test_a_raw_gigabyte_body_is_refused_unread(tmp_path: Path) -> None:
    with limited(tmp_path) as server:
        watch = Watch(server)
        sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=DEADLINE)
        sock.sendall(b"GET /files/x/y HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
        sent = 0
        zeros = b"\0" * 65536
        end = time.monotonic() + 3
        sock.setblocking(False)
        while time.monotonic() < end and sent < 300 * 1024 * 1024:
            watch.sample()
            _, writable, _ = select.select([], [sock], [], 0.2)
            if not writable:
                continue
            try:
                sent += sock.send(zeros)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server has closed
        sock.setblocking(True)
        answer = read_until_closed(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 413 Content Too Large\r\n"), answer
        assert b"Connection: close\r\n" in answer
        # Only the kernel's socket buffers took what was sent: the server stopped reading.
        assert sent < 32 * 1024 * 1024, sent
        watch.check()


def test_slowloris_connections_are_cut_at_the_deadline_while_downloads_work(
    tmp_path: Path,
) -> None:
    data = payload(1024 * 1024, seed=6)
    with limited(tmp_path, http_header_timeout=2.0, http_max_connections_per_address=100) as server:
        url = http_url(server, shared_file(server, data)["url"])
        start = time.monotonic()
        socks = [socket.create_connection(("127.0.0.1", server.http_port)) for _ in range(30)]
        trickle = b"GET /files/" + b"0" * 32 + b"/x HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 100
        answers = {s: b"" for s in socks}
        closed_at: dict[socket.socket, float] = {}
        downloaded = False
        sent = 0
        while len(closed_at) < len(socks):
            assert time.monotonic() - start < 2.0 + DEADLINE, f"{len(closed_at)} closed"
            for s in socks:
                if s not in closed_at:
                    try:
                        s.send(trickle[sent : sent + 1])
                    except OSError:
                        pass  # closed: the read below sees it
            sent += 1
            tick = time.monotonic() + 1.0  # one byte a second
            while len(closed_at) < len(socks) and time.monotonic() < tick:
                readable, _, _ = select.select(
                    [s for s in socks if s not in closed_at], [], [], tick - time.monotonic()
                )
                for s in readable:
                    try:
                        chunk = s.recv(4096)
                    except ConnectionResetError:
                        chunk = b""
                    answers[s] += chunk
                    if not chunk:
                        closed_at[s] = time.monotonic() - start
            if not downloaded:
                got = curl("--fail", "-o", "-", url, timeout=DEADLINE)
                assert got.returncode == 0 and sha(got.stdout) == sha(data)
                downloaded = True
        for s in socks:
            s.close()
        assert downloaded
        assert all(a.startswith(b"HTTP/1.1 408 Request Timeout\r\n") for a in answers.values())
        assert min(closed_at.values()) > 1.5 and max(closed_at.values()) < 2.0 + 3.0
        # And a download still works after the storm.
        got = curl("--fail", "-o", "-", url)
        assert got.returncode == 0 and sha(got.stdout) == sha(data)


def test_the_per_address_cap_refuses_the_fourth_while_chat_still_accepts(
    tmp_path: Path,
) -> None:
    with limited(
        tmp_path, http_max_connections_per_address=3, http_header_timeout=60.0
    ) as server:
        held = [socket.create_connection(("127.0.0.1", server.http_port)) for _ in range(3)]
        # Accepted in the order they connected: the fourth is over the cap.
        fourth = socket.create_connection(("127.0.0.1", server.http_port), timeout=DEADLINE)
        answer = read_until_closed(fourth)
        fourth.close()
        assert answer == (
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 52\r\n\r\n"
            b"Too many connections from your address (at most 3).\n"
        )
        result = curl("-o", "-", "-w", "\n%{http_code}", f"http://127.0.0.1:{server.http_port}/")
        assert result.stdout.endswith(b"at most 3).\n\n503"), result
        alice = server.client("alice")  # the chat port has its own count
        alice.send_line("/who")
        alice.expect("alice")
        held.pop().close()
        end = time.monotonic() + DEADLINE
        while True:  # the count drops once the server has seen the close
            result = curl("-o", "/dev/null", "-w", "%{http_code}",
                          f"http://127.0.0.1:{server.http_port}/")
            if result.stdout == b"404":
                break
            assert result.stdout == b"503" and time.monotonic() < end, result
        for s in held:
            s.close()
        alice.close()
