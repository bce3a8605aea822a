"""End to end: the real ``chat-tui`` in a real terminal (tmux), read like a person would.

tmux runs the client in a detached terminal of a set size on a private
socket; ``send-keys`` types, ``paste-buffer -p`` pastes, ``resize-window``
narrows it, ``capture-pane`` reads the screen — polled with a deadline until
the expected text shows — and ``pipe-pane`` records every byte the client
writes (the bell). Raw-socket clients and real ``telnet`` are the other
users; a ``ScriptedServer`` stands in for the server where a real one cannot
be made to do something on demand (history from yesterday). Each test names
what a user sees; those marked "broken before" failed on the client as it
was when the issue was filed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from chat import events as ev
from tests.support import RealServer, kill_quietly
from tests.tui_support import ScriptedServer, Tmux, bells, pane_rows, tui_command

DEADLINE = 15.0


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    assert shutil.which("tmux"), "tmux is required for the end-to-end tests"
    t = Tmux()
    yield t
    t.kill()


def start_client(tmux: Tmux, port: int, tmp_path: Path, *args: str, width: int = 80,
                 height: int = 24, name: str = "alice") -> None:
    """This tree's chat-tui as ``name``, in a ``width`` x ``height`` terminal, registered."""
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    tmux.start(tui_command(port, "--name", name, *args, config=config), cwd=tmp_path,
               width=width, height=height)
    tmux.wait_for(f"as {name}.")


def changed(tmux: Tmux, before: str, height: int = 24) -> str:
    """The screen once its message pane differs from ``before``'s (after a key; the
    clock and the lag may change on their own) and it has settled: a redraw can reach
    tmux in more than one piece, so a screen counts once two reads agree."""
    rows = pane_rows(before, height)
    screen = tmux.wait_until(lambda s: pane_rows(s, height) != rows, "a change")
    return tmux.settled(screen)


def test_chat_tui_in_a_real_terminal(real: RealServer, tmux: Tmux, tmp_path: Path) -> None:
    """The console script: a name asked on screen, chat, Tab, a file, Up, Ctrl-C."""
    bob = real.client("bob", json_mode=True)
    config = tmp_path / "config"
    config.mkdir()
    tmux.start(tui_command(real.port, config=config), cwd=tmp_path)

    # No --name: the client asks on screen.
    tmux.wait_for("Choose a username")
    tmux.keys("alice", "Enter")
    screen = tmux.wait_for(f"Connected to 127.0.0.1:{real.port} as alice.")
    assert "Here (2)" in screen
    assert "| alice" in tmux.wait_for("online, lag ")  # the status bar: state, lag, name
    bob.expect_event("join", name="alice")

    tmux.keys("hello from a real terminal", "Enter")
    bob.expect_event("message", sender="alice", text="hello from a real terminal")
    tmux.wait_for("<alice> hello from a real terminal")

    # Hostile text arrives as inert characters, not as terminal commands.
    bob.send_line("hi \x1b]0;pwned\x07 <b>alice</b> \x1b[2J")
    screen = tmux.wait_for("<bob> hi")
    assert "<b>alice</b>" in screen

    # Tab completes a nickname.
    tmux.keys("/msg b", "Tab")
    tmux.wait_for("[alice] /msg bob")  # completion runs asynchronously: see it, then type on
    tmux.keys("psst", "Enter")
    bob.expect_event("private", sender="alice", recipient="bob", text="psst")
    tmux.wait_for("-> *bob* psst")

    (tmp_path / "shot.txt").write_text("a small file\n")
    tmux.keys("/send shot.txt", "Enter")
    shared = bob.expect_event("file", sender="alice", name="shot.txt")
    tmux.wait_for(f"alice shared shot.txt (13 B): /get {shared['file_id']}")

    # Up recalls the last line typed.
    tmux.keys("Up")
    tmux.wait_for("[alice] /send shot.txt")
    tmux.keys("C-u", "C-c")
    tmux.wait_for("CLIENT-EXITED 0")
    bob.expect_event("leave", name="alice", reason="quit")


