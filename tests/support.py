"""Test helpers: in-memory servers and connections, and the real server process.

``memory_server`` builds the whole chat stack on a ``task.Clock`` with a
synchronous store and upload worker, so a test can drive ``ChatProtocol``
objects through ``StringTransport``s with no threads and no sockets.
``RealServer`` starts ``python -m chat`` on ephemeral loopback ports and reads
the ports it chose from its log; ``LineClient`` is a blocking socket client
whose reads wait for data (with a deadline) instead of sleeping.
"""

from __future__ import annotations

import json
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from chat.config import Config
from chat.protocol import ChatFactory, ChatProtocol
from chat.server import build_factory
from chat.service import ChatService
from chat.store import Store

DEADLINE = 10.0

#: Argon2id at its cheapest: the in-memory tests hash many passwords.
CHEAP_HASHES = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@dataclass
class MemoryServer:
    factory: ChatFactory
    clock: task.Clock
    store: Store
    config: Config
    conns: list[tuple[ChatProtocol, StringTransport]] = field(default_factory=list)

    @property
    def service(self) -> ChatService:
        return self.factory.service

    def connect(self, port: int = 40000, host: str = "127.0.0.1") -> Conn:
        proto = self.factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        proto.makeConnection(transport)
        return Conn(proto, transport, self)

    def user(self, name: str, mode: str = "text") -> Conn:
        c = self.connect()
        if mode == "json":
            c.line("/proto json")
        c.line(name)
        c.take()
        return c


class Conn:
    """One in-memory connection: feed it bytes, read what the server wrote."""

    def __init__(self, proto: ChatProtocol, transport: StringTransport, server: MemoryServer):
        self.proto = proto
        self.transport = transport
        self.server = server

    def feed(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def line(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.feed(data + b"\r\n")

    def take(self) -> bytes:
        """Everything written since the last take."""
        data = self.transport.value()
        self.transport.clear()
        return data

    def lines(self) -> list[str]:
        return [ln for ln in self.take().decode("utf-8").split("\r\n") if ln]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(ln) for ln in self.lines()]

    def close(self) -> None:
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.transport.loseConnection()
        self.proto.connectionLost(Failure(ConnectionDone()))


def relaxed_config() -> Config:
    """Defaults, with flood and per-address limits out of the way of chat tests."""
    config = Config()
    config.limits.flood_burst = 100_000
    config.limits.max_connections_per_address = 1000
    config.limits.max_new_connections_per_minute = 1000
    return config


def memory_server(
    tmp_path: Path, config: Config | None = None, *, coalesce: bool = False
) -> MemoryServer:
    """The whole stack in memory; ``relaxed_config()`` unless a config is given.

    With ``coalesce``, a turn's output is delivered when the clock advances
    (as on the reactor); without it, every event is delivered at once.
    """
    config = config or relaxed_config()
    config.server.data_dir = str(tmp_path)
    clock = task.Clock()
    clock.advance(1_700_000_000)
    store = Store(tmp_path / "chat.sqlite3", clock, config.history.max)
    store.open(config.rooms.default)
    factory = build_factory(config, clock, store, coalesce=coalesce, passwords=CHEAP_HASHES)
    return MemoryServer(factory, clock, store, config)


RELAXED_TOML = """\
[limits]
flood_burst = 100000
max_connections_per_address = 1000
max_new_connections_per_minute = 1000
"""

_LISTENING = re.compile(r"(chat|http) listening on ([0-9.]+):(\d+)")


class RealServer:
    """``python -m chat`` on ephemeral loopback ports."""

    def __init__(
        self,
        data_dir: Path,
        *extra: str,
        http: bool = True,
        relaxed: bool = True,
        open_files: int | None = None,
        settings: str = "",
        ready: str | None = None,
    ) -> None:
        """``open_files``: the child's RLIMIT_NOFILE (soft and hard), as ``ulimit -n`` would;
        ``settings``: TOML added to the relaxed configuration; ``ready``: a log
        line (regular expression) to wait for besides the listening ones."""
        self.data_dir = data_dir
        args = [
            sys.executable, "-m", "chat", "--no-console",
            "--listen", "tcp:0:interface=127.0.0.1",
            "--data-dir", str(data_dir),
        ]
        if relaxed:
            # Flood and per-address limits have their own tests; here they
            # would only slow scripted clients down.
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            relaxed_toml = data_dir.parent / f"{data_dir.name}-relaxed.toml"
            relaxed_toml.write_text(RELAXED_TOML + settings)
            args += ["--config", str(relaxed_toml)]
        args += ["--http", "tcp:0:interface=127.0.0.1"] if http else ["--no-http"]
        args += list(extra)

        def limit_open_files() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=limit_open_files,
        )
        self.log: list[str] = []
        self._partial = b""
        self.ports: dict[str, int] = {}
        want = {"chat", "http"} if http else {"chat"}
        self.wait_log(lambda: want <= set(self.ports), what="listening lines")
        if ready is not None:
            self.wait_for_log(ready)

    @property
    def port(self) -> int:
        return self.ports["chat"]

    @property
    def http_port(self) -> int:
        return self.ports["http"]

    def _read_log(self, timeout: float) -> bool:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        if not readable(fd, timeout):
            return False
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError("server exited:\n" + "".join(self.log))
        self._partial += chunk
        *lines, self._partial = self._partial.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace") + "\n"
            self.log.append(line)
            m = _LISTENING.search(line)
            if m:
                self.ports[m[1]] = int(m[3])
        return True

    def wait_log(self, condition: Any, what: str, timeout: float = DEADLINE) -> None:
        end = time.monotonic() + timeout
        while not condition():
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}:\n" + "".join(self.log))
            self._read_log(left)

    def wait_for_log(self, pattern: str, timeout: float = DEADLINE) -> str:
        rx = re.compile(pattern)
        found: list[str] = []

        def seen() -> bool:
            found[:] = [ln for ln in self.log if rx.search(ln)]
            return bool(found)

        self.wait_log(seen, what=repr(pattern), timeout=timeout)
        return found[0]

    def client(self, name: str | None = None, json_mode: bool = False) -> LineClient:
        c = LineClient(self.port)
        if json_mode:
            c.send_line("/proto json")
        if name is not None:
            c.send_line(name)
            c.expect("welcome" if json_mode else r"Welcome to the chat")
        return c

    def stop(self, sig: int = signal.SIGTERM, timeout: float = DEADLINE) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        rest = self._partial + self.proc.stderr.read()
        self.log.extend(ln + "\n" for ln in rest.decode("utf-8", "replace").splitlines())
        return rc


