"""The admin commands typed into the server console.

``ConsoleCommands`` parses a console line and acts: the operator actions
(kick, ban, notices, operators, removing files) go through ``chat.admin``,
the same code a server operator's client reaches, so both log the same way;
``/ban`` and ``/unban`` parse with the ``wire`` command classes. What it
finds out it says through the console (``say``/``error``), which shows it in
the status line and the chat log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.python.failure import Failure

from chat import events as ev
from chat import wire
from chat.admin import CONSOLE
from chat.render import error_text
from chat.sanitize import for_log
from chat.units import human_duration, human_size

if TYPE_CHECKING:
    from chat.admin import Admin
    from chat.console import Console

HELP: tuple[tuple[str, str], ...] = (
    ("/who", "list who is connected"),
    ("/kick NAME [REASON]", "disconnect NAME; they see REASON, everyone sees them leave"),
    ("/ban NAME|ADDRESS [DURATION] [REASON]", "keep a name or an address (or a CIDR) out"),
    ("/unban NAME|ADDRESS", "lift a ban"),
    ("/bans", "who is banned, until when, and why"),
    ("/register NAME PASSWORD", "make NAME an account (where registration is closed)"),
    ("/unregister NAME", "NAME is an account no more"),
    ("/oper NAME", "make the account NAME a server operator"),
    ("/deoper NAME", "NAME is a server operator no more"),
    ("/say [ROOM] TEXT", "a server notice to everyone, or to one room"),
    ("/files", "recently shared files"),
    ("/rm ID", "remove a shared file"),
    ("/help", "this list"),
    ("/quit", "shut the server down cleanly (as SIGTERM does)"),
)

#: Commands that need no running server.
OFFLINE = ("help", "quit")


class ConsoleCommands:
    """One ``do_`` method per admin command."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.say = console.say
        self.error = console.error

    def run(self, line: str) -> None:
        if not line.startswith("/"):
            self.error("Admin commands start with '/'. Try /help.")
            return
        verb, _, args = line[1:].partition(" ")
        handler: Callable[[str], None] | None = (
            getattr(self, f"do_{verb.lower()}", None) if verb.isalpha() else None
        )
        if handler is None:
            self.error(f"Unknown command /{for_log(verb)[:32]}. Try /help.")
        elif self.console.sources is None and verb.lower() not in OFFLINE:
            self.error("The server is not running.")
        else:
            handler(args.strip())

    def _answer(self, result: ev.Event | None, done: str = "") -> None:
        if isinstance(result, ev.Error):
            self.error(error_text(result))
        elif isinstance(result, ev.Info):
            self.say(result.text)
        elif done:
            self.say(done)

    @property
    def _admin(self) -> Admin:
        assert self.console.sources is not None
        return self.console.sources.admin  # type: ignore[no-any-return]

    def do_help(self, args: str) -> None:
        width = max(len(u) for u, _ in HELP)
        for usage, text in HELP:
            self.say(f"{usage:<{width}}  {text}")
        self.say("Admin commands: " + ", ".join(u.split()[0] for u, _ in HELP))

    def do_who(self, args: str) -> None:
        assert self.console.sources is not None
        users = list(self.console.sources.service.registry)
        now = self.console.clock.seconds()
        if not users:
            self.say("Nobody is connected.")
            return
        for u in users[:20]:
            kind = "operator" if u.operator else "account" if u.account else "guest"
            self.say(f"{u.name}  {u.address}  {getattr(u.peer, 'mode', '?')}  {kind}  "
                     f"idle {human_duration(now - u.last_active)}")
        if len(users) > 20:
            self.say(f"… and {len(users) - 20} more")
        self.say(f"{len(users)} connected.")

    def do_kick(self, args: str) -> None:
        name, _, reason = args.partition(" ")
        if not name:
            self.error("Usage: /kick NAME [REASON]")
            return
        reason = reason.strip() or "removed by the operator"
        self._answer(self._admin.kick(CONSOLE, name, reason),
                     f"Kicked {for_log(name)} ({for_log(reason)}).")

    def do_ban(self, args: str) -> None:
        try:
            cmd = wire.Ban.parse(args)
        except wire.CommandError:
            self.error(f"Usage: {wire.Ban.usage}")
            return
        self._admin.ban(CONSOLE, cmd.target, cmd.seconds, cmd.reason).addCallbacks(
            self._answer, self._failed
        )

    def do_unban(self, args: str) -> None:
        try:
            cmd = wire.Unban.parse(args)
        except wire.CommandError:
            self.error(f"Usage: {wire.Unban.usage}")
            return
        self._admin.unban(CONSOLE, cmd.target).addCallbacks(self._answer, self._failed)

    def do_bans(self, args: str) -> None:
        bans = self._admin.bans().bans
        for b in bans:
            until = "for good" if b.until is None else time.strftime(
                "until %Y-%m-%d %H:%M", time.localtime(b.until)
            )
            why = f": {for_log(b.reason)}" if b.reason else ""
            self.say(f"{for_log(b.target)} ({b.kind}) {until}, by {for_log(b.by)}{why}")
        self.say(f"{len(bans)} ban(s)." if bans else "Nobody is banned.")

    def _oper(self, args: str, on: bool) -> None:
        name = args.strip()
        if not name or " " in name:
            self.error(f"Usage: /{'oper' if on else 'deoper'} NAME")
        elif (saved := self._admin.oper(CONSOLE, name, on)) is None:
            self.error(f"{for_log(name)[:40]} is not an account (they can /register first).")
        else:
            shown = f"{for_log(name)} is {'now' if on else 'no longer'} a server operator."
            saved.addCallbacks(lambda _: self.say(shown), self._failed)

    def do_register(self, args: str) -> None:
        name, _, password = args.partition(" ")
        if not name or not password:
            self.error("Usage: /register NAME PASSWORD")
            return
        self._admin.make_account(CONSOLE, name, password).addCallbacks(
            self._answer, self._failed
        )

    def do_unregister(self, args: str) -> None:
        if not args or " " in args:
            self.error("Usage: /unregister NAME")
            return
        self._admin.drop_account(CONSOLE, args).addCallbacks(self._answer, self._failed)

    def do_oper(self, args: str) -> None:
        self._oper(args, True)

    def do_deoper(self, args: str) -> None:
        self._oper(args, False)

    def do_say(self, args: str) -> None:
        first, _, rest = args.partition(" ")
        room = first if wire.is_room(first) else None
        text = rest.strip() if room is not None else args
        if not text:
            self.error("Usage: /say [ROOM] TEXT")
            return
        problem = self._admin.say(CONSOLE, text, room)
        if problem is not None:
            self.error(error_text(problem))
        else:
            # The notice itself shows in the chat log: the status line says where it went.
            self.console.say(f"Notice sent to {room or 'everyone'}.", log=False)

    def do_files(self, args: str) -> None:
        assert self.console.sources is not None
        if args:
            self.error("Usage: /files")
            return

        def show(files: list[ev.FileInfo]) -> None:
            if not files:
                self.say("No files have been shared.")
                return
            for f in reversed(files):
                gone = "  (removed)" if f.removed else ""
                self.say(f"{f.file_id}  {for_log(f.name)}  {human_size(f.size)}  "
                         f"by {for_log(f.uploader)}{gone}")
            self.say(f"{len(files)} most recent file(s).")

        self.console.sources.service.store.recent_files(10).addCallbacks(show, self._failed)

    def do_rm(self, args: str) -> None:
        if not args or " " in args:
            self.error("Usage: /rm ID")
            return
        self._admin.rm(CONSOLE, args, operator=True).addCallbacks(
            lambda problem: self._answer(problem, f"Removed file {for_log(args)}."),
            self._failed,
        )

    def _failed(self, failure: Failure) -> None:
        self.error(f"Failed: {for_log(failure.getErrorMessage())}")

    def do_quit(self, args: str) -> None:
        self.say("Shutting down…")
        if self.console.stop is not None:
            self.console.stop()
