"""End to end: the real ``chat-tui`` in a real terminal (tmux), read like a person would.

tmux runs the console script in a detached 100x30 terminal on a private
socket; ``send-keys`` types and ``capture-pane`` reads the screen, polled with
a deadline until the expected text shows. A raw-socket client on the other
side checks that what was typed really went out, and that Ctrl-C leaves with
a /quit the server sees.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import RealServer

DEADLINE = 15.0


class Tmux:
    def __init__(self) -> None:
        self.socket = f"chat-tui-test-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], check=True,
                             capture_output=True, text=True, timeout=DEADLINE)
        return out.stdout

    def start(self, command: str, cwd: Path) -> None:
        self.run("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", "-c", str(cwd),
                 # keep the pane after the program exits, to read its last screen
                 command + "; echo CLIENT-EXITED $?; sleep 60")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "t")

    def wait_for(self, text: str, timeout: float = DEADLINE) -> str:
        end = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > end:
                raise AssertionError(f"{text!r} never appeared on screen:\n{screen}")
            # Screen polling: tmux offers no change notification to wait on.
            time.sleep(0.05)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=DEADLINE)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    assert shutil.which("tmux"), "tmux is required for the end-to-end test"
    t = Tmux()
    yield t
    t.kill()


def chat_tui() -> str:
    exe = shutil.which("chat-tui")
    if exe:
        return shlex.quote(exe)
    return f"{shlex.quote(sys.executable)} -m client_tui"


def test_chat_tui_in_a_real_terminal(real: RealServer, tmux: Tmux, tmp_path: Path) -> None:
    bob = real.client("bob", json_mode=True)
    root = Path(__file__).resolve().parent.parent
    env = f"PYTHONPATH={shlex.quote(str(root))}{os.pathsep}$PYTHONPATH"
    tmux.start(f"env {env} {chat_tui()} 127.0.0.1:{real.port}", cwd=tmp_path)

    # No --name: the client asks on screen.
    tmux.wait_for("Choose a username")
    tmux.keys("alice", "Enter")
    screen = tmux.wait_for(f"Connected to 127.0.0.1:{real.port} as alice.")
    assert "Here (2)" in screen
    assert "online | alice" in screen
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
    tmux.wait_for(f"alice shared shot.txt (13 B) id {shared['file_id']}")

    # Up recalls the last line typed.
    tmux.keys("Up")
    tmux.wait_for("[alice] /send shot.txt")
    tmux.keys("C-u", "C-c")
    tmux.wait_for("CLIENT-EXITED 0")
    bob.expect_event("leave", name="alice", reason="quit")
