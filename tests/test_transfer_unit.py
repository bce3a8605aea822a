"""Issue 3, file attachments, in memory: no sockets, no threads, a task.Clock.

The whole stack (protocol, service, store, file store) runs synchronously
through ``StringTransport``s, so every ordering asserted here is exact.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from twisted.internet import defer
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.basic import FileSender

from chat import transfer as transfer_module
from chat import wire
from chat.render import error_text
from chat.transfer import Upload, decode_file_name
from chat.units import human_size
from tests.support import Conn, MemoryServer, memory_server, relaxed_config


def server(tmp_path: Path, **limits: int) -> MemoryServer:
    config = relaxed_config()
    for key, value in limits.items():
        setattr(config.limits, key, value)
    return memory_server(tmp_path, config)


def crc(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


def rows(mem: MemoryServer) -> list[tuple[Any, ...]]:
    with sqlite3.connect(mem.store.path) as db:
        return db.execute(
            "SELECT id, name, size, crc32, sha256, uploader, ts FROM files ORDER BY ts"
        ).fetchall()


def stored(mem: MemoryServer) -> list[str]:
    return sorted(p.name for p in mem.factory.files.store.files_dir.iterdir())


def temporaries(mem: MemoryServer) -> list[str]:
    return sorted(p.name for p in mem.factory.files.store.tmp_dir.iterdir())


def assert_no_trace(mem: MemoryServer) -> None:
    assert rows(mem) == []
    assert stored(mem) == []
    assert temporaries(mem) == []
    assert mem.factory.files.store.uploads == set()


def pump(conn: Conn) -> None:
    """Run a download's producer to the end (StringTransport never pulls)."""
    for _ in range(10_000):
        producer = conn.transport.producer
        if not isinstance(producer, FileSender):
            return
        producer.resumeProducing()
    raise AssertionError("download never finished")


def people(mem: MemoryServer, *specs: str) -> list[Conn]:
    """Register users (``"alice:json"`` or ``"bob"``), then forget every join."""
    conns = [mem.user(*spec.split(":")) for spec in specs]
    for c in conns:
        c.take()
    return conns


def upload(conn: Conn, name: str, data: bytes, *extra: str) -> None:
    conn.feed(f"/send {name} {len(data)} {' '.join(extra)}".rstrip().encode() + b"\r\n" + data)


def session_key(conn: Conn) -> str:
    conn.line("/session")
    line = conn.take().decode()
    if line.startswith("{"):
        return str(json.loads(line)["session"])
    m = re.search(r"session key is (\S+)\.", line)
    assert m, line
    return m[1]


# --- the header ---------------------------------------------------------------


def test_parse_send_header_accepts_the_three_forms() -> None:
    assert wire.Send.parse("a.txt 0").size == 0
    r = wire.Send.parse("my%20file 12345 DEADbeef")
    assert (r.name, r.size, r.crc32) == ("my%20file", 12345, 0xDEADBEEF)
    assert wire.Send.parse("a " + "9" * 20).size == 10**20 - 1


@pytest.mark.parametrize("digits", ["1" + "0" * 20, "1" + "0" * 30, "0" * 50 + "7", "9" * 5000])
def test_any_run_of_ascii_digits_is_a_size(digits: str) -> None:
    """However long: a size over the limit is too_large, never a malformed header."""
    size = wire.Send.parse(f"a.txt {digits}").size
    assert size == (int(digits) if len(digits) < 4000 else 10**4000)


@pytest.mark.parametrize(
    "args",
    [
        "a.txt +5", "a.txt 5_000", "a.txt \u0665", "a.txt \uff15", "a.txt -5", "a.txt 5.0",
        "a.txt 0x5", "a.txt 5 ", "a.txt", "", "a.txt 5 1234567",
        "a.txt 5 123456789", "a.txt 5 1234567g", "a.txt 5 +1234567", "a.txt 5 0000000\u0665",
        "a.txt 5 deadbeef extra", "a.txt \u00b2",
    ],
)
def test_parse_send_header_refuses(args: str) -> None:
    with pytest.raises(wire.CommandError) as refused:
        wire.Send.parse(args)
    assert refused.value.code == "bad_header"


