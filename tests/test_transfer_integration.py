"""Issue 3, file attachments, against the real server: sockets, nc, signals.

Waiting is always on something observable (a reply, a log line, a file
appearing) with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from chat.config import LimitSettings
from tests.support import DEADLINE, LineClient, RealServer, kill_quietly, running

# --- helpers (also used by test_http.py) -----------------------------------------------


def payload(size: int, seed: int = 0) -> bytes:
    """Reproducible bytes with every value, CR and LF included."""
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: Flood and per-address limits have their own tests; here they would only
#: slow scripted clients down. (A --config of ours replaces RealServer's.)
RELAXED = {
    "flood_burst": 100_000, "max_connections_per_address": 1000,
    "max_new_connections_per_minute": 1000,
}


def config_file(tmp_path: Path, **limits: int) -> Path:
    """A TOML file with these ``[limits]``, and the relaxed ones this version knows."""
    known = {f.name for f in dataclasses.fields(LimitSettings)}
    values = {k: v for k, v in RELAXED.items() if k in known} | limits
    path = tmp_path / "server.toml"
    path.write_text("[limits]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
    return path


def http_url(server: RealServer, url: str) -> str:
    """The ``url`` of a file, pointed at the port the server really listens on.

    Started on ``tcp:0``, the server announces port 0 in its URLs.
    """
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{server.http_port}"))


def upload(client: LineClient, name: str, data: bytes, crc: str = "") -> dict[str, Any]:
    """Upload over a JSON connection; the ``fileinfo`` of the stored file."""
    client.send(f"/send {name} {len(data)} {crc}".rstrip().encode() + b"\r\n" + data)
    return dict(client.expect_event("uploaded")["file"])


def rows(server: RealServer) -> list[tuple[Any, ...]]:
    with sqlite3.connect(server.data_dir / "chat.sqlite3") as db:
        return db.execute("SELECT id, name, size, uploader FROM files ORDER BY ts").fetchall()


def listing(server: RealServer, sub: str) -> list[str]:
    folder = server.data_dir / sub
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll a condition on the file system, with a deadline."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def part_files(server: RealServer) -> list[Path]:
    return [p for p in (server.data_dir / "tmp").iterdir() if p.stat().st_size > 0]


def events_until(
    client: LineClient, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Read JSON events until ``done(events so far)``."""
    events: list[dict[str, Any]] = []
    end = time.monotonic() + DEADLINE
    while not done(events):
        events.append(json.loads(client.read_line(max(0.0, end - time.monotonic()))))
    return events


def nc(port: int, shell: str, cwd: Path, timeout: float = 30) -> bytes:
    """Run ``{ shell; } | nc -N 127.0.0.1 PORT`` and return what nc printed."""
    result = subprocess.run(
        ["bash", "-c", f"{{ {shell}; }} | nc -N 127.0.0.1 {port}"],
        cwd=cwd, capture_output=True, timeout=timeout, check=True,
    )
    return result.stdout


def stored_id(nc_output: bytes, name: str) -> str:
    m = re.search(rb"-- Stored " + re.escape(name.encode()) + rb": id ([0-9a-f]{32}),", nc_output)
    assert m, nc_output[-500:]
    return m[1].decode()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    with running(tmp_path_factory.mktemp("shared") / "data") as server:
        yield server


# --- nc -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 1024 * 1024 + 17])
def test_nc_upload_of_every_size(shared: RealServer, tmp_path: Path, size: int) -> None:
    data = payload(size, seed=size)
    (tmp_path / "notes.txt").write_bytes(data)
    watcher = shared.client(f"watch{size}", json_mode=True)
    out = nc(
        shared.port,
        f'echo up{size}; echo "/send notes.txt $(stat -c%s notes.txt)"; cat notes.txt',
        tmp_path,
    )
    file_id = stored_id(out, "notes.txt")
    assert f", {size} byte{'' if size == 1 else 's'},".encode() in out
    event = watcher.expect_event("file", file_id=file_id)
    assert (event["sender"], event["size"], event["sha256"]) == (f"up{size}", size, sha(data))
    assert sha((shared.data_dir / "files" / file_id).read_bytes()) == sha(data)
    watcher.close()


