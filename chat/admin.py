"""What server operators do, from the console or from any client.

``Admin`` holds each operator action once, so the console's commands and a
client's are the same: put someone off the server, ban a name or an address
(for a time or for good; by address a network too), lift a ban, list them,
send a server notice, make an account an operator (the console only), and
remove a shared file. Every action is logged with who did it, so it shows in
the server log and the console.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chat import events as ev
from chat.accounts import Accounts, ban_target
from chat.files import FileService
from chat.registry import name_problem
from chat.sanitize import clean, for_log
from chat.service import ChatService, invalid_name

#: Who acts when the console does.
CONSOLE = "console"


class Admin:
    """Operator actions, each logged (who, what)."""

    log = Logger()

    def __init__(
        self, chat: ChatService, accounts: Accounts, files: FileService, clock: IReactorTime
    ) -> None:
        self.chat = chat
        self.accounts = accounts
        self.files = files
        self.clock = clock

    def _did(self, by: str, what: str) -> None:
        self.log.info("Operator {by}: {what}", by=for_log(by), what=for_log(what))

    def kick(self, by: str, name: str, reason: str) -> ev.Error | None:
        """Off the server: the user is told why, everyone who shared a room sees them leave."""
        if not self.chat.kick(name, reason):
            return ev.error("no_such_user", "kick", name=clean(name)[:64])
        self._did(by, f"kicked {name} ({reason or 'no reason given'})")
        return None

    def ban(
        self, by: str, target: str, seconds: float | None, reason: str
    ) -> defer.Deferred[ev.Error | ev.Info]:
        """In force at once (whoever it matches is put off); answered once it is on disk."""
        kind_target = ban_target(target)
        if kind_target is None:
            return defer.succeed(ev.error("bad_ban", "ban"))
        kind, key = kind_target
        until = None if seconds is None else self.clock.seconds() + seconds
        ban, saved = self.accounts.ban(kind, key, until, clean(reason), by)
        self._did(by, f"banned {key} {'for good' if until is None else f'for {seconds:g}s'}"
                      f"{': ' + ban.reason if ban.reason else ''}")
        self._put_off(ban)
        if self.chat.cluster is not None:
            self.chat.cluster.tell("ban", {"kind": kind, "target": key, "until": until,
                                           "reason": ban.reason, "by": by})
        when = "for good" if until is None else time.strftime(
            "until %Y-%m-%d %H:%M %Z", time.localtime(until)
        )
        return saved.addCallback(lambda _: ev.Info(f"Banned {key} {when}."))

    def _put_off(self, ban: Any, local: bool = False) -> None:
        """Who is in now and is banned goes (``local``: this node's users only)."""
        for user in list(self.chat.registry):
            if local and user.remote:
                continue
            host = user.address.rsplit(":", 1)[0].strip("[]")
            if ban.matches(user.name, host):
                self.chat.kick(user.name, f"banned{': ' + ban.reason if ban.reason else ''}")

    def banned_elsewhere(self, data: dict[str, Any]) -> None:
        """A ban made on another node of the cluster: in force here too."""
        until = data.get("until")
        ban, _ = self.accounts.ban(
            str(data["kind"]), str(data["target"]),
            float(until) if isinstance(until, int | float) else None,
            str(data.get("reason", "")), str(data.get("by", "")),
        )
        self._put_off(ban, local=True)

    def unbanned_elsewhere(self, data: dict[str, Any]) -> None:
        self.accounts.unban(str(data["kind"]), str(data["target"]))

    def unban(self, by: str, target: str) -> defer.Deferred[ev.Error | ev.Info]:
        kind_target = ban_target(target)
        lifted = None if kind_target is None else self.accounts.unban(*kind_target)
        if kind_target is None or lifted is None:
            return defer.succeed(ev.error("no_such_ban", "unban", target=clean(target)[:64]))
        self._did(by, f"lifted the ban on {kind_target[1]}")
        if self.chat.cluster is not None:
            self.chat.cluster.tell("unban", {"kind": kind_target[0], "target": kind_target[1]})
        return lifted.addCallback(lambda _: ev.Info(f"{kind_target[1]} is no longer banned."))

    def bans(self) -> ev.BanList:
        return ev.BanList(tuple(
            ev.BanInfo(b.kind, b.target, b.until, b.reason, b.by) for b in self.accounts.bans()
        ))

    def say(self, by: str, text: str, room_name: str | None = None) -> ev.Error | None:
        room = self.chat.rooms.get(room_name) if room_name else None
        if room_name and room is None:
            return ev.error("no_such_room", "say", room=room_name)
        problem = self.chat.cut_off("say")
        if problem is not None:
            return problem
        self.chat.notice(text, room)
        self._did(by, f"said to {room.name if room else 'everyone'}: {text}")
        return None

    def make_account(self, by: str, name: str, password: str) -> defer.Deferred[ev.Error | ev.Info]:
        """An account made for someone (where registration is not open to all)."""
        problem = name_problem(name)
        if problem is not None:
            return defer.succeed(invalid_name(problem, name))
        if self.accounts.exists(name):
            return defer.succeed(ev.error("name_taken", name=name))
        least = self.accounts.settings.min_password_length
        if len(password) < least:
            return defer.succeed(ev.error("weak_password", limit=least))

        def made(_: object) -> ev.Info:
            self._did(by, f"made the account {name}")
            return ev.Info(f"{name} is an account now.")

        return self.accounts.create(name, password).addCallback(made)

    def drop_account(self, by: str, name: str) -> defer.Deferred[ev.Error | ev.Info]:
        if not self.accounts.exists(name):
            return defer.succeed(ev.error("no_such_user", name=clean(name)[:64]))
        user = self.chat.registry.get(name)
        if user is not None:
            user.account = user.operator = False

        def dropped(_: object) -> ev.Info:
            self._did(by, f"removed the account {name}")
            return ev.Info(f"{name} is an account no more.")

        return self.accounts.remove(name).addCallback(dropped)

    def oper(self, by: str, name: str, on: bool) -> defer.Deferred[None] | None:
        """Make the account ``name`` a server operator (or not): fires once on disk;
        None if it is no account."""
        saved = self.accounts.set_operator(name, on)
        if saved is None:
            return None
        user = self.chat.registry.get(name)
        if user is not None and user.account:
            user.operator = on
        self._did(by, f"{'made' if on else 'unmade'} {name} an operator")
        return saved

    def rm(self, by: str, file_id: str, *, operator: bool) -> defer.Deferred[ev.Error | None]:
        """Remove a shared file: by who shared it, or by an operator."""

        def found(info: ev.FileInfo | None) -> defer.Deferred[ev.Error | None] | ev.Error:
            if info is None or info.removed:
                return ev.error("no_such_file", "rm", file_id=clean(file_id)[:64])
            problem = self.chat.cut_off("rm")
            if problem is not None:
                return problem
            if not operator and info.uploader.lower() != by.lower():
                return ev.error("not_yours", "rm")
            if operator:
                self._did(by, f"removed {info.name} ({info.file_id})")
            return self.files.remove(info, by).addCallback(lambda _: None)

        return self.files.find(file_id).addCallback(found)
