"""Rooms: many conversations on one server, each with its members, topic and rules.

A room name is ``#`` and 1-32 ASCII letters, digits, ``_``, ``-`` or ``.``,
compared without regard to case and shown as created. ``Rooms`` holds every
room and who is in which, and keeps the rules: how many rooms a user may be
in and the server may hold, who may set a topic (room operators, or anyone
in a room that is not topic-locked), who may enter a private room (its
invited), and who a room operator is (its creator, and whoever an operator
makes one). Refusals are ``Error`` events holding a code and its values;
events that others see are built by ``ChatService``. Every change of a
room's members is told to ``entered``/``exited`` (delivery keeps who heard
what from them).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

from chat import events as ev
from chat.config import RoomSettings
from chat.wire import room_name_problem

#: How long an invitation into a private room lasts, in seconds.
INVITE_TTL = 24 * 3600.0


class Member(Protocol):
    """What rooms need of a user (``chat.service.User``)."""

    name: str
    peer: Any
    rooms: list[Room]
    current: Room | None


@dataclass(eq=False)
class Room:
    name: str
    topic: str = ""
    topic_by: str = ""
    #: Topic-locked: only room operators may set the topic.
    locked: bool = False
    #: Invite-only: ``/join`` needs an invitation (or to be an operator).
    private: bool = False
    #: Room operators, by lower-case name.
    operators: set[str] = field(default_factory=set)
    #: Invitations: lower-case name -> when it lapses.
    invites: dict[str, float] = field(default_factory=dict)
    #: Members in order of arrival, and their connections (the room's audience).
    members: dict[Any, None] = field(default_factory=dict)
    peers: dict[Any, None] = field(default_factory=dict)
    #: Whether anything was ever said here (an empty room with history stays).
    has_history: bool = False
    #: When the last minute's messages were said (for the console).
    said: deque[float] = field(default_factory=deque)

    @property
    def key(self) -> str:
        return self.name.lower()

    def info(self, user: Member | None) -> ev.RoomInfo:
        joined = user is not None and user in self.members
        return ev.RoomInfo(self.name, len(self.members), self.topic, joined, self.private,
                           self.locked)


class Rooms:
    """Every room and who is in which."""

    def __init__(
        self,
        settings: RoomSettings,
        clock: IReactorTime,
        saved: Callable[[Room], object] = lambda room: None,
        deleted: Callable[[Room], object] = lambda room: None,
        entered: Callable[[Room, Any], object] = lambda room, peer: None,
        exited: Callable[[Room, Any], object] = lambda room, peer: None,
    ) -> None:
        """``saved``/``deleted`` are told of every change worth keeping (the store),
        ``entered``/``exited`` of every connection that joins or leaves a room."""
        self.settings = settings
        self.clock = clock
        self._store = saved
        #: Also told of every change of a room's settings (a cluster's other nodes).
        self.changed: list[Callable[[Room], object]] = []
        self._deleted = deleted
        self._entered = entered
        self._exited = exited
        self.rooms: dict[str, Room] = {}

    def _saved(self, room: Room) -> None:
        self._store(room)
        for tell in self.changed:
            tell(room)

    def load(self, rooms: Iterable[Room]) -> None:
        """The rooms kept from before a restart (no members yet)."""
        for room in rooms:
            self.rooms[room.key] = room

    def get(self, name: str) -> Room | None:
        return self.rooms.get(name.lower())

    def resolve(
        self, user: Member, name: str | None, command: str, *, outside: bool = False
    ) -> Room | ev.Error:
        """The room ``name`` (the current one if None) that ``user`` is in, or why not.

        ``outside``: a public room will do from outside too (to look at it); a
        private one is then as good as missing.
        """
        if name is None:
            if user.current is None:
                return ev.error("not_in_room", command)
            return user.current
        if room_name_problem(name):
            return ev.error("bad_room_name", command, room=name[:40])
        room = self.get(name)
        hidden = room is not None and room.private and user not in room.members and not (
            getattr(user, "operator", False)
        )
        if room is None or (outside and hidden):
            return ev.error("no_such_room", command, room=name)
        if user not in room.members and not outside:
            return ev.error("not_in_room", command, room=room.name)
        return room

    # --- joining and leaving ---

    def join(self, user: Member, name: str) -> tuple[Room, bool] | ev.Error:
        """Put ``user`` in room ``name`` (created if need be) and make it current.

        Returns the room and whether ``user`` is new in it, or why not.
        """
        if room_name_problem(name):
            return ev.error("bad_room_name", "join", room=name[:40])
        room = self.get(name)
        if room is not None and user in room.members:
            user.current = room
            return room, False
        if len(user.rooms) >= self.settings.max_per_user:
            return ev.error("too_many_rooms", "join", limit=self.settings.max_per_user)
        created = room is None
        if room is None:
            if len(self.rooms) >= self.settings.max_rooms:
                return ev.error("too_many_rooms", "join", limit=self.settings.max_rooms,
                                reason="server")
            # The server's own rooms are run by its operators, not by whoever came first.
            ours = {n.lower() for n in (self.settings.default, *self.settings.autojoin)}
            room = Room(name, operators=set() if name.lower() in ours else {user.name.lower()})
            self.rooms[room.key] = room
        elif room.private and not self._may_enter(user, room):
            return ev.error("invite_only", "join", room=room.name)
        room.members[user] = None
        room.peers[user.peer] = None
        self._entered(room, user.peer)
        user.rooms.append(room)
        user.current = room
        if created or room.private:
            self._saved(room)
        return room, True

    def _may_enter(self, user: Member, room: Room) -> bool:
        key = user.name.lower()
        lapses = room.invites.get(key)
        if lapses is not None and lapses <= self.clock.seconds():
            del room.invites[key]
            lapses = None
        return lapses is not None or self.is_operator(user, room)

    def part(self, user: Member, room: Room) -> None:
        """Take ``user`` out of ``room``; the current room becomes the latest joined of the rest."""
        room.members.pop(user, None)
        if room.peers.pop(user.peer, 0) is None:
            self._exited(room, user.peer)
        if room in user.rooms:
            user.rooms.remove(room)
        if user.current is room:
            user.current = user.rooms[-1] if user.rooms else None
        self._forget_if_unused(room)

    def leave_all(self, user: Member) -> list[Room]:
        """Take ``user`` out of every room (leaving the server); the rooms it was in."""
        rooms = list(user.rooms)
        for room in rooms:
            self.part(user, room)
        return rooms

    def _forget_if_unused(self, room: Room) -> None:
        if not room.members and not room.has_history and self.rooms.get(room.key) is room:
            del self.rooms[room.key]
            self._deleted(room)

    def sharers(self, user: Member) -> frozenset[Any]:
        """The connections of everyone in a room with ``user`` (``user``'s own included)."""
        out = {user.peer}
        for room in user.rooms:
            out.update(room.peers)
        return frozenset(out)

    def renamed(self, old: str, new: str) -> None:
        """A user's name changed: room operator rights and invitations follow it."""
        old_key, new_key = old.lower(), new.lower()
        for room in self.rooms.values():
            changed = False
            if old_key in room.operators:
                room.operators = (room.operators - {old_key}) | {new_key}
                changed = True
            if old_key in room.invites:
                room.invites[new_key] = room.invites.pop(old_key)
                changed = True
            if changed:
                self._saved(room)

    # --- what operators do ---

    def is_operator(self, user: Member, room: Room) -> bool:
        """A room operator, or a server operator (who may act in any room)."""
        return user.name.lower() in room.operators or getattr(user, "operator", False)

    def _operator(self, user: Member, room: Room, command: str) -> ev.Error | None:
        if not self.is_operator(user, room):
            return ev.error("not_room_operator", command, room=room.name)
        return None

    def set_topic(self, user: Member, room: Room, topic: str) -> ev.Error | None:
        if room.locked and not self.is_operator(user, room):
            return ev.error("not_room_operator", "topic", room=room.name)
        size = len(topic.encode("utf-8"))
        if size > self.settings.max_topic_bytes:
            return ev.error("topic_too_long", "topic", limit=self.settings.max_topic_bytes)
        room.topic, room.topic_by = topic, user.name
        self._saved(room)
        return None

    def invite(self, user: Member, name: str, room: Room) -> ev.Error | None:
        problem = self._operator(user, room, "invite") if room.private else None
        if problem is None:
            room.invites[name.lower()] = self.clock.seconds() + INVITE_TTL
            self._saved(room)
        return problem

    def set_flag(self, user: Member, room: Room, flag: str, on: bool) -> ev.Error | None:
        """``/private`` (``flag="private"``) or ``/lock`` (``flag="locked"``)."""
        problem = self._operator(user, room, "private" if flag == "private" else "lock")
        if problem is None:
            setattr(room, flag, on)
            self._saved(room)
        return problem

    def set_operator(self, user: Member, name: str, room: Room, on: bool) -> ev.Error | None:
        problem = self._operator(user, room, "op" if on else "deop")
        if problem is None:
            if on:
                room.operators = room.operators | {name.lower()}
            else:
                room.operators = room.operators - {name.lower()}
            self._saved(room)
        return problem

    def kick(self, user: Member, target: Member, room: Room) -> ev.Error | None:
        problem = self._operator(user, room, "kick")
        if problem is None and target not in room.members:
            problem = ev.error("not_in_room", "kick", room=room.name, name=target.name)
        return problem

    # --- questions ---

    def listing(self, user: Member, see_private: bool = False) -> tuple[ev.RoomInfo, ...]:
        """The rooms ``user`` may see: with members first (busiest first), then by name."""
        shown = [r for r in self.rooms.values()
                 if not r.private or see_private or user in r.members]
        shown.sort(key=lambda r: (not r.members, -len(r.members), r.key))
        return tuple(r.info(user) for r in shown)

    def said(self, room: Room) -> None:
        """A message was said in ``room`` (its messages per minute, its history)."""
        now = self.clock.seconds()
        room.said.append(now)
        while room.said and room.said[0] <= now - 60:
            room.said.popleft()
        if not room.has_history:
            room.has_history = True
            self._saved(room)

    def per_minute(self, room: Room) -> int:
        now = self.clock.seconds()
        while room.said and room.said[0] <= now - 60:
            room.said.popleft()
        return len(room.said)
