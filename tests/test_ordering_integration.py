"""Ordering (§1) and the rules of §2, against the real server over real sockets.

§1: a command's answer, and every effect others can see, comes before those of
any later line from the same connection, and a command means what it meant
when it was read. Each script is written in one piece, one byte per write, and
cut at five seeded random points (with ``TCP_NODELAY``, so the cuts reach the
server as separate segments).

§2: SIZE is any run of digits; a refused name is never altered; input before a
name is counted as it arrives; a cancelled download is normal; counts in text
mode are good English.

Most tests share one server and name their users with a per-test suffix
(``alice7``), so they never meet each other's users. Waiting is always on a
reply or an event with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import DEADLINE, LineClient, RealServer, kill_quietly, readable, running

LIMIT = "1073741824"  # limits.max_upload_bytes, the default
WHO_TEXT = r"^-- \d+ here:$"
SPLITS = ("whole", "bytes", "cuts-1", "cuts-2", "cuts-3")
_serial = itertools.count(1)


# --- helpers --------------------------------------------------------------------------


def payload(size: int, seed: int = 0) -> bytes:
    """Reproducible bytes with every value, CR and LF included."""
    return random.Random(seed).randbytes(size)


def pieces(data: bytes, split: str) -> list[bytes]:
    """``data`` whole, one byte a piece, or cut at five points seeded by ``split``."""
    if split == "whole":
        return [data]
    if split == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted(random.Random(split).sample(range(1, len(data)), 5))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def send_split(client: LineClient, data: bytes, split: str) -> None:
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for piece in pieces(data, split):
        client.send(piece)


def lines_until(client: LineClient, pattern: str) -> list[str]:
    """Text lines read up to and including the first that matches ``pattern``."""
    rx, lines = re.compile(pattern), []
    end = time.monotonic() + DEADLINE
    while not lines or not rx.search(lines[-1]):
        lines.append(client.read_line(max(0.0, end - time.monotonic())))
    return lines


def events_until(client: LineClient, type_: str, **fields: Any) -> list[dict[str, Any]]:
    """JSON events read up to and including the first ``type_`` with ``fields``."""
    events: list[dict[str, Any]] = []
    end = time.monotonic() + DEADLINE
    while not events or where_event(events[-1:], type_, **fields) is None:
        events.append(json.loads(client.read_line(max(0.0, end - time.monotonic()))))
    return events


def where(lines: list[str], pattern: str) -> int | None:
    """Index of the first line matching ``pattern``."""
    return next((i for i, line in enumerate(lines) if re.search(pattern, line)), None)


def where_event(events: list[dict[str, Any]], type_: str, **fields: Any) -> int | None:
    return next(
        (
            i for i, e in enumerate(events)
            if e["type"] == type_ and all(e.get(k) == v for k, v in fields.items())
        ),
        None,
    )


def next_answer(client: LineClient) -> str:
    """The next line that is not a chat event (those carry a time stamp or an id)."""
    while True:
        line = client.read_line()
        if not (line.startswith("(") or (line.startswith("{") and '"id":' in line)):
            return line


def who_text(client: LineClient) -> list[str]:
    """The names in a text-mode ``/who`` answer."""
    client.send_line("/who")
    count = int(re.match(r"-- (\d+)", client.expect(WHO_TEXT))[1])  # type: ignore[index]
    return [client.read_line().split()[1] for _ in range(count)]


def who_json(client: LineClient) -> list[str]:
    client.send_line("/who")
    return [u["name"] for u in client.expect_event("who")["users"]]


def upload(client: LineClient, name: str, data: bytes) -> dict[str, Any]:
    """Upload over a JSON connection; the ``fileinfo`` of the stored file."""
    client.send(f"/send {name} {len(data)}\r\n".encode() + data)
    return dict(client.expect_event("uploaded")["file"])


def welcome(client: LineClient) -> dict[str, Any]:
    """The ``welcome`` event a JSON client registered with."""
    return json.loads(next(ln for ln in client.seen if '"type":"welcome"' in ln))


def drain_log(server: RealServer) -> None:
    """Read what the server has logged so far (its stderr pipe must never fill)."""
    assert server.proc.stderr is not None
    fd = server.proc.stderr.fileno()
    server.wait_log(lambda: not readable(fd, 0), "the log read to its end")


class Room:
    """The users of one test on the shared server, named with the test's own number."""

    def __init__(self, server: RealServer) -> None:
        self.server = server
        self.n = next(_serial)
        self.clients: list[LineClient] = []

    def name(self, role: str) -> str:
        return f"{role}{self.n}"

    def join(self, role: str, json_mode: bool = False) -> LineClient:
        client = self.server.client(self.name(role), json_mode=json_mode)
        self.clients.append(client)
        return client

    def connect(self) -> LineClient:
        client = LineClient(self.server.port)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        drain_log(self.server)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    with running(tmp_path_factory.mktemp("ordering") / "data") as server:
        yield server


