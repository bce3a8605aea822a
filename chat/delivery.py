"""Delivery: every byte the chat sends to a connection, in order, stored before it is sent.

What the chat says in one reactor turn is one *batch*: broadcasts, each to
an *audience*, and replies to one connection, in the order they were made. A
batch is committed to the history database in one transaction (its
messages, and a mark for the event ids it hands out) off the reactor thread,
and only then written to the sockets: no one ever receives a line that a
crash could take back, and no id is handed out twice. While one batch
commits, the next one gathers what follows (group commit), so a busy server
makes fewer, larger transactions and writes.

An audience is named by a key (a room, or ``"*"`` for everyone) whose
members the chat keeps; ``joined`` and ``left`` tell delivery when they
change, so who hears a line is who was there when it was said: a member who
arrives later starts with what follows (what came before is in its history
replay), one who leaves still gets what came before its leave. A few events
(a leave, a rename) go to a fixed set instead. Consecutive broadcasts to one
audience form a *segment*, rendered once per variant (mode, and whether text
lines carry their room) and shared by all its members, so a storm of joins
is one segment, not one per join; each connection gets one write per batch.
A connection that switches mode gets each line in the mode it had when the
line was said. A reply to a connection goes out at once when nothing is
queued at all.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat import events as ev
from chat.sanitize import for_log

#: Seconds between attempts to commit a batch the database refused.
RETRY_DELAY = 1.0
#: Event ids are recorded as used this many at a time, like a database
#: sequence's cache: a batch of joins and leaves needs no transaction of its
#: own, and a restart skips at most this many ids (never reuses one).
ID_BLOCK = 1000

#: ``commit(messages, reserved)``: write the messages and (unless None) the id
#: high-water mark, in one transaction.
Commit = Callable[[list[ev.Event], int | None], "defer.Deferred[None]"]


class Peer(Protocol):
    """What delivery needs of a connection."""

    mode: str

    def send(self, data: bytes) -> None: ...


class Renderer(Protocol):
    echo_own: bool

    def render(self, event: ev.Event, viewer: str | None = None, tagged: bool = False) -> bytes:
        ...


#: The key of the audience of everyone registered.
EVERYONE = "*"


class _Segment:
    """Consecutive broadcasts to one audience, rendered once per variant."""

    __slots__ = ("ends", "events", "filtered", "key", "members", "origin_set", "origins",
                 "rendered", "starts", "whole")

    def __init__(self, key: str | None, members: Collection[Any]) -> None:
        #: The audience's key (None: ``members`` is a fixed set, never extended).
        self.key = key
        #: Its members now (kept up to date by the chat; fixed when ``key`` is None).
        self.members = members
        #: Members that arrived (or left) during the segment, from (to) which event.
        self.starts: dict[Any, int] = {}
        self.ends: dict[Any, int] = {}
        self.events: list[ev.Event] = []
        #: The connection each event came from (not echoed to it in text mode), or None.
        self.origins: list[Any] = []
        self.origin_set: set[Any] = set()
        #: (mode, tagged) -> one rendering per event, and all of them as one write.
        self.rendered: dict[tuple[str, bool], list[bytes]] = {}
        self.whole: dict[tuple[str, bool], bytes] = {}
        #: (origin, mode, tagged) -> the segment without that origin's own events.
        self.filtered: dict[tuple[Any, str, bool], bytes] = {}


class _Reply:
    """A reply to one connection, rendered when it was made."""

    __slots__ = ("data", "peer")

    def __init__(self, peer: Any, data: bytes) -> None:
        self.peer = peer
        self.data = data


class _Batch:
    """One turn's output, and the mode switches made during it."""

    __slots__ = ("by_key", "history", "items", "last_id", "modes", "observed", "split",
                 "waiters")

    def __init__(self) -> None:
        self.items: list[_Segment | _Reply] = []
        #: The segments of each keyed audience, so a change of members finds them.
        self.by_key: dict[str, list[_Segment]] = {}
        #: Connections that switched mode: [(from item index, mode), ...].
        self.modes: dict[Any, list[tuple[int, str]]] = {}
        #: A mode switch: the next broadcast starts a segment of its own.
        self.split = False
        #: Messages for the history table, and the highest id handed out.
        self.history: list[ev.Event] = []
        self.last_id = 0
        self.observed: list[ev.Event] = []
        self.waiters: list[defer.Deferred[None]] = []


