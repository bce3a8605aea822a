"""One conversation as the user reads it: its lines, its view, and what is unread.

A ``Pane`` joins a ``Scrollback`` (the lines, in server order) and a
``View`` (which rows are on screen) and keeps the count of lines said while
the user was not looking — reading back, in another room, or (where the
terminal reports focus) away from the terminal — and of the highlights
among them. Coming back to the end puts the read marker above the first of
them. The session adds lines; the screen (``app.py``) draws ``screen()``
and sends the scrolling keys here. Each room has a ``Pane`` of its own
(``rooms.py``); only the one shown is not ``hidden``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from chat.units import plural
from client_tui.format import Line, error_line, info_line
from client_tui.scrollback import SCROLLBACK, Scrollback
from client_tui.view import View
from client_tui.wrap import Fragments, cells, wrap


class Pane:
    """A conversation's lines, view and unread counts; ``changed`` is called after each change."""

    def __init__(self, changed: Callable[[], None], limit: int = SCROLLBACK) -> None:
        self.changed = changed
        self.scrollback = Scrollback(limit)
        self.view = View(self.scrollback)
        #: lines said (by others) while the user was not looking
        self.unread = 0
        #: highlights among them
        self.unread_highlights = 0
        self._first_unread: Line | None = None
        #: the terminal reported that it lost focus
        self.away = False
        #: another room's pane is on screen
        self.hidden = False

    @property
    def lines(self) -> list[Line]:
        return self.scrollback.lines

    @property
    def reading_back(self) -> bool:
        return not self.view.following

    @property
    def looking(self) -> bool:
        """Whether a line added at the end now is in front of the user."""
        return self.view.following and not self.away and not self.hidden

    # --- adding ---

    def add(self, line: Line) -> bool:
        """Place ``line``; ``False`` if it was here already (same event id)."""
        looking = self.looking
        if not self.scrollback.add(line):
            return False
        if line.said and not looking:
            self.unread += 1
            self.unread_highlights += line.highlight
            if self._first_unread is None:
                self._first_unread = line
        self.changed()
        return True

    def info(self, text: str) -> None:
        self.add(info_line(text))

    def error(self, text: str) -> None:
        self.add(error_line(text))

    def merge(
        self, lines: Sequence[Line], header: Callable[[list[Line]], Line] | None = None
    ) -> list[Line]:
        """Place the lines not already here by id (under ``header``); what was placed."""
        placed = self.scrollback.merge(lines, header)
        if placed:
            self.changed()
        return placed

    def clear(self) -> None:
        self.scrollback.clear()
        self.view.anchor = self.view.marker = self._first_unread = None
        self.unread = self.unread_highlights = 0
        self.changed()

    # --- the user's eyes ---

    def _moved(self) -> None:
        if self.looking:
            self._caught_up()
        self.changed()

    def _caught_up(self) -> None:
        """Back at the end: mark where the unread lines begin, and count them read."""
        first, self._first_unread = self._first_unread, None
        if first is not None and self.scrollback.index(first) is not None:
            self.view.marker = first
        self.unread = self.unread_highlights = 0

    def set_away(self, away: bool) -> None:
        """The terminal lost (``True``) or regained focus."""
        self.away = away
        self._moved()

    def set_hidden(self, hidden: bool) -> None:
        """Another room is shown (``True``), or this one is again."""
        self.hidden = hidden
        self._moved()

    def page_up(self) -> None:
        self.view.up(self.view.page)
        self._moved()

    def page_down(self) -> None:
        self.view.down(self.view.page)
        self._moved()

    def row_up(self) -> None:
        self.view.up(1)
        self._moved()

    def row_down(self) -> None:
        self.view.down(1)
        self._moved()

    def home(self) -> None:
        self.view.home()
        self._moved()

    def end(self) -> None:
        self.view.end()
        self._moved()

    def show(self, line: Line) -> None:
        """Bring ``line`` to the top of the pane (a history block the user asked for)."""
        self.view.show(line)
        self._moved()

    def screen(self, width: int, height: int) -> list[Fragments]:
        """The pane's rows: the conversation, and while reading back a bar under it."""
        rows = self.view.screen(width, height)
        if self.reading_back and height >= 2:
            rows += [[]] * (self.view.reading_rows - len(rows)) + [self.bar()]
        return rows

    def bar(self) -> Fragments:
        """What waits below while reading back, and how to get there (shorter if narrow)."""
        hl = f", {plural(self.unread_highlights, 'highlight')}" if self.unread_highlights else ""
        if not self.unread:
            words = [" \u2193 reading back \u00b7 End or PageDown: the newest ",
                     " \u2193 reading back \u00b7 End: the newest ", " \u2193 End "]
        else:
            below = f" \u2193 {plural(self.unread, 'new message')} below{hl}"
            words = [below + " \u00b7 PageDown / End ", below + " ",
                     f" \u2193 {self.unread} new{hl} "]
        width = self.view.width
        text = next((w for w in words if cells(w) <= width), None)
        if text is None:
            text = wrap([("", words[-1])], width)[0][0][1]
        return [("class:more", text + " " * max(0, width - cells(text)))]
