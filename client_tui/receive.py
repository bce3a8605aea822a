"""The server's typed events (``chat.events``), turned into what the session holds and shows.

``Receiver.handle`` dispatches on the event's class; one this client has no
use for is ignored. A chat event goes to the pane of the room it names —
placed by id, so a line already there is never repeated — unless its sender
is on the ignore list: a leave or a rename to every room the person was in,
a private message or a server-wide notice to the room shown (private
messages belong to no room: they are shown where you are looking). It
updates the rooms' members and topics, the file ids, and which names are
accounts; a live highlight rings the bell once, and what is said goes to
the local log once. Room structure (welcome, participants, current, parts,
names) is ``RoomFlow``'s; ``history`` replies go to the ``HistoryFlow``,
which says where their messages belong (``merge``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from chat import events as ev
from chat.units import human_size, plural
from client_tui import listings
from client_tui.format import ChatEvent, Line, event_line, separator_line, short_date
from client_tui.history import Placement
from client_tui.rooms import Room, same

if TYPE_CHECKING:
    from client_tui.session import ChatSession


class Receiver:
    """Handles each event from the chat connection for one ``ChatSession``."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session

    def line(self, event: ev.Event) -> Line | None:
        """The pane line for ``event``; ``None`` for none, or from someone ignored."""
        s = self.session
        line = event_line(event, s.me)
        if line is None or (not line.own and s.settings.is_ignored(line.sender)):
            return None
        return line

    def log(self, line: Line, room: str | None = None) -> None:
        """Write ``line`` (said in ``room``) to the local log, if there is one (a failing log
        is turned off). The room is named while you are in more than one."""
        s = self.session
        chatlog = s.options.log
        if chatlog is None:
            return
        try:
            chatlog.write(line, room if len(s.rooms) > 1 else None)
        except OSError as e:
            s.options.log = None
            s.pane.error(f"The local log stopped: {e}")

    def show(self, line: Line, room: Room, logged: bool = False) -> bool:
        """Add ``line`` to ``room``'s pane; ring for a live highlight, log it (unless
        ``logged``). ``False`` if it was there already."""
        s = self.session
        if not room.pane.add(line):
            return False
        if not logged:
            if line.highlight:
                s.attention.highlight()
            self.log(line, room.name or None)
        return True

    def _place(self, event: ev.Event, rooms: Iterable[Room]) -> None:
        """``event`` in each of ``rooms`` (a line each), rung and logged once."""
        logged = False
        for room in rooms:
            line = self.line(event)
            if line is None:
                return
            logged = self.show(line, room, logged) or logged

    def _room(self, name: str | None) -> Room:
        """The room an event names (made if new); the room shown for none."""
        rooms = self.session.rooms
        return rooms.add(name) if name else rooms.shown

    def _account(self, name: str, account: bool) -> None:
        accounts = self.session.accounts
        if account:
            accounts.add(name.lower())
        else:
            accounts.discard(name.lower())

    def merge(self, events: Sequence[ev.Event], placement: Placement, room: str | None) -> None:
        """History messages into ``room``'s pane, where their ids put them."""
        s = self.session
        target = s.rooms.get(room) if room else s.rooms.home if not len(s.rooms) else s.rooms.shown
        if target is None:
            return  # the history of a room left since it was asked for
        for event in events:
            if isinstance(event, ev.CHAT_EVENTS):
                s.history.seen(event.id)
                target.seen(event.id)
        lines = [ln for ln in map(self.line, events) if ln is not None]

        def header(fresh: list[Line]) -> Line:
            words = f"{placement.label}: {plural(len(fresh), 'message')} since "
            return separator_line(words + short_date(fresh[0].ts), fresh[0].ts)

        placed = target.pane.merge(lines, header if placement.label else None)
        if placement.log:
            for line in placed:
                if line.id is not None:
                    self.log(line, target.name or None)
        if placement.show and placed:
            target.pane.show(placed[0])
        elif placement.report and not placed:
            s.pane.info(f"All {plural(len(events), 'message')} are already in the pane."
                        if events else "No messages yet.")

    @functools.singledispatchmethod
    def handle(self, event: ev.Event) -> None:
        """One event from the server. Those with no handler (proto, uploaded...) need none."""

    @handle.register
    def _chat(self, event: ChatEvent) -> None:
        s = self.session
        s.history.seen(event.id)
        rooms = s.rooms
        match event:
            case ev.Part():
                s.roomflow.parted(event, self.line(event))
                return
            case ev.Private() | ev.Notice(room=None):
                targets = [rooms.shown]
            case ev.Leave(name=name):
                targets = rooms.with_member(name) or [rooms.shown]
                for room in targets:
                    room.remove_member(name)
                s.accounts.discard(name.lower())
            case ev.Nick(old=old, new=new):
                targets = rooms.with_member(old) or [rooms.shown]
                for room in targets:
                    room.rename_member(old, new)
                s.accounts.discard(old.lower())  # an account's name cannot change
                if same(old, s.me):
                    s.me = s.name = new
            case ev.Join(name=name, room=room_name, account=account):
                targets = [self._room(room_name)]
                targets[0].add_member(name)
                self._account(name, account)
            case ev.Message(sender=who, room=room_name, account=account) | ev.Action(
                    sender=who, room=room_name, account=account):
                targets = [self._room(room_name)]
                self._account(who, account)
            case ev.Topic(room=room_name, topic=topic):
                targets = [self._room(room_name)]
                targets[0].topic = topic
            case ev.FileShared(file_id=file_id, room=room_name):
                s.remember_file(file_id)
                targets = [self._room(room_name)]
            case ev.Removed(file_id=file_id, room=room_name):
                s.file_ids = [f for f in s.file_ids if f != file_id]
                targets = [self._room(room_name)]
            case _:
                targets = [self._room(getattr(event, "room", None))]
        for room in targets:
            room.seen(event.id)
        self._place(event, targets)
        s.changed()

    @handle.register
    def _info(self, event: ev.Info) -> None:
        self.session.pane.info(event.text)

    @handle.register
    def _prompt(self, event: ev.Prompt) -> None:
        self.session.login.prompt(event)

    @handle.register
    def _welcome(self, event: ev.Welcome) -> None:
        self.session.registered(event)

    @handle.register
    def _participants(self, event: ev.Participants) -> None:
        self.session.roomflow.participants(event)
        self.session.history.greeted()

    @handle.register
    def _current(self, event: ev.Current) -> None:
        self.session.roomflow.current(event.room)

    @handle.register
    def _history(self, event: ev.History) -> None:
        self.session.history.reply(event)

    @handle.register
    def _who(self, event: ev.Who) -> None:
        for user in event.users:
            self._account(user.name, user.account)
        self.session.pane.info(listings.who_text(event))

    @handle.register
    def _names(self, event: ev.Names) -> None:
        for user in event.users:
            self._account(user.name, user.account)
        if not self.session.roomflow.names(event):
            self.session.pane.info(listings.names_text(event))

    @handle.register
    def _rooms(self, event: ev.Rooms) -> None:
        for text in listings.rooms_lines(event):
            self.session.pane.info(text)

    @handle.register
    def _roominfo(self, event: ev.RoomInfo) -> None:
        self.session.pane.info(listings.topic_text(event))

    @handle.register
    def _invited(self, event: ev.Invited) -> None:
        s = self.session
        s.pane.info(f"{event.by} invites you to {event.room}: /join {event.room} to go in "
                    "(the invitation lasts a day).")
        s.attention.highlight()

    @handle.register
    def _bans(self, event: ev.BanList) -> None:
        for text in listings.bans_lines(event):
            self.session.pane.info(text)

    @handle.register
    def _session(self, event: ev.Session) -> None:
        self.session.pane.info(f"Your session key: {event.session}")

    @handle.register
    def _files(self, event: ev.Files) -> None:
        s = self.session
        if not event.files:
            s.pane.info("No files shared yet.")
        for f in event.files:
            if not f.removed:
                s.remember_file(f.file_id)
            gone = ", removed" if f.removed else ""
            s.pane.info(f"  {f.file_id}  {f.name}  ({human_size(f.size)}, from {f.uploader}"
                        f"{gone})")

    @handle.register
    def _error(self, event: ev.Error) -> None:
        s = self.session
        if event.command == "history":
            s.history.refused()
        elif event.command == "names" and s.roomflow.names_failed():
            return  # a quiet question: nobody asked to see this
        if s.state != "online" and s.login.error(event):
            return  # the prompt that follows carries the same reason
        s.pane.error(event.text or event.code)
        if event.command == "join":
            s.roomflow.join_failed()

    @handle.register
    def _bye(self, event: ev.Bye) -> None:
        self.session.goodbye = event.reason

    @handle.register
    def _ping(self, event: ev.Ping) -> None:
        # A silent JSON connection is cut unless it answers (docs/protocol.md, "Limits").
        self.session.send_own(f"/pong {event.token}")