@pytest.mark.parametrize(
    "args", ["notes.txt +5", "notes.txt 5_000", "notes.txt \u0665", "notes.txt \uff15",
             "notes.txt 5 1234567", "notes.txt 5 12345678x", "notes.txt", "notes.txt 5 1 2"],
)
def test_malformed_header_is_an_error_and_no_raw_mode(mem: MemoryServer, args: str) -> None:
    alice, bob = people(mem, "alice:json", "bob")
    alice.line(f"/send {args}".encode())
    # Had any of these been read as SIZE 5, "hello" would vanish into a file.
    alice.line("hello world")
    events = alice.events()
    assert events[0]["type"] == "error" and events[0]["code"] == "bad_header"
    assert events[1]["type"] == "message" and events[1]["text"] == "hello world"
    (said,) = [ln for ln in bob.lines() if "<alice>" in ln]
    assert said.endswith("<alice> hello world")
    assert_no_trace(mem)


# --- one scripted stream, every chunk size ------------------------------------------

FILE_A = b"line one\n/quit\r\n\x00\xff binary \r\n/send x 1\n"
FILE_B = b"xyz"
SCRIPT = (
    f"/send notes.txt {len(FILE_A)}\r\n".encode() + FILE_A + b"after a\n"
    + b"/send empty.bin 0\n" + b"after empty\r\n"
    + f"/send b%20b.bin 3 {crc(FILE_B)}\n".encode() + FILE_B + b"after b\n"
)


def test_one_stream_at_every_chunk_size(tmp_path: Path) -> None:
    for size in range(1, len(SCRIPT) + 1):
        (tmp_path / f"chunk{size}").mkdir()
        mem = memory_server(tmp_path / f"chunk{size}")
        alice, bob = people(mem, "alice:json", "bob")
        for i in range(0, len(SCRIPT), size):
            alice.feed(SCRIPT[i : i + size])
        events = alice.events()
        assert [e["type"] for e in events] == ["uploaded", "file", "message"] * 3, size
        names = [e["file"]["name"] for e in events if e["type"] == "uploaded"]
        assert names == ["notes.txt", "empty.bin", "b b.bin"], size
        texts = [e["text"] for e in events if e["type"] == "message"]
        assert texts == ["after a", "after empty", "after b"], size
        for e, data in zip(
            (e for e in events if e["type"] == "uploaded"), (FILE_A, b"", FILE_B), strict=True
        ):
            f = e["file"]
            assert (f["size"], f["crc32"]) == (len(data), crc(data)), size
            assert mem.factory.files.store.path(f["file_id"]).read_bytes() == data, size
        seen = bob.lines()
        said = [ln.split("> ", 1)[1] for ln in seen if "<alice>" in ln]
        assert said == ["after a", "after empty", "after b"], (size, seen)
        assert sum("alice shared" in ln for ln in seen) == 3, size
        assert not any("line one" in ln or "binary" in ln for ln in seen), size
        assert alice.proto.state.value == "chat" and not alice.transport.disconnecting, size
        assert temporaries(mem) == []


# --- storing ------------------------------------------------------------------------


def test_upload_is_stored_by_id_with_a_record(mem: MemoryServer) -> None:
    alice, bob = people(mem, "alice:json", "bob")
    data = bytes(range(256)) * 10
    upload(alice, "my%20notes%20%C3%A9t%C3%A9%2520.txt", data)
    (uploaded,) = [e for e in alice.events() if e["type"] == "uploaded"]
    info = uploaded["file"]
    file_id = info["file_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", file_id)  # 128 random bits
    assert info["name"] == "my notes été%20.txt"  # decoded once
    assert (info["size"], info["crc32"]) == (len(data), crc(data))
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored(mem) == [file_id]
    assert mem.factory.files.store.path(file_id).read_bytes() == data
    assert temporaries(mem) == []
    assert rows(mem) == [(
        file_id, "my notes été%20.txt", len(data), crc(data), hashlib.sha256(data).hexdigest(),
        "alice", mem.clock.seconds(),
    )]
    notice = [ln for ln in bob.lines() if "shared" in ln]
    assert len(notice) == 1
    assert (
        f"-- alice shared my notes été%20.txt ({human_size(len(data))}). "
        f"Fetch it with /get {file_id} or http://127.0.0.1:8001/files/{file_id}/"
        "my%20notes%20%C3%A9t%C3%A9%2520.txt"
    ) in notice[0]
    assert human_size(len(data)) == "2.5 KiB"


