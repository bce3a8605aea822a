"""Pytest side of the TUI tests: a driven client process, and fakes for a screenless one.

``TuiDriver`` is a handle on one ``tests/tui_driver.py`` process: it sends the
driver one JSON command per line and reads the answer with a deadline
(``poll``, never a sleep). ``wait(...)`` returns the client's snapshot once
the condition holds and fails the test with the last snapshot when it does
not. ``FakeConn``, ``FakeEndpoint`` and ``online`` let unit tests run a
``ChatSession`` on a ``task.Clock`` with typed events and no sockets.
``Tmux`` runs the real ``chat-tui`` in a real terminal and reads its screen
(and, with ``record``, every byte it writes); ``ScriptedServer`` is a JSON
server that says exactly what a test tells it to; ``CutProxy`` relays to a
real server and cuts (or stalls) a transfer at the byte a test chooses.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
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
UP = "\x1b[A"
ESC = "\x1b"
F2 = "\x1bOQ"
FOCUS_IN = "\x1b[I"
FOCUS_OUT = "\x1b[O"
CTRL_A = "\x01"
CTRL_C = "\x03"
CTRL_N = "\x0e"
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


# --- the real client in a real terminal ---

#: Where an OSC sequence (a title, say) ends with BEL; what is left of BEL after them is a bell.
OSC = re.compile(rb"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def tui_command(port: int, *args: str, config: Path) -> str:
    """The shell command that runs this tree's ``chat-tui`` (``python -m client_tui``)."""
    root = Path(__file__).resolve().parent.parent
    env = (f"PYTHONPATH={shlex.quote(str(root))}{os.pathsep}$PYTHONPATH "
           f"XDG_CONFIG_HOME={shlex.quote(str(config))}")
    words = " ".join(shlex.quote(a) for a in args)
    return f"env {env} {shlex.quote(sys.executable)} -m client_tui 127.0.0.1:{port} {words}"


class Tmux:
    """A private tmux server: windows that run programs, keys in, screens out.

    ``capture-pane`` reads a window's screen as text; ``wait_for`` polls it
    with a deadline (tmux offers no change notification to wait on).
    """

    def __init__(self) -> None:
        self.socket = f"chat-tui-test-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], check=True,
                             capture_output=True, text=True, timeout=DEADLINE)
        return out.stdout

    def start(self, command: str, cwd: Path, width: int = 100, height: int = 30,
              window: str = "client") -> None:
        self.run("new-session", "-d", "-s", "t", "-n", window, "-x", str(width),
                 "-y", str(height), "-c", str(cwd),
                 # keep the window after the program exits, to read its last screen
                 command + "; echo CLIENT-EXITED $?; sleep 60")

    def window(self, name: str, command: str) -> None:
        """Another program in a window of its own (a telnet user, say)."""
        self.run("new-window", "-d", "-t", "t:", "-n", name, command + "; sleep 60")

    def keys(self, *keys: str, window: str = "client") -> None:
        self.run("send-keys", "-t", f"t:{window}", *keys)

    def type(self, text: str, window: str = "client") -> None:
        """``text`` typed literally (no key names), then Enter."""
        self.run("send-keys", "-t", f"t:{window}", "-l", text)
        self.run("send-keys", "-t", f"t:{window}", "Enter")

    def screen(self, window: str = "client", escapes: bool = False) -> str:
        return self.run("capture-pane", "-p", *(["-e"] if escapes else []), "-t", f"t:{window}")

    def wait_for(self, text: str, timeout: float = DEADLINE, window: str = "client") -> str:
        return self.wait_until(lambda screen: text in screen, repr(text), timeout, window)

    def wait_until(self, ok: Callable[[str], bool], what: str, timeout: float = DEADLINE,
                   window: str = "client") -> str:
        end = time.monotonic() + timeout
        while True:
            screen = self.screen(window)
            if ok(screen):
                return screen
            if time.monotonic() > end:
                raise AssertionError(f"{what} never appeared on screen:\n{screen}")
            time.sleep(0.05)  # screen polling: see the class docstring

    def settled(self, screen: str, window: str = "client") -> str:
        """The screen once a read agrees with the one before it (a redraw is complete:
        one can reach tmux in more than one piece)."""
        end = time.monotonic() + DEADLINE
        while True:
            time.sleep(0.05)  # screen polling: see the class docstring
            again = self.screen(window)
            if again == screen:
                return screen
            if time.monotonic() > end:
                raise AssertionError(f"the screen never settled:\n{again}")
            screen = again

    def resize(self, width: int, height: int, window: str = "client") -> None:
        self.run("resize-window", "-t", f"t:{window}", "-x", str(width), "-y", str(height))

    def paste(self, text: str, window: str = "client") -> None:
        """``text`` pasted as a terminal pastes it: in bracketed-paste markers (``-p``),
        when the program asked for them, with each LF sent as CR."""
        self.run("set-buffer", "-b", "clip", "--", text)
        self.run("paste-buffer", "-p", "-d", "-b", "clip", "-t", f"t:{window}")

    def record(self, path: Path, window: str = "client") -> None:
        """Append every byte the program writes to its terminal to ``path``."""
        self.run("pipe-pane", "-O", "-t", f"t:{window}", f"cat >> {shlex.quote(str(path))}")

    def title(self, window: str = "client") -> str:
        return self.run("display-message", "-p", "-t", f"t:{window}", "#{pane_title}").strip()

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=DEADLINE)


