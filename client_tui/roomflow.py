"""The server's current room kept the room shown, and the rooms brought back after an outage.

Plain lines, ``/me``, ``/send`` (and ``/history``, ``/part``, ``/topic``…
without a room) go to the server's *current* room. The user sees rooms as
tabs, so the client makes the room shown current: switching sends ``/join
ROOM`` (of a room you are in it only makes it current), and before any line
the room shown is checked against ``requested`` — what the server's current
will be once the ``/join``s sent are answered — so a line typed right after
a switch follows its ``/join`` (the server answers in order). Each ``/join``
is answered by one ``current`` or one error; ``joins`` lists them in the
order they went out. A ``/join`` the user types shows its room once
answered; a ``current`` nobody asked for (a ``/part``, a kick) shows the
server's choice if the room shown is gone. A ``/join`` still waiting behind
the bucket of flood control is retargeted rather than followed by another.

After a reconnect the server has put the user in its default rooms only:
each room the client had is joined again, in tab order, each followed by
``/history after`` its last id (the catch-up is per current room), then the
room shown is made current again — all before the user's lines waiting
through the outage. A room that cannot be joined again (private, full) is
closed with a note. Joins, parts, topics and files of the outage are not
kept by the server, so they are not recovered. Each new room's members are
asked for quietly with ``/names`` (``participants`` does not say who is an
account; ``names`` does).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet import defer

from chat import events as ev
from client_tui.format import Line
from client_tui.outbox import Outgoing
from client_tui.rooms import Room, same
from client_tui.transfer import Interrupted, TransferFailed

if TYPE_CHECKING:
    from client_tui.session import ChatSession


@dataclass(frozen=True)
class JoinSent:
    """A ``/join`` written to the server, waiting for its ``current`` (or error)."""

    key: str
    #: the user typed it: show the room once the server has made it current
    typed: bool = False
    #: a room had before an outage: if it fails, its tab goes
    rejoin: bool = False
    #: for an upload waiting for its room
    upload: bool = False

    @property
    def retargetable(self) -> bool:
        """Only a join made for the room shown may become a join for another."""
        return not (self.typed or self.rejoin or self.upload)


class RoomFlow:
    """For one ``ChatSession``: the server's current room, and rooms after an outage."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session
        self.rooms = session.rooms
        #: the server's current room as it last said (lower case; ``None``: none)
        self.server_current: str | None = None
        #: what the server's current room will be once the ``/join``s sent are answered
        self.requested: str | None = None
        self.joins: deque[JoinSent] = deque()
        #: ``/join`` lines queued in the outbox, not yet written
        self.queued = 0
        #: the last ``/join`` queued, and what it asks for (retargeted while it waits)
        self._last: tuple[Outgoing, list[JoinSent]] | None = None
        #: rooms whose ``/names`` was asked quietly (their answer is not shown)
        self.quiet_names: deque[str] = deque()
        #: the line saying you left the room shown: shown once the server says where you are
        self.note: Line | None = None
        #: uploads waiting for the server's current room to be theirs
        self._waiting: list[tuple[str, defer.Deferred[None]]] = []

    # --- what goes out ---

    def _join(self, name: str, typed: bool = False, rejoin: bool = False,
              upload: bool = False) -> None:
        entry = JoinSent(name.lower(), typed, rejoin, upload)
        self.requested = entry.key
        last = self._last
        if (last is not None and self.session.outbox.last_waiting() is last[0]
                and last[1][0].retargetable and entry.retargetable):
            # Switching rooms faster than flood control lets joins out: retarget the join
            # still waiting at the end of the queue rather than queue another.
            last[0].text = f"/join {name}"
            last[1][0] = entry
            return
        self.queued += 1
        box = [entry]  # what this line asks for, until it is written

        def written() -> None:
            self.queued -= 1
            self.joins.append(box[0])

        self._last = (self.session.outbox.send(f"/join {name}", kept=False, sent=written), box)

    def ensure(self) -> None:
        """Before a line for the current room: make it the room shown."""
        room = self.rooms.shown
        if room is not self.rooms.home and self.requested != room.key:
            self._join(room.name)

    def switch(self, room: Room | None) -> None:
        """Show ``room`` (Alt-N, Ctrl-N/Ctrl-P, ``/join`` of a room you are in)."""
        if room is None:
            return
        self.rooms.show(room)
        if self.session.state == "online":
            self.ensure()

    def join(self, name: str) -> bool:
        """``/join ROOM`` typed: show it if you are in it, else ask the server (``False``:
        not connected, the line stays in the input)."""
        room = self.rooms.get(name)
        if room is not None:
            self.switch(room)
            return True
        if self.session.state != "online":
            return self.session.say(f"/join {name}")  # says why, keeps the line
        self._join(name, typed=True)
        return True

    def lost(self) -> None:
        """The connection is gone: nothing sent on it will be answered."""
        self.joins.clear()
        self.quiet_names.clear()
        self.queued, self._last = 0, None
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            d.errback(Interrupted("the chat connection was lost"))

    def when_current(self, name: str | None) -> defer.Deferred[None]:
        """Fires once the server's current room is ``name``, asking for it if need be.

        An upload on a transfer connection is shared into its owner's current
        room when the server reads its header: the header waits for this.
        """
        d: defer.Deferred[None] = defer.Deferred()
        if not name:
            d.callback(None)  # a server without rooms: nothing to wait for
            return d
        self._waiting.append((name.lower(), d))
        if self.requested != name.lower() and self.rooms.get(name) is not None:
            self._join(name, upload=True)
        self._settle_waiting()
        return d

    def _settle_waiting(self) -> None:
        if self.joins or self.queued:
            return  # the server's current room is about to change
        for entry in list(self._waiting):
            key, d = entry
            room = self.rooms.get(key)
            if room is None:
                self._waiting.remove(entry)
                d.errback(TransferFailed(f"you are no longer in {key}"))
            elif key == self.server_current:
                self._waiting.remove(entry)
                d.callback(None)
            else:  # a switch since: ask again (the next line typed asks for its own room)
                self._join(room.name, upload=True)
                return

    def refresh_names(self) -> None:
        """Ask the room shown again who is an account (after ``/register`` and the like)."""
        if self.rooms.shown is not self.rooms.home:
            self._names(self.rooms.shown)

    def _names(self, room: Room) -> None:
        key = room.key
        self.session.outbox.send(f"/names {room.name}", kept=False,
                                 sent=lambda: self.quiet_names.append(key))

    # --- what the server says ---

    def welcome(self, event: ev.Welcome, reconnect: bool) -> None:
        """Registered: the rooms the server put us in, and (after an outage) the others,
        each with what it missed — all before the user's lines held through the outage."""
        history = self.session.history
        # After an outage the rooms known get their catch-up instead of the replay
        # (on a server without rooms: its one conversation).
        alone = reconnect and not len(self.rooms) and not event.rooms
        history.welcome({r.key for r in self.rooms} | ({None} if alone else set()))
        with self.session.outbox.first():
            self._welcome(event, reconnect)
            if alone:
                history.catch_up()

    def _welcome(self, event: ev.Welcome, reconnect: bool) -> None:
        self.joins.clear()
        self.quiet_names.clear()
        self.queued, self._last, self.note = 0, None, None
        self.server_current = self.requested = event.room.lower() if event.room else None
        known = list(self.rooms)
        for name in event.rooms:
            self.rooms.add(name)
        if not reconnect or not known:
            self.switch(self.rooms.get(event.room))
            return
        arrived = {name.lower() for name in event.rooms}
        history = self.session.history
        for room in known:  # the rooms had before, in tab order
            self._join(room.name, rejoin=room.key not in arrived)
            if room.last_id is not None:
                history.catch_up(room.last_id)
        shown = self.rooms.shown
        if shown is self.rooms.home:
            shown = self.rooms.get(event.room) or shown
        self.rooms.show(shown)
        self.requested = None  # so that ensure() asks, whatever the last rejoin was
        self.ensure()

    def participants(self, event: ev.Participants) -> None:
        """Who is in a room you entered (or a server without rooms), and its topic."""
        room = self.rooms.add(event.room) if event.room else self.rooms.home
        room.members = list(event.names)
        room.topic = event.topic
        if event.room:
            self._names(room)
        self.session.changed()

    def current(self, name: str | None) -> None:
        key = name.lower() if name else None
        self.server_current = key
        entry = self.joins.popleft() if self.joins and self.joins[0].key == key else None
        if not self.joins and not self.queued:
            self.requested = key
        room = self.rooms.get(name)
        if room is not None and ((entry is not None and entry.typed)
                                 or self.rooms.shown is self.rooms.home):
            self.rooms.show(room)
        self._show_note()
        self._settle_waiting()

    def join_failed(self) -> None:
        """An error answered a ``/join``."""
        entry = self.joins.popleft() if self.joins else None
        if not self.joins and not self.queued:
            self.requested = self.server_current
        if entry is not None and entry.rejoin:
            self.session.history.skip.discard(entry.key)
            room = self.rooms.remove(entry.key)
            if room is not None:
                self.rooms.pane.error(f"Could not join {room.name} again after the outage "
                                      "(the server said why just above); its tab is closed.")
            if self.rooms.shown is self.rooms.home:
                self.rooms.show(self.rooms.get(self.server_current) or self.rooms.home)
        self._settle_waiting()

    def parted(self, event: ev.Part, line: Line | None) -> None:
        """Someone left a room; if it is you, its tab goes."""
        s = self.session
        room = self.rooms.get(event.room)
        if room is None:
            return
        room.seen(event.id)
        if not same(event.name, s.me):
            room.remove_member(event.name)
            if line is not None:
                s.receiver.show(line, room)
            return
        self.quiet_names = deque(k for k in self.quiet_names if k != room.key)
        self.rooms.remove(room.name)
        if line is not None:
            if self.rooms.shown is self.rooms.home and self.rooms.rooms:
                self.note = line  # the server's ``current`` says which room comes next
            else:
                s.receiver.show(line, self.rooms.shown)
        s.changed()

    def _show_note(self) -> None:
        note, self.note = self.note, None
        if note is not None:
            self.session.receiver.show(note, self.rooms.shown)

    def names(self, event: ev.Names) -> bool:
        """A room's members (with their account marks); ``True`` if it was asked quietly."""
        quiet = bool(self.quiet_names) and self.quiet_names[0] == event.room.lower()
        if quiet:
            self.quiet_names.popleft()
        room = self.rooms.get(event.room)
        if room is not None:
            room.members = [u.name for u in event.users]
            self.session.changed()
        return quiet

    def names_failed(self) -> bool:
        """An error answered a ``/names``; ``True`` if it was asked quietly (say nothing)."""
        if self.quiet_names:
            self.quiet_names.popleft()
            return True
        return False