@pytest.fixture
def room(server: RealServer) -> Iterator[Room]:
    room = Room(server)
    try:
        yield room
    finally:
        room.close()


#: Run a test with the connection under test in text mode and in JSON mode.
BOTH_MODES = pytest.mark.parametrize("json_mode", [False, True], ids=["text", "json"])


# --- §1 a, c: an upload's notice and reply come before what the next lines cause ---

_HALF = payload(32 * 1024 - 4, seed=64)
#: 64 KiB of random bytes around a "/quit" line that is file content, not a command.
BIG = _HALF + b"\n/quit\r\n" + _HALF[::-1]
UPLOADS: dict[str, tuple[bytes, str, bool]] = {
    # case: (header line and bytes, file name, stored?)
    "five": (b"/send five.txt 5\r\nABCDE", "five.txt", True),
    "empty": (b"/send empty.txt 0\r\n", "empty.txt", True),
    "crc-mismatch": (b"/send bad.txt 5 00000000\r\nABCDE", "bad.txt", False),
    "64KiB": (b"/send big.bin %d\r\n%s" % (len(BIG), BIG), "big.bin", True),
}


@pytest.mark.parametrize(
    "case, split",
    [(c, s) for c in UPLOADS for s in SPLITS if not (c == "64KiB" and s == "bytes")],
)
@BOTH_MODES
def test_upload_is_answered_and_announced_before_the_next_line(
    room: Room, case: str, split: str, json_mode: bool
) -> None:
    """§1 a, c: notice before the next chat line for everyone; the reply before its echo."""
    upload_bytes, name, stored = UPLOADS[case]
    bob, carol = room.join("bob"), room.join("carol", json_mode=True)
    alice = room.join("alice", json_mode)
    who = room.name("alice")
    send_split(alice, upload_bytes + b"hello after file\r\n/who\r\n", split)

    if json_mode:
        events = events_until(alice, "who")
        echo = where_event(events, "message", sender=who, text="hello after file")
        answer = (
            where_event(events, "uploaded")
            if stored
            else where_event(events, "error", code="crc_mismatch")
        )
        assert echo is not None, events
        assert answer is not None and answer < echo, f"/send unanswered before the echo: {events}"
    else:
        lines = lines_until(alice, WHO_TEXT)
        answer = rf"^-- Stored {re.escape(name)}: id [0-9a-f]{{32}}, " if stored else "^!! .*CRC"
        assert where(lines[:-1], answer) is not None, f"/send unanswered before /who: {lines}"

    hello = rf"<{who}> hello after file$"
    bob_lines = lines_until(bob, hello)
    carol_events = events_until(carol, "message", sender=who, text="hello after file")
    notice = rf"-- {who} shared {re.escape(name)} "
    if stored:
        assert where(bob_lines[:-1], notice) is not None, f"no notice before: {bob_lines}"
        assert where_event(carol_events[:-1], "file", sender=who, name=name) is not None, (
            f"no file event before: {carol_events}"
        )
    else:
        # Nothing stored, nothing announced: not even after alice has had her answer.
        alice.send_line("the end")
        bob_lines += lines_until(bob, rf"<{who}> the end$")
        carol_events += events_until(carol, "message", sender=who, text="the end")
        assert where(bob_lines, notice) is None, bob_lines
        assert where_event(carol_events, "file", sender=who) is None, carol_events


# --- §1 b, c: a command means what it meant when it was read ---------------------------

SECRET = b"<<distinctive lanchat payload>>" * 40