def test_nc_more_bytes_than_declared_become_lines(shared: RealServer, tmp_path: Path) -> None:
    watcher = shared.client("watchextra", json_mode=True)
    out = nc(shared.port, "echo extra; echo '/send a.txt 5'; printf 'helloextra line\\n'",
             tmp_path)
    file_id = stored_id(out, "a.txt")
    watcher.expect_event("leave", name="extra")
    # The notice comes when the file is stored, which may be after the next line.
    events = [json.loads(ln) for ln in watcher.seen if ln.startswith("{")]
    said = [e["text"] for e in events if e["type"] == "message" and e["sender"] == "extra"]
    assert said == ["extra line"]
    (shared_event,) = [e for e in events if e["type"] == "file" and e["sender"] == "extra"]
    assert (shared_event["file_id"], shared_event["size"]) == (file_id, 5)
    assert (shared.data_dir / "files" / file_id).read_bytes() == b"hello"
    watcher.close()


def test_nc_upload_then_quit_is_still_answered(shared: RealServer, tmp_path: Path) -> None:
    out = nc(shared.port, "echo quitter; echo '/send q.txt 5'; printf hello; echo /quit", tmp_path)
    file_id = stored_id(out, "q.txt")
    assert (shared.data_dir / "files" / file_id).read_bytes() == b"hello"
    assert b"-- Goodbye (quit)." in out


def test_nc_fewer_bytes_then_disconnect(tmp_path: Path) -> None:
    server = RealServer(tmp_path / "data")
    try:
        watcher = server.client("watcher", json_mode=True)
        out = nc(server.port, "echo short; echo '/send a.txt 100'; printf 0123456789",
                 tmp_path)
        assert b"Stored" not in out
        server.wait_for_log(r"Upload a\.txt discarded \(connection lost\): 10 of 100 bytes")
        leave = watcher.expect_event("leave", name="short")
        assert leave["reason"] == "connection lost"
        assert not any('"type":"file"' in ln for ln in watcher.seen)
        assert rows(server) == [] and listing(server, "files") == []
        assert listing(server, "tmp") == []
    finally:
        kill_quietly(server)


def test_connection_reset_mid_upload(shared: RealServer) -> None:
    """The pump reading the socket sees the reset; the partial file goes, chat goes on."""
    watcher = shared.client("resetwatch", json_mode=True)
    c = shared.client("resetter", json_mode=True)
    before = set(listing(shared, "tmp"))
    c.send(b"/send reset.bin 4194304\r\n" + payload(1024 * 1024, seed=3))
    wait_until(lambda: any(p.name not in before and p.stat().st_size == 1024 * 1024
                           for p in part_files(shared)), "the first MiB on disk")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.sock.close()  # RST
    shared.wait_for_log(r"Upload reset\.bin discarded \(connection lost\): 1048576 of 4194304")
    assert watcher.expect_event("leave", name="resetter")["reason"] == "connection lost"
    assert set(listing(shared, "tmp")) <= before
    talker = shared.client("afterreset", json_mode=True)
    talker.send_line("still here")
    assert watcher.expect_event("message", sender="afterreset")["text"] == "still here"


# --- framing over real sockets ------------------------------------------------------


def test_header_data_and_lines_in_one_segment_and_byte_by_byte(shared: RealServer) -> None:
    file_a = b"line one\n/quit\r\n\x00\xff\r\n"
    script = (
        f"/send a.bin {len(file_a)}\r\n".encode() + file_a + b"after a\n"
        + b"/send empty 0\nafter empty\n"
    )
    watcher = shared.client("watchseg", json_mode=True)
    for name, pieces in (("seg1", [script]), ("seg2", [bytes([b]) for b in script])):
        c = shared.client(name, json_mode=True)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            c.send(piece)
        # Storing runs on a thread: "uploaded" may come after the next line's echo.
        events = events_until(c, lambda evs: sum(e["type"] == "uploaded" for e in evs) == 2
                              and sum(e["type"] == "message" for e in evs) == 2)
        a, empty = [e["file"] for e in events if e["type"] == "uploaded"]
        assert (a["name"], a["size"], a["sha256"]) == ("a.bin", len(file_a), sha(file_a))
        assert (empty["name"], empty["size"]) == ("empty", 0)
        said = [e["text"] for e in events if e["type"] == "message"]
        assert said == ["after a", "after empty"]
        texts = [watcher.expect_event("message", sender=name)["text"] for _ in range(2)]
        assert texts == ["after a", "after empty"]
        assert (shared.data_dir / "files" / a["file_id"]).read_bytes() == file_a
        c.send_line("/quit")
        assert c.closed()
    assert not any("line one" in ln for ln in watcher.seen)


