"""The console in a real terminal: ``chat-server`` under tmux, read with capture-pane.

The server runs with its console on (stdout is tmux's pty) on a free loopback
port, with real socket clients. The test reads the screen, types admin
commands with send-keys, stops the server with SIGTERM and with ``/quit``,
and checks the exit status, what the clients were told, that the terminal
left the alternate screen, and that the history survived the restart. Every
wait polls the screen or a socket against a deadline.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import LineClient

DEADLINE = 15.0
REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tmux:
    """A private tmux server (own socket, no user config) holding one pane."""

    def __init__(self, where: Path) -> None:
        self.socket = where / "tmux.sock"
        self.conf = where / "tmux.conf"
        # Keep the pane after the server exits, to read its status and screen.
        self.conf.write_text("set -g remain-on-exit on\n")
        self.sessions = 0

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", str(self.conf), *args],
            capture_output=True, text=True, timeout=DEADLINE,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, command: list[str], width: int = 120, height: int = 40) -> str:
        self.sessions += 1
        name = f"s{self.sessions}"
        # A shell runs the server as an operator's would and reports its exit
        # status, on screen and as its own (tmux did not always reap a server
        # it had started directly).
        # The trap keeps the shell alive through a Ctrl-C meant for the server
        # (a trapped signal is back to its default in the server).
        report = 'rc=$?; echo "chat-server exited with status $rc"; exit $rc'
        script = f"trap true INT; {shlex.join(command)}; {report}"
        self("new-session", "-d", "-s", name, "-x", str(width), "-y", str(height),
             "-e", f"PYTHONPATH={REPO}", "sh", "-c", script)
        return name

    def server_pid(self, target: str) -> int:
        """The server's pid: the only child of the pane's shell."""
        shell = int(self.show(target, "#{pane_pid}"))
        children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def screen(self, target: str) -> str:
        return self("capture-pane", "-p", "-t", target)

    def show(self, target: str, fmt: str) -> str:
        return self("display-message", "-p", "-t", target, fmt).strip()

    def type(self, target: str, text: str) -> None:
        self("send-keys", "-t", target, "-l", text)
        self("send-keys", "-t", target, "Enter")

    def wait(self, target: str, check: Callable[[str], bool], what: str,
             timeout: float = DEADLINE) -> str:
        """Poll the screen until ``check`` holds; fail with the screen after ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            text = self.screen(target)
            if check(text):
                return text
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{text}")
            time.sleep(0.05)  # polling interval, bounded by the deadline above

    def wait_text(self, target: str, *needles: str) -> str:
        return self.wait(target, lambda s: all(n in s for n in needles), repr(needles))

    def wait_exit(self, target: str, timeout: float = DEADLINE) -> int:
        """The server's exit status, as the pane's shell reports it on screen.

        (tmux's own #{pane_dead_status} was not reliably filled in here.)
        """
        found: list[int] = []

        def exited(screen: str) -> bool:
            found[:] = [int(m) for m in re.findall(r"chat-server exited with status (\d+)", screen)]
            return bool(found)

        self.wait(target, exited, "the server to exit", timeout)
        return found[-1]

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"],
                       capture_output=True, timeout=DEADLINE)


class SourcedClient(LineClient):
    """A LineClient from its own loopback address (127.0.0.N), so that many
    of them stay under the server's connections-per-address limit."""

    def __init__(self, port: int, source: str) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=DEADLINE, source_address=(source, 0)
        )
        self.buf = b""
        self.seen: list[str] = []


def server_command(port: int, data: Path) -> list[str]:
    return [
        sys.executable, "-m", "chat",
        "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--http", "tcp:0:interface=127.0.0.1",
        "--data-dir", str(data),
    ]


