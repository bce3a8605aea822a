"""Chat logic: users, what they say, and who hears it.

``ChatService`` is the chat without the sockets. A connection registers a
``Peer`` (anything with a ``mode``, a ``send(bytes)`` and a ``disconnect``)
and from then on calls the service with decoded text; the service builds
events and hands them to ``Delivery`` with their audience (a room's members,
everyone who shares a room with someone, or everyone), which stores them,
renders each once per mode and writes the same bytes to every recipient, in
order. Every user arrives in the default room (and the ``autojoin`` ones);
what users do with rooms beyond that is ``RoomChat``'s. Refusals come back as
``Error`` events holding a code and its values; the renderer words them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import quote

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chat import events as ev
from chat.config import RoomSettings
from chat.delivery import Commit, Delivery
from chat.registry import Registry, name_problem
from chat.render import JsonRenderer, TextRenderer
from chat.rooms import Room, Rooms
from chat.sanitize import clean, for_log
from chat.store import Store


class Cluster(Protocol):
    """What the chat needs of ``chat.cluster.Node``."""

    ready: bool

    def publish(self, event: ev.Event, to: Any, origin: Any) -> bool: ...

    def kick(self, user: Any, reason: str) -> None: ...

    def settled(self, peer: Any) -> defer.Deferred[None]: ...

    def forget_session(self, name: str, key: str) -> None: ...

    def session_owner(self, key: str) -> defer.Deferred[Any]: ...

    def take_over(self, user: Any) -> defer.Deferred[bool]: ...

    def claim(self, name: str, account: bool) -> defer.Deferred[bool]: ...

    def release(self, name: str) -> None: ...

    def tell(self, op: str, data: dict[str, Any]) -> None: ...


class Peer(Protocol):
    """The service's view of a connection."""

    mode: str

    def send(self, data: bytes) -> None: ...

    def disconnect(self, reason: str) -> None: ...


@dataclass(eq=False)
class User:
    name: str
    peer: Peer
    session: str
    address: str
    joined: float
    last_active: float
    #: Transfer connections attached with this user's session key (replaced,
    #: never mutated: most users have none, and they all share the empty one).
    attachments: frozenset[Peer] = frozenset()
    #: The rooms the user is in, in the order joined; the current one.
    rooms: list[Room] = field(default_factory=list)
    current: Room | None = None
    #: The name is an account (logged in with its password); a server operator.
    account: bool = False
    operator: bool = False

    @property
    def remote(self) -> bool:
        """A user of another node of the cluster (a ghost: ``chat.mirror``)."""
        return getattr(self.peer, "remote", False)


def invalid_name(problem: str, name: str, command: str | None = None) -> ev.Error:
    """The refusal of a name; only a well-formed (reserved) one is named back."""
    named = {"name": name} if problem == "reserved" else {}
    return ev.error("invalid_name", command, problem=problem, **named)


