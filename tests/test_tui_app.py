"""The TUI Application against the real server, driven through pipe input.

Each test starts ``python -m chat`` on loopback (``real`` fixture or
``RealServer``) and the client in ``tests/tui_driver.py`` (a subprocess, so
the asyncio reactor never meets pytest's process), types into it, and checks
both what the client holds on screen and what raw-socket clients see.
"""

from __future__ import annotations

import json
import signal
import zlib
from datetime import datetime
from pathlib import Path

from tests.support import RELAXED_TOML, RealServer, kill_quietly
from tests.tui_support import (
    CTRL_A,
    CTRL_C,
    CTRL_D,
    CTRL_E,
    CTRL_END,
    CTRL_U,
    ESC,
    FOCUS_IN,
    FOCUS_OUT,
    PAGE_UP,
    UP,
    TuiDriver,
    bracketed,
)


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
    tui.wait(line=r"On the server \(2\): bob \(idle \d+s\), alice \(idle \d+s\)$")
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
    # Up recalls the input history (Ctrl-P is the previous room: test_tui_rooms_tmux);
    # Ctrl-A/Ctrl-D edit (Emacs keys) while there is text.
    tui.keys(UP)
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
    before = tui.wait(reading_back=True)["screen"]
    assert len(before) == 38 and before[-1].startswith(" \u2193 reading back")  # 40 - 2 rows
    bob.send_line("while you read")
    snap = tui.wait(line="while you read", unread=1)
    assert snap["screen"][:-1] == before[:-1]  # the view holds still
    assert "1 new message below" in snap["screen"][-1]
    tui.keys(CTRL_END)
    snap = tui.wait(reading_back=False)
    assert snap["unread"] == 0
    marker = snap["screen"].index(next(r for r in snap["screen"] if "new since you last" in r))
    assert snap["screen"][marker + 1].endswith("<bob> while you read")
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
        tui.wait(status="disconnected", line="Lost the connection to .*; retrying")

        second = RealServer(data, "--listen", f"tcp:{port}:interface=127.0.0.1")
        assert second.port == port
        snap = tui.wait(state="online", participants=["alice"], timeout=20)
        assert snap["me"] == "alice"
        bob2 = second.client("bob", json_mode=True)
        bob2.expect_event("participants")
        tui.wait(participants=["alice", "bob"])
        # The replayed history does not duplicate what is already on screen.
        snap = tui.wait(line="Back online: reconnected to .* as alice")
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


def test_highlights_bell_and_title(real: RealServer, drivers: list[TuiDriver]) -> None:
    bob = real.client("bob", json_mode=True)
    tui = start(drivers, real.port, "--name", "alice")
    tui.wait(state="online", status=r"online, lag \d+ms")
    bob.send_line("alice: standup in 5")
    snap = tui.wait(line="<bob> alice: standup in 5$", bells=1)
    assert snap["highlights"] == 0 and snap["title"] == f"chat-tui: alice@127.0.0.1:{real.port}"
    for i in range(50):
        bob.send_line(f"chatter {i}")
    tui.wait(line="chatter 49$")
    tui.keys(PAGE_UP)
    tui.wait(reading_back=True)
    bob.send_line("/msg alice are you there?")
    bob.send_line("ALICE?")
    snap = tui.wait(highlights=2, bells=3)
    assert "| 2 highlights" in snap["status"] and snap["title"].startswith("(2) chat-tui: alice@")
    assert "2 new messages below, 2 highlights" in snap["screen"][-1]
    tui.keys(CTRL_END)
    snap = tui.wait(highlights=0)
    assert not snap["title"].startswith("(")
    tui.keys(CTRL_C)
    tui.wait_exit()