@pytest.mark.parametrize("split", SPLITS)
def test_get_in_text_mode_stays_a_text_answer_after_proto_json(room: Room, split: str) -> None:
    """§1 b, c: /get read in text mode gets the fetch hint, never the file's bytes."""
    info = upload(room.join("owner", json_mode=True), "secret.txt", SECRET)
    alice = room.join("alice")
    alice.expect(r"^-- (No messages yet|End of history)\.$")  # the join replay is over
    send_split(alice, f"/get {info['file_id']}\r\n/proto json\r\n/who\r\n".encode(), split)

    hint, proto, who = (next_answer(alice) for _ in range(3))
    assert hint.startswith("-- ") and "secret.txt" in hint and info["url"] in hint, hint
    assert json.loads(proto) == {"type": "proto", "mode": "json"}
    assert json.loads(who)["type"] == "who"
    alice.send_line("/who")
    assert json.loads(next_answer(alice))["type"] == "who"  # and nothing in between
    received = "\r\n".join(alice.seen).encode() + alice.buf
    assert b"distinctive lanchat payload" not in received
    assert b'"type":"download"' not in received


@pytest.mark.parametrize("split", SPLITS)
def test_get_in_json_mode_stays_a_download_after_proto_text(room: Room, split: str) -> None:
    """§1 b, c (mirrored): /get read in JSON mode downloads, then the text answers follow."""
    info = upload(room.join("owner", json_mode=True), "secret.txt", SECRET)
    alice = room.join("alice", json_mode=True)
    alice.expect_event("history")  # the join replay is over
    send_split(alice, f"/get {info['file_id']}\r\n/proto text\r\n/who\r\n".encode(), split)

    header = next_answer(alice)
    assert '"type":"download"' in header, header
    header = json.loads(header)
    assert header["file"]["file_id"] == info["file_id"]
    assert alice.read_exact(header["length"]) == SECRET
    proto = next_answer(alice)
    assert proto.startswith("-- ") and "text" in proto, proto
    assert re.match(WHO_TEXT, next_answer(alice))


# --- §1 d: /quit right behind an upload ------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
@BOTH_MODES
def test_quit_behind_an_upload_comes_after_its_answer(
    room: Room, split: str, json_mode: bool
) -> None:
    """§1 d: stored, then goodbye, then closed; others see the file before the leave."""
    bob, carol = room.join("bob"), room.join("carol", json_mode=True)
    alice = room.join("alice", json_mode)
    who = room.name("alice")
    send_split(alice, b"/send q.txt 5\r\nABCDE/quit\r\n", split)

    if json_mode:
        events = events_until(alice, "bye")
        assert where_event(events[:-1], "uploaded") is not None, f"bye before uploaded: {events}"
    else:
        lines = lines_until(alice, r"^-- Goodbye")
        assert where(lines[:-1], r"^-- Stored q\.txt: id ") is not None, f"Goodbye first: {lines}"
    assert alice.closed()

    bob_lines = lines_until(bob, rf"-- {who} has left the chat \(quit\)\.$")
    notice = rf"-- {who} shared q\.txt "
    assert where(bob_lines[:-1], notice) is not None, f"leave first: {bob_lines}"
    carol_events = events_until(carol, "leave", name=who)
    assert carol_events[-1]["reason"] == "quit"
    assert where_event(carol_events[:-1], "file", sender=who, name="q.txt") is not None, (
        f"leave first: {carol_events}"
    )


# --- §1 e: an upload in progress holds up nobody else ----------------------------------


def test_chat_flows_while_an_upload_is_in_progress(room: Room) -> None:
    """§1 e: bob chats and carol hears him promptly while alice is mid-way through 20 MiB."""
    alice = room.join("alice", json_mode=True)
    bob, carol = room.join("bob"), room.join("carol", json_mode=True)
    alice.send(b"/send slow.bin 20971520\r\n")
    piece = payload(256 * 1024, seed=5)
    for i in range(8):  # 2 of the 20 MiB
        alice.send(piece)
        bob.send_line(f"while you upload {i}")
        carol.expect_event("message", sender=room.name("bob"), text=f"while you upload {i}",
                           timeout=2)
        assert room.name("bob") in who_text(bob)
    assert not any('"uploaded"' in ln for ln in alice.seen)
    assert not any("slow.bin" in ln for ln in carol.seen)


# --- §2 f: SIZE is any run of digits ---------------------------------------------------