def test_a_message_taller_than_the_pane(real: RealServer, tmux: Tmux, tmp_path: Path) -> None:
    """Broken before: a 2,000-character message in 80x24, and a line after it, left the
    pane showing that line over blank rows.

    Now the pane is full, shows the message's last rows under a "more rows
    above" marker, and scrolls through it row by row (Ctrl-Up) and by pages.
    """
    bob = real.client("bob")  # a text-mode user, as with telnet
    start_client(tmux, real.port, tmp_path)
    words = "START " + " ".join(f"w{i:03d}" for i in range(400))
    text = words[:1996] + " END"
    assert len(text) == 2000
    bob.send_line(text)
    bob.send_line("after it")
    screen = tmux.settled(tmux.wait_for("<bob> after it"))
    rows = pane_rows(screen, 24)
    assert all(rows), screen  # not one blank row
    assert "more rows above" in rows[0] and rows[-2].endswith(" END"), screen

    tmux.keys("C-Up")  # one row back; while reading back, a bar takes the last row
    screen = changed(tmux, screen)
    up = pane_rows(screen, 24)
    assert all(up) and "reading back" in up[-1]
    assert "more rows above" in up[0] and up[1:-1] == rows[1:-1], (rows, up)

    # Page back to the top of the message: every page full, no row skipped.
    def words(page: list[str]) -> list[int]:
        return [int(w[1:]) for row in page for w in row.split() if w[:1] == "w" and w[1:].isdigit()]

    seen = up
    while "START" not in screen:
        tmux.keys("PageUp")
        screen = changed(tmux, screen)
        page = pane_rows(screen, 24)
        assert all(page), screen
        assert max(words(page)) + 1 >= min(words(seen)), (seen, page)  # no gap
        seen = page
    assert any(row.endswith("<bob> START w000 w001 w002 w003 w004 w005 w006 w007 w008")
               for row in seen), seen

    tmux.keys("C-End")
    back = tmux.settled(tmux.wait_until(lambda s: "reading back" not in s, "the newest"))
    assert pane_rows(back, 24) == rows


def test_page_up_to_the_top_and_back(real: RealServer, tmux: Tmux, tmp_path: Path) -> None:
    """Broken before: near the top the pane showed one line over blank rows, and the bar
    counted 0 new lines. Now pages are rows, the top fills the pane, the bar counts what
    arrives, and coming back marks where the unread lines begin."""
    bob = real.client("bob")
    start_client(tmux, real.port, tmp_path)
    for i in range(60):
        bob.send_line(f"line {i:02d}")
    screen = tmux.wait_for("<bob> line 59")

    def numbers(screen: str) -> set[int]:
        return {int(r.split("line ")[1]) for r in pane_rows(screen, 24) if "<bob> line " in r}

    seen = numbers(screen)
    pages = 0
    while "Connecting to" not in screen:
        tmux.keys("PageUp")
        screen = changed(tmux, screen)
        assert all(pane_rows(screen, 24)), screen  # every page full, the top one too
        seen |= numbers(screen)
        pages += 1
        assert pages < 10
    assert pane_rows(screen, 24)[0].endswith(f"Connecting to 127.0.0.1:{real.port}...")
    assert seen == set(range(60))  # paged by rows: not one line skipped

    bob.send_line("while you read")
    screen = tmux.wait_for("1 new message below")
    assert "while you read" not in screen  # the view holds still
    tmux.keys("C-End")
    screen = tmux.wait_for("<bob> while you read")
    rows = pane_rows(screen, 24)
    marker = next(i for i, r in enumerate(rows) if "new since you last looked" in r)
    assert rows[marker + 1].endswith("<bob> while you read")


def test_history_after_clear(real: RealServer, tmux: Tmux, tmp_path: Path) -> None:
    """Broken before: after /clear, /history showed nothing. Now the messages come back
    in order under a history separator."""
    bob = real.client("bob")
    for i in range(5):
        bob.send_line(f"earlier {i}")
    start_client(tmux, real.port, tmp_path)
    tmux.wait_for("<bob> earlier 4")
    tmux.type("/clear")
    tmux.wait_until(lambda s: "earlier" not in s, "a clear pane")
    tmux.type("/history 3")
    rows = pane_rows(tmux.wait_for("<bob> earlier 4"), 24)
    said = [r for r in rows if "<bob> earlier" in r or "history: " in r]
    assert [r.split("> ")[-1] if ">" in r else "sep" for r in said] == [
        "sep", "earlier 2", "earlier 3", "earlier 4"], rows
    assert "history: 3 messages since " in said[0]


