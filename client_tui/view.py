"""What part of a conversation the pane shows, counted in screen rows.

A ``View`` lays a ``Scrollback`` out as rows at the pane's width: each line
is a *block* of rows — a date rule when the day changed since the line
before, the read marker if it sits above this line, then the line's own
wrapped rows. Following the end, the pane shows the last rows; reading
back, it shows the rows that end at the *anchor* (a line and a row in its
block), so new lines do not move the view and neither do lines placed above
it. Every move is in rows (PageUp/PageDown one pane less a row), and the
anchor never rests where the pane would be part empty: the pane is always
filled with whole rows from the bottom. While reading back the pane's last
row is left for a bar (the ``Pane`` draws it). When the top row shown is
the middle of a message, it gives way to a marker saying how much is above.
"""

from __future__ import annotations

from client_tui.format import Line, day_label, local_day
from client_tui.scrollback import Scrollback
from client_tui.wrap import Fragments, rule

#: Where a row is: (line index, row within that line's block).
Position = tuple[int, int]

READ_MARKER = "new since you last looked"


class View:
    """The anchor and the read marker of one conversation, and its rows for the screen."""

    def __init__(self, scrollback: Scrollback) -> None:
        self.scrollback = scrollback
        #: the bottom row shown while reading back; ``None``: follow the end
        self.anchor: tuple[Line, int] | None = None
        #: the read marker is drawn just above this line
        self.marker: Line | None = None
        # The size the pane was last drawn at: the size pages are counted in.
        self.width = 80
        self.height = 24

    @property
    def following(self) -> bool:
        return self.anchor is None

    # --- layout ---

    def block(self, i: int) -> list[Fragments]:
        """The rows of line ``i``: a day change, the read marker, then its own rows."""
        lines = self.scrollback.lines
        line = lines[i]
        rows: list[Fragments] = []
        if i > 0 and line.kind != "separator":  # a separator names its date itself
            day = local_day(line.ts)
            if day is not None and day != local_day(lines[i - 1].ts):
                rows.append(rule(day_label(day), self.width, "class:day"))
        if line is self.marker:
            rows.append(rule(READ_MARKER, self.width, "class:marker"))
        rows.extend(line.rows(self.width))
        return rows

    def _end(self) -> Position | None:
        n = len(self.scrollback)
        return (n - 1, len(self.block(n - 1)) - 1) if n else None

    def bottom(self) -> Position | None:
        """The bottom row shown (``None`` when there is nothing to show)."""
        if self.anchor is None:
            return self._end()
        line, row = self.anchor
        i = self.scrollback.index(line)
        if i is None:  # dropped off the top of the scrollback
            return (0, 0) if len(self.scrollback) else None
        return (i, min(row, len(self.block(i)) - 1))

    def _back(self, pos: Position, k: int) -> Position:
        i, r = pos
        while k > r:
            if i == 0:
                return (0, 0)
            k -= r + 1
            i -= 1
            r = len(self.block(i)) - 1
        return (i, r - k)

    def _forward(self, pos: Position, k: int) -> Position | None:
        """``k`` rows further down; ``None`` past the last row."""
        i, r = pos
        n = len(self.scrollback)
        while True:
            size = len(self.block(i))
            if r + k < size:
                return (i, r + k)
            k -= size - r
            i, r = i + 1, 0
            if i >= n:
                return None

    def _rows_above(self, pos: Position, most: int) -> int:
        i, r = pos
        count = r
        while count < most and i > 0:
            i -= 1
            count += len(self.block(i))
        return min(count, most)

    @property
    def reading_rows(self) -> int:
        """Rows of conversation while reading back: the last row of the pane is the bar."""
        return max(1, self.height - 1)

    def _settle(self, pos: Position | None) -> None:
        """Anchor at ``pos``, or follow the end if ``pos`` is (past) the last row.

        An anchor with fewer than a pane of rows above it moves down until
        the pane is full: the top of the scrollback fills the pane.
        """
        end = self._end()
        full = self.reading_rows - 1
        if pos is not None and self._rows_above(pos, full) < full:
            pos = self._forward((0, 0), full)
        if pos is None or end is None or pos >= end:
            self.anchor = None
        else:
            self.anchor = (self.scrollback.lines[pos[0]], pos[1])

    # --- moving ---

    @property
    def page(self) -> int:
        """One pane less a row: the row at one edge stays in view, for context."""
        return max(1, self.reading_rows - 1)

    def up(self, rows: int) -> None:
        pos = self.bottom()
        if pos is not None:
            self._settle(self._back(pos, rows))

    def down(self, rows: int) -> None:
        pos = self.bottom()
        if pos is not None and self.anchor is not None:
            self._settle(self._forward(pos, rows))

    def home(self) -> None:
        if len(self.scrollback):
            self._settle(self._forward((0, 0), self.reading_rows - 1))

    def end(self) -> None:
        self.anchor = None

    def show(self, line: Line) -> None:
        """Bring ``line`` to the top of the pane (or as near as the end allows)."""
        i = self.scrollback.index(line)
        if i is not None:
            self._settle(self._forward((i, 0), self.reading_rows - 1))

    # --- drawing ---

    def screen(self, width: int, height: int) -> list[Fragments]:
        """The conversation's rows for a ``width`` x ``height`` pane, top first.

        As many as fit (``reading_rows`` while reading back); fewer only when
        the whole conversation is shorter.
        """
        self.width, self.height = max(1, width), max(1, height)
        want = self.height if self.anchor is None else self.reading_rows
        pos = self.bottom()
        if pos is None:
            return []
        i, r = pos
        blocks = [self.block(i)[: r + 1]]
        count = len(blocks[0])
        top = i
        while count < want and top > 0:
            top -= 1
            blocks.append(self.block(top))
            count += len(blocks[-1])
        rows = [row for block in reversed(blocks) for row in block]
        if count < want and self.anchor is not None:
            rows += self._below(pos, want - count)  # e.g. the pane grew taller
        if len(rows) <= want:
            return rows
        cut = len(rows) - want  # rows of the top block above the pane
        own_rows = len(self.scrollback.lines[top].rows(self.width))
        hidden = cut - (len(self.block(top)) - own_rows)  # past the date rule and marker
        rows = rows[cut:]
        if hidden > 0 and want >= 3:
            # The top row is the middle of a message: say so, in place of one more row.
            rows[0] = rule(f"\u25b2 {hidden + 1} more rows above \u25b2", self.width,
                           "class:continued")
        return rows

    def _below(self, pos: Position, want: int) -> list[Fragments]:
        i, r = pos
        rows = self.block(i)[r + 1 :]
        while len(rows) < want and i + 1 < len(self.scrollback):
            i += 1
            rows += self.block(i)
        return rows[:want]
