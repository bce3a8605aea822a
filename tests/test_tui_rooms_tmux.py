"""Rooms and passwords in the real ``chat-tui``, in a real terminal (tmux), against the real server.

As in ``test_tui_tmux``: tmux runs the client in a detached terminal,
``send-keys`` types (``M-2`` is Alt-2), ``capture-pane`` reads the screen,
polled against a deadline until the expected text shows. Other users are
raw-socket clients. Each test names what a user sees; both failed on the
client as it was before rooms and accounts (no room bar, no tabs; the
password typed in clear and kept in the input history).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import RealServer
from tests.tui_support import Tmux, tui_command

WIDTH, HEIGHT = 100, 30


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    assert shutil.which("tmux"), "tmux is required for the end-to-end tests"
    t = Tmux()
    yield t
    t.kill()


def rows(screen: str) -> list[str]:
    return (screen.split("\n") + [""] * HEIGHT)[:HEIGHT]


def pane(screen: str) -> list[str]:
    """The message pane's rows (above the room bar, left of the people list)."""
    return [r.split("\u2502")[0].rstrip() for r in rows(screen)[: HEIGHT - 3]]


def people(screen: str) -> list[str]:
    return [r.split("\u2502")[1].strip() for r in rows(screen)[: HEIGHT - 3] if "\u2502" in r]


def room_bar(screen: str) -> str:
    return rows(screen)[HEIGHT - 3]


def status(screen: str) -> str:
    return rows(screen)[HEIGHT - 2]


def start(tmux: Tmux, port: int, tmp_path: Path, *args: str) -> None:
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    tmux.start(tui_command(port, "--name", "alice", *args, config=config), cwd=tmp_path,
               width=WIDTH, height=HEIGHT)


def test_two_rooms_unread_counts_and_switching(real: RealServer, tmux: Tmux,
                                              tmp_path: Path) -> None:
    """alice joins #dev; bob talks there while she reads #lobby: the bar counts it and marks
    the mention; Alt-2 shows #dev's own lines, people and topic, and what she types goes
    there; Ctrl-N/Ctrl-P go round the rooms."""
    bob = real.client("bob", json_mode=True)
    start(tmux, real.port, tmp_path)
    tmux.wait_for("as alice.")
    carol = real.client("carol")  # only in #lobby
    tmux.wait_for("carol has joined")
    tmux.type("/join #dev")
    screen = tmux.wait_until(lambda s: "1:#lobby 2:#dev" in room_bar(s), "the room bar")
    bob.send_line("/join #dev")
    bob.send_line("/topic #dev release on Friday")
    screen = tmux.wait_for("bob set the topic: release on Friday")
    assert "| #dev | release on Friday" in status(screen)

    tmux.keys("M-1")
    screen = tmux.wait_until(lambda s: "| #lobby" in status(s), "#lobby shown")
    assert any("carol has joined" in r for r in pane(screen))
    carol.send_line("lunch anyone?")
    tmux.wait_for("<carol> lunch anyone?")
    bob.send_line("the build is green")
    bob.send_line("alice: can you review?")
    screen = tmux.wait_until(lambda s: "2:#dev(2!)" in room_bar(s), "2 unread, a mention")
    assert not any("build is green" in r for r in pane(screen))  # said in the other room
    assert "carol" in people(screen)

    tmux.keys("M-2")
    screen = tmux.settled(tmux.wait_until(lambda s: "| #dev" in status(s), "#dev shown"))
    lines = pane(screen)
    marker = next(i for i, r in enumerate(lines) if "new since you last looked" in r)
    assert lines[marker + 1].endswith("<bob> the build is green")
    assert lines[marker + 2].endswith("<bob> alice: can you review?")
    assert "release on Friday" in status(screen) and "2:#dev(" not in room_bar(screen)
    assert "carol" not in people(screen) and {"alice", "bob"} <= set(people(screen))

    tmux.type("on it")  # goes to the room shown
    bob.expect_event("message", sender="alice", text="on it", room="#dev")

    tmux.keys("C-n")  # round to the first
    screen = tmux.wait_until(lambda s: "| #lobby" in status(s), "#lobby again")
    assert "carol" in people(screen) and not any("on it" in r for r in pane(screen))
    tmux.type("back in the lobby")
    bob.expect_event("message", sender="alice", text="back in the lobby", room="#lobby")
    tmux.keys("C-p")
    screen = tmux.wait_until(lambda s: "| #dev" in status(s), "#dev again")
    assert any(r.endswith("<alice> on it") for r in pane(screen))


def test_a_password_is_typed_masked_and_kept_nowhere(real: RealServer, tmux: Tmux,
                                                     tmp_path: Path) -> None:
    """alice is an account; chat-tui --name alice asks for the password on screen. What she
    types shows as stars, never enters the input history or the log, and nor does the
    password of /password."""
    maker = real.client()
    maker.send_line("alice")
    maker.expect("Welcome to the chat, alice.")
    maker.send_line("/register correct horse")
    maker.expect("is an account now")
    maker.send_line("/quit")
    assert maker.closed()

    logs = tmp_path / "logs"
    start(tmux, real.port, tmp_path, "--log", str(logs))
    tmux.wait_for("alice is an account: type its password below (it is not shown)")
    tmux.keys("-l", "correct horse")
    screen = tmux.wait_for("password> *************")
    assert "correct horse" not in screen
    tmux.keys("Enter")
    screen = tmux.wait_for("as alice.")
    assert "alice \u2713" in status(screen) and "alice \u2713" in people(screen)

    tmux.type("hello")
    tmux.wait_for("<alice> hello")
    tmux.keys("-l", "/password correct horse battery staple")
    screen = tmux.wait_for("[alice] /password ***")
    assert "correct" not in screen and "battery" not in screen
    tmux.keys("Enter")
    tmux.wait_for("Your password is changed.")
    # Up recalls what was said, and nothing that held a password.
    tmux.keys("Up")
    tmux.wait_until(lambda s: rows(s)[HEIGHT - 1].rstrip() == "[alice] hello", "hello recalled")
    tmux.keys("Up")
    screen = tmux.settled(tmux.screen())
    assert rows(screen)[HEIGHT - 1].rstrip() == "[alice] hello"
    assert "correct" not in screen and "battery" not in screen
    logged = "".join(p.read_text() for p in logs.iterdir())
    assert "<alice> hello" in logged and "correct" not in logged and "battery" not in logged
