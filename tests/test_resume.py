"""Resumable uploads and expiry, in memory (task.Clock) and against the real server.

In memory: an upload cut at any byte keeps what arrived, ``/resume`` says
how much, ``/send … OFFSET`` finishes it byte for byte; a wrong OFFSET is
refused and the connection stays in step; partials belong to their owner and
go after ``files.resume_window``; files expire by age and by the store cap.
For real: an upload cut by a reset, by a server stop and by ``kill -9`` is
resumed after, and the README's ``nc`` + ``tail -c`` recipe works.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import socket
import struct
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import DEADLINE, Conn, LineClient, MemoryServer, RealServer, kill_quietly
from tests.support import memory_server as make_memory_server

DATA = random.Random(17).randbytes(200_000)
CRC = f"{zlib.crc32(DATA):08x}"


def stored(mem: MemoryServer) -> list[bytes]:
    return [p.read_bytes() for p in mem.factory.files.store.files_dir.iterdir()]


def partial_dir(mem: MemoryServer) -> Path:
    return mem.factory.files.store.partials.folder


def cut_upload(mem: MemoryServer, name: str, at: int, port: int = 40000) -> None:
    c = mem.connect(port)
    c.line("/proto json")
    c.line(name)
    c.feed(b"/send big.bin %d %s\n" % (len(DATA), CRC.encode()) + DATA[:at])
    c.close()


def resume(mem: MemoryServer, name: str, port: int = 40001) -> tuple[Conn, int]:
    c = mem.connect(port)
    c.line("/proto json")
    c.line(name)
    c.take()
    c.line(f"/resume big.bin {len(DATA)} {CRC}")
    (answer,) = [e for e in c.events() if e["type"] == "resume"]
    return c, answer["offset"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(at=st.integers(1, len(DATA) - 1), pieces=st.lists(st.integers(1, 70_000), max_size=5))
def test_an_upload_cut_anywhere_is_finished_byte_for_byte(
    tmp_path_factory: pytest.TempPathFactory, at: int, pieces: list[int]
) -> None:
    mem = make_memory_server(tmp_path_factory.mktemp("cut"))
    cut_upload(mem, "alice", at)
    assert stored(mem) == []  # nothing published
    c, offset = resume(mem, "alice")
    assert offset == at
    rest = b"/send big.bin %d %s %d\n" % (len(DATA), CRC.encode(), offset) + DATA[offset:]
    rest += b"after the file\n"
    start = 0
    for size in [*pieces, len(rest)]:  # input cut at random points, too
        c.feed(rest[start:start + size])
        start += size
    events = c.events()
    (uploaded,) = [e for e in events if e["type"] == "uploaded"]
    assert uploaded["file"]["crc32"] == CRC and uploaded["file"]["size"] == len(DATA)
    assert uploaded["file"]["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert [e["text"] for e in events if e["type"] == "message"] == ["after the file"]
    assert stored(mem) == [DATA]
    assert list(partial_dir(mem).iterdir()) == []


def test_a_wrong_offset_is_refused_naming_the_right_one_and_the_bytes_skipped(
    mem: MemoryServer,
) -> None:
    cut_upload(mem, "alice", 5000)
    c, _ = resume(mem, "alice")
    header = b"/send big.bin %d %s 4000\n" % (len(DATA), CRC.encode())
    c.feed(header + DATA[4000:] + b"still here\n")
    events = c.events()
    error = next(e for e in events if e["type"] == "error")
    assert (error["code"], error["offset"], error["size"]) == ("bad_offset", 5000,
                                                                 len(DATA) - 4000)
    assert "OFFSET must be 5000" in error["text"]
    assert [e["text"] for e in events if e["type"] == "message"] == ["still here"]
    assert stored(mem) == []
    c.line(f"/resume big.bin {len(DATA)} {CRC}")
    assert c.events()[-1]["offset"] == 5000  # untouched


def test_text_mode_answers_and_offset_zero_starts_over(mem: MemoryServer) -> None:
    cut_upload(mem, "alice", 7000)
    c = mem.user("alice")
    c.line(f"/resume big.bin {len(DATA)} {CRC}")
    assert c.lines() == [f"-- big.bin: the server holds 7000 bytes of {len(DATA)}; send the "
                         f"rest with /send big.bin {len(DATA)} {CRC} 7000"]
    c.feed(b"/send big.bin %d %s\n" % (len(DATA), CRC.encode()) + DATA)
    assert c.lines()[-1].startswith("-- Stored big.bin:")
    assert stored(mem) == [DATA]


def test_partials_belong_to_their_owner(mem: MemoryServer) -> None:
    cut_upload(mem, "alice", 3000, port=40000)
    cut_upload(mem, "bob", 9000, port=40002)
    assert resume(mem, "bob", port=40003)[1] == 9000
    assert resume(mem, "carol", port=40004)[1] == 0
    assert resume(mem, "alice", port=40005)[1] == 3000


def test_a_guest_on_another_address_is_another_owner(mem: MemoryServer) -> None:
    c = mem.connect(40000, host="10.0.0.1")
    c.line("alice")
    c.feed(b"/send big.bin %d %s\n" % (len(DATA), CRC.encode()) + DATA[:100])
    c.close()
    other = mem.connect(40001, host="10.0.0.2")
    other.line("alice")
    other.take()
    other.line(f"/resume big.bin {len(DATA)} {CRC}")
    assert "nothing held" in other.lines()[0]


def test_an_upload_without_crc_is_not_kept(mem: MemoryServer) -> None:
    c = mem.user("alice")
    c.feed(b"/send plain.bin %d\n" % len(DATA) + DATA[:1000])
    c.close()
    assert list(partial_dir(mem).iterdir()) == []
    assert list(mem.factory.files.store.tmp_dir.iterdir()) == []
    d = mem.user("alice")
    d.feed(b"/send plain.bin %d\n" % len(DATA) + DATA[:10])  # the connection is in raw mode
    d.close()
    e = mem.user("alice")
    e.line(f"/send plain.bin {len(DATA)} 00000000 5")
    assert e.lines()[0].startswith("!! OFFSET must be 0")


def test_resumed_bytes_that_do_not_match_are_refused_and_dropped(mem: MemoryServer) -> None:
    cut_upload(mem, "alice", 1000)
    c, offset = resume(mem, "alice")
    wrong = bytes(len(DATA) - offset)
    c.feed(b"/send big.bin %d %s %d\n" % (len(DATA), CRC.encode(), offset) + wrong)
    assert [e["code"] for e in c.events() if e["type"] == "error"] == ["crc_mismatch"]
    assert stored(mem) == [] and list(partial_dir(mem).iterdir()) == []


def test_the_same_upload_on_two_connections_at_once(mem: MemoryServer) -> None:
    a = mem.user("alice", mode="json")
    a.feed(b"/send big.bin %d %s\n" % (len(DATA), CRC.encode()) + DATA[:10])
    key = a.proto.user.session  # type: ignore[union-attr]
    t = mem.connect(40001)
    t.line(f"/attach {key}")
    t.take()
    t.feed(b"/send big.bin %d %s\n" % (len(DATA), CRC.encode()) + DATA + b"/files\n")
    error = next(e for e in t.events() if e["type"] == "error")
    assert (error["code"], error["reason"]) == ("refused", "in_progress")


def test_partials_are_swept_after_the_window(tmp_path: Path) -> None:
    mem = make_memory_server(tmp_path)
    cut_upload(mem, "alice", 4000)
    mem.clock.advance(3599)
    c, held = resume(mem, "alice")
    assert held == 4000
    c.close()
    mem.clock.advance(2)
    assert resume(mem, "alice", port=40009)[1] == 0  # too old to resume
    swept = mem.factory.files.sweep().result
    assert swept.partials == 1
    assert list(partial_dir(mem).iterdir()) == []


def test_stale_partials_go_at_start_up(tmp_path: Path) -> None:
    mem = make_memory_server(tmp_path)
    cut_upload(mem, "alice", 4000)
    record = next(partial_dir(mem).glob("*.json"))
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "updated": data["updated"] - 7200}))
    mem.store.close()
    again = make_memory_server(tmp_path)
    assert list(partial_dir(again).iterdir()) == []


# --- expiry ---


def share(mem: MemoryServer, c: Conn, name: str, size: int) -> str:
    c.feed(b"/send %s %d\n" % (name.encode(), size) + bytes(size))
    uploaded = [e for e in c.events() if e["type"] == "uploaded"]
    return str(uploaded[0]["file"]["file_id"])


def test_files_expire_after_retention_days(tmp_path: Path) -> None:
    mem = make_memory_server(tmp_path)
    mem.config.files.retention_days = 2
    c = mem.user("alice", mode="json")
    old = share(mem, c, "old.txt", 10)
    mem.clock.advance(86400 * 1.5)
    new = share(mem, c, "new.txt", 20)
    mem.clock.advance(86400 * 0.6)
    swept = mem.factory.files.sweep().result
    assert (swept.expired, swept.freed) == (1, 10)
    assert not mem.factory.files.store.path(old).exists()
    assert mem.factory.files.store.path(new).exists()
    c.line(f"/get {old}")
    assert c.events()[-1]["code"] == "expired"
    c.line("/files")
    (files,) = [e for e in c.events() if e["type"] == "files"]
    assert [f["file_id"] for f in files["files"]] == [new]
    assert (mem.factory.files.count, mem.factory.files.bytes) == (1, 20)


def test_the_store_cap_evicts_the_oldest_first(tmp_path: Path) -> None:
    mem = make_memory_server(tmp_path)
    mem.config.files.max_store_bytes = 250
    c = mem.user("alice", mode="json")
    ids = []
    for i in range(4):
        ids.append(share(mem, c, f"f{i}.bin", 100))
        mem.clock.advance(1)
    swept = mem.factory.files.sweep().result
    assert swept.expired == 2
    assert [mem.factory.files.store.path(i).exists() for i in ids] == [False, False, True, True]


# --- against the real server ---


def held(server: RealServer, name: str) -> tuple[LineClient, int]:
    """A new connection as ``name``, and what ``/resume`` says is held."""
    c = server.client(name, json_mode=True)
    c.send_line(f"/resume big.bin {len(DATA)} {CRC}")
    return c, int(c.expect_event("resume")["offset"])


def finish(c: LineClient, offset: int) -> None:
    c.send(b"/send big.bin %d %s %d\n" % (len(DATA), CRC.encode(), offset) + DATA[offset:])
    uploaded = c.expect_event("uploaded")
    assert uploaded["file"]["crc32"] == CRC


def cut_and_close(server: RealServer, name: str, at: int, reset: bool) -> None:
    c = server.client(name, json_mode=True)
    c.send(b"/send big.bin %d %s\n" % (len(DATA), CRC.encode()) + DATA[:at])
    if reset:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.sock.close()
    server.wait_for_log(r"Upload big\.bin kept to be resumed")


@pytest.mark.parametrize("reset", [False, True], ids=["close", "rst"])
def test_real_upload_cut_by_close_or_reset_is_resumed(tmp_path: Path, reset: bool) -> None:
    server = RealServer(tmp_path / "data")
    try:
        cut_and_close(server, "alice", 123_457, reset)
        c, offset = held(server, "alice")
        # A reset throws away what the server's kernel had not yet handed over.
        assert 0 < offset <= 123_457 if reset else offset == 123_457
        finish(c, offset)
        files = list((tmp_path / "data" / "files").iterdir())
        assert [f.read_bytes() for f in files] == [DATA]
    finally:
        kill_quietly(server)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "kill-9"])
def test_real_upload_cut_by_the_server_going_is_resumed_after(
    tmp_path: Path, sig: signal.Signals
) -> None:
    data = tmp_path / "data"
    server = RealServer(data)
    try:
        c = server.client("alice", json_mode=True)
        c.send(b"/send big.bin %d %s\n" % (len(DATA), CRC.encode()) + DATA[:150_001])
        poll(lambda: _partial_size(data) == 150_001, "the bytes on disk")
        server.stop(sig)
        server = RealServer(data)
        c, offset = held(server, "alice")
        assert offset == 150_001
        finish(c, offset)
        assert [f.read_bytes() for f in (data / "files").iterdir()] == [DATA]
    finally:
        kill_quietly(server)


def poll(check: Callable[[], bool], what: str) -> None:
    """Wait for something with no event to wait on (a file's size), up to a deadline."""
    end = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)  # polling interval, bounded by the deadline


