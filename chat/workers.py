"""``chat-server --workers N``: N cluster nodes on one machine, sharing its ports.

The parent reserves the chat and HTTP ports (a socket bound with
``SO_REUSEPORT``, never listening) and starts N ``chat-server`` processes,
each listening on the same ports with ``SO_REUSEPORT`` (a ``reuseport:``
endpoint, see ``chat.server.endpoint``): the kernel spreads new connections
evenly over them, so one command uses every core, and the nodes share one
chat through the cluster's Redis. The
parent only supervises: it passes SIGTERM and SIGINT on, and starts again a
worker that died (after a pause, so a worker that cannot start does not spin).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from chat.config import Config, ConfigError

#: Seconds before a worker that died is started again.
RESTART_DELAY = 1.0
#: A worker that exits sooner than this after starting failed to start: the
#: whole command fails with its status rather than restart it forever.
START_GRACE = 5.0


def reserve(description: str, setting: str) -> tuple[socket.socket, str]:
    """Hold the port of a ``tcp:PORT[:interface=HOST]`` endpoint (port 0: one
    chosen now) and say the ``reuseport:`` endpoint the workers listen on."""
    parts = description.split(":")
    if parts[0] != "tcp" or len(parts) < 2:
        raise ConfigError(f"{setting}: --workers needs a tcp: endpoint, got {description!r}")
    kw = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
    host = kw.get("interface", "")
    sock = reuseport_socket(host)
    try:
        sock.bind((host, int(kw.get("port", parts[1]))))
    except (OSError, ValueError) as e:
        sock.close()
        raise ConfigError(f"{setting}: cannot listen on {description!r}: {e}") from None
    port = sock.getsockname()[1]
    rest = "".join(f":{k}={v}" for k, v in kw.items() if k not in ("port", "interface"))
    return sock, f"reuseport:{port}:interface={host}{rest}"


def reuseport_socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def listen_reuseport(description: str) -> socket.socket:
    """A worker's listening socket for a ``reuseport:PORT:interface=HOST[:backlog=N]``."""
    parts = description.split(":")
    kw = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
    host = kw.get("interface", "")
    sock = reuseport_socket(host)
    sock.bind((host, int(parts[1])))
    sock.listen(int(kw.get("backlog", 1024)))
    sock.setblocking(False)
    return sock


def _without(argv: list[str], option: str) -> list[str]:
    """``argv`` less ``option`` and its value (both spellings)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def prepare_data(config: Config) -> None:
    """Make the database the workers share once, before they start: N processes
    creating its schema and switching it to WAL at one moment fail with
    "database is locked" (seen here). Afterwards each only opens it."""
    from twisted.internet.task import Clock

    from chat.accounts import SCHEMA
    from chat.store import Store

    data = config.data_path
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"server.data_dir: cannot create {data}: {e.strerror}") from None
    store = Store(data / "chat.sqlite3", Clock(), config.history.max)
    store.open(config.rooms.default)
    store.connection().executescript(SCHEMA)
    store.connection().close()


def supervise(config: Config, n: int, argv: list[str]) -> int:
    prepare_data(config)
    chat, chat_endpoint = reserve(config.server.listen, "server.listen")
    held = [chat]  # the reservations last as long as the workers
    http_endpoint = None
    if config.server.http_enabled:
        http, http_endpoint = reserve(config.server.http, "server.http")
        held.append(http)
    for option in ("--workers", "--listen", "--http", "--node-id"):
        argv = _without(argv, option)
    base = config.cluster.node_id or f"{socket.gethostname()}-{os.getpid()}"

    def command(i: int) -> list[str]:
        cmd = [sys.executable, "-m", "chat", *argv, "--listen", chat_endpoint,
               "--no-console", "--node-id", f"{base}-w{i}"]
        cmd += ["--http", http_endpoint] if http_endpoint else ["--no-http"]
        return cmd

    workers = {i: subprocess.Popen(command(i)) for i in range(n)}
    started = {i: time.monotonic() for i in workers}
    address = chat.getsockname()
    print(f"chat-server: {n} workers on {address[0]}:{address[1]}", file=sys.stderr, flush=True)
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        alive = [p for p in workers.values() if p.poll() is None]
        if stopping and not alive:
            return 0
        if not stopping:
            for i, proc in list(workers.items()):
                if proc.poll() is None:
                    continue
                if time.monotonic() - started[i] < START_GRACE:
                    # It could not even start (a bad setting, Redis URL...): neither can the rest.
                    stop(signal.SIGTERM, None)
                    for other in workers.values():
                        other.wait()
                    return proc.returncode or 1
                print(f"chat-server: worker {i} exited ({proc.returncode}); restarting",
                      file=sys.stderr, flush=True)
                time.sleep(RESTART_DELAY)
                workers[i] = subprocess.Popen(command(i))
                started[i] = time.monotonic()
        time.sleep(0.2)  # a supervisor's poll: nothing else to wait on without a reactor
