"""The console's view as data: a ``Snapshot`` of the server, rendered into lines.

``Snapshot`` is a plain copy of what the server is doing (its rows:
``UserRow``, ``RoomRow``, ``TransferRow``, the chat log's ``Entry``s);
``render(snapshot, width, height)`` is a pure function that turns it into
exactly ``height`` lines of coloured ``Segment``s, none wider than ``width``
columns (``text_width`` counts terminal columns, wide and unprintable
characters too; ``line_text`` is a line's visible text). No I/O and no
escape sequences: drawing the lines on a terminal is
``chat.consoleterminal``'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from wcwidth import wcwidth

from chat.units import human_duration, human_size

# --- what the view is made of ---


class Segment(NamedTuple):
    """A run of text in one colour (a clint colour name, or None for the default)."""

    text: str
    colour: str | None = None
    bold: bool = False


Line = list[Segment]

#: Stands in for rows that are counted but can never be on screen.
_BLANK: Line = []


def line_text(line: Sequence[Segment]) -> str:
    """The visible text of a line, for tests and text captures."""
    return "".join(s.text for s in line)


def text_width(text: str) -> int:
    if text.isascii():  # the common case, and a hundred times faster
        return len(text)
    return sum(_char_width(c) for c in text)


def _char_width(c: str) -> int:
    # Anything wcwidth calls unprintable is shown as one "?" column (see _fit).
    w = wcwidth(c)
    return 1 if w < 0 else w


def _fit(segments: Iterable[Segment], width: int) -> Line:
    """Cut a line to ``width`` terminal columns, ending in "…" when cut."""
    segments = list(segments)
    if all(s.text.isascii() and s.text.isprintable() for s in segments):
        if sum(len(s.text) for s in segments) <= width:
            return segments
    out: Line = []
    used = 0
    total = sum(text_width(s.text) for s in segments)
    limit = width if total <= width else max(0, width - 1)
    for seg in segments:
        chars: list[str] = []
        for c in seg.text:
            w = wcwidth(c)
            if w < 0:
                # Control characters are scrubbed long before this; a stray
                # one must still never reach the terminal raw.
                c, w = "?", 1
            if used + w > limit:
                break
            chars.append(c)
            used += w
        if chars:
            out.append(seg._replace(text="".join(chars)))
        if used >= limit and total > width:
            break
    if total > width and width > 0:
        out.append(Segment("…"))
    return out


# --- a snapshot of the server ---


@dataclass(frozen=True)
class UserRow:
    name: str
    address: str
    mode: str
    connected: float
    idle: float


@dataclass(frozen=True)
class TransferRow:
    user: str
    name: str
    direction: str
    size: int
    done: int
    elapsed: float


@dataclass(frozen=True)
class RoomRow:
    name: str
    members: int
    per_minute: int
    topic: str
    private: bool = False


@dataclass(frozen=True)
class Entry:
    """One line of the chat log: ``kind`` picks the colour."""

    kind: str
    text: str
    ts: float | None = None


@dataclass(frozen=True)
class Snapshot:
    addresses: tuple[tuple[str, str], ...] = ()
    uptime: float = 0.0
    users: tuple[UserRow, ...] = ()
    rooms: tuple[RoomRow, ...] = ()
    messages: int = 0
    rate: float = 0.0
    privates: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    chat: tuple[Entry, ...] = ()
    log: tuple[str, ...] = ()
    transfers: tuple[TransferRow, ...] = ()
    status: Entry | None = None
    input: str = ""
    notes: tuple[tuple[str, str], ...] = ()
    store: str = ""


# --- rendering: a pure function of a snapshot and a size ---

#: kind of log entry -> (colour, bold)
STYLE: dict[str, tuple[str | None, bool]] = {
    "join": ("green", False),
    "leave": ("red", False),
    "part": ("red", False),
    "topic": ("yellow", False),
    "message": (None, False),
    "action": (None, False),
    "nick": ("yellow", False),
    "notice": ("cyan", True),
    "file": ("magenta", False),
    "private": ("blue", False),
    "console": ("cyan", False),
    "error": ("red", True),
}


def _clock(ts: float | None) -> str:
    return time.strftime("%H:%M:%S ", time.localtime(ts)) if ts is not None else ""


def _title(text: str, width: int) -> Line:
    head = f"── {text} "
    return [Segment(head + "─" * max(0, width - text_width(head)), "cyan", True)]


def _rate(n: float) -> str:
    return f"{n:.0f}" if n >= 100 else f"{n:.1f}"


#: Header note kind -> colour.
NOTE_COLOUR = {"tls": "green", "warning": "red"}


def _header(s: Snapshot) -> list[Line]:
    first: Line = [Segment("lanchat", "cyan", True)]
    if s.addresses:
        for name, address in s.addresses:
            first += [Segment(f"  {name} "), Segment(address, "yellow", True)]
    else:
        first.append(Segment("  (not listening yet)"))
    first.append(Segment(f"  up {human_duration(s.uptime)}"))
    second: Line = [
        Segment("users "), Segment(str(len(s.users)), None, True),
        Segment("  msg/s "), Segment(_rate(s.rate), None, True),
        Segment(f"  messages {s.messages}  private {s.privates}"),
        Segment(f"  in {human_size(s.bytes_in)}  out {human_size(s.bytes_out)}"),
    ]
    if s.store:
        second.append(Segment(f"  {s.store}"))
    notes = [[Segment(text, NOTE_COLOUR.get(kind), kind == "warning")] for kind, text in s.notes]
    return [first, second, *notes]


def _cell(text: str, width: int) -> str:
    """``text`` cut or padded to exactly ``width`` columns."""
    fitted = line_text(_fit([Segment(text)], width))
    return fitted + " " * (width - text_width(fitted))


def _user_rows(users: Sequence[UserRow], limit: int) -> list[Line]:
    """The table: column names, then a row per user (rows past ``limit`` left blank)."""
    if not users:
        return [[Segment("(nobody is connected)")]]
    nw = min(20, max(4, *(text_width(u.name) for u in users)))
    aw = min(28, max(7, *(text_width(u.address) for u in users)))
    head = f"{_cell('NAME', nw)}  {_cell('ADDRESS', aw)}  MODE  CONNECTED  IDLE"
    rows: list[Line] = [[Segment(head, None, True)]]
    for u in users[:limit]:
        rows.append([
            Segment(_cell(u.name, nw), None, True),
            Segment(f"  {_cell(u.address, aw)}  {u.mode:<4}  "
                    f"{human_duration(u.connected):>9}  {human_duration(u.idle)}"),
        ])
    # Rows that cannot be on screen only need to be counted, not formatted.
    rows += [_BLANK] * len(users[limit:])
    return rows


def _room_rows(rooms: Sequence[RoomRow], limit: int) -> list[Line]:
    """The rooms table: column names, then a row per room (rows past ``limit`` left blank)."""
    if not rooms:
        return [[Segment("(no rooms)")]]
    nw = min(24, max(4, *(text_width(r.name) for r in rooms)))
    rows: list[Line] = [[Segment(f"{_cell('ROOM', nw)}  MEMBERS  MSG/MIN  TOPIC", None, True)]]
    for r in rooms[:limit]:
        rows.append([
            Segment(_cell(r.name, nw), None, True),
            Segment(f"  {r.members:>7}  {r.per_minute:>7}  "),
            Segment("(private) " if r.private else "", "yellow"),
            Segment(r.topic),
        ])
    rows += [_BLANK] * len(rooms[limit:])
    return rows


def _progress(t: TransferRow, width: int) -> Line:
    pct = 100 if t.size <= 0 else min(100, t.done * 100 // t.size)
    rate = t.done / t.elapsed if t.elapsed > 0 else 0.0
    left = (
        human_duration((t.size - t.done) / rate) + " left" if rate > 0 and t.done < t.size
        else "--"
    )
    arrow = "↑ up  " if t.direction == "up" else "↓ down"
    tail = f" {pct:3d}% {human_size(int(rate)) + '/s':>11} {left:>11}"
    head = f"{_cell(t.user, 12)} "
    # The bar takes what the name does not need, between 5 and 30 columns.
    name_w = max(8, min(24, text_width(t.name)))
    bar_w = max(5, min(30, width - len(head) - name_w - len(arrow) - len(tail) - 5))
    filled = bar_w * pct // 100
    return [
        Segment(head, None, True),
        Segment(_cell(t.name, name_w) + " "),
        Segment(arrow + " "),
        Segment("[" + "#" * filled, "green"),
        Segment("-" * (bar_w - filled) + "]"),
        Segment(tail),
    ]


def _entry_line(e: Entry) -> Line:
    colour, bold = STYLE.get(e.kind, (None, False))
    return [Segment(_clock(e.ts)), Segment(e.text, colour, bold)]


class _Section:
    """A titled block of rows and how many of them fit."""

    def __init__(
        self, title: str, rows: list[Line], keep_last: bool, visible: bool, fixed: int = 0
    ) -> None:
        self.title = title
        self.rows = rows
        self.keep_last = keep_last
        #: Leading rows that are not data (a table's column names).
        self.fixed = fixed
        self.visible = visible and bool(rows)
        self.shown = 0

    def grow(self, space: int, cap: int | None = None) -> int:
        """Show up to ``space`` more rows (at most ``cap`` in all); return how many."""
        most = len(self.rows) if cap is None else min(len(self.rows), max(cap, self.shown))
        extra = max(0, min(space, most - self.shown))
        self.shown += extra
        return extra

    def lines(self, width: int) -> list[Line]:
        rows = self.rows
        n = self.shown
        if self.keep_last:
            body = rows[len(rows) - n:] if n else []
        elif n < len(rows):
            # An overflowing table ends with a count of what did not fit.
            hidden = len(rows) - max(n - 1, self.fixed)
            body = [*rows[: n - 1], [Segment(f"… and {hidden} more", "yellow")]]
        else:
            body = rows
        return [_title(self.title, width), *body]


def render(s: Snapshot, width: int, height: int) -> list[Line]:
    """The whole view: exactly ``height`` lines, none wider than ``width`` columns."""
    if width <= 0 or height <= 0:
        return []
    head = _header(s)
    if s.status is not None:
        colour, bold = STYLE.get(s.status.kind, (None, False))
        status: Line = [Segment(s.status.text, colour, bold)]
    else:
        status = [Segment("Type /help for the admin commands.")]
    # The tail of what is being typed stays visible, like any input line.
    typed = s.input
    while typed and text_width(typed) > width - 3:
        typed = typed[1:]
    prompt: Line = [Segment("> ", "cyan", True), Segment(typed)]
    if height < 5 + len(head) - 2:
        small = [*head[:2], status, prompt]
        out = small[len(small) - height:] if height < 4 else small
        return [_fit(line, width) for line in out]

    users = _Section(
        f"Users ({len(s.users)})", _user_rows(s.users, height), False, True,
        fixed=1 if s.users else 0,
    )
    rooms = _Section(
        f"Rooms ({len(s.rooms)})", _room_rows(s.rooms, height), False, bool(s.rooms), fixed=1
    )
    transfers = _Section(
        f"Transfers ({len(s.transfers)})",
        [_progress(t, width) for t in s.transfers[:height]] + [_BLANK] * len(s.transfers[height:]),
        False, True,
    )
    chat_rows = [_entry_line(e) for e in s.chat[-height:]] or [[Segment("(nothing said yet)")]]
    chat = _Section("Chat", chat_rows, True, True)
    log = _Section("Server log", [[Segment(line)] for line in s.log], True, True)

    space = height - len(head) - 2
    # Every visible section gets its title and one row first, most useful first.
    for sec in (chat, users, rooms, transfers, log):
        if sec.visible and space >= 2:
            sec.shown = 1
            space -= 2
        else:
            sec.visible = sec.visible and sec.shown > 0
    body_height = height - len(head) - 2
    space -= users.grow(space, max(2, body_height * 2 // 5)) if users.visible else 0
    space -= rooms.grow(space, max(2, body_height // 5)) if rooms.visible else 0
    space -= transfers.grow(space, max(1, body_height // 4)) if transfers.visible else 0
    space -= log.grow(space, 3) if log.visible else 0
    space -= chat.grow(space) if chat.visible else 0
    # A quiet chat leaves room: the tables may use it after all.
    for sec in (users, rooms, transfers, log):
        if sec.visible:
            space -= sec.grow(space)

    body: list[Line] = []
    for sec in (users, rooms, transfers, chat, log):
        if sec.visible:
            body += sec.lines(width)
    body += [[] for _ in range(space)]
    return [_fit(line, width) for line in (*head, *body, status, prompt)]
