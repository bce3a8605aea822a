"""The local picture of other nodes' users: ghosts, kept in step by the events.

In a cluster each node holds every user in its registry and rooms: its own
users with their connections, and the other nodes' users as *ghosts*, whose
peer (``GhostPeer``) writes nowhere and is in no room's audience. ``/who``,
``/names``, name checks and ``/msg`` then work as on one server. ``Mirror``
applies another node's events to that picture (a join adds a ghost to a
room, a leave removes it, a rename renames it, a file is recorded) and
delivers them to this node's users; it also says what each event changes in
Redis's ``users`` and ``files`` hashes, so a node that starts or comes back
later finds the same picture there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chat import events as ev
from chat.redisschema import FILES, SESSIONS, USERS
from chat.rooms import Room


class GhostPeer:
    """The connection of a user on another node: never written to from here."""

    __slots__ = ("node",)
    mode = "json"
    remote = True

    def __init__(self, node: str) -> None:
        self.node = node

    def send(self, data: bytes) -> None:
        pass

    def disconnect(self, reason: str) -> None:
        pass

    def __repr__(self) -> str:
        return f"<ghost on {self.node}>"


def presence(user: Any, node: str, without: str | None = None) -> dict[str, Any]:
    """A user's entry in the ``users`` hash: where they are and in which rooms."""
    rooms = [r.name for r in user.rooms if r.name != without]
    return {"name": user.name, "node": node, "account": bool(user.account),
            "operator": bool(user.operator), "rooms": rooms}