@dataclass
class Stats:
    messages: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class ChatService:
    """The chat: registry, rooms, history and who hears what."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: Store,
        *,
        rooms: RoomSettings | None = None,
        time_format: str = "%Y/%m/%d %H:%M:%S",
        replay: int = 20,
        history_max: int = 500,
        server_name: str = "lanchat",
        public_base: str | None = None,
        coalesce: bool = False,
        commit: Commit | None = None,
    ) -> None:
        """``coalesce``: deliver each reactor turn as one batch (the server does);
        ``commit``: where delivered history is written (default: the store)."""
        self.clock = clock
        self.store = store
        self.replay = replay
        self.history_max = history_max
        self.server_name = server_name
        self.public_base = public_base
        self.registry: Registry[User] = Registry()
        self.renderers = {"text": TextRenderer(time_format), "json": JsonRenderer()}
        self.delivery = Delivery(
            clock, self.renderers, commit or store.commit, store.last_id, coalesce=coalesce
        )
        settings = rooms or RoomSettings()
        self.rooms = Rooms(
            settings, clock, store.save_room, store.delete_room,
            lambda room, peer: self.delivery.joined(room.key, peer),
            lambda room, peer: self.delivery.left(room.key, peer),
        )
        self.rooms.load(store.load_rooms())
        self._arrival_rooms = (settings.default, *settings.autojoin)
        self._sessions: dict[str, User] = {}
        self.stats = Stats()
        #: Whether a name belongs to an account (a guest cannot /nick to it).
        self.is_account: Callable[[str], bool] = lambda name: False
        #: The cluster this chat is one node of (``chat.cluster.Node``), or None.
        self.cluster: Cluster | None = None

    @property
    def observers(self) -> list[Callable[[ev.Event], None]]:
        """Called with every chat event once it has been delivered (the console)."""
        return self.delivery.observers

    # --- output ---

    def reply(self, peer: Peer, event: ev.Event, viewer: str | None = None) -> None:
        """``event`` to one connection, after what is already on its way to it."""
        self.delivery.reply(peer, event, viewer)

    def broadcast(
        self, event: ev.Event, to: Room | frozenset[Peer] | None = None,
        origin: User | None = None,
    ) -> None:
        """``event`` to a room's members, a fixed set of connections, or (None)
        everyone; ``origin`` hears it back only if its mode echoes. In a
        cluster it goes through Redis first, and is delivered when it is back;
        a node cut off from Redis delivers nothing meanwhile (an id of its own
        would be one the cluster hands out again): what can wait (a leave)
        waits for Redis, what cannot is refused before it is made
        (``cut_off``)."""
        if self.cluster is None:
            self.deliver(event, to, origin)
        elif not self.cluster.publish(event, to, origin):
            self.log.warn("Not sent, the cluster being out of reach: {type}", type=event.type)

    def deliver(
        self, event: ev.Event, to: Room | frozenset[Peer] | list[tuple[Peer, str]] | None,
        origin: User | None = None, *, remember: bool = True,
    ) -> None:
        """``event`` to this process's connections (``broadcast``'s audiences, or a
        list of ``(peer, viewer)`` for a private event)."""
        if remember and event.historic:
            self.store.remember(event)
            if isinstance(to, Room) and isinstance(event, ev.Message | ev.Action):
                self.rooms.said(to)
        if isinstance(to, list):
            self.delivery.private(event, to)
            return
        peer = origin.peer if origin else None
        if isinstance(to, Room):
            self.delivery.broadcast(event, to.key, to.peers, peer)
        elif to is None:
            self.delivery.broadcast(event, origin=peer)
        else:
            self.delivery.broadcast(event, None, to, peer)

    def delivered(self, peer: Peer) -> defer.Deferred[None]:
        """Fires once everything that ``peer`` said and was answered so far has
        reached it (in a cluster: back from Redis first)."""
        if self.cluster is None:
            return self.delivery.delivered(peer)
        d = self.cluster.settled(peer)
        return d.addCallback(lambda _: self.delivery.delivered(peer))

    def set_mode(self, peer: Peer, mode: str) -> None:
        """Switch ``peer`` to ``mode``; what was sent its way before stays in the old one."""
        old, peer.mode = peer.mode, mode
        if old != mode:
            self.delivery.mode_changed(peer, old)

    def tell(self, user: User, event: ev.Event) -> None:
        """A reply to ``user`` wherever they are (on another node: through it)."""
        if self.cluster is not None and user.remote:
            self.cluster.tell("reply", {"name": user.name, "event": event.as_json()})
        else:
            self.reply(user.peer, event, user.name)

    def told(self, data: dict[str, Any]) -> None:
        """A reply another node made for a user of this one."""
        user = self.registry.get(str(data.get("name", "")))
        if user is not None and not user.remote:
            try:
                self.reply(user.peer, ev.from_json(data.get("event")), user.name)
            except ev.BadEvent:
                self.log.warn("Ignored a bad reply from another node")

    def not_published(self, origin: User | None) -> None:
        """What ``origin`` said could not go through the cluster: they are told."""
        if origin is not None and self.registry.get(origin.name) is origin:
            self.reply(origin.peer, ev.error("cluster_down"))

    def ghost(self, name: str, peer: Peer, account: bool, operator: bool) -> User:
        """A user of another node of the cluster (``chat.mirror``)."""
        now = self.clock.seconds()
        user = User(name, peer, "", "", now, now, account=account, operator=operator)
        self.registry.add(name, user)
        return user

    def cut_off(self, command: str | None = None) -> ev.Error | None:
        """In a cluster out of reach of Redis, lines are refused, never dropped."""
        if self.cluster is not None and not self.cluster.ready:
            return ev.error("cluster_down", command)
        return None

    def chat_event(self, cls: type[ev.Event], *args: object, **kw: object) -> ev.Event:
        """A new event of the conversation: the next id, the time now."""
        return cls(self.store.next_id(), self.clock.seconds(), *args, **kw)  # type: ignore[call-arg]

    def rooms_changed(self, user: User) -> None:
        """``user`` joined or left a room: text lines carry their room in several."""
        if len(user.rooms) > 1:
            self.delivery.tagged.add(user.peer)
        else:
            self.delivery.tagged.discard(user.peer)

    # --- joining and leaving ---

    def register(
        self, peer: Peer, name: str, address: str = "", *, account: bool = False,
        operator: bool = False,
    ) -> User | ev.Error:
        """Make ``peer`` a participant called ``name``, or say why not.

        ``account``: the password was checked; a stale session of the same
        account is taken over (told why, and closed).
        """
        problem = name_problem(name)
        if problem is not None:
            return invalid_name(problem, name)
        stale = self.registry.get(name)
        if stale is not None and account and not stale.remote:
            self.taken_over(stale)
        now = self.clock.seconds()
        user = User(name, peer, secrets.token_urlsafe(24), address, now, now,
                    account=account, operator=operator)
        if not self.registry.add(name, user):
            return ev.error("name_taken", name=name)
        self.delivery.add_member(peer, user)
        self._sessions[user.session] = user
        joined = []
        for room_name in self._arrival_rooms:
            result = self.rooms.join(user, room_name)
            if isinstance(result, ev.Error):
                self.log.warn("{name} could not join {room}", name=name, room=room_name)
            elif result[1]:
                joined.append(result[0])
        self.rooms_changed(user)
        current = user.current.name if user.current else None
        self.reply(peer, ev.Welcome(
            name, user.session, self.server_name, self.public_base,
            tuple(r.name for r in user.rooms), current, account, operator,
        ))
        for room in joined:
            self.greet(user, room)
        for room in joined:
            self.broadcast(
                self.chat_event(ev.Join, name, room.name, True, account), room, origin=user
            )
        self.log.info("{name} joined from {address}", name=name, address=for_log(address))
        return user

    def taken_over(self, stale: User) -> None:
        """An account logged in again: its older session is told why, and closed."""
        self.reply(stale.peer, ev.error("taken_over"))
        self.leave(stale, "logged in elsewhere")
        stale.peer.disconnect("logged in elsewhere")

    def greet(self, user: User, room: Room) -> None:
        """Who is in ``room``, its topic and its recent history, to who just came in."""
        names = tuple(u.name for u in room.members)
        self.reply(user.peer, ev.Participants(names, user.name, room.name, room.topic))
        recent = tuple(self.store.recent(room.key, self.replay))
        self.reply(user.peer, ev.History(recent, self.replay, None, room.name), user.name)

    def leave(self, user: User, reason: str) -> None:
        """Remove a user; everyone who shared a room with them sees one leave notice."""
        if self.registry.get(user.name) is not user:
            return
        audience = self.rooms.sharers(user) - {user.peer}
        if self.cluster is not None:
            self.cluster.forget_session(user.name, user.session)
        self.rooms.leave_all(user)
        self.registry.remove(user.name)
        self.delivery.remove_member(user.peer)  # what came before the leave still reaches it
        self._sessions.pop(user.session, None)
        attached, user.attachments = user.attachments, frozenset()
        for conn in attached:
            conn.disconnect("owner left")
        reason = clean(reason)
        self.broadcast(self.chat_event(ev.Leave, user.name, reason), audience)
        self.log.info("{name} left ({reason})", name=user.name, reason=for_log(reason))

    def by_session(self, key: str) -> User | None:
        return self._sessions.get(key)

    def find_session(self, key: str) -> defer.Deferred[User | None]:
        """``by_session``, and in a cluster a user of another node too (their
        transfer connection or HTTP upload may come to this one)."""
        user = self._sessions.get(key)
        if user is not None or self.cluster is None:
            return defer.succeed(user)
        return self.cluster.session_owner(key)

    # --- saying things ---

    def touch(self, user: User) -> None:
        user.last_active = self.clock.seconds()

    def say(self, user: User, text: str, room: Room | None = None) -> ev.Error | None:
        """A chat line, in ``room`` or the current room."""
        self.touch(user)
        text = clean(text)
        if not text.strip():
            return None
        return self._said(ev.Message, user, text, room)

    def act(self, user: User, text: str) -> ev.Error | None:
        self.touch(user)
        text = clean(text).strip()
        if not text:
            return ev.error("usage", "me", usage="/me ACTION")
        return self._said(ev.Action, user, text, None, "me")

    def _said(
        self, kind: type[ev.Event], user: User, text: str, room: Room | None,
        command: str | None = None,
    ) -> ev.Error | None:
        room = room or user.current
        if room is None:
            return ev.error("not_in_room", command)
        problem = self.cut_off(command)
        if problem is not None:
            return problem
        event = self.chat_event(kind, user.name, text, room.name, user.account)
        self.stats.messages += 1
        self.broadcast(event, room, origin=user)
        return None

    def private(self, user: User, to: str, text: str) -> ev.Error | None:
        self.touch(user)
        text = clean(text)
        if not to or not text.strip():
            return ev.error("usage", "msg", usage="/msg NAME TEXT")
        target = self.registry.get(to)
        if target is None:
            return ev.error("no_such_user", "msg", name=clean(to)[:64])
        problem = self.cut_off("msg")
        if problem is not None:
            return problem
        event = self.chat_event(ev.Private, user.name, target.name, text)
        to_whom = [(u.peer, u.name) for u in dict.fromkeys((target, user))
                   if not u.remote]
        if self.cluster is None:
            self.delivery.private(event, to_whom)
        elif not self.cluster.publish(event, to_whom, user):
            return ev.error("cluster_down", "msg")
        return None

    def nick(self, user: User, new: str) -> ev.Error | None:
        self.touch(user)
        if user.account:
            return ev.error("account_name", "nick")
        problem = name_problem(new)
        if problem is not None:
            return invalid_name(problem, new, "nick")
        if self.is_account(new) and new.lower() != user.name.lower():
            return ev.error("registered", "nick", name=new)
        old = user.name
        if new == old:
            return None
        if not self.registry.rename(old, new):
            return ev.error("name_taken", "nick", name=new)
        user.name = new
        self.rooms.renamed(old, new)
        self.broadcast(self.chat_event(ev.Nick, old, new), self.rooms.sharers(user))
        return None

    def notice(self, text: str, room: Room | None = None) -> None:
        """A server notice to everyone, or to one room (the console's ``/say``, shutdown)."""
        event = self.chat_event(ev.Notice, clean(text), room.name if room else None)
        self.broadcast(event, room)

    def kick(self, name: str, reason: str) -> bool:
        user = self.registry.get(name)
        if user is None:
            return False
        reason = clean(reason) or "no reason given"
        if self.cluster is not None and user.remote:
            self.cluster.kick(user, reason)  # its own node does it
            return True
        self.reply(user.peer, ev.error("kicked", reason=reason))
        self.leave(user, f"kicked: {reason}")
        user.peer.disconnect(f"kicked: {reason}")
        return True

    # --- questions ---

    def participants(self, users: Iterable[User]) -> tuple[ev.Participant, ...]:
        now = self.clock.seconds()
        return tuple(
            ev.Participant(u.name, round(now - u.last_active, 1), u.account) for u in users
        )

    def who(self) -> ev.Who:
        return ev.Who(self.participants(self.registry))

    def history(
        self, room: Room, n: int | None = None, after: int | None = None
    ) -> ev.History:
        """The last ``n`` messages of ``room``, or (``after``) all kept since message ``after``."""
        if after is not None:
            kept = self.store.recent(room.key, self.history_max)
            since = [e for e in kept if e.id > after]  # type: ignore[attr-defined]
            return ev.History(tuple(since), len(since), after, room.name)
        n = self.replay if n is None else max(0, min(n, self.history_max))
        return ev.History(tuple(self.store.recent(room.key, n)), n, None, room.name)

    # --- files ---

    def file_url(self, info: ev.FileInfo) -> str | None:
        if self.public_base is None:
            return None
        return f"{self.public_base}/files/{info.file_id}/{quote(info.name, safe='')}"

    def with_url(self, info: ev.FileInfo) -> ev.FileInfo:
        return replace(info, url=self.file_url(info))

    def file_shared(self, info: ev.FileInfo, user: User | None = None) -> None:
        """Announce a stored file to its room (the uploader is told separately;
        ``user``: the uploader's connection, if it has one, hears it per its mode)."""
        info = self.with_url(info)
        room = self.rooms.get(info.room) if info.room else None
        event = self.chat_event(
            ev.FileShared, info.uploader, info.file_id, info.name, info.size, info.crc32,
            info.sha256, info.url, info.room,
        )
        self.broadcast(event, room, origin=user)
