"""The way in: the server's password, a name, an account's password.

``Door`` answers what a connection sends before it is a participant. Where
``server.password`` is set, that comes first (text: a prompt; programs:
``/pass PASSWORD``). Then a name: a guest's is taken as it is; the name of an
account asks for its password on the next line (text mode turns telnet's
echo off meanwhile), as does every new name where ``accounts.require_account``
is set (to make it an account, if registration is open); ``/login NAME
PASSWORD`` does it in one line. Passwords are checked off the reactor thread
(the connection reads no further line until the answer), failures are
throttled per account and per address, and a login takes over a stale
session of the same account. Banned names and addresses get one line and are
closed.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat import events as ev
from chat import wire
from chat.accounts import Accounts, Ban
from chat.cluster import ClusterDown
from chat.config import Config
from chat.limits import LoginThrottle
from chat.registry import name_problem
from chat.render import error_text
from chat.service import ChatService, User, invalid_name

PROMPTS = {
    "server": "Server password:",
    "account": "The name {name} is registered. Password:",
    "new": "{name} is not an account yet: choose a password (at least {least} characters):",
}


class Entrant(Protocol):
    """What the door needs of a connection that is not in yet."""

    state: wire.State
    host: str | None
    address: str
    #: While ``state`` is PASSWORD: what the password is for, and the name.
    asking: tuple[str, str]

    def reply(self, event: ev.Event) -> None: ...

    def close(self, reason: str, *, say: ev.Event | None = None, abort: bool = False) -> None: ...

    def entered(self, user: User) -> None: ...


Answer = defer.Deferred[Any] | None


class Door:
    """Who may come in, for every connection of a server."""

    log = Logger()

    def __init__(
        self, config: Config, chat: ChatService, accounts: Accounts, clock: IReactorTime
    ) -> None:
        self.config = config
        self.chat = chat
        self.accounts = accounts
        self.clock = clock
        limits = config.limits
        self.throttle = LoginThrottle(
            clock, limits.login_failures, limits.login_window, limits.login_lockout,
            limits.max_tracked_addresses,
        )

    # --- asking ---

    def opened(self, conn: Entrant) -> None:
        """A new connection: refused if banned, else asked for what comes first."""
        ban = self.accounts.banned(host=conn.host)
        if ban is not None:
            conn.close("banned", say=self._banned(ban))
        elif self.config.server.password:
            self._ask(conn, "server", "")
        else:
            conn.reply(ev.Prompt(wire.PROMPT))

    def _ask(self, conn: Entrant, kind: str, name: str, reason: str | None = None) -> None:
        conn.state = wire.State.PASSWORD
        conn.asking = (kind, name)
        least = self.config.accounts.min_password_length
        conn.reply(ev.Echo(False))
        conn.reply(ev.Prompt(PROMPTS[kind].format(name=name, least=least), reason, kind))

    def ask_again(self, conn: Entrant) -> None:
        """The question the connection is at, asked again (after ``/proto``)."""
        if conn.state is wire.State.PASSWORD:
            self._ask(conn, *conn.asking)
        else:
            self._name_prompt(conn)

    def _name_prompt(self, conn: Entrant, why: ev.Error | None = None) -> None:
        conn.state = wire.State.REGISTER
        conn.reply(ev.Prompt(wire.PROMPT, error_text(why) if why else None))

    # --- what a connection sends ---

    def name(self, conn: Entrant, name: str) -> Answer:
        """A name attempt at the prompt."""
        problem = name_problem(name)
        if problem is not None:
            return self._refuse(conn, invalid_name(problem, name))
        ban = self.accounts.banned(name=name)
        if ban is not None:
            conn.close("banned", say=self._banned(ban))
        elif self.accounts.exists(name):
            self._ask(conn, "account", name)
        elif self.config.accounts.require_account:
            if self.config.accounts.open_registration:
                self._ask(conn, "new", name)
            else:
                conn.close("no account", say=ev.error("account_required", name=name))
        else:
            return self._enter(conn, name, account=False)
        return None

    def password(self, conn: Entrant, password: str) -> Answer:
        """The line after a password prompt."""
        kind, name = conn.asking
        conn.reply(ev.Echo(True))
        if kind == "server":
            return self.server_password(conn, password)
        if kind == "new":
            return self._new_account(conn, name, password)
        return self.login(conn, name, password)

    def server_password(self, conn: Entrant, password: str) -> Answer:
        """``/pass``, or the answer to the server's password prompt."""
        keys = (f"address:{conn.host}",)
        wait = self.throttle.refused_for(*keys)
        if wait > 0:
            return self._too_many(conn, wait, then=lambda: self._ask(conn, "server", ""))
        good = hmac.compare_digest(password.encode(), self.config.server.password.encode())
        if not good:
            self.throttle.failed(*keys)
            return self._later(keys, lambda: self._wrong(conn, "server", ""))
        conn.state = wire.State.REGISTER
        conn.asking = ("", "")
        self._name_prompt(conn)
        return None

    def login(self, conn: Entrant, name: str, password: str) -> Answer:
        """``/login NAME PASSWORD``, or a registered name's password."""
        keys = self.throttle.keys(name, conn.host)
        wait = self.throttle.refused_for(*keys)
        if wait > 0:
            return self._too_many(conn, wait, then=lambda: self._name_prompt(conn))
        delay = self.throttle.delay(*keys)

        def checked(good: bool) -> Answer:
            if not good:
                self.throttle.failed(*keys)
                self.log.info("Failed login for {name} from {host}", name=name, host=conn.host)
                return self._later(keys, lambda: self._wrong(conn, "account", name), delay)
            self.throttle.succeeded(name, conn.host)
            return self._enter(conn, name, account=True)

        return self.accounts.verify(name, password).addCallback(checked)

    def check_password(
        self, conn: Entrant, name: str, candidates: list[str], verb: str,
        then: Callable[[int], Answer],
    ) -> Answer:
        """An account's password, asked again by a participant (``/password``,
        ``/unregister``): throttled like a login (one attempt, however many
        ``candidates``); ``then`` gets the index of the right one."""
        keys = self.throttle.keys(name, conn.host)
        wait = self.throttle.refused_for(*keys)
        if wait > 0:
            conn.reply(ev.error("too_many_attempts", verb, wait=math.ceil(wait)))
            return None
        delay = self.throttle.delay(*keys)

        def checked(right: int | None) -> Answer:
            if right is not None:
                self.throttle.succeeded(name, conn.host)
                return then(right)
            self.throttle.failed(*keys)
            return self._later(keys, lambda: conn.reply(ev.error("bad_password", verb)), delay)

        return self.accounts.which(name, candidates).addCallback(checked)

    def _new_account(self, conn: Entrant, name: str, password: str) -> Answer:
        least = self.config.accounts.min_password_length
        if len(password) < least:
            self._ask(conn, "new", name, error_text(ev.error("weak_password", limit=least)))
            return None
        if self.accounts.exists(name) or name in self.chat.registry:
            return self._refuse(conn, ev.error("name_taken", name=name))
        return self.accounts.create(name, password).addCallback(
            lambda _: self._enter(conn, name, account=True)
        )

    # --- outcomes ---

    def _enter(self, conn: Entrant, name: str, *, account: bool) -> Answer:
        ban = self.accounts.banned(name=name)
        if ban is not None:
            conn.close("banned", say=self._banned(ban))
            return None
        cluster = self.chat.cluster
        held = self.chat.registry.get(name)
        if cluster is None or (held is not None and not held.remote):
            self._register(conn, name, account)
            return None
        if held is not None:  # a user of another node has it
            if not account:
                self._refuse(conn, ev.error("name_taken", name=name))
                return None

            def freed(free: bool) -> Answer:
                if free and conn.state is not wire.State.CLOSED:
                    return self._enter(conn, name, account=True)
                self._refuse(conn, ev.error("name_taken", name=name))
                return None

            return cluster.take_over(held).addCallback(freed)

        def claimed(won: bool) -> None:
            if not won:
                self._refuse(conn, ev.error("name_taken", name=name))
            elif not self._register(conn, name, account) and name not in self.chat.registry:
                cluster.release(name)

        def cut_off(failure: Failure) -> None:
            failure.trap(ClusterDown)
            self._refuse(conn, ev.error("cluster_down"))

        return cluster.claim(name, account).addCallbacks(claimed, cut_off)

    def _register(self, conn: Entrant, name: str, account: bool) -> bool:
        if conn.state is wire.State.CLOSED:
            return False  # gone while the name was being claimed
        operator = account and self.accounts.is_operator(name)
        result = self.chat.register(conn, name, conn.address, account=account, operator=operator)  # type: ignore[arg-type]
        if isinstance(result, ev.Error):
            self._refuse(conn, result)
            return False
        conn.entered(result)
        return True

    def _refuse(self, conn: Entrant, error: ev.Error) -> None:
        conn.reply(error)
        self._name_prompt(conn, error)

    def _wrong(self, conn: Entrant, kind: str, name: str) -> None:
        error = ev.error("bad_password")
        conn.reply(error)
        if kind == "server":
            self._ask(conn, "server", "", error_text(error))
        else:
            self._name_prompt(conn, error)

    def _later(self, keys: tuple[str, ...], then: Any, delay: float | None = None) -> Answer:
        """Answer a failure after a delay that grows with failures (no answer is instant)."""
        delay = self.throttle.delay(*keys) if delay is None else delay
        if delay <= 0:
            then()
            return None
        return task.deferLater(self.clock, delay, then)  # type: ignore[arg-type]

    def _too_many(self, conn: Entrant, wait: float, then: Any) -> None:
        conn.reply(ev.error("too_many_attempts", wait=math.ceil(wait)))
        then()

    def _banned(self, ban: Ban) -> ev.Error:
        return ev.error("banned", until=ban.until, reason=ban.reason)