def pane_rows(screen: str, height: int) -> list[str]:
    """The message pane's rows on a captured screen: all but the status and input rows,
    and only left of the people list's separator."""
    rows = (screen.split("\n") + [""] * height)[: height - 2]
    return [row.split("\u2502")[0].rstrip() for row in rows]


def bells(output: bytes) -> int:
    """Bells (BEL bytes) a program wrote, not counting those that end a title (OSC)."""
    return OSC.sub(b"", output).count(b"\x07")


# --- a server that says what a test tells it to ---


class ScriptedServer:
    """One JSON connection on a loopback port, driven line by line by the test.

    For what a real server cannot be made to do on demand, such as history
    from yesterday. Reads are deadline-bound.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.buf = b""

    def accept(self, timeout: float = DEADLINE) -> None:
        self.listener.settimeout(timeout)
        self.conn, _ = self.listener.accept()

    def read_line(self, timeout: float = DEADLINE) -> str:
        assert self.conn is not None
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0 or not readable(self.conn.fileno(), left):
                raise AssertionError(f"the client said nothing within {timeout}s")
            chunk = self.conn.recv(65536)
            if not chunk:
                raise EOFError("the client closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8")

    def expect(self, text: str) -> None:
        line = self.read_line()
        assert line == text, (line, text)

    def send(self, *events: ev.Event) -> None:
        assert self.conn is not None
        self.conn.sendall(b"".join(json.dumps(e.as_json()).encode() + b"\r\n" for e in events))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


# --- a network that fails where a test says ---


class Link:
    """One relayed connection: the client's socket, the server's, and what went by."""

    def __init__(self, client: socket.socket, server: socket.socket, number: int) -> None:
        self.client = client
        self.server = server
        #: the order of its arrival (a rule acts on links made after it only)
        self.number = number
        #: every byte the client sent (to check the headers of a resumed upload)
        self.up = bytearray()
        #: bytes passed from the server to the client
        self.down = 0
        #: directions that pass nothing more (what arrives is read and dropped)
        self.stalled: set[str] = set()
        self.closed = threading.Event()

    @property
    def transfer(self) -> bool:
        return self.up.startswith(b"/attach ")

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class CutProxy:
    """A TCP relay in front of a server that cuts or stalls a transfer connection.

    chat-tui connects to ``port`` as it would to the server. ``cut(up=N)``
    passes the first N bytes a transfer connection sends, then closes it (with
    ``everything``: every connection, as an outage would); ``cut(down=N)``
    does the same to the bytes a transfer connection receives; ``stall=True``
    holds the connection open instead, passing nothing more that way (what
    comes is read and dropped, so either end's close is still seen). A rule acts once
    (``fired`` is set), on the first transfer connection opened after it
    to reach it.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.links: list[Link] = []
        #: direction, bytes, everything, stall, and the first link it applies to
        self.rule: tuple[str, int, bool, bool, int] | None = None
        self.fired = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, up: int = 0, down: int = 0, everything: bool = False,
            stall: bool = False) -> None:
        with self.lock:
            way, count = ("up", up) if up else ("down", down)
            self.rule = (way, count, everything, stall, len(self.links))
            self.fired.clear()

    def transfers(self) -> list[Link]:
        with self.lock:
            return [link for link in self.links if link.transfer]

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                link = Link(client, server, len(self.links))
                self.links.append(link)
            threading.Thread(target=self._pipe, args=(link, "up"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(link, "down"), daemon=True).start()

    def _pipe(self, link: Link, way: str) -> None:
        src, dst = (link.client, link.server) if way == "up" else (link.server, link.client)
        while not link.closed.is_set():
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if way in link.stalled:
                continue
            act = None
            with self.lock:
                if way == "up":
                    link.up += data
                count = len(link.up) - len(data) if way == "up" else link.down
                rule = self.rule
                if rule and rule[0] == way and link.transfer and link.number >= rule[4]:
                    if count + len(data) >= rule[1]:
                        data = data[: rule[1] - count]
                        act, self.rule = rule, None
                if way == "down":
                    link.down += len(data)
            try:
                dst.sendall(data)
            except OSError:
                break
            if act is not None:
                _, _, everything, stall, _ = act
                self.fired.set()
                if stall:
                    link.stalled.add(way)
                    continue
                with self.lock:
                    doomed = list(self.links) if everything else [link]
                for other in doomed:
                    other.close()
                return
        link.close()

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            links = list(self.links)
        for link in links:
            link.close()
