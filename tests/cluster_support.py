"""A real ``redis-server`` for the cluster tests, and nodes that use it.

Each ``RedisServer`` runs the Debian package's binary on an ephemeral
loopback port with a temporary directory (no snapshots unless asked for), so
tests never touch a Redis of the machine; ``stop`` and ``start`` again on the
same port stand for a Redis that goes away and comes back.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import DEADLINE, RealServer

REDIS = shutil.which("redis-server")

needs_redis = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, directory: Path, *extra: str) -> None:
        assert REDIS is not None, "redis-server is not installed (.ci/run installs it)"
        self.directory = directory
        self.extra = extra
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", "--appendonly", "no", *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + DEADLINE
        while self.command("PING") != "+PONG":
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("redis-server did not start")
            time.sleep(0.02)  # polling a port that is not open yet: nothing to wait on

    def command(self, *args: str) -> str:
        """One command over a plain socket; the first line of the reply."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE) as s:
                out = f"*{len(args)}\r\n" + "".join(
                    f"${len(a.encode())}\r\n{a}\r\n" for a in args
                )
                s.sendall(out.encode())
                reply = b""
                while b"\r\n" not in reply:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
                return reply.split(b"\r\n", 1)[0].decode()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        self.proc = None


def node(
    redis: RedisServer, data_dir: Path, node_id: str, *extra: str, timeout: float = 3.0,
    settings: str = "", **options: object,
) -> RealServer:
    """A ``chat-server`` that is one node of ``redis``'s cluster, once it is ready."""
    return RealServer(
        data_dir, "--cluster", redis.url, "--node-id", node_id, *extra,
        settings=f"\n[cluster]\nnode_timeout = {timeout}\n{settings}",
        ready=rf"Cluster node {node_id}: ready", **options,  # type: ignore[arg-type]
    )
