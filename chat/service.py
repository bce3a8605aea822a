"""Chat logic: users, what they say, and who hears it.

``ChatService`` is the chat without the sockets. A connection registers a
``Peer`` (anything with a ``mode`` and a ``send(bytes)``) and from then on calls
the service with decoded text; the service builds events, renders each one
once per mode and hands the same bytes to every recipient. One recipient's
failure never stops a broadcast.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol
from urllib.parse import quote

from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.logger import Logger

from chat import events as ev
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
    #: Transfer connections attached with this user's session key.
    attachments: set[Peer] = field(default_factory=set)


class _Batch:
    """One reactor turn's broadcasts, and how far each connection has had them."""

    __slots__ = ("cursors", "events", "rendered")

    def __init__(self) -> None:
        self.events: list[tuple[ev.Event, User | None]] = []
        #: Where a connection stands in ``events``, if not at the start.
        self.cursors: dict[Peer, int] = {}
        #: Renderings of ``events`` so far, per mode.
        self.rendered: dict[str, list[bytes]] = {}


@dataclass
class Stats:
    messages: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class ChatService:
    """The chat room: registry, history and event fan-out."""

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
    ) -> None:
        self.clock = clock
        self.store = store
        self.replay = replay
        self.history_max = history_max
        self.server_name = server_name
        self.public_base = public_base
        self.registry: Registry[User] = Registry()
        self.renderers = {"text": TextRenderer(time_format), "json": JsonRenderer()}
        self._sessions: dict[str, User] = {}
        #: The user each registered connection speaks for.
        self._members: dict[Peer, User] = {}
        self.stats = Stats()
        #: Called with every chat event, after delivery (the console listens here).
        self.observers: list[Callable[[ev.Event], None]] = []

    # --- delivery ---

    def reply(self, peer: Peer, event: ev.Event, viewer: str | None = None) -> None:
        """Render ``event`` for one connection and send it."""
        self._catch_up(peer)  # broadcasts already made come before the reply
        peer.send(self.renderers[peer.mode].render(event, viewer))

    # Broadcasts made in one reactor turn are delivered together at the end of
    # it: each recipient gets one write holding every line of the turn, and
    # those bytes are built once per mode and shared by all recipients (the
    # per-recipient ``transport.write`` was the hot spot, see bench/README.md).
    # Order per connection is kept with a cursor: a reply first sends that
    # connection the part of the batch it has not had; a user who registers
    # mid-batch starts at the batch's end (what came before is in the history
    # replay), a user who leaves gets what came before the leave. So a storm
    # of joins costs one write per user per turn, not one per join. On a test
    # clock (no reactor) every broadcast is delivered at once.
    _batch: _Batch | None = None
    _coalesce: bool | None = None

    def broadcast(self, event: ev.Event, origin: User | None = None) -> None:
        """Send a chat event to every registered user, encoding once per mode.

        ``origin`` (the user who caused it) hears it back only if their mode
        echoes a user's own lines.
        """
        if self._coalesce is None:
            self._coalesce = IReactorCore.providedBy(self.clock)
        if self._batch is None:
            self._batch = _Batch()
            if self._coalesce:
                self.clock.callLater(0, self.flush_broadcasts)
        self._batch.events.append((event, origin))
        if not self._coalesce:
            self.flush_broadcasts()

    def flush_broadcasts(self) -> None:
        """Deliver the broadcasts of this turn now (idempotent)."""
        batch, self._batch = self._batch, None  # a broadcast from here on starts the next
        if batch is None:
            return
        whole: dict[str, bytes] = {}  # mode -> the batch as one write
        origins = {o for _, o in batch.events if o is not None}
        for user in list(self.registry):
            mode = user.peer.mode
            start = batch.cursors.get(user.peer, 0)
            if start or (user in origins and not self.renderers[mode].echo_own):
                data = self._part(batch, user, start)
            else:
                data = whole.get(mode)  # type: ignore[assignment]
                if data is None:
                    data = whole[mode] = b"".join(self._lines(batch, mode))
            self._send(user, data)
        for event, _ in batch.events:
            for observer in self.observers:
                observer(event)

    def _catch_up(self, peer: Peer) -> None:
        """Send ``peer``'s user the part of this turn's broadcasts it has not had."""
        batch, user = self._batch, self._members.get(peer)
        if batch is None or user is None:
            return
        start = batch.cursors.get(peer, 0)
        if start < len(batch.events):
            self._send(user, self._part(batch, user, start))
            batch.cursors[peer] = len(batch.events)

    def _part(self, batch: _Batch, user: User, start: int) -> bytes:
        """The batch from ``start`` on, as ``user`` sees it (no own lines unless echoed)."""
        mode = user.peer.mode
        lines = self._lines(batch, mode)
        if self.renderers[mode].echo_own:
            return b"".join(lines[start:])
        events = batch.events
        return b"".join(lines[i] for i in range(start, len(events)) if events[i][1] is not user)

    def _lines(self, batch: _Batch, mode: str) -> list[bytes]:
        """One rendering per event of the batch in ``mode``, each made once."""
        out = batch.rendered.setdefault(mode, [])
        for event, _ in batch.events[len(out) :]:
            try:
                out.append(self.renderers[mode].render(event))
            except Exception:
                self.log.failure("Rendering {type} failed", type=event.type)
                out.append(b"")
        return out

    def _send(self, user: User, data: bytes) -> None:
        if data:
            try:
                user.peer.send(data)
            except Exception:
                self.log.failure("Delivery to {name} failed", name=for_log(user.name))

    def _chat_event(self, cls: type[ev.Event], *args: object) -> ev.Event:
        return cls(self.store.next_id(), self.clock.seconds(), *args)  # type: ignore[call-arg]

    # --- joining and leaving ---

    def register(self, peer: Peer, name: str, address: str = "") -> User | ev.Error:
        """Make ``peer`` a participant called ``name``, or say why not."""
        problem = name_problem(name)
        if problem is not None:
            return ev.Error("invalid_name", problem)
        now = self.clock.seconds()
        user = User(name, peer, secrets.token_urlsafe(24), address, now, now)
        if not self.registry.add(name, user):
            return ev.Error("name_taken", f"The name {name} is taken.")
        self._members[peer] = user
        if self._batch is not None:  # what it holds so far is in the history replay
            self._batch.cursors[peer] = len(self._batch.events)
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
        self._catch_up(user.peer)  # what came before the leave
        self.registry.remove(user.name)
        del self._members[user.peer]
        self._sessions.pop(user.session, None)
        for attached in list(user.attachments):
            attached.disconnect("owner left")
        user.attachments.clear()
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
        event = self._chat_event(ev.Message, user.name, text)
        self.store.remember(event)
        self.stats.messages += 1
        self.broadcast(event, origin=user)

    def act(self, user: User, text: str) -> ev.Error | None:
        self._touch(user)
        text = clean(text).strip()
        if not text:
            return ev.Error("usage", "Usage: /me ACTION", "me")
        event = self._chat_event(ev.Action, user.name, text)
        self.store.remember(event)
        self.stats.messages += 1
        self.broadcast(event, origin=user)
        return None

    def private(self, user: User, to: str, text: str) -> ev.Error | None:
        self._touch(user)
        text = clean(text)
        if not to or not text.strip():
            return ev.Error("usage", "Usage: /msg NAME TEXT", "msg")
        target = self.registry.get(to)
        if target is None:
            return ev.Error("no_such_user", f"{clean(to)} is not here.", "msg")
        event = self._chat_event(ev.Private, user.name, target.name, text)
        self.reply(target.peer, event, target.name)
        if target is not user:
            self.reply(user.peer, event, user.name)
        for observer in self.observers:
            observer(event)
        return None

    def nick(self, user: User, new: str) -> ev.Error | None:
        self._touch(user)
        problem = name_problem(new)
        if problem is not None:
            return ev.Error("invalid_name", problem, "nick")
        old = user.name
        if new == old:
            return None
        if not self.registry.rename(old, new):
            return ev.Error("name_taken", f"The name {new} is taken.", "nick")
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
        self.reply(user.peer, ev.Error("kicked", f"You were kicked: {reason}"))
        self.leave(user, f"kicked: {reason}")
        user.peer.disconnect(f"kicked: {reason}")
        return True

    # --- questions ---

    def who(self) -> ev.Who:
        now = self.clock.seconds()
        return ev.Who(
            tuple(ev.Participant(u.name, round(now - u.last_active, 1)) for u in self.registry)
        )

    def history(self, n: int | None) -> ev.History:
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
