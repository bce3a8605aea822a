"""Limits through in-memory transports and ``task.Clock``: at the limit and one past it."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher

from chat import events as ev
from chat.config import Config
from chat.protocol import ChatProtocol, State
from chat.render import JsonRenderer
from chat.store import Store
from tests.support import Conn, MemoryServer, memory_server


def server(tmp_path: Path, **limits: Any) -> MemoryServer:
    config = Config()
    config.limits.max_connections_per_address = 1000
    config.limits.max_new_connections_per_minute = 1000
    for key, value in limits.items():
        setattr(config.limits, key, value)
    return memory_server(tmp_path, config)


def said(conn: Conn) -> list[str]:
    return [ln.split("> ", 1)[1] for ln in conn.lines() if "> " in ln]


def pair(mem: MemoryServer) -> tuple[Conn, Conn]:
    a, b = mem.user("alice"), mem.user("bob")
    mem.clock.advance(10)  # a full bucket again after registering
    a.take()
    b.take()
    return a, b


# --- flood control ---


def test_burst_then_steady_rate_nothing_lost(tmp_path: Path) -> None:
    mem = server(tmp_path)
    a, b = pair(mem)
    a.feed(b"".join(f"line {i}\n".encode() for i in range(30)))
    assert said(b) == [f"line {i}" for i in range(5)]  # the burst, at once
    assert a.transport.producerState == "paused"
    mem.clock.advance(0.49)
    assert said(b) == []
    mem.clock.advance(0.01)
    assert said(b) == ["line 5"]  # then 2 a second
    got = ["line 5"]
    for _ in range(30):
        mem.clock.advance(0.5)
        got += said(b)
    assert got == [f"line {i}" for i in range(5, 30)]  # late, in order, none lost
    assert not a.transport.disconnecting and a.transport.producerState == "producing"


def test_long_lines_cost_more(tmp_path: Path) -> None:
    mem = server(tmp_path)
    a, b = pair(mem)
    a.feed(b"x" * 2000 + b"\nsecond\nthird\n")  # 1 + 2000 // 512 = 4 tokens
    assert len(said(b)) == 2
    mem.clock.advance(0.5)
    assert said(b) == ["third"]


def test_empty_lines_count(tmp_path: Path) -> None:
    mem = server(tmp_path)
    a, b = pair(mem)
    a.feed(b"\n\n\n\n\nnot yet\n")
    assert said(b) == []
    mem.clock.advance(0.5)
    assert said(b) == ["not yet"]


@pytest.mark.parametrize(("held", "cut"), [(16384, False), (16385, True)])
def test_excess_flood_at_the_cap_and_one_past(tmp_path: Path, held: int, cut: bool) -> None:
    mem = server(tmp_path)
    a, b = pair(mem)
    burst = b"ok\n" * 5
    body = b"y" * 99 + b"\n"
    rest = body * (held // 100) + b"z" * (held % 100)
    a.feed(burst + rest)
    assert a.transport.disconnecting is cut
    out = b.lines()
    leaves = [ln for ln in out if "has left" in ln]
    if cut:
        assert a.lines()[-1] == "!! Excess flood: you sent too much too fast."
        assert len(leaves) == 1 and leaves[0].endswith("alice has left the chat (excess flood).")
        a.close()
        assert not [ln for ln in b.lines() if "has left" in ln]  # still exactly one
    else:
        assert leaves == []


def test_upload_bytes_are_not_counted(tmp_path: Path) -> None:
    mem = server(tmp_path)
    a, b = pair(mem)
    data = bytes(range(256)) * 400  # 100 KiB, far over the 16 KiB cap
    a.feed(b"1\n2\n3\n4\n/send big.bin %d\n" % len(data) + data + b"after\n")
    assert not a.transport.disconnecting
    mem.clock.advance(5)
    assert "after" in said(b)
    stored = list(mem.factory.files.store.files_dir.iterdir())
    assert len(stored) == 1 and stored[0].read_bytes() == data


def test_held_header_never_lets_its_payload_be_read_as_lines(tmp_path: Path) -> None:
    mem = server(tmp_path)
    a, b = pair(mem)
    payload = b"/nick evil\n/quit\nhello from the file\n"
    a.feed(b"1\n2\n3\n4\n5\n/send f.txt %d %08x\n" % (len(payload), zlib.crc32(payload))
           + payload + b"real line\n")
    assert said(b) == ["1", "2", "3", "4", "5"]
    mem.clock.advance(0.5)  # the header is read now, its payload raw
    mem.clock.advance(1)
    out = b.lines()
    assert not any("evil" in ln or "hello from the file" in ln for ln in out)
    assert any("shared f.txt" in ln for ln in out)
    assert any(ln.endswith("<alice> real line") for ln in out)
    assert mem.service.registry.get("alice") is not None


def test_nick_changes_have_their_own_allowance(tmp_path: Path) -> None:
    mem = server(tmp_path, flood_burst=100)
    a = mem.user("alice")
    for new in ("a1", "a2", "a3"):
        a.line(f"/nick {new}")
        assert a.lines()[-1].endswith(f"is now known as {new}.")
    a.line("/nick a4")
    assert a.lines()[-1].startswith("!! Too many name changes")
    mem.clock.advance(10)
    a.line("/nick a4")
    assert a.lines()[-1].endswith("is now known as a4.")


# --- send queue ---


class SlowTransport:
    """Makes a StringTransport look like a TCP transport whose peer never reads."""

    @staticmethod
    def install(conn: Conn) -> None:
        t = conn.transport
        t.dataBuffer = b""  # type: ignore[attr-defined]
        t.offset = 0  # type: ignore[attr-defined]
        type(t)._tempDataLen = property(lambda self: len(self.value()))  # type: ignore[attr-defined]


def test_soft_limit_pauses_the_clients_own_commands(tmp_path: Path) -> None:
    mem = server(tmp_path, flood_burst=100)
    a, b = pair(mem)
    a.transport.producer.pauseProducing()  # what the transport does over the soft limit
    a.feed(b"/history\n/who\nhi\n")
    assert said(b) == []
    a.transport.producer.resumeProducing()
    assert said(b) == ["hi"]


def test_send_queue_cap_cuts_a_reader_that_never_reads(tmp_path: Path) -> None:
    mem = server(tmp_path, flood_burst=100_000, send_queue_bytes=100_000,
                 send_queue_soft_bytes=10_000)
    a, b, c = mem.user("alice"), mem.user("bob"), mem.user("carol")
    mem.clock.advance(10)
    SlowTransport.install(b)
    b.transport.producer.pauseProducing()
    c.take()
    line = b"m" * 1000 + b"\n"
    sent = 0
    while b.proto.state is not State.CLOSED:
        a.feed(line)
        sent += 1
        mem.clock.advance(0)  # the cut comes at the end of the turn
        assert sent < 200
    assert 90 <= sent <= 101  # about 100 000 bytes queued, not more
    assert b.transport.disconnecting
    out = c.lines()
    assert len([ln for ln in out if "<alice>" in ln]) == sent  # others got everything
    leaves = [ln for ln in out if "has left" in ln]
    assert len(leaves) == 1
    assert leaves[0].endswith("bob has left the chat (send queue exceeded).")


# --- before registration ---


@pytest.mark.parametrize(("lines", "closed"), [(32, False), (33, True)])
def test_lines_before_registration(tmp_path: Path, lines: int, closed: bool) -> None:
    mem = server(tmp_path, flood_burst=1000)
    c = mem.connect()
    c.take()
    c.feed(b"bad name\n" * lines)
    assert c.transport.disconnecting is closed
    if closed:
        assert c.lines()[-1] == "!! Too much input before choosing a name. Goodbye."


@pytest.mark.parametrize(("size", "closed"), [(4096, False), (4097, True)])
def test_bytes_before_registration(tmp_path: Path, size: int, closed: bool) -> None:
    mem = server(tmp_path, flood_burst=1000)
    c = mem.connect()
    c.feed(b"/help " + b"x" * (size - 1000 - 7) + b"\n" + b"-" * 999 + b"\n")
    assert c.transport.disconnecting is closed


def test_binary_junk_takes_no_name(tmp_path: Path) -> None:
    mem = server(tmp_path)
    c = mem.connect()
    c.feed(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 20)
    for _ in range(20):  # flood control reads it slowly; the byte limit ends it
        mem.clock.advance(0.5)
    assert c.transport.disconnecting
    assert len(mem.service.registry) == 0


# --- connections per address ---


def test_connections_per_address(tmp_path: Path) -> None:
    config = Config()
    config.limits.max_connections_per_address = 3
    config.limits.exempt_addresses = []
    mem = memory_server(tmp_path, config)
    conns = [mem.connect() for _ in range(3)]
    assert all(isinstance(c.proto, ChatProtocol) for c in conns)
    refused = mem.connect()
    assert refused.take() == b"!! Too many connections from your address (at most 3).\r\n"
    assert refused.transport.disconnecting
    conns[0].close()
    again = mem.connect()
    assert isinstance(again.proto, ChatProtocol)
    for c in (*conns[1:], again):
        c.close()
    assert mem.factory.limiter.current == {} and mem.factory.limiter.connections == 0


def test_new_connections_per_minute(tmp_path: Path) -> None:
    config = Config()
    config.limits.max_new_connections_per_minute = 4
    config.limits.exempt_addresses = []
    mem = memory_server(tmp_path, config)
    for _ in range(4):
        mem.connect().close()
    refused = mem.connect()
    assert b"at most 4 a minute" in refused.take()
    mem.clock.advance(60)
    assert isinstance(mem.connect().proto, ChatProtocol)


def test_exempt_addresses_and_total_cap(tmp_path: Path) -> None:
    config = Config()
    config.limits.max_connections_per_address = 1
    config.limits.max_connections = 5
    config.limits.exempt_addresses = ["127.0.0.1"]
    mem = memory_server(tmp_path, config)
    conns = [mem.connect() for _ in range(5)]
    assert all(isinstance(c.proto, ChatProtocol) for c in conns)
    full = mem.connect()
    assert full.take() == b"!! The server is full; try again later.\r\n"


# --- dead peers and idle users ---


def test_silent_json_connection_is_pinged_then_dropped(tmp_path: Path) -> None:
    mem = server(tmp_path)
    a = mem.user("alice", mode="json")
    b = mem.user("bob")
    b.take()
    a.take()
    mem.clock.advance(60)
    (ping,) = a.events()
    assert ping["type"] == "ping"
    mem.clock.advance(59.9)
    assert not a.transport.disconnecting
    mem.clock.advance(0.1)
    assert a.transport.disconnecting
    assert b.lines()[-1].endswith("alice has left the chat (ping timeout).")


def test_answered_pings_keep_a_json_connection(tmp_path: Path) -> None:
    mem = server(tmp_path)
    a = mem.user("alice", mode="json")
    for _ in range(10):
        mem.clock.advance(60)
        assert a.events()[-1]["type"] == "ping"
        mem.clock.advance(30)
        a.line("/pong")
    assert not a.transport.disconnecting


def test_an_upload_in_progress_counts_as_input(tmp_path: Path) -> None:
    """A pumped upload's bytes never reach dataReceived: RAW itself keeps pings away.

    The stall timeout, not the ping timeout, ends an upload that goes quiet.
    """
    mem = server(tmp_path, upload_stall_timeout=300, upload_min_rate=0)
    a = mem.user("alice", mode="json")
    a.feed(b"/send quiet.bin 1000\n" + b"q" * 10)
    a.take()
    mem.clock.advance(299)
    assert not a.transport.disconnecting
    assert a.take() == b""  # no ping it could not answer mid-file
    mem.clock.advance(1)
    assert a.transport.disconnecting
    assert a.events()[-1]["code"] == "upload_stalled"


def test_idle_text_user_stays_for_hours(tmp_path: Path) -> None:
    mem = server(tmp_path)
    a = mem.user("alice")
    for _ in range(10):
        mem.clock.advance(3600)
    assert not a.transport.disconnecting
    assert a.take() == b""  # text users are never sent pings


def test_configured_idle_limit(tmp_path: Path) -> None:
    mem = server(tmp_path, idle_timeout=600.0)
    a, b = mem.user("alice"), mem.user("bob")
    mem.clock.advance(300)
    b.line("still here")
    mem.clock.advance(300)
    assert a.transport.disconnecting and not b.transport.disconnecting
    assert b.lines()[-1].endswith("alice has left the chat (idle timeout).")


# --- uploads that stall ---


def test_stalled_upload_is_timed_out_and_discarded(tmp_path: Path) -> None:
    mem = server(tmp_path, upload_min_rate=0)  # the silence rule alone (the rate: helpers)
    a, b = pair(mem)
    a.feed(b"/send stall.bin 1000\n" + b"s" * 400)
    mem.clock.advance(59)
    a.feed(b"s" * 100)  # data resets the stall timer
    mem.clock.advance(59)
    assert not a.transport.disconnecting
    mem.clock.advance(1)
    assert a.transport.disconnecting
    err = a.lines()[-1]
    assert err.startswith("!! No upload data for 60 seconds (500 bytes missing)")
    a.close()
    assert list(mem.factory.files.store.tmp_dir.iterdir()) == []
    assert list(mem.factory.files.store.files_dir.iterdir()) == []
    assert "shared" not in "".join(b.lines())


# --- what reaches the log ---


def test_user_text_cannot_forge_log_lines(tmp_path: Path) -> None:
    mem = server(tmp_path)
    seen: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        a = mem.user("alice")
        a.line("/quit bye\n2026-01-01T00:00:00 [admin] granted root\x1b[2K\r")
        a.feed(b"/quit x\x1b]0;t\x07\r\n")
    finally:
        globalLogPublisher.removeObserver(observer)
    for line in seen:
        assert "\n" not in line and "\x1b" not in line and "\r" not in line


# --- history writes that fail ---


def test_failed_history_writes_hold_delivery_and_are_retried(tmp_path: Path) -> None:
    """Delivered means stored: a message the database refused reaches no one until it is in."""
    mem = server(tmp_path)
    store: Store = mem.store
    real_run = store._run
    failures = [OSError("disk I/O error")]

    def flaky(fn: Any) -> Any:
        if failures and "commit" in fn.__qualname__:  # the history write, not room settings
            return defer.fail(failures.pop())
        return real_run(fn)

    a, b = mem.user("alice"), mem.user("bob")
    b.take()
    store._run = flaky  # type: ignore[method-assign]
    a.line("keep me")  # the write fails ...
    assert not failures
    assert said(b) == []  # ... so bob has not seen it
    mem.clock.advance(1)  # ... it is retried
    assert said(b) == ["keep me"]
    again = memory_server(tmp_path)
    c = again.user("carol", mode="json")
    c.line("/history")
    history = [e for e in c.events() if e["type"] == "history"][-1]
    assert [m["text"] for m in history["messages"]] == ["keep me"]


def test_ping_event_on_the_wire() -> None:
    assert json.loads(JsonRenderer().render(ev.Ping("1"))) == {"type": "ping", "token": "1"}