class LineClient:
    """A blocking loopback client with deadline-bound reads."""

    def __init__(
        self, port: int, host: str = "127.0.0.1", sock: socket.socket | None = None
    ) -> None:
        self.sock = sock or socket.create_connection((host, port), timeout=DEADLINE)
        self.buf = b""
        self.seen: list[str] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_line(self, text: str) -> None:
        self.send(text.encode("utf-8") + b"\r\n")

    def _fill(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk
        return True

    def read_line(self, timeout: float = DEADLINE) -> str:
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            if not self._fill(deadline):
                raise TimeoutError(f"no line within {timeout}s; seen: {self.seen[-10:]}")
        line, self.buf = self.buf.split(b"\r\n", 1)
        text = line.decode("utf-8", "replace")
        self.seen.append(text)
        return text

    def read_exact(self, n: int, timeout: float = DEADLINE) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise TimeoutError(f"only {len(self.buf)} of {n} bytes arrived")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def expect(self, pattern: str, timeout: float = DEADLINE) -> str:
        """Read lines until one matches ``pattern``; return it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(max(0.0, deadline - time.monotonic()))
            if rx.search(line):
                return line

    def expect_event(self, type_: str, timeout: float = DEADLINE, **fields: Any) -> dict:
        """Read JSON lines until an event of ``type_`` with ``fields`` arrives."""
        deadline = time.monotonic() + timeout
        while True:
            event = json.loads(self.read_line(max(0.0, deadline - time.monotonic())))
            if event["type"] == type_ and all(event.get(k) == v for k, v in fields.items()):
                return event

    def closed(self, timeout: float = DEADLINE) -> bool:
        """True once the server has closed the connection (reading what is left)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except (EOFError, ConnectionResetError):
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@contextmanager
def running(data_dir: Path, *extra: str, **options: Any) -> Iterator[RealServer]:
    """A ``RealServer`` for the length of a ``with`` block, killed after it."""
    server = RealServer(data_dir, *extra, **options)
    try:
        yield server
    finally:
        kill_quietly(server)


def kill_quietly(server: RealServer) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
    for pipe in (server.proc.stdout, server.proc.stderr):
        if pipe is not None:
            pipe.close()


def readable(fd: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``fd`` to be readable (any fd number)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(max(0.0, timeout) * 1000))
