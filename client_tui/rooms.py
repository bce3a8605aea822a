"""The rooms you are in, in tab order, each with its own pane, members and topic.

A ``Room`` is a conversation as the client keeps it: its ``Pane`` (its own
scrollback, view, unread count, highlights and read marker), who is in it,
its topic, and the highest event id seen in it (where a catch-up after an
outage starts). ``Rooms`` keeps them in the order they were joined — the
numbers of the room bar and of Alt-1…9 — and which one is *shown*. Only the
shown pane is looking, so lines said elsewhere count as unread there.
Before the first room (and in none, after parting them all, or on a server
without rooms) the *home* pane is shown; the first room to arrive takes it
over, so what was said while connecting stays on screen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from client_tui.pane import Pane


def same(a: str | None, b: str | None) -> bool:
    """Names and rooms are compared without regard to case."""
    return a is not None and b is not None and a.lower() == b.lower()


@dataclass(eq=False)
class Room:
    """One room: ``name`` as the server shows it (``#Dev``); the home pane's is empty."""

    name: str
    pane: Pane
    members: list[str] = field(default_factory=list)
    topic: str = ""
    #: the highest event id seen in this room
    last_id: int | None = None

    @property
    def key(self) -> str:
        return self.name.lower()

    def seen(self, event_id: int) -> None:
        if self.last_id is None or event_id > self.last_id:
            self.last_id = event_id

    def has(self, name: str) -> bool:
        return any(same(n, name) for n in self.members)

    def add_member(self, name: str) -> None:
        if not self.has(name):
            self.members.append(name)

    def remove_member(self, name: str) -> None:
        self.members = [n for n in self.members if not same(n, name)]

    def rename_member(self, old: str, new: str) -> None:
        self.members = [new if same(n, old) else n for n in self.members]


class Rooms:
    """The rooms in tab order, the home pane, and which is shown."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self.changed = changed
        self.home = Room("", Pane(changed))
        self.rooms: list[Room] = []
        self.shown = self.home

    def __iter__(self) -> Iterator[Room]:
        return iter(self.rooms)

    def __len__(self) -> int:
        return len(self.rooms)

    @property
    def pane(self) -> Pane:
        """The pane on screen: where the client's own notices go."""
        return self.shown.pane

    def get(self, name: str | None) -> Room | None:
        return next((r for r in self.rooms if same(r.name, name)), None)

    def add(self, name: str) -> Room:
        """The room ``name``, made (at the end of the tabs) if it is new."""
        room = self.get(name)
        if room is not None:
            return room
        if not self.rooms and self.shown is self.home:
            # The first room takes over what is on screen; home starts afresh.
            room = Room(name, self.home.pane, self.home.members, self.home.topic)
            self.home = Room("", Pane(self.changed))
            self.home.pane.hidden = True
            self.shown = room
        else:
            room = Room(name, Pane(self.changed))
            room.pane.hidden = True
            room.pane.away = self.pane.away
        self.rooms.append(room)
        self.changed()
        return room

    def remove(self, name: str | None) -> Room | None:
        """Forget the room ``name`` (left, or kicked); home is shown if it was."""
        room = self.get(name)
        if room is None:
            return None
        self.rooms.remove(room)
        if room is self.shown:
            self.show(self.home)
        self.changed()
        return room

    def show(self, room: Room) -> None:
        """Put ``room`` on screen: its unread lines count as seen (above the read marker)."""
        if room is self.shown:
            return
        old, self.shown = self.shown, room
        room.pane.away = old.pane.away
        old.pane.set_hidden(True)
        room.pane.set_hidden(False)
        self.changed()

    def number(self, room: Room) -> int | None:
        """The room's number in the bar (1-based), as Alt-1…9 reach it."""
        return self.rooms.index(room) + 1 if room in self.rooms else None

    def at(self, number: int) -> Room | None:
        return self.rooms[number - 1] if 1 <= number <= len(self.rooms) else None

    def step(self, delta: int) -> Room | None:
        """The room ``delta`` tabs from the shown one (wrapping round); ``None`` if none."""
        if not self.rooms:
            return None
        if self.shown not in self.rooms:
            return self.rooms[0 if delta > 0 else -1]
        return self.rooms[(self.rooms.index(self.shown) + delta) % len(self.rooms)]

    def with_member(self, name: str) -> list[Room]:
        """The rooms ``name`` is in (home too, on a server without rooms)."""
        return [r for r in (self.home, *self.rooms) if r.has(name)]

    def set_away(self, away: bool) -> None:
        """The terminal lost (``True``) or regained focus: that is about the shown pane."""
        for room in (self.home, *self.rooms):
            room.pane.away = away
        self.pane.set_away(away)

    def unseen_highlights(self) -> int:
        """Highlights not yet seen, in every room (for the terminal title)."""
        return sum(r.pane.unread_highlights for r in (self.home, *self.rooms))