def _partial_size(data: Path) -> int:
    parts = list((data / "partial").glob("*.part"))
    return parts[0].stat().st_size if parts else -1


def test_the_readme_recipe_with_nc_and_tail(tmp_path: Path) -> None:
    server = RealServer(tmp_path / "data")
    try:
        path = tmp_path / "big.bin"
        path.write_bytes(DATA)
        cut_and_close(server, "alice", 77_777, reset=False)
        asked = subprocess.run(["nc", "-N", "127.0.0.1", str(server.port)],
                               input=f"alice\n/resume big.bin {len(DATA)} {CRC}\n".encode(),
                               capture_output=True, timeout=DEADLINE).stdout.decode()
        offset = int(asked.split(" holds ")[1].split(" bytes")[0])
        assert offset == 77_777
        script = (f'{{ echo alice; echo "/send big.bin {len(DATA)} {CRC} {offset}"; '
                  f'tail -c +$(({offset}+1)) {path}; }} | nc -N 127.0.0.1 {server.port}')
        out = subprocess.run(["sh", "-c", script], capture_output=True, timeout=DEADLINE)
        assert b"-- Stored big.bin:" in out.stdout, out.stdout
        assert [f.read_bytes() for f in (tmp_path / "data" / "files").iterdir()] == [DATA]
    finally:
        kill_quietly(server)