class Delivery:
    """The ordered, stored-then-sent output of the whole chat."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        renderers: dict[str, Renderer],
        commit: Commit,
        last_id: Callable[[], int],
        *,
        coalesce: bool,
    ) -> None:
        """``coalesce``: gather a reactor turn into one batch (the server), or
        deliver each event at once (in-memory tests)."""
        self._clock = clock
        self.renderers = renderers
        self._commit = commit
        self._coalesce = coalesce
        #: Who is registered: connection -> user, in order of arrival.
        self.members: dict[Peer, Any] = {}
        #: Connections whose text lines carry their room (those in several rooms).
        self.tagged: set[Any] = set()
        self._open: _Batch | None = None
        self._committing: _Batch | None = None
        #: Every id up to this one is recorded as (possibly) used.
        self._reserved = last_id()
        self._turn: IDelayedCall | None = None
        #: Called with every chat event once it has been delivered (the console).
        self.observers: list[Callable[[ev.Event], None]] = []

    # --- members ---

    def add_member(self, peer: Peer, user: Any) -> None:
        self.members[peer] = user
        self.joined(EVERYONE, peer)

    def remove_member(self, peer: Peer) -> None:
        if self.members.pop(peer, None) is not None:
            self.left(EVERYONE, peer)
        self.tagged.discard(peer)

    def joined(self, key: str, peer: Any) -> None:
        """``peer`` is now in audience ``key``: it hears what is said from now on."""
        for batch in self._queued():
            for segment in batch.by_key.get(key, ()):
                if peer in segment.ends:  # back within one segment: start a new one
                    batch.split = True
                else:
                    segment.starts[peer] = len(segment.events)

    def left(self, key: str, peer: Any) -> None:
        """``peer`` left audience ``key``: what was said before still reaches it."""
        for batch in self._queued():
            for segment in batch.by_key.get(key, ()):
                segment.ends.setdefault(peer, len(segment.events))

    def mode_changed(self, peer: Peer, old: str) -> None:
        """``peer.mode`` just changed: what was made before stays in ``old``."""
        for batch in self._queued():
            switches = batch.modes.setdefault(peer, [(0, old)])
            if batch is self._open:
                switches.append((len(batch.items), peer.mode))
                batch.split = True

    # --- output ---

    def broadcast(
        self,
        event: ev.Event,
        key: str | None = EVERYONE,
        members: Collection[Any] | None = None,
        origin: Any = None,
    ) -> None:
        """``event`` to the audience ``key`` (whose members are ``members``), or to
        the fixed set ``members`` (``key`` None); ``origin``, the connection it came
        from, hears it only if its mode echoes."""
        members = self.members if members is None else members
        batch = self._batch()
        last = batch.items[-1] if batch.items else None
        if (
            isinstance(last, _Segment) and key is not None and last.key == key
            and not batch.split
        ):
            segment = last
        else:
            segment = _Segment(key, members)
            batch.items.append(segment)
            if key is not None:
                batch.by_key.setdefault(key, []).append(segment)
            batch.split = False
        segment.events.append(event)
        segment.origins.append(origin)
        if origin is not None:
            segment.origin_set.add(origin)
        self._account(batch, event)
        if not self._coalesce:
            self._seal()

    def reply(self, peer: Peer, event: ev.Event, viewer: str | None = None) -> None:
        """``event`` to one connection, after everything already queued for it."""
        data = self.renderers[peer.mode].render(event, viewer, peer in self.tagged)
        if self._open is None and self._committing is None:
            _send(peer, data)
            return
        self._batch().items.append(_Reply(peer, data))
        if not self._coalesce:
            self._seal()

    def private(self, event: ev.Event, to: Iterable[tuple[Peer, str]]) -> None:
        """A chat event for a few connections (``(peer, viewer)``), numbered like the rest."""
        batch = self._batch()
        for peer, viewer in to:
            data = self.renderers[peer.mode].render(event, viewer, False)
            batch.items.append(_Reply(peer, data))
        self._account(batch, event)
        if not self._coalesce:
            self._seal()

    def delivered(self, peer: Peer) -> defer.Deferred[None]:
        """Fires once everything queued for ``peer`` so far has been written to it."""
        return self.drain()

    def drain(self) -> defer.Deferred[None]:
        """Fires once everything queued has been stored and delivered."""
        last = self._open or self._committing
        if last is None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        last.waiters.append(d)
        self._seal()
        return d

    # --- batches ---

    def _queued(self) -> list[_Batch]:
        return [b for b in (self._committing, self._open) if b is not None]

    def _batch(self) -> _Batch:
        if self._open is None:
            self._open = _Batch()
            if self._coalesce and self._committing is None:
                self._turn = self._clock.callLater(0, self._turn_ended)
        return self._open

    def _account(self, batch: _Batch, event: ev.Event) -> None:
        if event.historic:
            batch.history.append(event)
        batch.last_id = max(batch.last_id, getattr(event, "id", 0))
        batch.observed.append(event)

    def _turn_ended(self) -> None:
        self._turn = None
        self._seal()

    def _seal(self) -> None:
        """Commit the open batch, unless one is committing (it follows that one)."""
        if self._open is None or self._committing is not None:
            return
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None
        batch, self._open = self._open, None
        self._committing = batch
        self._store(batch)

    def _store(self, batch: _Batch) -> None:
        reserve = self._reserved
        if batch.last_id > reserve:
            reserve = batch.last_id + ID_BLOCK
        if not batch.history and reserve == self._reserved:
            self._stored(None, batch, reserve)
            return
        d = self._commit(batch.history, reserve if reserve != self._reserved else None)
        d.addCallbacks(
            self._stored, self._store_failed, (batch, reserve), errbackArgs=(batch,)
        )

    def _store_failed(self, failure: Failure, batch: _Batch) -> None:
        # Delivered means stored: the batch waits (and the chat with it) rather
        # than reach anyone unrecorded. The log says why.
        self.log.failure(
            "Storing {n} chat events failed; retrying in {delay}s",
            failure, n=len(batch.observed), delay=RETRY_DELAY,
        )
        self._clock.callLater(RETRY_DELAY, self._store, batch)

    def _stored(self, _: object, batch: _Batch, reserved: int) -> None:
        self._reserved = max(self._reserved, reserved)
        self._committing = None
        try:
            self._deliver(batch)
        finally:
            if self._open is not None:
                self._seal()

    def _deliver(self, batch: _Batch) -> None:
        items = batch.items
        if len(items) == 1 and isinstance(items[0], _Segment) and not batch.modes:
            self._fan(items[0], batch, 0, _send)  # the common case: one audience, no replies
        else:
            out: dict[Any, list[bytes]] = {}

            def collect(peer: Any, data: bytes) -> None:
                if data:
                    out.setdefault(peer, []).append(data)

            for index, item in enumerate(items):
                if isinstance(item, _Reply):
                    out.setdefault(item.peer, []).append(item.data)
                else:
                    self._fan(item, batch, index, collect)
            for peer, parts in out.items():
                _send(peer, b"".join(parts))
        for waiter in batch.waiters:
            waiter.callback(None)
        for event in batch.observed:
            for observer in self.observers:
                observer(event)

    def _fan(
        self, segment: _Segment, batch: _Batch, index: int, emit: Callable[[Any, bytes], None]
    ) -> None:
        """Hand ``segment`` to each of its recipients, as that recipient gets it.

        Most recipients get one of a few shared renderings; only those whose
        window or own lines differ (``special``) cost more than two lookups.
        """
        special = segment.starts.keys() | segment.ends.keys() | segment.origin_set
        special |= batch.modes.keys()
        tagged, whole = self.tagged, segment.whole
        for peer in _recipients(segment):
            if peer in special:
                emit(peer, self._part(segment, peer, self._mode(batch, peer, index)))
                continue
            variant = (peer.mode, peer in tagged)
            data = whole.get(variant)
            if data is None:
                data = whole[variant] = b"".join(self._lines(segment, *variant))
            emit(peer, data)

    def _mode(self, batch: _Batch, peer: Any, index: int) -> str:
        switches = batch.modes.get(peer)
        if switches is None:
            return str(peer.mode)
        return next(mode for at, mode in reversed(switches) if at <= index)

    def _part(self, segment: _Segment, peer: Any, mode: str) -> bytes:
        """``segment`` as ``peer`` gets it: the events said while it was a member,
        rendered once per variant, minus its own where its mode does not echo them."""
        tagged = peer in self.tagged
        start = segment.starts.get(peer, 0)
        end = segment.ends.get(peer, len(segment.events))
        own = peer in segment.origin_set and not self.renderers[mode].echo_own
        if own or start or end < len(segment.events):
            key = (peer, mode, tagged)
            data = segment.filtered.get(key)
            if data is None:
                lines = self._lines(segment, mode, tagged)
                data = segment.filtered[key] = b"".join(
                    lines[i] for i in range(start, end)
                    if not (own and segment.origins[i] is peer)
                )
            return data
        variant = (mode, tagged)
        whole = segment.whole.get(variant)
        if whole is None:
            whole = segment.whole[variant] = b"".join(self._lines(segment, mode, tagged))
        return whole

    def _lines(self, segment: _Segment, mode: str, tagged: bool) -> list[bytes]:
        """One rendering per event of ``segment`` in a variant, each made once."""
        key = (mode, tagged)
        out = segment.rendered.get(key)
        if out is None:
            out = segment.rendered[key] = []
            for event in segment.events:
                try:
                    out.append(self.renderers[mode].render(event, None, tagged))
                except Exception:
                    self.log.failure("Rendering {type} failed", type=event.type)
                    out.append(b"")
        return out


def _recipients(segment: _Segment) -> list[Any]:
    """Its members now, and those who left during it (they still get what came before)."""
    members = list(segment.members)
    if segment.ends:
        current = set(members) if not isinstance(segment.members, dict | set | frozenset) else (
            segment.members
        )
        members += [p for p in segment.ends if p not in current]
    return members


def _send(peer: Any, data: bytes) -> None:
    """Write to one connection; its failure is its own, never the broadcast's."""
    if data:
        try:
            peer.send(data)
        except Exception:
            Delivery.log.failure("Delivery to {peer} failed", peer=for_log(peer))
