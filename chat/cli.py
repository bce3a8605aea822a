"""``chat-server`` and ``python -m chat``: options, logging, process tuning, the reactor.

Options override the configuration file, which overrides the defaults in
``chat.config``. A bad setting stops start-up with one line naming it and
exit status 2; SIGTERM and SIGINT stop the server cleanly with status 0. The
process is tuned for latency (malloc thresholds, GIL switch interval, a
frozen start-up heap), under ``twistd`` too.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import signal
import sys
from collections.abc import Sequence
from typing import Any

from chat import __version__
from chat.config import Config, ConfigError, load, validate

#: How long a thread may hold the GIL while another waits for it (CPython's
#: default is 5 ms). Upload threads take and drop the GIL thousands of times
#: a second around their system calls; a waiting reactor thread gets it only
#: when this interval runs out, so it bounds what an upload adds to a chat
#: message's delay.
GIL_SWITCH_INTERVAL = 0.0005


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chat-server",
        description="A chat server for telnet, nc and the chat-tui client, with file sharing.",
    )
    p.add_argument("--config", metavar="PATH", help="TOML configuration file")
    p.add_argument("--listen", metavar="ENDPOINT", help="chat endpoint, e.g. tcp:8000")
    p.add_argument("--http", metavar="ENDPOINT", help="HTTP endpoint for file downloads")
    p.add_argument("--no-http", action="store_true", help="do not serve files over HTTP")
    p.add_argument("--public-url", metavar="URL", help="base URL written into file notices")
    p.add_argument("--data-dir", metavar="DIR", help="where history and files are kept")
    p.add_argument("--files-dir", metavar="DIR",
                   help="where shared files are kept (default DATA/files; a cluster's nodes "
                        "share one)")
    p.add_argument("--tls", action="store_true",
                   help="listen with TLS (a self-signed certificate is made if none is set)")
    p.add_argument("--no-console", action="store_true", help="log lines instead of the live view")
    p.add_argument("--cluster", metavar="URL",
                   help="be one node of a chat shared through Redis, e.g. redis://127.0.0.1:6379/0")
    p.add_argument("--workers", metavar="N", type=int, default=1,
                   help="start N node processes sharing the ports (needs --cluster)")
    p.add_argument("--node-id", metavar="ID", help="this node's id in the cluster")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def configure(argv: Sequence[str] | None = None) -> tuple[Config, argparse.Namespace]:
    """Parse options and load the configuration they point at."""
    args = build_parser().parse_args(argv)
    config = load(args.config)
    if args.listen:
        config.server.listen = args.listen
    if args.http:
        config.server.http = args.http
        config.server.http_enabled = True
    if args.no_http:
        config.server.http_enabled = False
    if args.public_url:
        config.server.public_url = args.public_url
    if args.data_dir:
        config.server.data_dir = args.data_dir
    if args.files_dir:
        config.server.files_dir = args.files_dir
    if args.tls:
        config.server.tls = True
    if args.no_console:
        config.console.enabled = False
    if args.cluster is not None:
        config.cluster.redis_url = args.cluster
    if args.node_id:
        config.cluster.node_id = args.node_id
    if args.workers < 1:
        raise ConfigError("--workers: must be at least 1")
    if args.workers > 1 and not config.cluster.redis_url:
        raise ConfigError("--workers: needs a cluster (--cluster URL or cluster.redis_url)")
    if args.workers > 1 and config.server.tls:
        raise ConfigError("--workers: not with TLS yet (run one node per process with --tls)")
    if config.cluster.redis_url:
        validate(config)
    return config, args


def fixed_malloc_thresholds() -> None:
    """Stop glibc raising its mmap threshold as large buffers come and go.

    Otherwise every freed 100 KiB read buffer lifts the threshold, later ones
    come from the heap, and fragmentation makes RSS creep up with traffic
    (measured: +35 MB over 120 MB of chat; flat with fixed thresholds).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def tune_process() -> None:
    """Process-wide settings for a server: before the server is built."""
    fixed_malloc_thresholds()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    # A file-size limit (RLIMIT_FSIZE) must fail a write, not kill the server.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def freeze_startup_heap() -> None:
    """Take what start-up allocated out of the garbage collector's full passes.

    Modules, classes and configuration live as long as the process, yet a
    full collection walks all of them: about 13 ms with the reactor stopped,
    measured as a 15 ms hole in chat delivery every few seconds under load.
    Frozen, a full pass walks only what connections allocated since.
    """
    gc.collect()
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config, args = configure(argv)
        if args.workers > 1:
            from chat.workers import supervise

            return supervise(config, args.workers, list(argv or sys.argv[1:]))
    except ConfigError as e:
        print(f"chat-server: {e}", file=sys.stderr)
        return 2

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from chat.server import ChatServer

    r: Any = reactor
    tune_process()
    console = None
    if config.console.enabled and sys.stdout.isatty():
        from chat.console import Console

        # The console is the log observer: lines go into its view once it is
        # up, and to stderr before that (start-up errors stay readable).
        console = Console(config.console, r, fallback=sys.stderr)
        observers: list[Any] = [console]
    else:
        observers = [textFileLogObserver(sys.stderr)]
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)
    try:
        server = ChatServer(config, r)
        server.startService()
    except ConfigError as e:
        print(f"chat-server: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        print(f"chat-server: cannot start: {e}", file=sys.stderr)
        return 1
    r.addSystemEventTrigger("before", "shutdown", server.stopService)
    if console is not None:
        console.start_terminal(server, r)  # its /quit calls r.stop()
    freeze_startup_heap()
    try:
        r.run()
    finally:
        if console is not None:
            console.close()  # the terminal is restored whatever happened
    return 0


if __name__ == "__main__":
    sys.exit(main())
