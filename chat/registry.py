"""Who is connected: user names, their rules, and the name -> user mapping.

Names are compared without regard to case (they are ASCII, so ``str.lower``
is exact). The registry only maps names to whatever object represents a user;
it knows nothing about connections.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Generic, TypeVar

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}")

#: Names the server itself speaks as, or that would mislead other users (compared
#: without ``_``, ``-`` and ``.`` and without regard to case).
RESERVED = frozenset(
    {"server", "admin", "administrator", "console", "system", "root", "operator", "sysop"}
)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a user name (``empty``, ``too_long``, ``bad_chars``,
    ``reserved``), or None if it can."""
    if not name:
        return "empty"
    if not NAME_RE.fullmatch(name):
        return "too_long" if len(name) > 32 else "bad_chars"
    if reserved_form(name) in RESERVED:
        return "reserved"
    return None


def reserved_form(name: str) -> str:
    """A name as compared with the reserved ones: ``Admin.`` and ``admin_`` are ``admin``."""
    return re.sub(r"[_.\-]", "", name).lower()


U = TypeVar("U")


class Registry(Generic[U]):
    """Registered users by case-insensitive name, in order of arrival."""

    def __init__(self) -> None:
        self._users: dict[str, tuple[str, U]] = {}

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._users

    def __iter__(self) -> Iterator[U]:
        return (u for _, u in self._users.values())

    def names(self) -> list[str]:
        return [n for n, _ in self._users.values()]

    def get(self, name: str) -> U | None:
        entry = self._users.get(name.lower())
        return entry[1] if entry else None

    def add(self, name: str, user: U) -> bool:
        """Register ``user`` as ``name``; False if the name is taken."""
        key = name.lower()
        if key in self._users:
            return False
        self._users[key] = (name, user)
        return True

    def remove(self, name: str) -> U | None:
        entry = self._users.pop(name.lower(), None)
        return entry[1] if entry else None

    def rename(self, old: str, new: str) -> bool:
        """Move a user to a new name; False if ``new`` belongs to someone else."""
        old_key, new_key = old.lower(), new.lower()
        if new_key in self._users and new_key != old_key:
            return False
        _, user = self._users.pop(old_key)
        self._users[new_key] = (new, user)
        return True
