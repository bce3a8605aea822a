"""One conversation's lines, in the server's order, without duplicates.

Lines from the server carry its event id, and ids are handed out in the
order things happened, so a line is placed by id: just before the first
line with a higher id, after any of the client's own (id-less) lines that
precede it. Live events land at the end; a ``/history`` reply or what a
reconnect fetched lands where it belongs, under one separator line, and a
line already present is skipped (``ids``). The client's own lines (notices,
errors, separators) are appended where they happen. Past ``limit`` lines the
oldest are dropped: the server keeps the history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from client_tui.format import Line

#: Lines kept per conversation; older ones are dropped (the server keeps the history).
SCROLLBACK = 5000


class Scrollback:
    """Lines in server order (``lines``) and the ids among them (``ids``)."""

    def __init__(self, limit: int = SCROLLBACK) -> None:
        self.limit = limit
        self.lines: list[Line] = []
        self.ids: set[int] = set()

    def __len__(self) -> int:
        return len(self.lines)

    def index(self, line: Line) -> int | None:
        """Where ``line`` is, or ``None`` once it was dropped or cleared."""
        try:
            return self.lines.index(line)  # identity: Line compares by ``is``
        except ValueError:
            return None

    def _slot(self, event_id: int) -> int:
        """The index a line with ``event_id`` goes to (searching back from the end,
        where live lines land)."""
        pos = len(self.lines)
        for i in range(len(self.lines) - 1, -1, -1):
            other = self.lines[i].id
            if other is None:
                continue
            if other < event_id:
                break
            pos = i
        return pos

    def add(self, line: Line) -> bool:
        """Place one line (by id if it has one); ``False`` if that id is already here."""
        if line.id is None:
            self.lines.append(line)
        elif line.id in self.ids:
            return False
        else:
            self.lines.insert(self._slot(line.id), line)
            self.ids.add(line.id)
        self._trim()
        return True

    def merge(
        self, lines: Sequence[Line], header: Callable[[list[Line]], Line] | None = None
    ) -> list[Line]:
        """Place the lines not already here, each by id, in one pass.

        ``header(fresh)`` makes the separator that goes just before the first
        of them. Returns what was placed (separator first), oldest first.
        """
        fresh = sorted((ln for ln in lines if ln.id is not None and ln.id not in self.ids),
                       key=lambda ln: ln.id or 0)
        if not fresh:
            return []
        ids = [ln.id or 0 for ln in fresh]
        placed, keys = list(fresh), ids
        if header is not None:  # the separator goes where the first of them goes
            placed, keys = [header(fresh), *fresh], [ids[0], *ids]
        out: list[Line] = []
        k = 0
        for line in self.lines:
            if line.id is not None:
                while k < len(placed) and keys[k] < line.id:
                    out.append(placed[k])
                    k += 1
            out.append(line)
        out.extend(placed[k:])
        self.lines = out
        self.ids.update(ids)
        self._trim()
        return placed

    def clear(self) -> None:
        self.lines = []
        self.ids = set()

    def _trim(self) -> None:
        overflow = len(self.lines) - self.limit
        if overflow > 0:
            for line in self.lines[:overflow]:
                self.ids.discard(line.id)  # type: ignore[arg-type]
            del self.lines[:overflow]
