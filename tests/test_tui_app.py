"""The TUI Application against the real server, driven through pipe input.

Each test starts ``python -m chat`` on loopback (``real`` fixture or
``RealServer``) and the client in ``tests/tui_driver.py`` (a subprocess, so
the asyncio reactor never meets pytest's process), types into it, and checks
both what the client holds on screen and what raw-socket clients see.
"""

from __future__ import annotations

import signal
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import RELAXED_TOML, RealServer, kill_quietly
from tests.tui_support import (
    CTRL_A,
    CTRL_C,
    CTRL_D,
    CTRL_E,
    CTRL_P,
    CTRL_U,
    PAGE_DOWN,
    PAGE_UP,
    TuiDriver,
)


@pytest.fixture
def drivers() -> Iterator[list[TuiDriver]]:
    started: list[TuiDriver] = []
    yield started
    for d in started:
        d.close()


def start(drivers: list[TuiDriver], port: int, *args: str, cwd: Path | None = None) -> TuiDriver:
    d = TuiDriver(f"127.0.0.1:{port}", *args, cwd=cwd)
    drivers.append(d)
    return d


def test_register_chat_participants_and_quit(real: RealServer, drivers: list[TuiDriver]) -> None:
    bob = real.client("bob", json_mode=True)
    tui = start(drivers, real.port, "--name", "BOB")
    # A taken name is refused with the server's reason and asked for again.
    tui.wait(state="naming", line=r"Name refused: .*")
    tui.type("alice")
    snap = tui.wait(state="online", participants=["bob", "alice"])
    assert snap["me"] == "alice" and "alice" in snap["status"] and "online" in snap["status"]
    bob.expect_event("join", name="alice")

    tui.type("hello from the tui")
    bob.expect_event("message", sender="alice", text="hello from the tui")
    tui.wait(line=r"<alice> hello from the tui$")

    bob.send_line("hi alice")
    bob.send_line("/me waves")
    bob.send_line("/msg alice psst")
    tui.wait(line=r"<bob> hi alice$")
    tui.wait(line=r" \* bob waves$")
    tui.wait(line=r"\*bob\* psst$")
    tui.type("/msg bob back at you")
    tui.wait(line=r"-> \*bob\* back at you$")
    bob.expect_event("private", sender="alice", recipient="bob", text="back at you")

    # /who words idle times as the server does (chat.units), /help lists the client's usage.
    tui.type("/who")
    tui.wait(line=r"Here \(2\): bob \(idle \d+s\), alice \(idle \d+s\)$")
    tui.type("/help")
    snap = tui.wait(line=r"^\S+   /get \[-f\] ID \[DEST\] +download")
    assert not any("OFFSET" in ln for ln in snap["lines"])

    carol = real.client("carol", json_mode=True)
    tui.wait(participants=["bob", "alice", "carol"], line="--> carol has joined")
    carol.send_line("/nick carla")
    tui.wait(participants=["bob", "alice", "carla"], line="carol is now known as carla")
    carol.send_line("/quit")
    tui.wait(participants=["bob", "alice"], line=r"<-- carla has left \(quit\)")

    tui.keys(CTRL_C)
    assert tui.wait_exit()["state"] == "closed"
    assert tui.proc.returncode == 0
    # A clean leave: the server saw /quit, not a dropped connection.
    bob.expect_event("leave", name="alice", reason="quit")


def test_name_asked_in_tui_and_ctrl_d(real: RealServer, drivers: list[TuiDriver]) -> None:
    bob = real.client("bob", json_mode=True)
    tui = start(drivers, real.port)
    tui.wait(state="naming", line="Choose a username")
    tui.type("not a name!")
    tui.wait(state="naming", line="Name refused")
    tui.type("dave")
    tui.wait(state="online", participants=["bob", "dave"])
    tui.type("first line")
    bob.expect_event("message", sender="dave", text="first line")
    # Ctrl-P recalls the input history (Up is checked in a real terminal, test_tui_tmux);
    # Ctrl-A/Ctrl-D edit (Emacs keys) while there is text.
    tui.keys(CTRL_P)
    tui.wait(input="first line")
    tui.keys(CTRL_A + CTRL_D)
    tui.wait(input="irst line")
    tui.keys(CTRL_E + CTRL_U)
    tui.wait(input="")
    tui.keys(CTRL_D)
    tui.wait_exit()
    bob.expect_event("leave", name="dave", reason="quit")