def test_uploads_are_answered_in_the_order_they_were_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second upload (and the line after it) waits until the first is answered."""
    mem = memory_server(tmp_path)
    alice, bob = people(mem, "alice:json", "bob:json")
    gates: list[defer.Deferred[Any]] = []
    real_finish = Upload.finish

    def slow_finish(self: Upload) -> defer.Deferred[Any]:
        gate: defer.Deferred[Any] = defer.Deferred()
        gates.append(gate)
        return gate.addCallback(lambda _: real_finish(self))

    def seen(conn: Conn) -> list[str]:
        return [e["file"]["name"] if e["type"] == "uploaded" else e.get("name") or e["text"]
                for e in conn.events() if e["type"] in ("uploaded", "file", "message")]

    monkeypatch.setattr(Upload, "finish", slow_finish)
    upload(alice, "first.txt", b"1")
    upload(alice, "second.txt", b"2")
    alice.line("after both")
    assert len(gates) == 1  # the second is read but not acted on
    assert seen(alice) == seen(bob) == []
    gates[0].callback(None)
    assert len(gates) == 2
    assert seen(alice) == ["first.txt", "first.txt"]  # uploaded, then its own file notice
    assert seen(bob) == ["first.txt"]
    gates[1].callback(None)
    assert seen(alice) == ["second.txt", "second.txt", "after both"]
    assert seen(bob) == ["second.txt", "after both"]


def test_two_uploads_of_one_name_are_two_files(mem: MemoryServer) -> None:
    alice, bob = people(mem, "alice:json", "bob:json")
    alice.line("/send same.txt 6")
    bob.line("/send same.txt 6")
    alice.feed(b"aaa")
    bob.feed(b"bbb")
    alice.feed(b"AAA")
    bob.feed(b"BBB")
    ids = {}
    for who, conn in (("alice", alice), ("bob", bob)):
        (e,) = [e for e in conn.events() if e["type"] == "uploaded"]
        ids[who] = e["file"]["file_id"]
    assert ids["alice"] != ids["bob"]
    assert mem.factory.files.store.path(ids["alice"]).read_bytes() == b"aaaAAA"
    assert mem.factory.files.store.path(ids["bob"]).read_bytes() == b"bbbBBB"
    assert sorted(r[5] for r in rows(mem)) == ["alice", "bob"]


def test_text_mode_sender_gets_a_stored_line_not_its_own_notice(mem: MemoryServer) -> None:
    alice = mem.user("alice")
    upload(alice, "a.txt", b"hello")
    lines = alice.lines()
    assert len(lines) == 1
    assert re.fullmatch(
        rf"-- Stored a\.txt: id [0-9a-f]{{32}}, 5 bytes, CRC-32 {crc(b'hello')}\.", lines[0]
    )


def test_chat_flows_to_and_around_an_uploader(mem: MemoryServer) -> None:
    alice, bob, carol = people(mem, "alice", "bob", "carol")
    alice.line("/send big.bin 10")
    alice.feed(b"12345")
    bob.line("while you upload")
    assert any(ln.endswith("<bob> while you upload") for ln in alice.lines())
    assert any(ln.endswith("<bob> while you upload") for ln in carol.lines())
    assert alice.proto.state.value == "raw"
    alice.feed(b"67890done\n")
    assert mem.factory.files.store.path(rows(mem)[0][0]).read_bytes() == b"1234567890"
    assert any(ln.endswith("<alice> done") for ln in carol.lines())


# --- refusals -------------------------------------------------------------------------


def test_too_large_names_the_limit_and_closes(tmp_path: Path) -> None:
    mem = server(tmp_path, max_upload_bytes=100)
    alice, bob = people(mem, "alice:json", "bob")
    upload(alice, "ok.bin", b"x" * 100)
    assert alice.events()[0]["type"] == "uploaded"
    bob.take()
    alice.feed(b"/send big.bin 101\r\nhello, this is not a line\n" + b"y" * 101)
    (error,) = alice.events()
    assert error["code"] == "too_large" and "100 bytes" in error["text"]
    assert alice.transport.disconnecting
    # Nothing after the header was read as a line; alice is gone, not a ghost.
    (seen,) = bob.lines()
    assert seen.endswith("-- alice has left the chat (connection lost).")
    assert mem.service.registry.get("alice") is None
    assert len(rows(mem)) == 1 and temporaries(mem) == []


REFUSED_NAMES = [
    "a%2Fb", "a/b", "a%5Cb", "a\\b", "a%00b", "a%0Ab", "a%0Db", "a%1Bb", "a%7Fb", "a%C2%85b",
    "a%E2%80%A8b", ".", "..", "%2E", "%2E%2E", "a" * 256, "%C3%A9" * 128, "%FF", "a%C3",
]


@pytest.mark.parametrize("token", REFUSED_NAMES)
def test_refused_name_discards_exactly_size_bytes(mem: MemoryServer, token: str) -> None:
    alice, bob = people(mem, "alice:json", "bob")
    data = b"evil line\n/quit\n"
    alice.feed(f"/send {token} {len(data)}\r\n".encode() + data + b"after\n")
    events = alice.events()
    assert events[0]["code"] == "refused"
    assert f"{len(data)} bytes are discarded" in events[0]["text"]
    assert [e.get("text") for e in events[1:]] == ["after"]
    seen = bob.lines()
    assert len(seen) == 1 and seen[0].endswith("<alice> after")
    assert_no_trace(mem)


@pytest.mark.parametrize("name", ["a" * 255, "\u00e9" * 127 + "a", "...", ".hidden", "a b"])
def test_names_at_the_edges_are_accepted(mem: MemoryServer, name: str) -> None:
    alice = mem.user("alice", "json")
    upload(alice, quote(name, safe=""), b"ok")
    (e,) = [e for e in alice.events() if e["type"] == "uploaded"]
    assert e["file"]["name"] == name
    assert rows(mem)[0][1] == name


def test_decode_file_name_reasons() -> None:
    assert decode_file_name("a%20b") == ("a b", None)
    for token in REFUSED_NAMES:
        name, why = decode_file_name(token)
        assert name is None and why


def test_not_enough_disk_is_refused_and_discarded(tmp_path: Path) -> None:
    mem = server(tmp_path, disk_margin_bytes=10**18)
    alice, bob = people(mem, "alice", "bob")
    alice.feed(b"/send a.txt 5\n/quitafter\n")
    (line,) = alice.lines()  # no "unknown command /quitafter": the 5 bytes were skipped
    assert line.startswith("!! Not enough disk space") and "5 bytes are discarded" in line
    (seen,) = bob.lines()
    assert seen.endswith("<alice> after")
    assert_no_trace(mem)


def test_quota_is_refused_and_discarded(tmp_path: Path) -> None:
    mem = server(tmp_path, user_quota_bytes=100)
    alice, bob = people(mem, "alice:json", "bob")
    upload(alice, "one.bin", b"1" * 60)
    assert alice.events()[0]["type"] == "uploaded"
    upload(alice, "two.bin", b"2" * 41)
    alice.line("still here")
    events = alice.events()
    assert events[0]["code"] == "refused" and "quota" in events[0]["text"]
    assert events[1]["text"] == "still here"
    assert not any("222" in ln for ln in bob.lines())
    upload(alice, "three.bin", b"3" * 40)  # exactly up to the quota
    assert alice.events()[0]["type"] == "uploaded"
    assert [r[1] for r in rows(mem)] == ["one.bin", "three.bin"]


def test_crc_mismatch_names_both_and_stores_nothing(mem: MemoryServer) -> None:
    alice, bob = people(mem, "alice:json", "bob")
    alice.feed(b"/send a.txt 5 00000000\r\nhelloafter\n")
    events = alice.events()
    assert events[0]["code"] == "crc_mismatch"
    assert "00000000" in events[0]["text"] and crc(b"hello") in events[0]["text"]
    assert events[1]["text"] == "after"
    (seen,) = bob.lines()
    assert seen.endswith("<alice> after")
    assert_no_trace(mem)
    # the right CRC, in capitals, is accepted
    upload(alice, "a.txt", b"hello", crc(b"hello").upper())
    assert alice.events()[0]["type"] == "uploaded"


class NoProducer:
    def pauseProducing(self) -> None:
        raise AssertionError("a few bytes never pause the connection")

    resumeProducing = stopProducing = pauseProducing


def test_a_declared_sha256_is_checked_by_the_upload_and_a_mismatch_stores_nothing(
    mem: MemoryServer,
) -> None:
    """The SHA-256 is compared where the upload computes it, like the CRC-32."""
    (alice,) = people(mem, "alice:json")
    files = mem.factory.files
    user = files.chat.registry.get("alice")
    assert user is not None
    want, have = hashlib.sha256(b"other").hexdigest(), hashlib.sha256(b"hello").hexdigest()
    answers: list[Any] = []
    up = files.offer(user, "user:alice", wire.Send("a.txt", 5), NoProducer(),
                     expected_sha256=want)
    assert isinstance(up, Upload)
    up.write(b"hello")
    files.complete(up, None, answers.append)
    (error,) = answers
    assert (error.code, error.params) == ("digest_mismatch", {"expected": want, "actual": have})
    assert error_text(error) == (
        f"SHA-256 mismatch: you declared {want}, the bytes have {have}. Nothing was stored."
    )
    assert [e for e in alice.events() if e["type"] == "file"] == []
    assert_no_trace(mem)
    up = files.offer(user, "user:alice", wire.Send("a.txt", 5), NoProducer(),
                     expected_sha256=have.upper())
    assert isinstance(up, Upload)
    up.write(b"hello")
    files.complete(up, None, answers.append)
    assert answers[1].type == "uploaded" and answers[1].file.sha256 == have
    assert stored(mem) == [answers[1].file.file_id]


def test_connection_lost_mid_upload_leaves_no_trace(mem: MemoryServer) -> None:
    alice, bob = people(mem, "alice:json", "bob")
    alice.line("/send part.bin 10")
    alice.feed(b"1234")
    assert len(temporaries(mem)) == 1  # it was streaming to DATA/tmp
    with capturedLogs() as events:
        alice.close()
    text = "\n".join(formatEvent(e) for e in events)
    assert "4 of 10 bytes" in text and "part.bin" in text
    assert_no_trace(mem)
    seen = bob.lines()
    assert len(seen) == 1 and "has left" in seen[0]  # a leave, no file notice


# --- transfer connections ------------------------------------------------------------


def attach(mem: MemoryServer, key: str) -> Conn:
    conn = mem.connect(40001)
    conn.take()
    conn.line(f"/attach {key}")
    return conn


def test_attach_acts_for_the_owner_and_is_no_participant(mem: MemoryServer) -> None:
    alice, bob = people(mem, "alice", "bob:json")
    key = session_key(alice)
    transfer = attach(mem, key)
    assert transfer.events() == [{"type": "attached", "name": "alice"}]
    bob.line("/who")
    (who,) = bob.events()
    assert [u["name"] for u in who["users"]] == ["alice", "bob"]
    transfer.line("hello?")
    assert transfer.events()[0]["code"] == "attached"
    transfer.line("/who")
    assert transfer.events()[0]["code"] == "not_here"
    upload(transfer, "t.txt", b"via transfer")
    (uploaded,) = transfer.events()
    assert uploaded["type"] == "uploaded" and uploaded["file"]["uploader"] == "alice"
    (shared,) = bob.events()
    assert shared["type"] == "file" and shared["sender"] == "alice"
    assert rows(mem)[0][5] == "alice"
    transfer.line("/files")
    assert [f["name"] for f in transfer.events()[0]["files"]] == ["t.txt"]
    assert not any("join" in ln or "left" in ln for ln in alice.lines())
    # it ends with the owner's session
    alice.line("/quit")
    assert transfer.events() == [{"type": "bye", "reason": "owner left"}]
    assert transfer.transport.disconnecting
    assert [e["type"] for e in bob.events()] == ["leave"]


def test_attach_with_a_wrong_key_is_refused_and_closed(mem: MemoryServer) -> None:
    mem.user("alice")
    conn = attach(mem, "not-a-key")
    (error,) = conn.events()
    assert error["code"] == "bad_session"
    assert conn.transport.disconnecting


def test_closing_a_transfer_connection_mid_upload(mem: MemoryServer) -> None:
    alice, bob = people(mem, "alice:json", "bob")
    key = session_key(alice)
    transfer = attach(mem, key)
    transfer.take()
    transfer.line("/send half.bin 100")
    transfer.feed(b"x" * 50)
    transfer.close()
    assert_no_trace(mem)
    alice.line("still chatting")
    assert bob.lines()[-1].endswith("<alice> still chatting")
    assert mem.service.registry.get("alice") is not None


# --- downloads ----------------------------------------------------------------------


def shared(mem: MemoryServer, data: bytes, name: str = "f.bin") -> dict[str, Any]:
    up = mem.user("uploader", "json")
    upload(up, name, data)
    (e,) = [e for e in up.events() if e["type"] == "uploaded"]
    return dict(e["file"])


def test_get_sends_header_then_exact_bytes_and_holds_chat(mem: MemoryServer) -> None:
    data = bytes(range(256)) * 1000  # several producer chunks
    info = shared(mem, data)
    alice, bob = people(mem, "alice:json", "bob")
    alice.line(f"/get {info['file_id']}")
    header = alice.take()
    assert header.endswith(b"\r\n") and header.count(b"\r\n") == 1
    event = json.loads(header)
    assert event["type"] == "download"
    assert (event["offset"], event["length"]) == (0, len(data))
    assert event["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    bob.line("held back")
    assert alice.take() == b""  # chat waits until the last byte
    pump(alice)
    out = alice.take()
    assert out[: len(data)] == data
    rest = json.loads(out[len(data) :])
    assert rest["type"] == "message" and rest["text"] == "held back"


def test_get_from_an_offset_and_queued_gets(mem: MemoryServer) -> None:
    data = b"0123456789" * 10_000
    info = shared(mem, data)
    alice = mem.user("alice", "json")
    alice.line(f"/get {info['file_id']} 99990")
    alice.line(f"/get {info['file_id']} {len(data)}")
    first, _, _ = alice.take().partition(b"\r\n")
    assert json.loads(first)["length"] == 10
    pump(alice)
    out = alice.take()
    assert out[:10] == b"0123456789"
    second = json.loads(out[10:])
    assert (second["type"], second["offset"], second["length"]) == ("download", len(data), 0)
    pump(alice)
    assert alice.take() == b""


def test_get_problems(mem: MemoryServer) -> None:
    info = shared(mem, b"abc")
    alice = mem.user("alice", "json")
    alice.line(f"/get {'0' * 32}")
    alice.line(f"/get {info['file_id']} 4")
    alice.line(f"/get {info['file_id']} \u0661")  # an Arabic-Indic 1 is no offset
    alice.line(f"/get {info['file_id']} -1")
    alice.line("/get")
    events = alice.events()
    assert [e.get("code") for e in events] == [
        "no_such_file", "bad_offset", "usage", "usage", "usage"
    ]
    assert not isinstance(alice.transport.producer, FileSender)  # no download started


def test_text_mode_get_is_a_hint_without_bytes(mem: MemoryServer) -> None:
    data = b"SECRET-FILE-BYTES"
    info = shared(mem, data)
    alice = mem.user("alice")
    alice.line(f"/get {info['file_id']}")
    out = alice.take()
    assert data not in out
    assert f"http://127.0.0.1:8001/files/{info['file_id']}/f.bin".encode() in out
    assert b"curl" in out
    assert not isinstance(alice.transport.producer, FileSender)  # no download started


def test_files_lists_recent_attachments(mem: MemoryServer) -> None:
    alice = mem.user("alice", "json")
    for i in range(3):
        upload(alice, f"f{i}.txt", b"x" * i)
        mem.clock.advance(1)
    alice.take()
    alice.line("/files 2")
    alice.line("/files")
    alice.line("/files x")
    two, three, bad = alice.events()
    assert [f["name"] for f in two["files"]] == ["f1.txt", "f2.txt"]
    assert [f["name"] for f in three["files"]] == ["f0.txt", "f1.txt", "f2.txt"]
    assert all(f["url"].startswith("http://127.0.0.1:8001/files/") for f in three["files"])
    assert bad["code"] == "usage"
    bob = mem.user("bob")
    bob.line("/files")
    lines = bob.lines()
    assert lines[0] == "-- 3 recent files:" and "f2.txt" in lines[3] and "by alice" in lines[3]


def test_get_of_a_record_whose_file_is_gone(mem: MemoryServer) -> None:
    info = shared(mem, b"soon gone")
    mem.factory.files.store.path(info["file_id"]).unlink()
    alice, bob = people(mem, "alice:json", "bob")
    alice.line(f"/get {info['file_id']}")
    (error,) = alice.events()
    assert error["code"] == "no_such_file"
    bob.line("still flowing")  # no download header promised bytes that never come
    assert alice.events()[0]["text"] == "still flowing"


def test_bytes_are_fsynced_before_the_atomic_rename(
    mem: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync, real_rename = transfer_module.os.fsync, transfer_module.os.rename

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def rename(src: Any, dst: Any) -> None:
        calls.append(f"rename {Path(src).parent.name}/ -> {Path(dst).parent.name}/")
        assert Path(src).read_bytes() == b"durable"  # complete before it is visible
        real_rename(src, dst)

    monkeypatch.setattr(transfer_module.os, "fsync", fsync)
    monkeypatch.setattr(transfer_module.os, "rename", rename)
    alice = mem.user("alice", "json")
    alice.line("/send d.txt 7")
    alice.feed(b"dura")
    assert stored(mem) == [] and len(temporaries(mem)) == 1  # nothing visible yet
    alice.feed(b"ble")
    assert calls[:2] == ["fsync", "rename tmp/ -> files/"]
    assert len(stored(mem)) == 1 and temporaries(mem) == []


def test_uploads_in_flight_count_against_the_quota(tmp_path: Path) -> None:
    mem = server(tmp_path, user_quota_bytes=100)
    (alice,) = people(mem, "alice:json")
    session = session_key(alice)
    side = mem.connect()
    side.line(f"/attach {session}")
    side.take()
    side.feed(b"/send first.bin 80\n" + b"1" * 10)  # 80 bytes promised, 10 in so far
    alice.feed(b"/send second.bin 30\n" + b"2" * 30)
    events = alice.events()
    assert events[0]["code"] == "refused" and "quota" in events[0]["text"]
    side.feed(b"1" * 70)
    assert side.events()[0]["type"] == "uploaded"
    assert [r[1] for r in rows(mem)] == ["first.bin"]


def test_uploads_in_flight_count_against_free_disk(tmp_path: Path) -> None:
    mib = 1024 * 1024
    free = shutil.disk_usage(tmp_path).free
    mem = server(tmp_path, disk_margin_bytes=free - 100 * mib)  # room for ~100 MiB more
    alice, bob = people(mem, "alice:json", "bob:json")
    alice.feed(b"/send a.bin %d\n" % (90 * mib) + b"a" * 10)
    assert alice.events() == []  # accepted: streaming in
    bob.feed(b"/send b.bin %d\n" % (20 * mib))
    events = bob.events()
    assert events[0]["code"] == "refused" and "disk space" in events[0]["text"]


def test_startup_cleans_directories_left_in_tmp(tmp_path: Path) -> None:
    (tmp_path / "tmp" / "stale-dir" / "deep").mkdir(parents=True)
    (tmp_path / "tmp" / "stale-dir" / "deep" / "x.part").write_bytes(b"x")
    (tmp_path / "files").mkdir(exist_ok=True)
    (tmp_path / "files" / "junk-dir").mkdir()
    mem = server(tmp_path)
    assert list(mem.factory.files.store.tmp_dir.iterdir()) == []
    assert list(mem.factory.files.store.files_dir.iterdir()) == []