def test_no_bell_and_ignore_kept_across_runs(real: RealServer, drivers: list[TuiDriver],
                                             tmp_path: Path) -> None:
    bob = real.client("bob", json_mode=True)
    config = tmp_path / "config"
    tui = TuiDriver(f"127.0.0.1:{real.port}", "--name", "alice", "--no-bell", config=config)
    drivers.append(tui)
    tui.wait(state="online")
    bob.send_line("alice: hello")
    snap = tui.wait(line="<bob> alice: hello$")
    assert snap["bells"] == 0
    tui.type("/ignore bob")
    tui.wait(line=r"Ignoring bob: .* Saved in .*tui\.toml\.$")
    assert (config / "lanchat" / "tui.toml").read_text().endswith('ignore = ["bob"]\n')
    tui.keys(CTRL_C)
    tui.wait_exit()

    again = TuiDriver(f"127.0.0.1:{real.port}", "--name", "alice", config=config)
    drivers.append(again)
    again.wait(state="online")
    bob.send_line("alice: still ignored?")
    bob.send_line("/me waves")
    carol = real.client("carol", json_mode=True)
    carol.send_line("carol here")
    snap = again.wait(line="<carol> carol here$")
    assert not any("still ignored" in ln or "waves" in ln for ln in snap["lines"])
    assert snap["bells"] == 0
    again.keys(CTRL_C)
    again.wait_exit()


def test_pastes_as_lines_or_as_a_file(real: RealServer, drivers: list[TuiDriver]) -> None:
    bob = real.client("bob", json_mode=True)
    tui = start(drivers, real.port, "--name", "alice")
    tui.wait(state="online")
    tui.keys(bracketed("one\ntwo\nthree\n"))
    snap = tui.wait(paste=True)
    assert snap["paste"].startswith("Paste of 3 lines")
    tui.keys("\r")
    for text in ("one", "two", "three"):
        bob.expect_event("message", sender="alice", text=text)
    tui.wait(paste=False)

    long_paste = "\n".join(f"row {i}" for i in range(40))
    tui.keys(bracketed(long_paste))
    snap = tui.wait(paste=True)
    assert "Enter: send as paste.txt" in snap["paste"]
    tui.keys("\r")
    shared = bob.expect_event("file", sender="alice", name="paste.txt")
    assert shared["size"] == len(long_paste) + 1
    tui.wait(line="Sent paste.txt", idle=True)

    tui.keys(bracketed("never\nsent"))
    tui.wait(paste=True)
    tui.keys(ESC)
    tui.wait(paste=False)
    tui.keys(bracketed("a single line"))  # typed into the input, not asked about
    tui.wait(input="a single line")
    tui.keys(CTRL_U + CTRL_C)
    tui.wait_exit()
    assert "never" not in [json.loads(ln).get("text") for ln in bob.seen[-5:]]


def test_local_log(real: RealServer, drivers: list[TuiDriver], tmp_path: Path) -> None:
    bob = real.client("bob", json_mode=True)
    logs = tmp_path / "logs"
    tui = start(drivers, real.port, "--name", "alice", "--log", str(logs))
    tui.wait(state="online")
    bob.send_line("for the record")
    tui.wait(line="<bob> for the record$")
    tui.keys(CTRL_C)
    tui.wait_exit()
    (log,) = logs.iterdir()
    assert log.name == f"{datetime.now():%Y-%m-%d}.log"
    lines = log.read_text().splitlines()
    assert lines[0].startswith("--- Log opened ") and lines[0].endswith(f"(127.0.0.1:{real.port})")
    assert lines[1].endswith("--> alice has joined") and lines[2].endswith("<bob> for the record")


def test_focus_reports_count_as_looking_away(real: RealServer, drivers: list[TuiDriver]) -> None:
    """Where the terminal reports focus (xterm's mode 1004, which the client asks for),
    what arrives while it is elsewhere is unread: counted in the title, then marked."""
    bob = real.client("bob", json_mode=True)
    tui = start(drivers, real.port, "--name", "alice")
    tui.wait(state="online")
    tui.keys(FOCUS_OUT)
    bob.send_line("alice: while you were out")
    snap = tui.wait(line="while you were out", bells=1, highlights=1)
    assert snap["title"].startswith("(1) ") and snap["input"] == ""
    tui.keys(FOCUS_IN)
    snap = tui.wait(highlights=0)
    marker = next(i for i, r in enumerate(snap["screen"]) if "new since you last looked" in r)
    assert snap["screen"][marker + 1].endswith("<bob> alice: while you were out")
    tui.keys(CTRL_C)
    tui.wait_exit()