def test_chat_arrives_during_an_upload(shared: RealServer) -> None:
    alice = shared.client("upl", json_mode=True)
    bob = shared.client("talker", json_mode=True)
    carol = shared.client("third", json_mode=True)
    data = payload(1024 * 1024, seed=7)
    before = set(listing(shared, "tmp"))
    alice.send(f"/send big.bin {len(data)}\r\n".encode() + data[:300_000])
    wait_until(lambda: any(p.name not in before for p in part_files(shared)), "a .part file")
    bob.send_line("while you upload")
    assert alice.expect_event("message", sender="talker")["text"] == "while you upload"
    assert carol.expect_event("message", sender="talker")["text"] == "while you upload"
    alice.send(data[300_000:])
    info = alice.expect_event("uploaded")["file"]
    assert info["sha256"] == sha(data)
    assert carol.expect_event("file", file_id=info["file_id"])["sender"] == "upl"
    for c in (alice, bob, carol):
        c.close()


def test_same_name_at_once_gives_separate_files(shared: RealServer) -> None:
    a, b = shared.client("same1", json_mode=True), shared.client("same2", json_mode=True)
    da, db = payload(200_000, 1), payload(200_000, 2)
    before = {p.name for p in part_files(shared)}
    a.send(b"/send same.txt 200000\r\n" + da[:1000])
    b.send(b"/send same.txt 200000\r\n" + db[:1000])
    wait_until(lambda: len({p.name for p in part_files(shared)} - before) == 2, "two uploads")
    a.send(da[1000:])
    b.send(db[1000:])
    fa, fb = a.expect_event("uploaded")["file"], b.expect_event("uploaded")["file"]
    assert fa["file_id"] != fb["file_id"] and fa["name"] == fb["name"] == "same.txt"
    assert (shared.data_dir / "files" / fa["file_id"]).read_bytes() == da
    assert (shared.data_dir / "files" / fb["file_id"]).read_bytes() == db
    a.close()
    b.close()


# --- refusals -----------------------------------------------------------------------


def test_too_large_names_the_limit_and_closes(tmp_path: Path) -> None:
    server = RealServer(tmp_path / "data", "--config", str(config_file(tmp_path,
                                                                       max_upload_bytes=1000)))
    try:
        watcher = server.client("watcher", json_mode=True)
        c = server.client("big")
        c.send(b"/send big.bin 1001\r\nnot a line\n" + b"x" * 1001)
        line = c.expect(r"^!! ")
        assert "1000 bytes" in line
        assert c.closed()
        watcher.expect_event("leave", name="big")
        assert not any("not a line" in ln or '"file"' in ln for ln in watcher.seen)
        assert rows(server) == [] and listing(server, "tmp") == []
        ok = server.client("ok", json_mode=True)
        assert upload(ok, "fits.bin", b"y" * 1000)["size"] == 1000
    finally:
        kill_quietly(server)


@pytest.mark.parametrize(
    ("limits", "why"),
    [({"disk_margin_bytes": 10**18}, "disk space"), ({"user_quota_bytes": 10}, "quota")],
)
def test_refused_upload_is_discarded_in_sync(
    tmp_path: Path, limits: dict[str, int], why: str
) -> None:
    server = RealServer(tmp_path / "data", "--config", str(config_file(tmp_path, **limits)))
    try:
        watcher = server.client("watcher", json_mode=True)
        c = server.client("alice", json_mode=True)
        data = b"evil line\n/quit\n" * 100
        c.send(f"/send a.txt {len(data)}\r\n".encode() + data + b"after\n")
        error = c.expect_event("error")
        assert error["code"] == "refused" and why in error["text"]
        assert c.expect_event("message")["text"] == "after"
        assert watcher.expect_event("message", sender="alice")["text"] == "after"
        assert not any("evil" in ln for ln in watcher.seen + c.seen)
        assert rows(server) == [] and listing(server, "files") == []
        assert listing(server, "tmp") == []
    finally:
        kill_quietly(server)