class Mirror:
    """Other nodes' events, applied to this node's chat."""

    def __init__(
        self, chat: Any, node: str, forgotten: Callable[[str], object] = lambda name: None
    ) -> None:
        """``forgotten``: told the name of every ghost that goes."""
        self.chat = chat
        self.node = node
        self._forgotten = forgotten

    # --- what an event of this node changes in Redis ---

    def changes(self, event: ev.Event) -> list[Any]:
        """(command, key, field, value) fours for the publish script."""
        chat = self.chat
        if isinstance(event, ev.Join | ev.Part):
            user = chat.registry.get(event.name)
            if user is None:
                return []
            gone = event.room if isinstance(event, ev.Part) else None
            # (a room kick of another node's user is made here, but it is theirs)
            node = user.peer.node if user.remote else self.node
            entry = json.dumps(presence(user, node, gone))
            out = ["HSET", USERS, event.name.lower(), entry]
            if isinstance(event, ev.Join) and event.arrival and not user.remote:
                out += ["HSET", SESSIONS, user.session, user.name]
            return out
        if isinstance(event, ev.Leave):
            return ["HDEL", USERS, event.name.lower(), ""]
        if isinstance(event, ev.Nick):
            user = chat.registry.get(event.new)
            out = ["HDEL", USERS, event.old.lower(), ""]
            if user is not None:
                out += ["HSET", USERS, event.new.lower(), json.dumps(presence(user, self.node))]
            return out
        if isinstance(event, ev.FileShared):
            return ["HSET", FILES, event.file_id, json.dumps(self._file_record(event))]
        if isinstance(event, ev.Removed):
            return ["HDEL", FILES, event.file_id, ""]
        return []

    @staticmethod
    def _file_record(event: ev.FileShared) -> dict[str, Any]:
        return {"file_id": event.file_id, "name": event.name, "size": event.size,
                "crc32": event.crc32, "sha256": event.sha256, "uploader": event.sender,
                "ts": event.ts, "room": event.room}

    # --- another node's events ---

    def apply(self, event: ev.Event, node: str = "?") -> bool:
        """Apply and deliver ``event`` (from ``node``); False if it says this
        node's own user left (this node was declared dead: it must rejoin)."""
        chat = self.chat
        if isinstance(event, ev.Message | ev.Action):
            sender = chat.registry.get(event.sender)
            if sender is not None and sender.remote:
                sender.last_active = event.ts  # for /who's idle times
            chat.deliver(event, self._room(event.room))
        elif isinstance(event, ev.Join):
            ghost = self._ghost(event.name, event.account, node=node)
            room = chat.rooms.get(event.room) if event.room else None
            known = room is not None and ghost in room.members
            room = self._admit(ghost, event.room)
            if not known:  # (a node back from a break says again who it holds)
                chat.deliver(event, room)
        elif isinstance(event, ev.Part):
            room = self._room(event.room)
            chat.deliver(event, room)
            user = chat.registry.get(event.name)
            if user is not None and room is not None and user in room.members:
                chat.rooms.part(user, room)
                if not user.remote:  # kicked out of the room from another node
                    chat.rooms_changed(user)
                    chat.reply(user.peer, ev.Current(user.current.name if user.current else None),
                               user.name)
        elif isinstance(event, ev.Leave):
            ghost = chat.registry.get(event.name)
            if ghost is None:
                return True
            if not ghost.remote:
                return False
            audience = chat.rooms.sharers(ghost)
            self._forget(ghost)
            chat.deliver(event, audience)
        elif isinstance(event, ev.Nick):
            ghost = chat.registry.get(event.old)
            if ghost is not None and ghost.remote and chat.registry.rename(event.old, event.new):
                ghost.name = event.new
                chat.rooms.renamed(event.old, event.new)
                chat.deliver(event, chat.rooms.sharers(ghost))
        elif isinstance(event, ev.Topic):
            room = self._room(event.room)
            if room is not None:
                room.topic, room.topic_by = event.topic, event.by
            chat.deliver(event, room)
        elif isinstance(event, ev.FileShared):
            self.file_recorded(self._file_record(event))
            chat.deliver(event, self._room(event.room) if event.room else None)
        elif isinstance(event, ev.Removed):
            chat.store.mark_removed(event.file_id, event.by)
            chat.store.file_gone(event.file_id, "removed")
            chat.deliver(event, self._room(event.room) if event.room else None)
        elif isinstance(event, ev.Private):
            target = chat.registry.get(event.recipient)
            if target is not None and not target.remote:
                chat.delivery.private(event, [(target.peer, target.name)])
        elif isinstance(event, ev.Notice):
            chat.deliver(event, self._room(event.room) if event.room else None)
        return True

    def resync(
        self, users: dict[str, dict[str, Any]], history: dict[str, list[ev.Event]],
        top: int, seen: int,
    ) -> int:
        """Make the picture what Redis says (as of event ``top``); deliver to this
        node's users the lines said after ``seen`` that they missed. Returns how many."""
        chat = self.chat
        ghosts = {u.name.lower(): u for u in list(chat.registry) if u.remote}
        for key, ghost in ghosts.items():
            entry = users.get(key)
            if entry is None or entry.get("node") == self.node:
                self._forget(ghost)
        for key, entry in users.items():
            if entry.get("node") == self.node:
                continue
            ghost = chat.registry.get(entry.get("name", key))
            if ghost is not None and not ghost.remote:
                continue  # a name this node's user holds: sorted out by the reclaim
            ghost = self._ghost(entry["name"], bool(entry.get("account")),
                                bool(entry.get("operator")), str(entry.get("node")))
            wanted = {str(r).lower() for r in entry.get("rooms", [])}
            for room in list(ghost.rooms):
                if room.key not in wanted:
                    chat.rooms.part(ghost, room)
            for name in entry.get("rooms", []):
                self._admit(ghost, str(name))
        missed = 0
        for key in chat.store.rooms_with_history() - history.keys():
            chat.store.replace_recent(key, [])  # this node's own old history is not the chat's
        for key, events in history.items():
            kept = [e for e in events if getattr(e, "id", 0) <= top]
            if seen:
                room = chat.rooms.get(key)
                for event in kept:
                    if getattr(event, "id", 0) > seen and room is not None:
                        chat.deliver(event, room, remember=False)
                        missed += 1
            chat.store.replace_recent(key, kept)
            room = chat.rooms.get(key)
            if room is not None and kept:
                room.has_history = True
        return missed

    def file_recorded(self, data: dict[str, Any]) -> None:
        """A file shared on another node (its record in Redis): known here too."""
        self.chat.store.mirror_file(ev.FileInfo(
            str(data["file_id"]), str(data["name"]), int(data["size"]), str(data["crc32"]),
            str(data["sha256"]), str(data["uploader"]), float(data["ts"]), None,
            data.get("room"),
        ))

    # --- rooms' settings ---

    @staticmethod
    def room_settings(room: Room) -> dict[str, Any]:
        return {"name": room.name, "topic": room.topic, "topic_by": room.topic_by,
                "locked": room.locked, "private": room.private,
                "operators": sorted(room.operators), "invites": room.invites}

    def room_changed(self, data: dict[str, Any]) -> None:
        """Another node changed a room's settings (or this one starts): the same here."""
        room = self._room(str(data.get("name", "")))
        if room is None:
            return
        room.topic, room.topic_by = str(data.get("topic", "")), str(data.get("topic_by", ""))
        room.locked, room.private = bool(data.get("locked")), bool(data.get("private"))
        room.operators = {str(n) for n in data.get("operators", [])}
        invites = data.get("invites", {})
        room.invites = {str(k): float(v) for k, v in invites.items()} if isinstance(
            invites, dict) else {}

    # --- the picture ---

    def _ghost(
        self, name: str, account: bool, operator: bool = False, node: str | None = None
    ) -> Any:
        chat = self.chat
        user = chat.registry.get(name)
        if user is None:
            user = chat.ghost(name, GhostPeer(node or "?"), account, operator)
        elif node is not None and user.remote:
            user.peer.node = node
        return user

    def _forget(self, ghost: Any) -> None:
        chat = self.chat
        attached, ghost.attachments = ghost.attachments, frozenset()
        for conn in attached:  # transfer connections here acting for them
            conn.disconnect("owner left")
        chat.rooms.leave_all(ghost)
        if chat.registry.get(ghost.name) is ghost:
            chat.registry.remove(ghost.name)
        self._forgotten(ghost.name)

    def _room(self, name: str | None) -> Room | None:
        if not name:
            return None
        room = self.chat.rooms.get(name)
        if room is None:
            room = Room(name)
            self.chat.rooms.rooms[room.key] = room
        return room

    def _admit(self, ghost: Any, name: str | None) -> Room | None:
        """Put a ghost in a room as its node did (the rules were checked there)."""
        room = self._room(name)
        if room is None:
            return None
        if ghost not in room.members:
            settings = self.chat.rooms.settings
            ours = {n.lower() for n in (settings.default, *settings.autojoin)}
            if not room.members and not room.operators and room.key not in ours:
                room.operators = {ghost.name.lower()}  # its creator, as on the node it came from
            room.members[ghost] = None
            ghost.rooms.append(room)
        ghost.current = room
        return room
