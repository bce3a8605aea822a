"""Hardening, second round: descriptors, disk reservations, per-address memory, misleading text.

In memory where a clock decides (per-address tables, quotas), against the
real server over loopback sockets otherwise; addresses across 127.0.0.0/8
stand for the machines of a LAN. The HTTP port's own limits are in
tests/test_http_limits.py.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet import task

from chat.config import Config
from chat.limits import WINDOW, AddressLimiter
from chat.quotas import DAY, Quotas, uploader_key
from chat.server import FD_RESERVE, fit_connection_caps
from tests.support import DEADLINE, LineClient, RealServer, memory_server, running


def config_file(tmp_path: Path, **limits: object) -> str:
    path = tmp_path / "hardening.toml"
    lines = [f"{k} = {json.dumps(v)}" for k, v in limits.items()]
    path.write_text("[limits]\n" + "\n".join(lines) + "\n")
    return str(path)


def from_address(server: RealServer, host: str) -> LineClient:
    """A client whose connection comes from ``host`` (any 127.x.y.z on Linux)."""
    sock = socket.create_connection(
        ("127.0.0.1", server.port), timeout=DEADLINE, source_address=(host, 0)
    )
    return LineClient(server.port, sock=sock)


def register(client: LineClient, name: str) -> LineClient:
    client.send_line(name)
    client.expect("Welcome to the chat")
    return client


# --- descriptors ---


def test_connection_caps_are_fitted_under_the_open_files_limit() -> None:
    config = Config()
    assert fit_connection_caps(config, 1 << 20) is None  # the defaults fit a normal limit
    lowered = fit_connection_caps(config, 1024)
    limits = config.limits
    assert lowered is not None and "1024" in lowered
    assert limits.max_connections + limits.http_max_connections <= 1024 - FD_RESERVE
    assert limits.max_connections > 8 * limits.http_max_connections  # in proportion


def test_the_soft_open_files_limit_is_raised_and_logged(tmp_path: Path) -> None:
    with running(tmp_path / "data") as server:
        line = server.wait_for_log(r"Open files: soft limit \d+, now \d+ \(hard limit \d+\)")
        before, now, hard = map(int, re.findall(r"\d+", line.split("Open files")[1]))
        assert now == hard >= before


def test_an_http_flood_under_a_low_limit_never_starves_the_chat_port(tmp_path: Path) -> None:
    limits = config_file(tmp_path, exempt_addresses=[])
    with running(tmp_path / "data", "--config", limits, relaxed=False, open_files=200) as server:
        server.wait_for_log("connection caps lowered to fit 200 open files")
        held: list[socket.socket] = []
        try:
            # Far more HTTP connections than descriptors, from many addresses:
            # each port's cap is under the limit, so the chat port keeps its own.
            for i in range(300):
                s = socket.create_connection(
                    ("127.0.0.1", server.http_port), timeout=DEADLINE,
                    source_address=(f"127.0.{1 + i // 200}.{1 + i % 200}", 0),
                )
                held.append(s)
                try:
                    s.sendall(b"GET /files/")  # an unfinished request keeps it open
                except OSError:
                    pass  # turned away already (over the HTTP cap): as it should be
            users = [register(from_address(server, f"127.9.0.{i}"), f"user{i}") for i in (1, 2)]
            users[0].send_line("still here")
            users[1].expect("<user1> still here")
        finally:
            for s in held:
                s.close()
        assert not any("EMFILE" in ln or "Too many open files" in ln for ln in server.log)


# --- per-address tables ---


def test_per_address_tables_are_empty_once_the_window_has_passed(tmp_path: Path) -> None:
    config = Config()
    config.limits.exempt_addresses = []
    mem = memory_server(tmp_path, config)
    limiter = mem.factory.limiter
    for i in range(5000):
        mem.connect(host=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}").close()
    assert len(limiter.recent) == 5000 and limiter.current == {}
    mem.clock.advance(WINDOW)
    mem.connect(host="10.200.0.1")
    assert list(limiter.recent) == ["10.200.0.1"]


def test_per_address_tables_are_bounded() -> None:
    clock = task.Clock()
    limiter = AddressLimiter(clock, max_tracked=100)
    for i in range(1000):
        host = f"10.0.{i // 256}.{i % 256}"
        limiter.opened(host)
        limiter.closed(host)
        clock.advance(0.01)
    assert len(limiter.recent) == 100 and "10.0.3.231" in limiter.recent  # the newest kept


def test_thousands_of_addresses_connect_and_leave(tmp_path: Path) -> None:
    limits = config_file(tmp_path, exempt_addresses=[], max_new_connections_per_minute=2)
    with running(tmp_path / "data", "--config", limits, relaxed=False) as server:
        for i in range(1500):
            c = from_address(server, f"127.{1 + i // 60000}.{i // 250 % 240}.{1 + i % 250}")
            assert c.read_line() == "-- Welcome to lanchat."  # none is over its own minute
            c.close()
        watcher = register(from_address(server, "127.250.0.1"), "watcher")
        watcher.send_line("/who")
        watcher.expect("-- 1 here:")


# --- the default install holds a class ---


def test_fifty_users_from_one_loopback_address_on_the_defaults(tmp_path: Path) -> None:
    with running(tmp_path / "data", relaxed=False) as server:
        users = [register(LineClient(server.port), f"student{i}") for i in range(50)]
        users[0].send_line("/who")
        users[0].expect("-- 50 here:")


# --- disk space held without writing ---


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[RealServer]:
    """Small upload limits, and loopback counted per address like any other."""
    limits = config_file(
        tmp_path, exempt_addresses=[], upload_min_rate=20000, upload_rate_window=2.0,
        upload_reservation_per_address_bytes=1000, guest_quota_bytes=1500,
        max_connections_per_address=50, max_new_connections_per_minute=100,
        flood_burst=1000,
    )
    with running(tmp_path / "data", "--config", limits, relaxed=False) as server:
        yield server


def test_a_trickled_upload_is_cut_and_its_reservation_freed(strict: RealServer) -> None:
    slow = register(from_address(strict, "127.1.0.1"), "slow")
    slow.send(b"/send big.bin 999\r\n")
    started = time.monotonic()
    while True:  # a byte every 0.2 s: never silent, far under the minimum rate
        slow.send(b"x")
        try:
            error = slow.expect(r"^!! ", timeout=0.2)
            break
        except TimeoutError:
            assert time.monotonic() - started < DEADLINE
    assert error.startswith("!! The upload is too slow:") and "discarded" in error
    assert slow.closed()
    other = register(from_address(strict, "127.1.0.1"), "other")  # same address
    other.send(b"/send next.bin 999\r\n" + b"y" * 999)
    other.expect(r"^-- Stored next.bin: id \w+, 999 bytes")


def test_reservations_in_flight_are_bounded_per_address(strict: RealServer) -> None:
    first = register(from_address(strict, "127.2.0.1"), "first")
    first.send(b"/send a.bin 800\r\n" + b"a" * 100)  # in flight, 800 reserved
    second = register(from_address(strict, "127.2.0.1"), "second")
    second.send(b"/send b.bin 300\r\n" + b"b" * 300 + b"/who\r\n")
    refused = second.expect(r"^!! ")
    assert refused.startswith("!! Too much is being uploaded from your address at once")
    second.expect("-- 2 here:")  # the 300 bytes were discarded, the connection goes on
    elsewhere = register(from_address(strict, "127.2.0.2"), "elsewhere")
    elsewhere.send(b"/send c.bin 300\r\n" + b"c" * 300)
    elsewhere.expect(r"^-- Stored c.bin")


def test_the_daily_quota_survives_nick_and_reconnecting(strict: RealServer) -> None:
    alice = register(from_address(strict, "127.3.0.1"), "alice")
    alice.send(b"/send one.bin 900\r\n" + b"1" * 900)
    alice.expect(r"^-- Stored one.bin")
    alice.send_line("/nick alice2")
    alice.send(b"/send two.bin 900\r\n" + b"2" * 900)
    assert alice.expect(r"^!! ").startswith("!! Your daily upload quota of 1.5 KiB")
    alice.close()
    back = register(from_address(strict, "127.3.0.1"), "someone")
    back.send(b"/send three.bin 900\r\n" + b"3" * 900)
    assert back.expect(r"^!! ").startswith("!! Your daily upload quota")


def test_quotas_count_by_name_where_the_address_is_shared() -> None:
    clock = task.Clock()
    quotas = Quotas(clock, guest_daily=1000)
    shared = ["127.0.0.1"]
    ann, bob = (uploader_key("127.0.0.1", n, shared) for n in ("ann", "bob"))
    quotas.stored(ann, 900)
    assert quotas.refusal(ann, 200, 0) == {"reason": "daily_quota", "quota": 1000, "used": 900}
    assert quotas.refusal(bob, 200, 0) is None
    assert uploader_key("10.0.0.5", "ann", shared) == uploader_key("10.0.0.5", "bob", shared)
    clock.advance(DAY)
    assert quotas.refusal(ann, 200, 0) is None and quotas.today(ann) == 0


# --- text that misleads ---

HIDDEN = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200b\u200c\u200d\u200e\u200f" \
    "\u2060\u2061\u2062\u2063\u2064\ufeff"


def test_invisible_and_bidi_characters_never_reach_another_user(real: RealServer) -> None:
    mallory, bob = real.client("mallory"), real.client("bob")
    mallory.expect("bob has joined")
    mallory.send_line("pay invoice\u202efdp.exe" + HIDDEN + " now")
    mallory.send_line("/me wa\u200bves\u2066")
    assert bob.expect("<mallory>").endswith("<mallory> pay invoicefdp.exe now")
    assert bob.expect(r"\* mallory").endswith("* mallory waves")
    mallory.send_line("/quit bye\u202e\u200d")
    assert bob.expect("has left").endswith("mallory has left the chat (quit: bye).")


@pytest.mark.parametrize(
    "token",
    ["invoice%E2%80%AEfdp.exe", "a%E2%80%8Bb.txt", "x%EF%BB%BF.txt", "a%E2%88%95b",
     "a%E2%81%84b", "a%E2%A7%B8b", "a%EF%BC%8Fb"],
)
def test_misleading_file_names_are_refused(real: RealServer, token: str) -> None:
    alice = real.client(f"al{abs(hash(token)) % 10**6}")
    alice.send(f"/send {token} 5\r\n".encode() + b"ABCDE" + b"/who\r\n")
    assert alice.expect(r"^!! ").startswith("!! A file name cannot hold")
    alice.expect(r"here:")  # the 5 bytes were discarded: in sync
    assert list((real.data_dir / "files").iterdir()) == []


@pytest.mark.parametrize("name", ["admin_", "Admin.", "SERVER-", "r.o.o.t", "_Console"])
def test_reserved_names_in_disguise_are_refused(real: RealServer, name: str) -> None:
    c = LineClient(real.port)
    c.send_line(name)
    assert c.expect(r"^!! ").startswith(("!! The name", "!! A name"))
    assert c.read_line() == "Choose a username:"


def test_one_error_for_a_ten_megabyte_line(real: RealServer) -> None:
    alice = real.client("alice")
    alice.send(b"z" * (10 * 1024 * 1024) + b"\r\n/who\r\n")
    errors = []
    while not (line := alice.read_line()).startswith("-- 1 here"):
        errors += [line] if line.startswith("!!") else []
    assert errors == ["!! Line too long (the limit is 4096 bytes); dropped."]
