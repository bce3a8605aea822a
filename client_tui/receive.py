"""The server's typed events (``chat.events``), turned into what the session holds and shows.

``Receiver.handle`` dispatches on the event's class; one this client has no
use for is ignored. A chat event updates the participants and file ids and
becomes a pane line — placed by id, so a line already on screen is never
repeated — unless its sender is on the ignore list; a live highlight rings
the bell, and what is said goes to the local log. ``history`` replies go to
the ``HistoryFlow``, which says where their messages belong (``merge``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chat import events as ev
from chat.units import human_duration, human_size, plural
from client_tui.format import ChatEvent, Line, event_line, separator_line, short_date
from client_tui.history import Placement

if TYPE_CHECKING:
    from client_tui.session import ChatSession


def _same(a: str, b: str) -> bool:
    return a.lower() == b.lower()


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

    def merge(self, events: Sequence[ev.Event], placement: Placement) -> None:
        """History messages into the pane, where their ids put them."""
        s = self.session
        for event in events:
            if isinstance(event, ev.CHAT_EVENTS):
                s.history.seen(event.id)
        lines = [ln for ln in map(self.line, events) if ln is not None]

        def header(fresh: list[Line]) -> Line:
            words = f"{placement.label}: {plural(len(fresh), 'message')} since "
            return separator_line(words + short_date(fresh[0].ts), fresh[0].ts)

        placed = s.pane.merge(lines, header if placement.label else None)
        if placement.log:
            for line in placed:
                if line.id is not None:
                    s.log(line)
        if placement.show and placed:
            s.pane.show(placed[0])
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
        if event.id in s.pane.scrollback.ids:
            return  # already on screen
        match event:
            case ev.Join(name=name) if not any(_same(name, n) for n in s.participants):
                s.participants.append(name)
            case ev.Leave(name=name):
                s.participants = [n for n in s.participants if not _same(n, name)]
            case ev.Nick(old=old, new=new):
                s.participants = [new if _same(n, old) else n for n in s.participants]
                if s.me and _same(old, s.me):
                    s.me = s.name = new
            case ev.FileShared(file_id=file_id):
                s.remember_file(file_id)
        line = self.line(event)
        if line is not None and s.pane.add(line):
            if line.highlight:
                s.attention.highlight()
            s.log(line)

    @handle.register
    def _info(self, event: ev.Info) -> None:
        self.session.pane.info(event.text)

    @handle.register
    def _prompt(self, event: ev.Prompt) -> None:
        self.session.asked_for_name(event.reason)

    @handle.register
    def _welcome(self, event: ev.Welcome) -> None:
        self.session.registered(event.name, event.session)

    @handle.register
    def _participants(self, event: ev.Participants) -> None:
        self.session.participants = list(event.names)
        self.session.history.greeted()
        self.session.changed()

    @handle.register
    def _history(self, event: ev.History) -> None:
        self.session.history.reply(event)

    @handle.register
    def _who(self, event: ev.Who) -> None:
        here = [f"{u.name} (idle {human_duration(u.idle)})" for u in event.users]
        self.session.pane.info(f"Here ({len(here)}): " + ", ".join(here))

    @handle.register
    def _session(self, event: ev.Session) -> None:
        self.session.pane.info(f"Your session key: {event.session}")

    @handle.register
    def _files(self, event: ev.Files) -> None:
        s = self.session
        if not event.files:
            s.pane.info("No files shared yet.")
        for f in event.files:
            s.remember_file(f.file_id)
            s.pane.info(f"  {f.file_id}  {f.name}  ({human_size(f.size)}, from {f.uploader})")

    @handle.register
    def _error(self, event: ev.Error) -> None:
        s = self.session
        if event.command == "history":
            s.history.refused()
        if s.state != "online" and event.code in ("invalid_name", "name_taken"):
            return  # the prompt that follows carries the same reason
        s.pane.error(event.text or event.code)

    @handle.register
    def _bye(self, event: ev.Bye) -> None:
        self.session.goodbye = event.reason

    @handle.register
    def _ping(self, event: ev.Ping) -> None:
        # A silent JSON connection is cut unless it answers (docs/protocol.md, "Limits").
        self.session.send_own(f"/pong {event.token}")