@pytest.mark.parametrize("digits", [20, 25, 31, 1000])
@BOTH_MODES
def test_size_of_any_length_over_the_limit_is_too_large(
    room: Room, digits: int, json_mode: bool
) -> None:
    """§2 f: too_large naming the limit, the connection closes, the next line is never read."""
    bob = room.join("bob")
    alice = room.join("alice", json_mode)
    who, hijacked = room.name("alice"), room.name("hijacked")
    size = "1" + "0" * (digits - 1)
    alice.send(f"/send x.bin {size}\r\n/nick {hijacked}\r\n".encode())

    if json_mode:
        error = alice.expect_event("error")
        assert error["code"] == "too_large" and LIMIT in error["text"], error
    else:
        error_line = alice.expect(r"^!! ")
        assert LIMIT in error_line, error_line
    assert alice.closed()
    bob_lines = lines_until(bob, rf"-- {who} has left the chat \(connection lost\)\.$")
    assert where(bob_lines, rf"is now known as {hijacked}") is None, bob_lines
    names = who_text(bob)
    assert hijacked not in names and who not in names


# --- §2 g: a refused name is never altered ---------------------------------------------


@pytest.mark.parametrize(
    "attempt", [b"b\xffb", b"b\x00b", b"b\x1bb", "b\u00f3b".encode()],
    ids=["invalid-utf8", "nul", "esc", "non-ascii"],
)
@BOTH_MODES
def test_a_bad_name_is_refused_not_altered(room: Room, attempt: bytes, json_mode: bool) -> None:
    """§2 g: invalid_name and the prompt again; a valid name then registers; no 'b'."""
    watcher = room.join("watcher", json_mode=True)
    c = room.connect()
    if json_mode:
        c.send_line("/proto json")
        c.expect(r'"type":"prompt"')
    else:
        c.expect(r"^Choose a username:$")
    c.send(attempt + b"\r\n")
    if json_mode:
        error, prompt = (json.loads(c.read_line()) for _ in range(2))
        assert (error["type"], error.get("code"), prompt["type"]) == (
            "error", "invalid_name", "prompt"
        ), (error, prompt)
    else:
        error_line, prompt_line = c.read_line(), c.read_line()
        assert error_line.startswith("!! ") and prompt_line == "Choose a username:", (
            error_line, prompt_line
        )
    c.send_line(room.name("bee"))
    c.expect("welcome" if json_mode else r"^Welcome to the chat")
    names = {n.lower() for n in who_json(watcher)}
    assert room.name("bee") in names and not names & {"b", "bb"}, names


# --- §2 h: input before a name is counted as it arrives --------------------------------

JUNK = {
    "1000-lines": b"!\r\n" * 1000,
    "1000-helps": b"/help\r\n" * 1000,
    "5000-bytes-of-lines": (b"!" * 100 + b"\r\n") * 49,
    "5000-bytes-no-newline": b"!" * 5000,
}


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """Default flood control (a burst of 5, then 2 lines a second); many connections."""
    folder = tmp_path_factory.mktemp("strict")
    config = folder / "server.toml"
    config.write_text(
        "[limits]\nmax_connections_per_address = 1000\nmax_new_connections_per_minute = 1000\n"
    )
    server = RealServer(folder / "data", "--config", str(config), relaxed=False)
    try:
        yield server
    finally:
        kill_quietly(server)


@pytest.mark.parametrize("junk", JUNK.values(), ids=JUNK.keys())
@BOTH_MODES
def test_too_much_input_before_a_name_closes_at_once(
    strict_server: RealServer, junk: bytes, json_mode: bool
) -> None:
    """§2 h: too_much_input and a close within 3 s, not when flood control gets to it."""
    c = LineClient(strict_server.port)
    try:
        if json_mode:
            c.send_line("/proto json")
            c.expect(r'"type":"prompt"')
        start = time.monotonic()
        c.send(junk)
        assert c.closed(timeout=3.0), f"still open after {time.monotonic() - start:.1f} s"
        lines = [ln.decode("utf-8", "replace") for ln in c.buf.split(b"\r\n")]
        if json_mode:
            errors = [json.loads(ln) for ln in lines if '"type":"error"' in ln]
            assert errors and errors[-1]["code"] == "too_much_input", errors[-3:]
        else:
            assert where(lines, r"^!! (?i:too much input)") is not None, lines[-3:]
    finally:
        c.close()
        drain_log(strict_server)