def test_reconnect_fetches_what_was_missed(tmux: Tmux, tmp_path: Path) -> None:
    """Broken before: every retry printed error lines, and missed history came out of
    order. Now an outage is one line, the status bar counts down, one line says the
    client is back, and all 25 lines said while it was away come in order, once."""
    data = tmp_path / "data"
    servers = [RealServer(data)]
    try:
        port = servers[0].port
        bob = servers[0].client("bob")
        start_client(tmux, port, tmp_path, width=100, height=40)
        bob.send_line("before the restart")
        tmux.wait_for("<bob> before the restart")
        servers[0].stop()
        tmux.wait_for("retrying in")  # the countdown in the status bar
        # While alice is away, bob talks on a server of its own (another port), whose
        # history the server she comes back to inherits.
        servers.append(RealServer(data))
        bob = servers[1].client("bob")
        for i in range(1, 26):
            bob.send_line(f"missed {i:02d}")
        bob.send_line("/quit")
        bob.closed()
        servers[1].stop()
        servers.append(RealServer(data, "--listen", f"tcp:{port}:interface=127.0.0.1"))
        screen = tmux.wait_for("Back online", timeout=20)
        screen = tmux.wait_for("<bob> missed 25")
        rows = pane_rows(screen, 40)
        assert sum("Lost the connection" in r for r in rows) == 1, screen
        assert not any("Cannot connect" in r or "Disconnected" in r for r in rows), screen
        assert sum("Back online" in r for r in rows) == 1, screen
        missed = [r.split("<bob> ")[1] for r in rows if "<bob> missed" in r]
        assert missed == [f"missed {i:02d}" for i in range(1, 26)], screen
        at = [max(i for i, r in enumerate(rows) if key in r)
              for key in ("Back online", "missed while away: 25 messages",
                          "missed 01", "missed 25", "--> alice has joined")]
        assert at == sorted(at), screen  # in server order, before her own return
    finally:
        for server in servers:
            kill_quietly(server)


def test_typing_while_offline_is_kept(real: RealServer, tmux: Tmux, tmp_path: Path) -> None:
    """Broken before: a line typed while disconnected was thrown away. Now it stays in the
    input line, to be sent with Enter once the client is back."""
    start_client(tmux, real.port, tmp_path)
    real.stop()
    tmux.wait_for("retrying in")
    tmux.type("typed while away")
    screen = tmux.wait_for("stays in the input")
    assert screen.rstrip().endswith("[alice] typed while away")


def test_mention_from_a_telnet_user(real: RealServer, tmux: Tmux, tmp_path: Path) -> None:
    """Broken before: nothing marked a mention. Now it is highlighted and rings the bell.

    The bell is observed as the byte the client writes to its terminal: tmux's
    ``pipe-pane`` records the client's output, and a BEL that does not end a
    title sequence (OSC) is a bell. The highlight is the line's colour in the
    captured screen (bright yellow, SGR 93).
    """
    start_client(tmux, real.port, tmp_path)
    out = tmp_path / "tty.out"
    out.touch()
    tmux.record(out)
    tmux.window("bob", f"telnet 127.0.0.1 {real.port}")
    tmux.wait_for("Choose a username", window="bob")
    tmux.type("bob", window="bob")
    tmux.wait_for("Welcome to the chat, bob.", window="bob")
    tmux.type("the build is green", window="bob")
    tmux.wait_for("<bob> the build is green")
    tmux.type("hey Alice, lunch?", window="bob")
    tmux.wait_for("<bob> hey Alice, lunch?")
    end = time.monotonic() + DEADLINE
    while bells(out.read_bytes()) < 1:
        assert time.monotonic() < end, "no bell"
        time.sleep(0.05)  # the recorded output grows as tmux copies it
    assert bells(out.read_bytes()) == 1  # the mention, not the other line
    coloured = tmux.screen(escapes=True).split("\n")
    mention = next(r for r in coloured if "hey Alice" in r)
    plain = next(r for r in coloured if "the build is green" in r)
    assert "[93m" in mention.split("> ")[-1] and "[93m" not in plain


