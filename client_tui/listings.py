"""The server's answers that are lists — who, names, rooms, bans — worded as pane lines.

Pure functions of the typed events (``chat.events``), so they are tested
without a session. Accounts carry ``ACCOUNT_MARK`` wherever a name is
listed (the people list, ``/who``, ``/names``): the server says which names
are accounts, and a guest ``alice2`` never gets the mark the account
``alice`` has. ``OPERATOR_MARK`` is for server operators; the server tells
each user only whether they are one themselves (``welcome.operator``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from chat import events as ev
from chat.units import human_duration, plural

ACCOUNT_MARK = "\u2713"  # ✓
OPERATOR_MARK = "\u2605"  # ★


def marked(name: str, account: bool, operator: bool = False) -> str:
    """``alice ✓`` for an account (``alice ✓★`` for a server operator), ``bob`` for a guest."""
    marks = (ACCOUNT_MARK if account else "") + (OPERATOR_MARK if operator else "")
    return f"{name} {marks}" if marks else name


def people(users: Iterable[ev.Participant]) -> str:
    return ", ".join(f"{marked(u.name, u.account)} (idle {human_duration(u.idle)})"
                     for u in users)


def who_text(event: ev.Who) -> str:
    return f"On the server ({len(event.users)}): {people(event.users)}"


def names_text(event: ev.Names) -> str:
    return f"In {event.room} ({len(event.users)}): {people(event.users)}"


def room_text(info: ev.RoomInfo) -> str:
    """``#dev (3 here; you are in it; private): release on Friday``."""
    facts = [f"{info.members} here"]
    facts += ["you are in it"] if info.joined else []
    facts += ["private"] if info.private else []
    facts += ["topic locked"] if info.locked else []
    topic = f": {info.topic}" if info.topic else ""
    return f"{info.name} ({'; '.join(facts)}){topic}"


def rooms_lines(event: ev.Rooms) -> list[str]:
    if not event.rooms:
        return ["No rooms to see."]
    return [f"Rooms ({len(event.rooms)}):"] + [f"  {room_text(r)}" for r in event.rooms]


def topic_text(info: ev.RoomInfo) -> str:
    """The answer to ``/topic ROOM`` without text."""
    return f"Topic of {info.name}: {info.topic}" if info.topic else f"{info.name} has no topic."


def ban_text(ban: ev.BanInfo) -> str:
    until = "for good"
    if ban.until is not None:
        try:
            until = f"until {datetime.fromtimestamp(ban.until):%a %d %b %Y %H:%M}"
        except (OverflowError, OSError, ValueError):
            until = "until a date this system cannot show"
    why = f": {ban.reason}" if ban.reason else ""
    return f"{ban.kind} {ban.target} {until}, by {ban.by}{why}"


def bans_lines(event: ev.BanList) -> list[str]:
    if not event.bans:
        return ["Nobody is banned."]
    return [f"{plural(len(event.bans), 'ban')}:"] + [f"  {ban_text(b)}" for b in event.bans]