def test_crc_mismatch_over_a_socket(shared: RealServer) -> None:
    c = shared.client("crc", json_mode=True)
    before = rows(shared)
    c.send(b"/send c.txt 5 ffffffff\r\nhello")
    error = c.expect_event("error")
    assert error["code"] == "crc_mismatch" and "ffffffff" in error["text"]
    assert "3610a686" in error["text"]
    c.send_line("/files 1000")
    names = [f["name"] for f in c.expect_event("files")["files"]]
    assert "c.txt" not in names and rows(shared) == before
    c.close()


# --- downloads ----------------------------------------------------------------------


def test_get_returns_the_same_bytes_from_zero_and_an_offset(shared: RealServer) -> None:
    data = payload(1024 * 1024 + 3, seed=11)
    info = upload(shared.client("getup", json_mode=True), "dl.bin", data)
    c = shared.client("getter", json_mode=True)
    for offset in (0, 12345, len(data)):
        c.send_line(f"/get {info['file_id']} {offset}" if offset else f"/get {info['file_id']}")
        header = c.expect_event("download")
        assert (header["offset"], header["length"]) == (offset, len(data) - offset)
        assert sha(c.read_exact(header["length"])) == sha(data[offset:])
    c.send_line("/files 1")
    assert c.expect_event("files")["files"][0]["file_id"] == info["file_id"]
    c.send_line(f"/get {info['file_id']} {len(data) + 1}")
    assert c.expect_event("error")["code"] == "bad_offset"
    c.send_line(f"/get {'f' * 32}")
    assert c.expect_event("error")["code"] == "no_such_file"


def test_chat_waits_for_the_last_byte_of_a_download(shared: RealServer) -> None:
    data = payload(3 * 1024 * 1024, seed=12)
    info = upload(shared.client("bigup", json_mode=True), "big.bin", data)
    getter = shared.client("slowget", json_mode=True)
    talker = shared.client("chatty", json_mode=True)
    getter.send_line(f"/get {info['file_id']}")
    header = getter.expect_event("download")
    # The getter reads nothing more until someone has spoken.
    talker.send_line("in the middle")
    talker.expect_event("message", sender="chatty")
    body = getter.read_exact(header["length"])
    assert sha(body) == sha(data)
    assert json.loads(getter.read_line())["text"] == "in the middle"


def test_text_mode_get_gives_a_url_and_no_bytes(shared: RealServer) -> None:
    data = b"FILE-BYTES-MARKER" * 100
    info = upload(shared.client("hintup", json_mode=True), "hint.txt", data)
    c = shared.client("texter")
    c.send_line(f"/get {info['file_id']}")
    line = c.expect(r"curl")  # (the replay before it shows the notice too)
    assert f"/files/{info['file_id']}/hint.txt" in line and "curl" in line
    c.send_line("/files 1")
    c.expect(r"recent files?:")
    assert b"FILE-BYTES-MARKER" not in c.buf
    assert not any("FILE-BYTES-MARKER" in ln for ln in c.seen)


def test_nc_json_get_is_answered_before_the_half_close(shared: RealServer, tmp_path: Path) -> None:
    data = payload(100_000, seed=13)
    info = upload(shared.client("ncgetup", json_mode=True), "n.bin", data)
    out = nc(
        shared.port,
        f"echo /proto json; echo ncget; echo '/get {info['file_id']}'; echo '/files 1'",
        tmp_path,
    )
    _, sep, body = out.partition(b'"type":"download"')
    assert sep, out[-300:]
    body = body.split(b"\r\n", 1)[1]
    assert sha(body[: len(data)]) == sha(data)
    files = json.loads(body[len(data) :].split(b"\r\n")[0])
    assert files["type"] == "files" and files["files"][0]["file_id"] == info["file_id"]


