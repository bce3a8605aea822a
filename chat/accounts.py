"""Accounts, operators and bans: names no one else can take, and who may not come in.

An account is a name with a password, hashed with Argon2id (``argon2-cffi``,
RFC 9106's second recommended parameters: 64 MiB, 3 passes, 4 lanes) on a
small thread pool, so a hash never stalls the chat and at most two run at
once. Passwords are never stored, logged or echoed; comparison is Argon2's
own (constant time). Server operators are accounts: those in
``accounts.operators`` and those the console made one (kept in SQLite).
Bans are by name or by address (a CIDR network such as ``192.168.1.0/24``),
for a time or for good, and survive restarts. Everything is kept in SQLite
through the store's executor; what is needed to answer at once (which names
are accounts, operators, bans) is also kept in memory.
"""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chat.config import AccountSettings
from chat.registry import NAME_RE
from chat.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created REAL NOT NULL,
    operator INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS bans (
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    until REAL,
    reason TEXT NOT NULL DEFAULT '',
    by TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    PRIMARY KEY (kind, target)
);
"""

#: Hashing runs here: ``hash(fn) -> Deferred`` (a thread pool in the server).
Hasher = Callable[[Callable[[], Any]], "defer.Deferred[Any]"]


def synchronous(fn: Callable[[], Any]) -> defer.Deferred[Any]:
    return defer.maybeDeferred(fn)


@dataclass(frozen=True)
class Ban:
    """Who may not come in: ``kind`` is ``name`` or ``address``, until when, and why."""

    kind: str
    target: str
    until: float | None
    reason: str
    by: str
    created: float

    def matches(self, name: str | None = None, host: str | None = None) -> bool:
        if self.kind == "name":
            return name is not None and name.lower() == self.target
        if host is None:
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return address in ipaddress.ip_network(self.target, strict=False)


def ban_target(text: str) -> tuple[str, str] | None:
    """``("address", network)`` for an address or CIDR, ``("name", lower)`` for a name."""
    try:
        return "address", str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        pass
    return ("name", text.lower()) if NAME_RE.fullmatch(text) else None


class Accounts:
    """Every account, operator and ban; changes go to SQLite off the reactor thread."""

    log = Logger()

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        settings: AccountSettings,
        hasher: Hasher = synchronous,
        passwords: PasswordHasher | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self.settings = settings
        self._hash = hasher
        self._passwords = passwords or PasswordHasher()
        #: lower-case name -> (name as registered, hash)
        self._accounts: dict[str, tuple[str, str]] = {}
        self._operators: set[str] = set()
        self._bans: dict[tuple[str, str], Ban] = {}
        #: Told ``(key, record or None)`` of every change to an account here
        #: (a cluster's other nodes); the record is ``record(key)``'s.
        self.changed: list[Callable[[str, dict[str, Any] | None], object]] = []

    def load(self) -> None:
        """Read accounts, operators and bans (at start-up, before connections)."""
        db = self._store.connection()
        db.executescript(SCHEMA)
        for key, name, hashed, operator in db.execute(
            "SELECT key, name, hash, operator FROM accounts"
        ):
            self._accounts[key] = (name, hashed)
            if operator:
                self._operators.add(key)
        for row in db.execute("SELECT kind, target, until, reason, by, created FROM bans"):
            ban = Ban(*row)
            self._bans[(ban.kind, ban.target)] = ban

    # --- accounts ---

    def count(self) -> int:
        return len(self._accounts)

    def exists(self, name: str) -> bool:
        return name.lower() in self._accounts

    def is_operator(self, name: str) -> bool:
        key = name.lower()
        return key in self._accounts and (
            key in self._operators or key in {n.lower() for n in self.settings.operators}
        )

    def create(self, name: str, password: str) -> defer.Deferred[None]:
        """Make ``name`` an account with ``password`` (the hash is made off the reactor)."""
        key, now = name.lower(), self._clock.seconds()

        def made(hashed: str) -> defer.Deferred[None]:
            self._accounts[key] = (name, hashed)
            self._tell(key)
            return self._write(
                "INSERT OR REPLACE INTO accounts (key, name, hash, created, operator) "
                "VALUES (?, ?, ?, ?, ?)", (key, name, hashed, now, int(key in self._operators)),
            )

        return self._hash(lambda: self._passwords.hash(password)).addCallback(made)

    def verify(self, name: str, password: str) -> defer.Deferred[bool]:
        """Whether ``password`` is ``name``'s (False for a name that is no account)."""
        entry = self._accounts.get(name.lower())
        if entry is None:
            return defer.succeed(False)
        hashed = entry[1]

        def check() -> bool:
            try:
                return self._passwords.verify(hashed, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return self._hash(check)

    @defer.inlineCallbacks
    def which(self, name: str, candidates: list[str]) -> Any:
        """The index of the first of ``candidates`` that is ``name``'s password, or None."""
        for i, password in enumerate(candidates):
            if (yield self.verify(name, password)):
                return i
        return None

    def change(self, name: str, password: str) -> defer.Deferred[None]:
        """A new password for the account ``name`` (already verified by the caller)."""
        key = name.lower()

        def made(hashed: str) -> defer.Deferred[None]:
            self._accounts[key] = (self._accounts[key][0], hashed)
            self._tell(key)
            return self._write("UPDATE accounts SET hash = ? WHERE key = ?", (hashed, key))

        return self._hash(lambda: self._passwords.hash(password)).addCallback(made)

    def remove(self, name: str) -> defer.Deferred[None]:
        key = name.lower()
        self._accounts.pop(key, None)
        self._operators.discard(key)
        self._tell(key)
        return self._write("DELETE FROM accounts WHERE key = ?", (key,))

    def set_operator(self, name: str, on: bool) -> defer.Deferred[None] | None:
        """Make the account ``name`` an operator (or not): fires once it is on disk;
        None if ``name`` is no account."""
        key = name.lower()
        if key not in self._accounts:
            return None
        if on:
            self._operators.add(key)
        else:
            self._operators.discard(key)
        self._tell(key)
        return self._write("UPDATE accounts SET operator = ? WHERE key = ?", (int(on), key))

    # --- in a cluster ---

    def record(self, key: str) -> dict[str, Any] | None:
        """The account ``key`` as other nodes keep it (its Argon2id hash, never a password)."""
        entry = self._accounts.get(key)
        if entry is None:
            return None
        return {"key": key, "name": entry[0], "hash": entry[1],
                "operator": key in self._operators}

    def keys(self) -> list[str]:
        return list(self._accounts)

    def _tell(self, key: str) -> None:
        for tell in self.changed:
            tell(key, self.record(key))

    def apply(self, key: str, record: dict[str, Any] | None) -> None:
        """An account made, changed or removed on another node: the same here."""
        if record is None:
            if self._accounts.pop(key, None) is not None:
                self._operators.discard(key)
                self._write("DELETE FROM accounts WHERE key = ?", (key,))
            return
        name, hashed, operator = str(record["name"]), str(record["hash"]), bool(record["operator"])
        if self._accounts.get(key) == (name, hashed) and (key in self._operators) == operator:
            return
        self._accounts[key] = (name, hashed)
        if operator:
            self._operators.add(key)
        else:
            self._operators.discard(key)
        self._write(
            "INSERT OR REPLACE INTO accounts (key, name, hash, created, operator) "
            "VALUES (?, ?, ?, ?, ?)", (key, name, hashed, self._clock.seconds(), int(operator)),
        )

    # --- bans ---

    def ban(
        self, kind: str, target: str, until: float | None, reason: str, by: str
    ) -> tuple[Ban, defer.Deferred[None]]:
        """The ban, in force at once; the Deferred fires once it is on disk."""
        ban = Ban(kind, target, until, reason, by, self._clock.seconds())
        self._bans[(kind, target)] = ban
        return ban, self._write(
            "INSERT OR REPLACE INTO bans (kind, target, until, reason, by, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (ban.kind, ban.target, ban.until, ban.reason, ban.by, ban.created),
        )

    def unban(self, kind: str, target: str) -> defer.Deferred[None] | None:
        """Lift a ban: fires once it is gone from disk; None if there was none."""
        if self._bans.pop((kind, target), None) is None:
            return None
        return self._write("DELETE FROM bans WHERE kind = ? AND target = ?", (kind, target))

    def bans(self) -> list[Ban]:
        self._expire()
        return sorted(self._bans.values(), key=lambda b: b.created)

    def banned(self, name: str | None = None, host: str | None = None) -> Ban | None:
        """The ban that keeps ``name`` (or a connection from ``host``) out, if any."""
        self._expire()
        return next((b for b in self._bans.values() if b.matches(name, host)), None)

    def _expire(self) -> None:
        now = self._clock.seconds()
        for key, ban in list(self._bans.items()):
            if ban.until is not None and ban.until <= now:
                self.unban(*key)

    def _write(self, sql: str, args: tuple[Any, ...]) -> defer.Deferred[None]:
        def write(db: sqlite3.Connection) -> None:
            db.execute(sql, args)

        return self._store.execute(write).addErrback(
            lambda f: self.log.failure("Saving an account or ban failed", f)
        )
