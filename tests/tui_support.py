"""Pytest side of the TUI tests: a driven client process, and fakes for a screenless one.

``TuiDriver`` is a handle on one ``tests/tui_driver.py`` process: it sends the
driver one JSON command per line and reads the answer with a deadline
(``poll``, never a sleep). ``wait(...)`` returns the client's snapshot once
the condition holds and fails the test with the last snapshot when it does
not. ``FakeConn``, ``FakeEndpoint`` and ``online`` let unit tests run a
``ChatSession`` on a ``task.Clock`` with typed events and no sockets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer

from chat import events as ev
from client_tui.session import ChatSession
from tests.support import readable

DRIVER = Path(__file__).with_name("tui_driver.py")
DEADLINE = 15.0

PAGE_UP = "\x1b[5~"
PAGE_DOWN = "\x1b[6~"
CTRL_HOME = "\x1b[1;5H"
CTRL_END = "\x1b[1;5F"
CTRL_UP = "\x1b[1;5A"
ESC = "\x1b"
F2 = "\x1bOQ"
CTRL_A = "\x01"
CTRL_C = "\x03"
CTRL_P = "\x10"
CTRL_U = "\x15"
CTRL_D = "\x04"
CTRL_E = "\x05"


def bracketed(text: str) -> str:
    """``text`` as a terminal delivers a paste (bracketed paste mode)."""
    return f"\x1b[200~{text}\x1b[201~"


class TuiDriver:
    def __init__(self, *args: str, cwd: Path | None = None, config: Path | None = None) -> None:
        # Settings (tui.toml) from a directory of the test's own, never the user's.
        self._own_config = config is None
        self.config = config or Path(tempfile.mkdtemp(prefix="chat-tui-config-"))
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1",
                          "XDG_CONFIG_HOME": str(self.config)},
        )
        self.buf = b""
        self.exited: dict[str, Any] | None = None

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0 or not readable(fd, left):
                raise AssertionError(f"driver did not answer within {timeout}s: {self.stderr()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"driver died: {self.stderr()}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        if msg.get("event") == "exited":
            self.exited = msg
        return msg

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode("utf-8", "replace")

    def call(self, deadline: float = DEADLINE, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()
        return self._read(deadline + 5)

    def keys(self, text: str) -> None:
        assert self.call(op="keys", text=text)["ok"]

    def type(self, line: str) -> None:
        self.keys(line + "\r")

    def snapshot(self) -> dict[str, Any]:
        return self.call(op="snapshot")["snapshot"]

    def wait(self, timeout: float = DEADLINE, **until: Any) -> dict[str, Any]:
        reply = self.call(deadline=timeout, op="wait", until=until, timeout=timeout)
        if not reply["ok"]:
            snap = reply["snapshot"]
            raise AssertionError(
                f"timed out waiting for {until}\nstate={snap['state']} status={snap['status']}\n"
                + "\n".join(snap["lines"][-30:]) + "\n-- screen --\n" + "\n".join(snap["screen"])
            )
        return reply["snapshot"]

    def wait_exit(self, timeout: float = DEADLINE) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while self.exited is None:
            self._read(max(0.1, end - time.monotonic()))
        self.proc.wait(max(0.1, end - time.monotonic()))
        return self.exited

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._own_config:
            shutil.rmtree(self.config, ignore_errors=True)


# --- a ChatSession without sockets ---

#: A server timestamp, as the wire has it and as the typed events hold it.
TS = "2026-11-23T16:37:22.046Z"
TS_POSIX = ev.parse_iso(TS)


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False

    def loseConnection(self) -> None:
        self.closed = True


class FakeConn:
    """Stands in for a ``ChatConnection``: records what the session sends."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.transport = FakeTransport()

    def send_line(self, text: str) -> None:
        self.sent.append(text)


class FakeEndpoint:
    def __init__(self) -> None:
        self.attempts: list[defer.Deferred[Any]] = []

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.attempts.append(d)
        return d


def msg(i: int, sender: str = "bob") -> ev.Message:
    return ev.Message(i, TS_POSIX, sender, f"m{i}")


def online(session: ChatSession, conn: FakeConn, history: list[ev.Event]) -> None:
    """What a server says to a client that registers as alice beside bob."""
    session.connected(conn)  # type: ignore[arg-type]
    for event in (
        ev.Prompt("Choose a username:"),
        ev.Welcome("alice", "k", "x", None),
        ev.Participants(("bob", "alice"), "alice"),
        ev.History(tuple(history), 20),
    ):
        session.event(conn, event)  # type: ignore[arg-type]