def test_a_three_line_paste(real: RealServer, tmux: Tmux, tmp_path: Path) -> None:
    """Broken before: a paste of three lines was sent as one joined line. Now the client
    asks, and Enter sends three lines, in order."""
    bob = real.client("bob", json_mode=True)
    start_client(tmux, real.port, tmp_path)
    tmux.paste("first line\nsecond line\nthird line\n")
    screen = tmux.wait_for("Paste of 3 lines")
    assert "Enter: send as 3 lines" in screen and "f: send as paste.txt" in screen
    tmux.keys("Enter")
    for text in ("first line", "second line", "third line"):
        bob.expect_event("message", sender="alice", text=text)
    rows = pane_rows(tmux.wait_for("<alice> third line"), 24)
    assert [r.split("> ")[1] for r in rows if "<alice>" in r] == [
        "first line", "second line", "third line"]


def test_tab_completes_a_path_with_a_space(real: RealServer, tmux: Tmux,
                                           tmp_path: Path) -> None:
    """Broken before: Tab gave ``/send report 2026.txt``, which /send read as two files.
    Now the completed path is quoted, and the upload works."""
    bob = real.client("bob", json_mode=True)
    (tmp_path / "report 2026.txt").write_text("figures\n")
    start_client(tmux, real.port, tmp_path)
    tmux.keys("/send rep", "Tab")
    tmux.wait_for('[alice] /send "report 2026.txt"')
    tmux.keys("Enter")
    bob.expect_event("file", sender="alice", name="report 2026.txt")
    tmux.wait_for("Sent report 2026.txt (8 B)")


def test_a_narrow_terminal(real: RealServer, tmux: Tmux, tmp_path: Path) -> None:
    """Broken before: the people list kept 20 columns at any width. Now below 60 columns
    it is hidden (F2 or /people brings it back, narrower), and lines wrap in 40 columns,
    continued under their text."""
    bob = real.client("bob")
    start_client(tmux, real.port, tmp_path)
    bob.send_line("a line long enough to need more than one row once the terminal is narrow")
    screen = tmux.wait_for("Here (2)")
    assert "\u2502" in screen
    tmux.resize(40, 24)
    screen = tmux.settled(tmux.wait_until(lambda s: "Here (2)" not in s and "2 here" in s,
                                          "the list hidden"))
    rows = pane_rows(screen, 24)
    said = next(i for i, r in enumerate(rows) if "<bob> a line long" in r)
    assert rows[said + 1].startswith(" " * 15) and rows[said + 1].strip()  # under the text
    assert all(len(r) <= 40 for r in screen.split("\n"))
    assert "2 here" in screen  # the count moves to the status bar
    tmux.keys("F2")
    screen = tmux.settled(tmux.wait_for("Here (2)"))
    assert all(len(r) <= 40 for r in screen.split("\n"))


def test_a_day_change_and_yesterdays_history(tmux: Tmux, tmp_path: Path) -> None:
    """Broken before: lines carried only HH:MM:SS, so yesterday's history looked like
    today's. Now the history separator dates it and a date line marks the day change."""
    server = ScriptedServer()
    try:
        config = tmp_path / "config"
        config.mkdir()
        tmux.start(tui_command(server.port, "--name", "alice", config=config), cwd=tmp_path,
                   width=80, height=24)
        server.accept()
        server.expect("/proto json")
        server.send(ev.Proto("json"), ev.Prompt("Choose a username:"))
        server.expect("alice")
        now = datetime.now()
        yesterday = (now - timedelta(days=1)).replace(hour=9, minute=5, second=41)
        server.send(
            ev.Welcome("alice", "k3y", "lanchat", None),
            ev.Participants(("bob", "alice"), "alice"),
            ev.History((ev.Message(1, yesterday.timestamp(), "bob", "morning"),), 20),
            ev.Join(2, now.timestamp(), "alice"),
        )
        screen = tmux.wait_for("--> alice has joined")
        rows = pane_rows(screen, 24)
        day = now.date()
        first = yesterday.date()
        assert any("history: 1 message since" in r for r in rows), screen
        separator = next(i for i, r in enumerate(rows) if "history: 1 message since" in r)
        assert f"{first:%a} {first.day} {first:%b}" in rows[separator]
        assert "09:05" in rows[separator]
        assert rows[separator + 1].endswith("09:05:41 <bob> morning")
        assert f"{day:%A} {day.day} {day:%B %Y}" in rows[separator + 2]
        assert "--> alice has joined" in rows[separator + 3]
    finally:
        server.close()