def test_console_kick_sigterm_and_restart(tmux: Tmux, tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    pane = tmux.start(server_command(port, data))
    tmux.wait_text(pane, f"chat 127.0.0.1:{port}", "http 127.0.0.1:", "Users (0)")

    alice = LineClient(port)
    alice.send_line("alice")
    alice.expect("Welcome to the chat, alice")
    bob = LineClient(port)
    bob.send_line("/proto json")
    bob.send_line("bob")
    bob.expect('"type": ?"welcome"')  # the banner before /proto is a text line
    alice.send_line("hello from alice")
    bob.send_line("/msg alice top secret plans")
    alice.expect("top secret plans")

    screen = tmux.wait_text(pane, "Users (2)", "<alice> hello from alice",
                            "(1 private message)", "private 1")
    assert "top secret" not in screen  # the operator sees that, not what
    rows = screen.splitlines()
    assert any(r.startswith("alice ") and "127.0.0.1:" in r and " text " in r for r in rows)
    assert any(r.startswith("bob ") and " json " in r for r in rows)
    assert any("→ alice joined" in r for r in rows) and any("→ bob joined" in r for r in rows)

    tmux.type(pane, "/kick bob spamming the channel")
    kicked = bob.expect_event("error", code="kicked")
    assert "spamming the channel" in kicked["text"]
    assert bob.closed()
    alice.expect(r"bob has left the chat \(kicked: spamming the channel\)")
    tmux.wait_text(pane, "Kicked bob (spamming the channel).", "Users (1)",
                   "← bob left (kicked: spamming the channel)")

    tmux.type(pane, "/frobnicate")
    tmux.wait_text(pane, "Unknown command /frobnicate. Try /help.")
    tmux.type(pane, "/kick")
    tmux.wait_text(pane, "Usage: /kick NAME [REASON]")
    tmux.type(pane, "/say back in five minutes")
    alice.expect("Server notice: back in five minutes")

    assert tmux.show(pane, "#{alternate_on}") == "1"
    pid = tmux.server_pid(pane)
    stopping = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    status = tmux.wait_exit(pane, timeout=10)
    took = time.monotonic() - stopping
    assert status == 0
    assert took < 5, f"shutdown took {took:.1f}s"
    alice.expect("Server notice: The server is going down.")
    assert alice.closed()
    # The terminal is back on the normal screen, with the log's last lines.
    assert tmux.show(pane, "#{alternate_on}") == "0"
    screen = tmux.screen(pane)
    assert "Server stopped; history written." in screen
    assert "chat-server exited with status 0" in screen
    assert "Server stopped; history written." in (data / "server.log").read_text()

    # Next start: the history is all there; /quit stops it just as cleanly.
    pane = tmux.start(server_command(port, data))
    tmux.wait_text(pane, f"chat 127.0.0.1:{port}")
    carol = LineClient(port)
    carol.send_line("carol")
    carol.expect("Welcome to the chat, carol")
    carol.send_line("/history 50")
    carol.expect(r"<alice> hello from alice")
    carol.expect("End of history")
    tmux.wait_text(pane, "→ carol joined")
    tmux.type(pane, "/quit")
    assert tmux.wait_exit(pane, timeout=10) == 0
    carol.expect("Server notice: The server is going down.")
    assert carol.closed()
    assert tmux.show(pane, "#{alternate_on}") == "0"


def test_console_resizes_and_ctrl_c_stops(tmux: Tmux, tmp_path: Path) -> None:
    port = free_port()
    pane = tmux.start(server_command(port, tmp_path / "data"), width=100, height=30)
    tmux.wait_text(pane, f"chat 127.0.0.1:{port}")
    clients = []
    for i in range(30):
        c = SourcedClient(port, f"127.0.0.{i + 2}")
        c.send_line(f"user{i:02d}")
        c.expect("Welcome")
        clients.append(c)
    before = tmux.wait_text(pane, "Users (30)", "… and ")

    def rule(screen: str) -> str:
        return next(r for r in screen.splitlines() if r.startswith("── Users"))

    def listed(screen: str) -> int:
        return sum(r.startswith("user") for r in screen.splitlines())

    assert len(rule(before)) == 100
    tmux("resize-window", "-t", pane, "-x", "60", "-y", "60")
    def redrawn(screen: str) -> bool:
        rows = screen.splitlines()
        return len(rule(screen)) == 60 and len(rows) >= 60 and rows[59].startswith(">")

    # tmux may deliver the new width and height as two resizes: wait for both.
    after = tmux.wait(pane, redrawn, "a redraw at 60x60")
    rows = after.splitlines()
    assert all(len(r) <= 60 for r in rows)
    assert listed(after) > listed(before)
    tmux("send-keys", "-t", pane, "C-c")
    assert tmux.wait_exit(pane, timeout=10) == 0
    assert tmux.show(pane, "#{alternate_on}") == "0"
    for c in clients:
        c.expect("Server notice: The server is going down.")
        c.close()
