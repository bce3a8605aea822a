"""Property-based tests over the in-memory protocol: a state machine and a fuzzer.

The state machine interleaves registrations, chat, commands, uploads (good,
short, lying, wrong CRC), disconnects and arbitrary chunk boundaries, and
checks after every step that the registry, deliveries, the file store and
what reached terminals are all as they must be. The fuzzer throws raw bytes,
chunked at random, at ``dataReceived`` and checks that the server neither
raises nor loses sync with the connection.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shutil
import sqlite3
import tempfile
import zlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from chat.protocol import State
from tests.support import Conn, MemoryServer, memory_server

NAMES = ["ann", "bob", "cy", "dee", "ed"]
FORBIDDEN = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\xc2[\x80-\x9f]|\r(?!\n)|(?<!\r)\n")
MESSAGE = re.compile(r"<([^>]+)> m(\d+)\b")
#: Telnet's IAC WILL/WONT ECHO around a password prompt: the only bytes allowed
#: that FORBIDDEN would catch.
ECHO = re.compile(rb"\xff[\xfb\xfc]\x01")


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


class ChatMachine(RuleBasedStateMachine):
    conns = Bundle("conns")
    #: Deliver each reactor turn as one batch (as the server does), or at once.
    coalesce = False

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.mem: MemoryServer = memory_server(self.dir, coalesce=self.coalesce)
        self.live: list[Conn] = []
        self.names: dict[int, str] = {}  # id(conn) -> registered name
        self.counter = 0
        self.sent: dict[int, tuple[str, int]] = {}  # message number -> (sender, n)
        self.seen: dict[int, list[int]] = {}  # id(conn) -> message numbers, in order
        self.expected_files: dict[str, bytes] = {}  # sha256 -> bytes
        self.registered_at: dict[int, int] = {}  # id(conn) -> message counter then
        self.switched: set[int] = set()  # id(conn) of those that ever left text mode
        self.ever_seen: dict[int, set[int]] = {}  # id(conn) -> numbers before a /history

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def feed(self, conn: Conn, data: bytes, cuts: list[int]) -> None:
        for piece in chunks(data, cuts):
            conn.feed(piece)
        self.mem.clock.advance(0)
        self.collect()

    def collect(self) -> None:
        for conn in self.live:
            out = ECHO.sub(b"", conn.take())
            assert not FORBIDDEN.search(out), out
            for line in out.decode("utf-8").split("\r\n"):
                m = MESSAGE.search(line)
                if m:
                    self.seen.setdefault(id(conn), []).append(int(m[2]))

    @rule(target=conns)
    def connect(self) -> Conn:
        conn = self.mem.connect()
        self.live.append(conn)
        self.collect()
        return conn

    @rule(conn=conns, name=st.sampled_from(NAMES), cuts=st.lists(st.integers(0, 20)))
    def register(self, conn: Conn, name: str, cuts: list[int]) -> None:
        if conn not in self.live or conn.proto.state is not State.REGISTER:
            return
        taken = name in self.names.values()
        self.feed(conn, name.encode() + b"\r\n", cuts)
        if not taken:
            assert conn.proto.state is State.CHAT
            self.names[id(conn)] = name
            self.registered_at[id(conn)] = self.counter

    @rule(conn=conns, junk=st.binary(max_size=12), cuts=st.lists(st.integers(0, 40)))
    def chat(self, conn: Conn, junk: bytes, cuts: list[int]) -> None:
        if conn not in self.live or conn.proto.state is not State.CHAT:
            return
        self.counter += 1
        n = self.counter
        body = junk.replace(b"\n", b"").replace(b"\r", b"")
        self.sent[n] = (self.names[id(conn)], n)
        self.feed(conn, b"m%d %s\n" % (n, body), cuts)

    @rule(conn=conns, command=st.sampled_from(
        ["/who", "/help", "/history 5", "/me waves", "/msg bob hi", "/files", "/frob",
         "/proto json", "/proto text", "/session", "/get 0123", "//x", "", "/send"]))
    def command(self, conn: Conn, command: str) -> None:
        if command == "/proto json":
            self.switched.add(id(conn))
        if conn in self.live:
            self.feed(conn, command.encode() + b"\n", [])
            if command.startswith("/history"):  # a listing repeats what came before
                self.ever_seen.setdefault(id(conn), set()).update(self.seen.pop(id(conn), []))

    @rule(conn=conns, data=st.binary(max_size=300), kind=st.sampled_from(
        ["good", "crc", "badcrc", "refused"]), cuts=st.lists(st.integers(0, 400)))
    def upload(self, conn: Conn, data: bytes, kind: str, cuts: list[int]) -> None:
        if conn not in self.live or conn.proto.state is not State.CHAT:
            return
        name = b"..%2F" if kind == "refused" else b"f.bin"
        crc = zlib.crc32(data)
        if kind == "badcrc":
            crc ^= 1
        header = b"/send %s %d" % (name, len(data))
        if kind in ("crc", "badcrc"):
            header += b" %08x" % crc
        self.feed(conn, header + b"\n" + data + b"m0 after\n", cuts)
        if kind in ("good", "crc"):
            self.expected_files[hashlib.sha256(data).hexdigest()] = data

    @rule(conn=conns, data=st.binary(min_size=1, max_size=100))
    def short_upload_then_disconnect(self, conn: Conn, data: bytes) -> None:
        if conn not in self.live or conn.proto.state is not State.CHAT:
            return
        conn.feed(b"/send short.bin %d\n" % (len(data) + 10) + data)
        self.disconnect(conn)

    @precondition(lambda self: bool(self.live))
    @rule(conn=consumes(conns))
    def disconnect(self, conn: Conn) -> None:
        if conn not in self.live:
            return
        conn.close()
        self.live.remove(conn)
        self.names.pop(id(conn), None)
        for seen in (self.seen, self.ever_seen, self.registered_at):
            seen.pop(id(conn), None)  # type: ignore[attr-defined]
        self.switched.discard(id(conn))
        self.collect()

    @rule(conn=conns)
    def quit(self, conn: Conn) -> None:
        if conn in self.live and conn.proto.state in (State.CHAT, State.REGISTER):
            self.feed(conn, b"/quit\n", [])
            self.disconnect(conn)

    @invariant()
    def registry_is_exactly_the_live_names(self) -> None:
        registered = {
            c.proto.user.name.lower()
            for c in self.live
            if c.proto.user is not None and c.proto.state is not State.CLOSED
        }
        assert set(n.lower() for n in self.mem.service.registry.names()) == registered
        assert registered == {n.lower() for n in self.names.values()}

    @invariant()
    def messages_once_each_in_order(self) -> None:
        for numbers in self.seen.values():
            real = [n for n in numbers if n]
            assert real == sorted(real) and len(real) == len(set(real))

    @invariant()
    def store_holds_only_complete_announced_files(self) -> None:
        files = self.mem.factory.files.store
        assert not [p for p in files.tmp_dir.iterdir()] or files.uploads
        with sqlite3.connect(self.mem.store.path) as db:
            rows = db.execute("SELECT id, size, sha256 FROM files").fetchall()
        on_disk = {p.name for p in files.files_dir.iterdir()}
        assert on_disk == {r[0] for r in rows}
        for file_id, size, sha in rows:
            data = (files.files_dir / file_id).read_bytes()
            assert len(data) == size and hashlib.sha256(data).hexdigest() == sha
            assert self.expected_files[sha] == data


ChatMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestChatMachine = ChatMachine.TestCase


class CoalescingChatMachine(ChatMachine):
    """The same, with broadcasts coalesced per reactor turn as on the real reactor.

    A turn spans any number of steps and ends only by the ``end_turn`` rule, so
    replies, joins, leaves and messages interleave inside one batch.
    """

    coalesce = True

    def feed(self, conn: Conn, data: bytes, cuts: list[int]) -> None:
        for piece in chunks(data, cuts):
            conn.feed(piece)
        self.collect()

    @rule()
    def end_turn(self) -> None:
        self.mem.clock.advance(0)
        self.collect()
        for conn in self.live:
            me = self.names.get(id(conn))
            if me is None or id(conn) in self.switched or conn.proto.state is State.CLOSED:
                continue
            since = self.registered_at[id(conn)]
            owed = {n for n, (sender, _) in self.sent.items() if n > since and sender != me}
            seen = set(self.seen.get(id(conn), [])) | self.ever_seen.get(id(conn), set())
            assert owed <= seen, (me, owed - seen)


CoalescingChatMachine.TestCase.settings = ChatMachine.TestCase.settings
TestCoalescingChatMachine = CoalescingChatMachine.TestCase


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=30),
       registered=st.booleans())
def test_fuzz_data_received_never_crashes_or_desyncs(
    junk: bytes, cuts: list[int], registered: bool
) -> None:
    with tempfile.TemporaryDirectory() as d:
        mem = memory_server(Path(d))
        watcher = mem.user("watcher")
        victim = mem.user("victim") if registered else mem.connect()
        for piece in chunks(junk, cuts):
            victim.feed(piece)
        mem.clock.advance(0)
        out = watcher.take() + victim.take()
        assert not FORBIDDEN.search(out)
        proto = victim.proto
        if proto.state is State.RAW:
            victim.feed(b"\0" * proto.raw_left())  # finish whatever upload it declared
        if proto.state in (State.CHAT, State.REGISTER):
            # Back in sync: a fresh line is a line, whatever came before.
            victim.feed(b"\n")
            if proto.state is State.REGISTER:
                victim.feed(b"probe\n")
            if proto.state is State.CHAT and victim.transport.producerState == "producing":
                victim.take()
                watcher.take()
                victim.feed(b"sync-token-42\n")
                assert b"> sync-token-42\r\n" in watcher.take()