def test_send_get_and_cancel(real: RealServer, drivers: list[TuiDriver], tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    payload = bytes(range(256)) * 1200 + b"tail"  # ~300 KiB: several 64 KiB chunks
    (work / "notes file.bin").write_bytes(payload)
    bob = real.client("bob", json_mode=True)
    tui = start(drivers, real.port, "--name", "alice", cwd=work)
    tui.wait(state="online")

    tui.type('/send "notes file.bin" missing.txt')
    shared = bob.expect_event("file", sender="alice", name="notes file.bin")
    assert shared["size"] == len(payload)
    assert shared["crc32"] == f"{zlib.crc32(payload):08x}"
    stored = real.data_dir / "files" / shared["file_id"]
    assert stored.read_bytes() == payload
    snap = tui.wait(line="missing.txt failed: No such file", idle=True)
    assert any("Sent notes file.bin" in ln for ln in snap["lines"])
    tui.wait(line=r"shared notes file\.bin \(300\.0 KiB\): /get " + shared["file_id"])
    tui.type("/files")
    tui.wait(line=shared["file_id"] + r"  notes file\.bin  \(300\.0 KiB, from alice\)$")

    # Downloads go to the current directory; an existing name is not overwritten.
    down = tmp_path / "down"
    down.mkdir()
    tui.type(f"/get {shared['file_id']} {down}")
    tui.wait(line="Saved notes file.bin", idle=True)
    assert (down / "notes file.bin").read_bytes() == payload
    tui.type(f"/get {shared['file_id']} {down}")
    tui.wait(line="already exists", idle=True)
    tui.type(f"/get -f {shared['file_id']} {down / 'copy.bin'}")
    tui.wait(line=r"Saved .* to .*copy\.bin", idle=True)
    assert (down / "copy.bin").read_bytes() == payload
    tui.type("/get 0123456789abcdef0123456789abcdef")
    tui.wait(line="get 0123456789ab failed: No file with id", idle=True)
    assert sorted(p.name for p in down.iterdir()) == ["copy.bin", "notes file.bin"]

    # /cancel aborts the running transfer; the chat connection carries on.
    big = work / "big.bin"
    with big.open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    tui.type(f"/send {big}")
    tui.type("/cancel")
    tui.wait(line="send big.bin failed: cancelled", idle=True)
    tui.type("still here")
    bob.expect_event("message", sender="alice", text="still here")
    assert len(list((real.data_dir / "files").iterdir())) == 1
    tui.type("/quit")
    tui.wait_exit()


def test_scrollback_does_not_yank(real: RealServer, drivers: list[TuiDriver]) -> None:
    bob = real.client("bob", json_mode=True)
    tui = start(drivers, real.port, "--name", "alice")
    tui.wait(state="online")
    for i in range(60):
        bob.send_line(f"line {i}")
    tui.wait(line="<bob> line 59$")
    tui.keys(PAGE_UP)
    snap = tui.wait(status="online")
    assert snap["anchor"] is not None and snap["visible"] < len(snap["lines"])
    visible = snap["visible"]
    bob.send_line("while you read")
    snap = tui.wait(line="while you read")
    assert snap["visible"] == visible and snap["unread"] == 1
    for _ in range(10):
        tui.keys(PAGE_DOWN)
    snap = tui.wait(line="while you read")
    snap = tui.snapshot()
    assert snap["anchor"] is None and snap["unread"] == 0
    tui.keys(CTRL_C)
    tui.wait_exit()


def test_reconnect_after_server_restart(tmp_path: Path, drivers: list[TuiDriver]) -> None:
    data = tmp_path / "data"
    first = RealServer(data)
    second: RealServer | None = None
    try:
        port = first.port
        bob = first.client("bob", json_mode=True)
        tui = start(drivers, port, "--name", "alice")
        tui.wait(state="online", participants=["bob", "alice"])
        bob.send_line("before the restart")
        tui.wait(line="<bob> before the restart$")
        first.stop(signal.SIGTERM)
        tui.wait(status="disconnected", line="Disconnected from")

        second = RealServer(data, "--listen", f"tcp:{port}:interface=127.0.0.1")
        assert second.port == port
        snap = tui.wait(state="online", participants=["alice"], timeout=20)
        assert snap["me"] == "alice"
        bob2 = second.client("bob", json_mode=True)
        bob2.expect_event("participants")
        tui.wait(participants=["alice", "bob"])
        # The replayed history does not duplicate what is already on screen.
        snap = tui.wait(line="Connected to .* as alice", count=2)
        assert sum("before the restart" in ln for ln in snap["lines"]) == 1
        bob2.send_line("after the restart")
        tui.wait(line="<bob> after the restart$")
        tui.type("back again")
        bob2.expect_event("message", sender="alice", text="back again")
        tui.keys(CTRL_C)
        tui.wait_exit()
    finally:
        kill_quietly(first)
        if second is not None:
            kill_quietly(second)


def test_pings_keep_a_silent_client_online(tmp_path: Path, drivers: list[TuiDriver]) -> None:
    config = tmp_path / "pings.toml"
    config.write_text(RELAXED_TOML + "ping_interval = 1.0\nping_timeout = 1.0\n")
    server = RealServer(tmp_path / "data", "--config", str(config), relaxed=False)
    try:
        tui = start(drivers, server.port, "--name", "alice")
        tui.wait(state="online")
        bob = server.client("bob", json_mode=True)
        # Alice types nothing for three ping periods (a silent connection is cut
        # after 2 s); bob answers his pings by talking, the client answers its own.
        for i in range(3):
            bob.expect_event("ping")
            bob.send_line(f"ping {i} answered")
            tui.wait(line=f"<bob> ping {i} answered$")
        snap = tui.snapshot()
        assert snap["state"] == "online" and snap["participants"] == ["alice", "bob"]
        assert not any("Disconnected" in ln for ln in snap["lines"])
        tui.keys(CTRL_C)
        tui.wait_exit()
        bob.expect_event("leave", name="alice", reason="quit")
    finally:
        kill_quietly(server)