# --- §2 i: a cancelled download is normal ----------------------------------------------

BAD_LOG = re.compile(r"(?i)unhandled error|traceback|cannot register producer|#critical\]")


def assert_clean_log(server: RealServer) -> None:
    bad = [ln for ln in server.log if BAD_LOG.search(ln)]
    assert not bad, "".join(bad) + "\n--- the whole log:\n" + "".join(server.log)


def abandon(client: LineClient, reset: bool) -> None:
    """Close abruptly: a FIN with unread data, or (SO_LINGER 0) a RST."""
    if reset:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
@pytest.mark.parametrize("via", ["chat", "attach"])
def test_a_cancelled_download_logs_no_error(real: RealServer, via: str, reset: bool) -> None:
    """§2 i: a reader that hangs up mid-download is normal; the file is still served whole.

    An unhandled error in a Deferred is only logged once the Deferred is garbage
    collected, so the log is checked again after a clean stop.
    """
    data = payload(8 * 1024 * 1024, seed=8)
    owner = real.client("owner", json_mode=True)
    info = upload(owner, "big.bin", data)
    if via == "chat":
        reader = real.client("reader", json_mode=True)
    else:
        reader = LineClient(real.port)
        reader.send_line(f"/attach {welcome(owner)['session']}")
        reader.expect(r'"type":"attached"')
    reader.send_line(f"/get {info['file_id']}")
    assert json.loads(reader.expect(r'"type":"download"'))["length"] == len(data)
    assert reader.read_exact(4096) == data[:4096]
    abandon(reader, reset)

    if via == "chat":
        assert owner.expect_event("leave", name="reader")["reason"] == "connection lost"
    assert "owner" in who_json(owner)
    drain_log(real)
    assert_clean_log(real)
    again = real.client("again", json_mode=True)
    again.send_line(f"/get {info['file_id']}")
    assert again.read_exact(again.expect_event("download")["length"]) == data
    owner.send_line("still here")
    owner.expect_event("message", sender="owner", text="still here")
    assert real.stop() == 0
    assert_clean_log(real)


# --- §2 j: counts in text mode are good English ----------------------------------------


@pytest.mark.parametrize("n, heading", [(1, "-- Last 1 message:"), (2, "-- Last 2 messages:")])
def test_history_heading_counts_in_english(real: RealServer, n: int, heading: str) -> None:
    """§2 j: '-- Last 1 message:', '-- Last 2 messages:'."""
    reader = real.client("reader")
    reader.expect(r"^-- No messages yet\.$")
    talker = real.client("talker", json_mode=True)
    for i in range(n):
        talker.send_line(f"line {i}")
        talker.expect_event("message", text=f"line {i}")
    reader.send_line("/history")
    assert reader.expect(r"^-- Last ") == heading


@pytest.mark.parametrize("n, heading", [(1, "-- 1 recent file:"), (2, "-- 2 recent files:")])
def test_files_heading_counts_in_english(real: RealServer, n: int, heading: str) -> None:
    """§2 j: '-- 1 recent file:', '-- 2 recent files:'."""
    uploader = real.client("uploader", json_mode=True)
    for i in range(n):
        upload(uploader, f"f{i}.txt", b"x")
    reader = real.client("reader")
    reader.send_line("/files")
    assert reader.expect(r"^-- (\d+ recent|No files)") == heading


@pytest.mark.parametrize("data, size", [(b"1", "1 byte"), (b"hello", "5 bytes")])
def test_stored_reply_counts_bytes_in_english(room: Room, data: bytes, size: str) -> None:
    """§2 j: '-- Stored one.txt: id ID, 1 byte, CRC-32 XXXXXXXX.' (several: 'N bytes')."""
    alice = room.join("alice")
    alice.send(f"/send one.txt {len(data)}\r\n".encode() + data)
    crc = f"{zlib.crc32(data):08x}"
    line = alice.expect(r"^-- Stored one\.txt:")
    expected = rf"-- Stored one\.txt: id [0-9a-f]{{32}}, {size}, CRC-32 {crc}\."
    assert re.fullmatch(expected, line), line