# --- transfer connections ------------------------------------------------------------


def attach(server: RealServer, key: str) -> LineClient:
    t = LineClient(server.port)
    t.expect("Choose a username")  # the banner and prompt are in text mode
    t.send_line(f"/attach {key}")
    return t


def test_attach_upload_close_mid_upload_and_owner_carries_on(shared: RealServer) -> None:
    owner = shared.client("owner")
    bob = shared.client("attwatch", json_mode=True)
    owner.send_line("/session")
    key = re.search(r"session key is (\S+)\.", owner.expect("session key"))[1]  # type: ignore[index]
    t = attach(shared, key)
    assert t.expect_event("attached")["name"] == "owner"
    info = upload(t, "via.txt", b"through the side door")
    assert info["uploader"] == "owner"
    shared_event = bob.expect_event("file", file_id=info["file_id"])
    assert shared_event["sender"] == "owner"
    t.send_line(f"/get {info['file_id']}")
    assert t.read_exact(t.expect_event("download")["length"]) == b"through the side door"
    bob.send_line("/who")
    names = [u["name"] for u in bob.expect_event("who")["users"]]
    assert "owner" in names and names.count("owner") == 1
    assert not any('"join"' in ln and "owner" in ln for ln in bob.seen[1:])
    # a second upload, cut off half way
    before = rows(shared)
    t.send(b"/send cut.bin 100000\r\n" + b"z" * 50_000)
    wait_until(lambda: any(p.name.endswith(".part") for p in part_files(shared)), ".part")
    t.close()
    shared.wait_for_log(r"Upload cut\.bin discarded \(connection lost\): \d+ of 100000")
    assert rows(shared) == before and listing(shared, "tmp") == []
    owner.send_line("still here")
    assert bob.expect_event("message", sender="owner")["text"] == "still here"
    assert not any('"leave"' in ln for ln in bob.seen)
    # a new transfer connection ends when its owner leaves
    t2 = attach(shared, key)
    t2.expect_event("attached")
    owner.send_line("/quit")
    assert t2.expect_event("bye")["reason"] == "owner left"
    assert t2.closed()


def test_attach_with_a_wrong_key(shared: RealServer) -> None:
    t = attach(shared, "nonsense")
    assert t.expect_event("error")["code"] == "bad_session"
    assert t.closed()


# --- stopping and starting ------------------------------------------------------------


def test_sigterm_mid_upload_leaves_no_partial_file(tmp_path: Path) -> None:
    server = RealServer(tmp_path / "data")
    try:
        c = server.client("alice", json_mode=True)
        c.send(b"/send big.bin 1048576\r\n" + b"x" * 300_000)
        wait_until(lambda: bool(part_files(server)), "the upload to start")
        assert server.stop(signal.SIGTERM) == 0
        assert any("big.bin discarded (server stopping)" in ln for ln in server.log)
        assert listing(server, "files") == [] and listing(server, "tmp") == []
        assert rows(server) == []
    finally:
        kill_quietly(server)
    again = RealServer(tmp_path / "data")
    try:
        c = again.client("bob", json_mode=True)
        c.send_line("/files")
        assert c.expect_event("files")["files"] == []
    finally:
        kill_quietly(again)


def test_start_up_removes_stale_temporaries_and_unrecorded_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = RealServer(data_dir)
    try:
        kept = upload(first.client("alice", json_mode=True), "kept.txt", b"keep me")
        assert first.stop() == 0
    finally:
        kill_quietly(first)
    (data_dir / "tmp" / "0123456789abcdef0123456789abcdef.part").write_bytes(b"half")
    (data_dir / "files" / "fedcba9876543210fedcba9876543210").write_bytes(b"stray")
    second = RealServer(data_dir)
    try:
        assert listing(second, "tmp") == []
        assert listing(second, "files") == [kept["file_id"]]
        assert any("Removing stale temporary upload" in ln for ln in second.log)
        assert any("Removing unrecorded file" in ln for ln in second.log)
        c = second.client("bob", json_mode=True)
        c.send_line(f"/get {kept['file_id']}")
        assert c.read_exact(c.expect_event("download")["length"]) == b"keep me"
    finally:
        kill_quietly(second)
