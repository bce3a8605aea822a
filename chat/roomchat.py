"""What users do with rooms: join, part, topics, invitations, room operators.

``RoomChat`` sits between the commands and the rooms: it asks ``Rooms`` (the
rules) whether something may happen, then tells the right people through
the chat service: the room's members see joins, parts, kicks and topic
changes; the user who acted gets the room's people, topic and history on
joining, and a ``current`` event whenever the room their plain lines go to
changes. It returns ``Error`` events for refusals and knows nothing of
sockets.
"""

from __future__ import annotations

from chat import events as ev
from chat.rooms import Room
from chat.sanitize import clean
from chat.service import ChatService, User


class RoomChat:
    """Room commands, on the chat service."""

    def __init__(self, chat: ChatService) -> None:
        self.chat = chat
        self.rooms = chat.rooms

    def _current(self, user: User) -> None:
        room = user.current.name if user.current else None
        self.chat.reply(user.peer, ev.Current(room), user.name)

    def join(self, user: User, name: str) -> ev.Error | None:
        """``/join ROOM``: enter it (creating it) or just make it current."""
        room = self.rooms.get(name)
        if room is None or user not in room.members:  # (switching rooms needs no cluster)
            problem = self.chat.cut_off("join")
            if problem is not None:
                return problem
        result = self.rooms.join(user, name)
        if isinstance(result, ev.Error):
            return result
        room, new = result
        self.chat.rooms_changed(user)
        if new:
            self.chat.greet(user, room)
            self.chat.broadcast(
                self.chat.chat_event(ev.Join, user.name, room.name, False, user.account), room,
                origin=user,
            )
        self._current(user)
        return None

    def part(self, user: User, name: str | None, reason: str) -> ev.Error | None:
        """``/part [ROOM] [REASON]``: leave it (the current room if none is named)."""
        room = self.rooms.resolve(user, name, "part")
        if isinstance(room, ev.Error):
            return room
        problem = self.chat.cut_off("part")
        if problem is not None:
            return problem
        self._out(user, room, clean(reason))
        return None

    def _out(self, user: User, room: Room, reason: str) -> None:
        event = self.chat.chat_event(ev.Part, user.name, room.name, reason)
        self.chat.broadcast(event, room)  # the one who leaves sees it too
        self.rooms.part(user, room)
        self.chat.rooms_changed(user)
        self._current(user)

    def say(self, user: User, name: str, text: str) -> ev.Error | None:
        """``/msg ROOM TEXT``: say something in a room you are in, without switching."""
        room = self.rooms.resolve(user, name, "msg")
        if isinstance(room, ev.Error):
            return room
        return self.chat.say(user, text, room)

    def topic(self, user: User, name: str | None, text: str | None) -> ev.Error | None:
        """``/topic [ROOM] [TEXT]``: show it (any room you may see), or set it for
        everyone in the room (a room you are in)."""
        room = self.rooms.resolve(user, name, "topic", outside=text is None)
        if isinstance(room, ev.Error):
            return room
        if text is None:
            self.chat.reply(user.peer, room.info(user), user.name)
            return None
        topic = clean(text).strip()
        problem = self.chat.cut_off("topic") or self.rooms.set_topic(user, room, topic)
        if problem is None:
            event = self.chat.chat_event(ev.Topic, room.name, topic, user.name)
            self.chat.broadcast(event, room)
        return problem

    def names(self, user: User, name: str | None, command: str) -> ev.Error | None:
        """``/names [ROOM]`` and ``/who ROOM``: a room's members with their idle times."""
        room = self.rooms.resolve(user, name, command, outside=True)
        if isinstance(room, ev.Error):
            return room
        self.chat.reply(user.peer, ev.Names(room.name, self.chat.participants(room.members)))
        return None

    def listing(self, user: User) -> None:
        # Server operators see private rooms too (they act in every room).
        self.chat.reply(user.peer, ev.Rooms(self.rooms.listing(user, see_private=user.operator)))

    def invite(self, user: User, name: str, room_name: str | None) -> ev.Error | None:
        """``/invite NAME [ROOM]``: let NAME into a private room (and tell them)."""
        room = self.rooms.resolve(user, room_name, "invite")
        if isinstance(room, ev.Error):
            return room
        target = self.chat.registry.get(name)
        if target is None:
            return ev.error("no_such_user", "invite", name=clean(name)[:64])
        problem = self.chat.cut_off("invite") or self.rooms.invite(user, target.name, room)
        if problem is None:
            self.chat.tell(target, ev.Invited(room.name, user.name))
            self.chat.reply(user.peer, ev.Info(f"Invited {target.name} to {room.name}."))
        return problem

    def kick(self, user: User, name: str, room_name: str | None, reason: str) -> ev.Error | None:
        """``/kick NAME [ROOM] [REASON]``: out of the room (not off the server)."""
        room = self.rooms.resolve(user, room_name, "kick")
        if isinstance(room, ev.Error):
            return room
        target = self.chat.registry.get(name)
        if target is None:
            return ev.error("no_such_user", "kick", name=clean(name)[:64])
        problem = self.chat.cut_off("kick") or self.rooms.kick(user, target, room)
        if problem is None:
            why = clean(reason).strip()
            self._out(target, room, f"kicked by {user.name}" + (f": {why}" if why else ""))
        return problem

    def flag(self, user: User, room_name: str | None, flag: str, on: bool) -> ev.Error | None:
        """``/private`` and ``/lock``: a room's invite-only and topic-lock settings."""
        command = "private" if flag == "private" else "lock"
        room = self.rooms.resolve(user, room_name, command)
        if isinstance(room, ev.Error):
            return room
        problem = self.chat.cut_off(command) or self.rooms.set_flag(user, room, flag, on)
        if problem is None:
            what = "invite-only" if flag == "private" else "topic-locked"
            self.chat.reply(user.peer, ev.Info(
                f"{room.name} is {'now' if on else 'no longer'} {what}."
            ))
        return problem

    def operator(self, user: User, name: str, room_name: str | None, on: bool) -> ev.Error | None:
        """``/op`` and ``/deop``: who else may run the room."""
        room = self.rooms.resolve(user, room_name, "op" if on else "deop")
        if isinstance(room, ev.Error):
            return room
        problem = self.chat.cut_off("op" if on else "deop") or self.rooms.set_operator(
            user, name, room, on)
        if problem is None:
            state = "now an operator" if on else "no longer an operator"
            self.chat.reply(user.peer, ev.Info(f"{clean(name)} is {state} of {room.name}."))
        return problem
