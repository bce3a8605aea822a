"""The message pane's state: its lines, kept up to a scrollback limit, and where the view is.

``Pane`` holds the lines the screen shows and an anchor for reading back:
while the anchor is set, new lines are counted as unread and do not move the
view; scrolling to the end clears it. The screen (``app.py``) draws
``visible_lines()``; ``ChatSession`` adds lines.
"""

from __future__ import annotations

from collections.abc import Callable

from client_tui.format import Line, error_line, info_line

#: Pane lines kept; older ones are dropped (the server keeps the history).
SCROLLBACK = 5000


class Pane:
    """Lines and scroll position; ``changed`` is called after every change."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self.changed = changed
        self.lines: list[Line] = []
        #: index of the last visible line while reading back; None = follow the end
        self.anchor: int | None = None
        self.unread = 0

    def add(self, line: Line) -> None:
        self.lines.append(line)
        if self.anchor is not None:
            self.unread += 1
        overflow = len(self.lines) - SCROLLBACK
        if overflow > 0:
            del self.lines[:overflow]
            if self.anchor is not None:
                self.anchor = max(0, self.anchor - overflow)
        self.changed()

    def info(self, text: str) -> None:
        self.add(info_line(text))

    def error(self, text: str) -> None:
        self.add(error_line(text))

    def scroll(self, lines: int) -> None:
        """Move the view by ``lines`` (negative: back in history)."""
        if not self.lines:
            return
        last = len(self.lines) - 1
        anchor = (last if self.anchor is None else self.anchor) + lines
        if anchor >= last:
            self.anchor = None
            self.unread = 0
        else:
            self.anchor = max(0, anchor)
        self.changed()

    def clear(self) -> None:
        self.lines.clear()
        self.anchor, self.unread = None, 0
        self.changed()

    def visible_lines(self) -> list[Line]:
        return self.lines if self.anchor is None else self.lines[: self.anchor + 1]
