"""``chat-tui`` and ``python -m client_tui``: options, and the one-loop start-up.

Twisted runs on prompt_toolkit's asyncio loop: the asyncio reactor is
installed on a fresh loop before anything imports ``twisted.internet.reactor``
(which is why the Twisted imports here are inside functions), then
``task.react`` runs the reactor and awaits ``Application.run_async()`` on the
same loop. There are no networking threads. Options override the settings
file (``$XDG_CONFIG_HOME/lanchat/tui.toml``): ``--no-bell``, ``--paste``,
``--log``. ``--tls`` alone trusts the server's certificate on first use
(``known_hosts`` beside the settings file); ``--ca FILE`` checks it against
a CA instead. A refused certificate is also printed once the screen is
gone, so the warning stays in the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client_tui.connection import parse_address
from client_tui.known_hosts import ACCEPT_OPTION, normal_fingerprint
from client_tui.paste import PASTE_MODES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chat-tui", description="Full-screen terminal client for the lanchat server."
    )
    p.add_argument("address", nargs="?", metavar="HOST[:PORT]",
                   help="server address (default 127.0.0.1:8000)")
    p.add_argument("--name", help="user name to register with (asked on screen if omitted)")
    p.add_argument("--tls", action="store_true",
                   help="connect with TLS, trusting the server's certificate on first use "
                        "(its fingerprint is kept in $XDG_CONFIG_HOME/lanchat/known_hosts)")
    p.add_argument("--ca", "--cafile", dest="ca", metavar="FILE",
                   help="check the server's certificate against this CA (PEM; implies --tls)")
    p.add_argument(ACCEPT_OPTION, dest="accept", metavar="SHA256",
                   help="trust the server's certificate with this fingerprint, replacing the "
                        "one pinned for it (as the warning about a changed one says)")
    p.add_argument("--download-dir", metavar="DIR",
                   default=os.environ.get("CHAT_TUI_DOWNLOAD_DIR"),
                   help="where /get saves files (default: $CHAT_TUI_DOWNLOAD_DIR or the "
                        "current directory)")
    p.add_argument("--no-bell", dest="bell", action="store_false", default=None,
                   help="do not ring the terminal bell for mentions and private messages")
    p.add_argument("--paste", choices=PASTE_MODES,
                   help="a paste of several lines: ask (default), send as lines, or as a file")
    p.add_argument("--log", metavar="DIR",
                   help="keep a plain-text log of the conversation, one file per day, in DIR")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.host, args.port = parse_address(args.address)
    except ValueError as e:
        parser.error(str(e))
    if args.accept is not None:
        accept = normal_fingerprint(args.accept)
        if accept is None:
            parser.error(f"{ACCEPT_OPTION}: not a SHA-256 fingerprint: {args.accept!r}")
        args.accept = accept
    args.tls = bool(args.tls or args.ca or args.accept)
    return args


def trust(args: argparse.Namespace) -> Any:
    """The ``pinning.Trust`` for ``--tls`` without ``--ca`` (``None`` otherwise)."""
    if not args.tls or args.ca:
        return None
    from client_tui.pinning import Trust
    from client_tui.settings import config_dir

    return Trust(config_dir() / "known_hosts", args.host, args.port, args.accept)


def options(args: argparse.Namespace, label: str) -> tuple[Any, str | None]:
    """The session's ``Options`` from the settings file and ``args`` (which win),
    and what is wrong with the settings file, if anything."""
    from client_tui.chatlog import ChatLog
    from client_tui.session import Options
    from client_tui.settings import Settings, SettingsError, config_dir

    problem = None
    try:
        settings = Settings.load()
    except SettingsError as e:
        settings, problem = Settings(config_dir() / "tui.toml", broken=True), str(e)
    log_dir = args.log or settings.log
    bell = args.bell if args.bell is not None else settings.bell
    return Options(
        bell=True if bell is None else bell,
        paste=args.paste or settings.paste or "ask",
        log=ChatLog(Path(log_dir).expanduser(), label) if log_dir else None,
        settings=settings,
    ), problem


def build(reactor: Any, args: argparse.Namespace, input: Any = None,
          output: Any = None) -> tuple[Any, Any]:
    """The session and the Application for ``args`` (used by main and the tests)."""
    from client_tui.app import build_app
    from client_tui.connection import make_endpoint
    from client_tui.session import ChatSession

    label = f"{args.host}:{args.port}" + (" (TLS)" if args.tls else "")
    chosen, problem = options(args, label)
    pin = trust(args)
    session = ChatSession(
        reactor,
        lambda: make_endpoint(reactor, args.host, args.port, args.tls, args.ca, pin),
        label,
        name=args.name,
        download_dir=Path(args.download_dir) if args.download_dir else None,
        options=chosen,
        trust=pin,
    )
    if problem:
        session.pane.error(f"Settings not used: {problem}")
    app = build_app(session, input=input, output=output)
    return session, app


async def run(reactor: Any, session: Any, app: Any) -> None:
    """Start the session, run the app until the session is done."""
    from twisted.internet.defer import Deferred

    from client_tui.app import restore_terminal

    def leave(_: object) -> None:
        if app.is_running and not app.future.done():
            app.exit()

    session.done.addCallback(leave)
    future = asyncio.ensure_future(app.run_async())
    session.start()
    try:
        await Deferred.fromFuture(future)
    finally:
        restore_terminal(app)


def install_reactor() -> Any:
    """The asyncio reactor on a fresh loop (must run before any reactor import)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)
    from twisted.internet import reactor

    return reactor


def tls_available() -> bool:
    """Twisted's TLS needs pyOpenSSL, and service_identity to check host names."""
    return all(importlib.util.find_spec(m) is not None for m in ("OpenSSL", "service_identity"))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ca and not Path(args.ca).is_file():
        print(f"chat-tui: no such CA file: {args.ca}", file=sys.stderr)
        return 2
    if args.tls and not tls_available():
        print("chat-tui: TLS needs pyOpenSSL and service_identity "
              "(pip install 'twisted[tls]')", file=sys.stderr)
        return 2
    if (problem := known_hosts_problem(args)) is not None:
        print(f"chat-tui: {problem}\nchat-tui: fix or delete that line; the file is left as "
              "it is.", file=sys.stderr)
        return 2
    install_reactor()
    from twisted.internet import task

    sessions: list[Any] = []

    def start(reactor: Any) -> Any:
        from twisted.internet.defer import ensureDeferred

        session, app = build(reactor, args)
        sessions.append(session)
        return ensureDeferred(run(reactor, session, app))

    code = 0
    try:
        task.react(start)
    except SystemExit as e:
        code = int(e.code or 0)
    refused = sessions and sessions[0].trust is not None and sessions[0].trust.refusal
    if refused:
        print(f"chat-tui: {refused}", file=sys.stderr)
        return code or 1
    return code


def known_hosts_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the known_hosts file, when trust on first use would read it."""
    if not args.tls or args.ca:
        return None
    from client_tui.known_hosts import KnownHosts, KnownHostsError
    from client_tui.settings import config_dir

    try:
        KnownHosts.load(config_dir() / "known_hosts")
    except KnownHostsError as e:
        return str(e)
    return None


if __name__ == "__main__":
    sys.exit(main())
