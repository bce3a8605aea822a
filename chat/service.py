"""Chat logic: users, what they say, and who hears it.

``ChatService`` is the chat without the sockets. A connection registers a
``Peer`` (anything with a ``mode``, a ``send(bytes)`` and a ``disconnect``)
and from then on calls the service with decoded text; the service builds
events and hands them to ``Delivery``, which stores them, renders each once
per mode and writes the same bytes to every recipient, in order. Refusals
come back as ``Error`` events holding a code and its values; the renderer
words them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import quote

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chat import events as ev
from chat.delivery import Delivery
from chat.registry import Registry, name_problem
from chat.render import JsonRenderer, TextRenderer
from chat.sanitize import clean, for_log
from chat.store import Store


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
    """The chat room: registry, history and who hears what."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: Store,
        *,
        time_format: str = "%Y/%m/%d %H:%M:%S",
        replay: int = 20,
        history_max: int = 500,
        server_name: str = "lanchat",
        public_base: str | None = None,
        coalesce: bool = False,
    ) -> None:
        """``coalesce``: deliver each reactor turn as one batch (the server does)."""
        self.clock = clock
        self.store = store
        self.replay = replay
        self.history_max = history_max
        self.server_name = server_name
        self.public_base = public_base
        self.registry: Registry[User] = Registry()
        self.renderers = {"text": TextRenderer(time_format), "json": JsonRenderer()}
        self.delivery = Delivery(
            clock, self.renderers, store.commit, store.last_id, coalesce=coalesce
        )
        self._sessions: dict[str, User] = {}
        self.stats = Stats()

    @property
    def observers(self) -> list[Callable[[ev.Event], None]]:
        """Called with every chat event once it has been delivered (the console)."""
        return self.delivery.observers

    # --- output ---

    def reply(self, peer: Peer, event: ev.Event, viewer: str | None = None) -> None:
        """``event`` to one connection, after what is already on its way to it."""
        self.delivery.reply(peer, event, viewer)

    def broadcast(self, event: ev.Event, origin: User | None = None) -> None:
        """``event`` to every participant; ``origin`` hears it back only if its mode echoes."""
        self.delivery.broadcast(event, origin)

    def set_mode(self, peer: Peer, mode: str) -> None:
        """Switch ``peer`` to ``mode``; what was sent its way before stays in the old one."""
        old, peer.mode = peer.mode, mode
        if old != mode:
            self.delivery.mode_changed(peer, old)

    def _chat_event(self, cls: type[ev.Event], *args: object) -> ev.Event:
        return cls(self.store.next_id(), self.clock.seconds(), *args)  # type: ignore[call-arg]

    # --- joining and leaving ---

    def register(self, peer: Peer, name: str, address: str = "") -> User | ev.Error:
        """Make ``peer`` a participant called ``name``, or say why not."""
        problem = name_problem(name)
        if problem is not None:
            return invalid_name(problem, name)
        now = self.clock.seconds()
        user = User(name, peer, secrets.token_urlsafe(24), address, now, now)
        if not self.registry.add(name, user):
            return ev.error("name_taken", name=name)
        # What was said before this is in the replay; what follows is live.
        self.delivery.add_member(peer, user)
        self._sessions[user.session] = user
        self.reply(peer, ev.Welcome(name, user.session, self.server_name, self.public_base))
        self.reply(peer, ev.Participants(tuple(self.registry.names()), name))
        self.reply(peer, ev.History(tuple(self.store.recent(self.replay)), self.replay), name)
        self.broadcast(self._chat_event(ev.Join, name), origin=user)
        self.log.info("{name} joined from {address}", name=name, address=for_log(address))
        return user

    def leave(self, user: User, reason: str) -> None:
        """Remove a user; every other participant sees one leave notice."""
        if self.registry.get(user.name) is not user:
            return
        self.registry.remove(user.name)
        self.delivery.remove_member(user.peer)  # what came before the leave still reaches it
        self._sessions.pop(user.session, None)
        attached, user.attachments = user.attachments, frozenset()
        for conn in attached:
            conn.disconnect("owner left")
        reason = clean(reason)
        self.broadcast(self._chat_event(ev.Leave, user.name, reason))
        self.log.info("{name} left ({reason})", name=user.name, reason=for_log(reason))

    def by_session(self, key: str) -> User | None:
        return self._sessions.get(key)

    # --- saying things ---

    def _touch(self, user: User) -> None:
        user.last_active = self.clock.seconds()

    def say(self, user: User, text: str) -> None:
        self._touch(user)
        text = clean(text)
        if not text.strip():
            return
        self._said(self._chat_event(ev.Message, user.name, text), user)

    def act(self, user: User, text: str) -> ev.Error | None:
        self._touch(user)
        text = clean(text).strip()
        if not text:
            return ev.error("usage", "me", usage="/me ACTION")
        self._said(self._chat_event(ev.Action, user.name, text), user)
        return None

    def _said(self, event: ev.Event, user: User) -> None:
        self.store.remember(event)
        self.stats.messages += 1
        self.broadcast(event, origin=user)

    def private(self, user: User, to: str, text: str) -> ev.Error | None:
        self._touch(user)
        text = clean(text)
        if not to or not text.strip():
            return ev.error("usage", "msg", usage="/msg NAME TEXT")
        target = self.registry.get(to)
        if target is None:
            return ev.error("no_such_user", "msg", name=clean(to)[:64])
        event = self._chat_event(ev.Private, user.name, target.name, text)
        to_whom = [(target.peer, target.name)]
        if target is not user:
            to_whom.append((user.peer, user.name))
        self.delivery.private(event, to_whom)
        return None

    def nick(self, user: User, new: str) -> ev.Error | None:
        self._touch(user)
        problem = name_problem(new)
        if problem is not None:
            return invalid_name(problem, new, "nick")
        old = user.name
        if new == old:
            return None
        if not self.registry.rename(old, new):
            return ev.error("name_taken", "nick", name=new)
        user.name = new
        self.broadcast(self._chat_event(ev.Nick, old, new))
        return None

    def notice(self, text: str) -> None:
        """A server notice to everyone (the console's ``/say``, shutdown)."""
        self.broadcast(self._chat_event(ev.Notice, clean(text)))

    def kick(self, name: str, reason: str) -> bool:
        user = self.registry.get(name)
        if user is None:
            return False
        reason = clean(reason) or "no reason given"
        self.reply(user.peer, ev.error("kicked", reason=reason))
        self.leave(user, f"kicked: {reason}")
        user.peer.disconnect(f"kicked: {reason}")
        return True

    # --- questions ---

    def who(self) -> ev.Who:
        now = self.clock.seconds()
        return ev.Who(
            tuple(ev.Participant(u.name, round(now - u.last_active, 1)) for u in self.registry)
        )

    def history(self, n: int | None = None, after: int | None = None) -> ev.History:
        """The last ``n`` messages, or (``after``) all those kept since message ``after``."""
        if after is not None:
            since = [e for e in self.store.recent(self.history_max) if e.id > after]  # type: ignore[attr-defined]
            return ev.History(tuple(since), len(since), after)
        n = self.replay if n is None else max(0, min(n, self.history_max))
        return ev.History(tuple(self.store.recent(n)), n)

    # --- files ---

    def file_url(self, info: ev.FileInfo) -> str | None:
        if self.public_base is None:
            return None
        return f"{self.public_base}/files/{info.file_id}/{quote(info.name, safe='')}"

    def with_url(self, info: ev.FileInfo) -> ev.FileInfo:
        return replace(info, url=self.file_url(info))

    def file_shared(self, user: User, info: ev.FileInfo) -> None:
        """Announce a stored file to everyone (the uploader is told separately)."""
        info = self.with_url(info)
        event = self._chat_event(
            ev.FileShared, user.name, info.file_id, info.name, info.size, info.crc32,
            info.sha256, info.url,
        )
        self.broadcast(event, origin=user)
