"""The operator's live view of a running server, and the admin commands typed into it.

The console is split so that almost all of it is testable without a terminal:
``Snapshot`` is a plain copy of what the server is doing, taken from a
``Sources`` (the chat service, the file store, the listening ports);
``render(snapshot, width, height)`` is a pure function that turns it into
exactly ``height`` lines of coloured ``Segment``s, none wider than ``width``
columns; ``Throttle`` coalesces any number of changes into at most
``refresh_per_second`` redraws on the reactor clock, so the per-message cost
is one attribute check; ``AdminProtocol`` reads edited command lines from
``twisted.internet.stdio``; ``Screen`` turns lines into escape sequences (the
only place clint is used, with the stream passed in); and ``Console`` ties them
together, doubles as the ``twisted.logger`` observer so log lines land in the
view (scrubbed, and appended to ``DATA/server.log``) instead of scribbling over
it, and puts the terminal back the way it found it on exit.
"""

from __future__ import annotations

import codecs
import os
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from clint.textui import colored
from twisted.internet import protocol, task
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime
from twisted.logger import ILogObserver, LogEvent, formatEvent, textFileLogObserver
from wcwidth import wcwidth
from zope.interface import implementer

from chat import events as ev
from chat.config import ConsoleSettings
from chat.console_commands import ConsoleCommands
from chat.sanitize import clean, for_log
from chat.units import human_duration, human_size, plural

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


# --- keeping redraws off the message path ---


class Throttle:
    """Coalesces ``mark()`` calls into at most one ``action()`` per ``interval``.

    ``mark`` is what the chat path pays per event: while a redraw is already
    due it returns after one attribute check.
    """

    def __init__(self, clock: IReactorTime, interval: float, action: Callable[[], None]) -> None:
        self.clock = clock
        self.interval = interval
        self.action = action
        self._dirty = False
        self._call: Any = None
        self._last = -interval

    def mark(self) -> None:
        if self._dirty:
            return
        self._dirty = True
        if self._call is None:
            delay = max(0.0, self._last + self.interval - self.clock.seconds())
            self._call = self.clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._call = None
        self._dirty = False
        self._last = self.clock.seconds()
        self.action()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._dirty = False


# --- where the numbers come from ---


@dataclass
class Sources:
    """What the console reads: the pieces of a running ``ChatServer``."""

    service: Any  # chat.service.ChatService
    files: Any  # chat.transfer.FileStore
    ports: dict[str, Any]
    started: float
    admin: Any = None  # chat.admin.Admin
    #: What the header keeps saying: (kind, text), e.g. the TLS fingerprint.
    notes: list[tuple[str, str]] = field(default_factory=list)
    file_service: Any = None  # chat.files.FileService

    @classmethod
    def of(cls, server: Any) -> Sources:
        assert server.service is not None and server.factory is not None
        return cls(server.service, server.factory.files.store, server.ports, server.started,
                   server.factory.admin, server.notes, server.factory.files)

    def store_line(self, now: float) -> str:
        """Files kept, their bytes, free disk, and what the last sweep did."""
        fs = self.file_service
        if fs is None:
            return ""
        try:
            free = human_size(shutil.disk_usage(fs.store.root).free)
        except OSError:
            free = "?"
        line = f"store {plural(fs.count, 'file')} {human_size(fs.bytes)}, {free} free"
        swept = fs.last_sweep
        if swept is not None:
            line += (f"; swept {human_duration(now - swept.at)} ago: {swept.expired} expired, "
                     f"{swept.partials} partial")
        return line

    def addresses(self) -> tuple[tuple[str, str], ...]:
        out = []
        for name in ("chat", "http"):
            port = self.ports.get(name)
            if port is not None:
                host = port.getHost()
                h = getattr(host, "host", str(host))
                out.append((name, f"[{h}]:{host.port}" if ":" in h else f"{h}:{host.port}"))
        return tuple(out)


class _PrivateRun:
    """Consecutive private messages, kept as a count: the operator never reads them."""

    __slots__ = ("count", "ts")

    def __init__(self, ts: float) -> None:
        self.count = 1
        self.ts = ts


def entry_for(item: ev.Event | _PrivateRun | Entry) -> Entry:
    """The chat-log line for one remembered item; user text scrubbed again for safety."""
    if isinstance(item, Entry):
        return item
    if isinstance(item, _PrivateRun):
        s = "" if item.count == 1 else "s"
        return Entry("private", f"({item.count} private message{s})", item.ts)
    e = item
    room = getattr(e, "room", None)
    where = f"[{for_log(room)}] " if room else ""
    if isinstance(e, ev.Message):
        return Entry("message", f"{where}<{for_log(e.sender)}> {for_log(e.text)}", e.ts)
    if isinstance(e, ev.Action):
        return Entry("action", f"{where}* {for_log(e.sender)} {for_log(e.text)}", e.ts)
    if isinstance(e, ev.Join):
        return Entry("join", f"{where}→ {for_log(e.name)} joined", e.ts)
    if isinstance(e, ev.Part):
        why = f" ({for_log(e.reason)})" if e.reason else ""
        return Entry("part", f"{where}← {for_log(e.name)} left the room{why}", e.ts)
    if isinstance(e, ev.Topic):
        return Entry("topic", f"{where}{for_log(e.by)} set the topic: {for_log(e.topic)}", e.ts)
    if isinstance(e, ev.Leave):
        return Entry("leave", f"← {for_log(e.name)} left ({for_log(e.reason)})", e.ts)
    if isinstance(e, ev.Nick):
        return Entry("nick", f"{for_log(e.old)} is now {for_log(e.new)}", e.ts)
    if isinstance(e, ev.Notice):
        return Entry("notice", f"{where}notice: {for_log(e.text)}", e.ts)
    if isinstance(e, ev.FileShared):
        return Entry(
            "file",
            f"{where}{for_log(e.sender)} shared {for_log(e.name)} ({human_size(e.size)}) "
            f"{e.file_id}",
            e.ts,
        )
    if isinstance(e, ev.Removed):
        return Entry("file", f"{where}{for_log(e.by)} removed {for_log(e.name)} {e.file_id}", e.ts)
    return Entry("console", for_log(type(e).__name__), None)


# --- the terminal ---

_ENTER = "\x1b[?1049h\x1b[H\x1b[2J"
_LEAVE = "\x1b[0m\x1b[?25h\x1b[?1049l"
_PAINT: dict[str, Callable[..., Any]] = {
    name: getattr(colored, name)
    for name in ("red", "green", "yellow", "blue", "magenta", "cyan", "white")
}


def paint(seg: Segment) -> str:
    """A segment with its colour, as escape sequences (clint's, forced on)."""
    if seg.colour is not None:
        return str(_PAINT[seg.colour](seg.text, always=True, bold=seg.bold).color_str)
    if seg.bold:
        return f"\x1b[1m{seg.text}\x1b[22m"
    return seg.text


class Screen:
    """Draws frames on a terminal, rewriting only the lines that changed."""

    def __init__(self, write: Callable[[bytes], None], size: Callable[[], tuple[int, int]]):
        self.write = write
        self.size = size
        self._previous: list[str] = []
        self._full = True

    def enter(self) -> None:
        self.write(_ENTER.encode())
        self.invalidate()

    def invalidate(self) -> None:
        """The next frame repaints everything (after a resize)."""
        self._full = True

    def show(self, lines: Sequence[Line], cursor_col: int) -> None:
        frame = ["".join(paint(seg) for seg in line) for line in lines]
        out: list[str] = []
        previous = self._previous
        if self._full:
            out.append("\x1b[0m\x1b[H\x1b[2J")
            previous = []
            self._full = False
        for row, text in enumerate(frame):
            if row < len(previous) and previous[row] == text:
                continue
            out.append(f"\x1b[{row + 1};1H{text}\x1b[0m\x1b[K")
        if len(previous) > len(frame):
            out.append(f"\x1b[{len(frame) + 1};1H\x1b[J")
        # The cursor waits at the end of what the operator is typing.
        out.append(f"\x1b[{max(1, len(frame))};{max(1, cursor_col)}H")
        self._previous = frame
        self.write("".join(out).encode("utf-8"))

    def leave(self) -> None:
        self.write(_LEAVE.encode())


def terminal_size(fd: int = 1) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return size.columns, size.lines


# --- admin input ---

#: The longest command line the console keeps (a paste beyond it is cut).
MAX_INPUT = 4096


@implementer(IHalfCloseableProtocol)
class AdminProtocol(protocol.Protocol):
    """Edited command lines from stdin.

    The terminal is in cbreak mode (no echo, no line discipline), so this is
    the line editor: printable text appends, Backspace and Ctrl-U erase, CR or
    LF ends the line (CRLF counts once). Piped input works the same way.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.buffer = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._after_cr = False

    def dataReceived(self, data: bytes) -> None:
        for ch in self._decoder.decode(data):
            if ch in "\r\n":
                if ch == "\n" and self._after_cr:
                    self._after_cr = False
                    continue
                self._after_cr = ch == "\r"
                line, self.buffer = clean(self.buffer), ""
                self.console.command(line)
                continue
            self._after_cr = False
            if ch in "\x7f\x08":
                self.buffer = clean(self.buffer)[:-1]
            elif ch == "\x15":
                self.buffer = ""
            elif len(self.buffer) < MAX_INPUT:
                # Escape sequences (arrow keys) are kept raw and scrubbed
                # whole by clean(), so no "[A" is left behind.
                self.buffer += ch
        self.console.set_input(clean(self.buffer))

    def readConnectionLost(self) -> None:
        # stdin closed (redirected from /dev/null, say): the view stays up.
        self.console.input_closed()

    def writeConnectionLost(self) -> None:
        pass


# --- the console ---


@implementer(ILogObserver)
class Console:
    """The live view, the admin commands, and the log observer while it is up."""

    #: Seconds of message counts the msg/s figure averages over.
    RATE_WINDOW = 5.0

    def __init__(
        self,
        settings: ConsoleSettings,
        clock: IReactorTime,
        *,
        fallback: TextIO | None = None,
        stop: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.stop = stop
        self.chat: deque[ev.Event | _PrivateRun | Entry] = deque(maxlen=settings.log_lines)
        self.log: deque[str] = deque(maxlen=settings.log_lines)
        self.privates = 0
        self.status: Entry | None = None
        self.input = ""
        self.sources: Sources | None = None
        self.screen: Screen | None = None
        self.active = False
        self.draws = 0
        self.throttle = Throttle(clock, 1.0 / settings.refresh_per_second, self.draw)
        # Uptime, idle times and progress move without events: a slow tick.
        self._ticker = task.LoopingCall(self.throttle.mark)
        self._ticker.clock = clock
        self._samples: deque[tuple[float, int]] = deque()
        self._fallback = textFileLogObserver(fallback) if fallback is not None else None
        self._log_file: TextIO | None = None
        self._terminal: _Terminal | None = None
        self.commands = ConsoleCommands(self)

    # --- life ---

    def attach(self, sources: Sources, screen: Screen | None, log_path: Path | None = None) -> None:
        """Start showing ``sources`` on ``screen`` (None: keep state, draw nothing)."""
        self.sources = sources
        self.screen = screen
        if log_path is not None:
            self._log_file = open(log_path, "a", encoding="utf-8")
        sources.service.observers.append(self.observe)
        self.active = True
        if screen is not None:
            screen.enter()
        self._ticker.start(1.0, now=False)
        self.throttle.mark()

    def detach(self) -> None:
        if not self.active:
            return
        self.active = False
        if self._ticker.running:
            self._ticker.stop()
        self.throttle.stop()
        if self.sources is not None and self.observe in self.sources.service.observers:
            self.sources.service.observers.remove(self.observe)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def start_terminal(self, server: Any, reactor: Any) -> None:
        """Take over the process's terminal: used by ``chat-server`` only."""
        self.stop = reactor.stop
        self._terminal = _Terminal(self, reactor)
        self._terminal.open()
        log_path = server.config.data_path / "server.log"
        self.attach(Sources.of(server), self._terminal.screen, log_path)

    def close(self) -> None:
        """Stop drawing and give the terminal back (safe to call twice)."""
        self.detach()
        if self._terminal is not None:
            terminal, self._terminal = self._terminal, None
            terminal.close()
            tail = list(self.log)[-5:]
            if tail:
                # What the alternate screen took away: the last words of the log.
                sys.stdout.write("".join(line + "\n" for line in tail))
                sys.stdout.flush()

    # --- events ---

    def observe(self, event: ev.Event) -> None:
        """ChatService observer: runs once per chat event, so it stays O(1)."""
        if type(event) is ev.Private:
            self.privates += 1
            last = self.chat[-1] if self.chat else None
            if isinstance(last, _PrivateRun):
                last.count += 1
            else:
                self.chat.append(_PrivateRun(event.ts))
        else:
            self.chat.append(event)
        self.throttle.mark()

    def __call__(self, event: LogEvent) -> None:
        """twisted.logger observer: into the view while it is up, else to the fallback."""
        if not self.active and self._fallback is not None:
            self._fallback(event)
        try:
            # The message is one line whatever its fields hold (for_log escapes
            # newlines, so a user name cannot forge a log line); only a
            # traceback spans several.
            lines = [for_log(formatEvent(event))]
            failure = event.get("log_failure")
            if failure is not None:
                lines += [for_log(ln) for ln in failure.getTraceback().splitlines() if ln.strip()]
        except Exception:  # a log observer that raises is removed by twisted
            lines = [f"(unformattable log event {for_log(event.get('log_format'))})"]
        when = event.get("log_time") or time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(when))
        for line in lines:
            self.log.append(f"{stamp} {line}")
        if self.active and self._log_file is not None:
            day = time.strftime("%Y-%m-%d ", time.localtime(when))
            self._log_file.write("".join(f"{day}{stamp} {line}\n" for line in lines))
            self._log_file.flush()
        self.throttle.mark()

    # --- the view ---

    def snapshot(self, lines: int | None = None) -> Snapshot:
        """The state now; ``lines`` caps the chat and log lines (a screen's height)."""
        src = self.sources
        now = self.clock.seconds()
        recent = list(self.chat) if lines is None else list(self.chat)[-lines:]
        chat = tuple(entry_for(i) for i in recent)
        log = tuple(self.log) if lines is None else tuple(self.log)[-lines:]
        if src is None:
            return Snapshot(chat=chat, log=log, status=self.status, input=self.input,
                            privates=self.privates)
        stats = src.service.stats
        users = tuple(
            UserRow(u.name, u.address, getattr(u.peer, "mode", "?"), now - u.joined,
                    now - u.last_active)
            for u in src.service.registry
        )
        transfers = tuple(
            TransferRow(t.user, t.name, t.direction, t.size, t.done, now - t.started)
            for t in list(src.files.active.values())
        )
        rooms_ = src.service.rooms
        listed = sorted(rooms_.rooms.values(), key=lambda r: (-len(r.members), r.key))
        rooms = tuple(
            RoomRow(r.name, len(r.members), rooms_.per_minute(r), for_log(r.topic), r.private)
            for r in listed
        )
        return Snapshot(
            addresses=src.addresses(),
            uptime=now - src.started,
            users=users,
            rooms=rooms,
            messages=stats.messages,
            rate=self._rate(now, stats.messages),
            privates=self.privates,
            bytes_in=stats.bytes_in,
            bytes_out=stats.bytes_out,
            chat=chat,
            log=log,
            transfers=transfers,
            status=self.status,
            input=self.input,
            notes=tuple(src.notes),
            store=src.store_line(now),
        )

    def _rate(self, now: float, count: int) -> float:
        samples = self._samples
        samples.append((now, count))
        while len(samples) > 2 and now - samples[1][0] >= self.RATE_WINDOW:
            samples.popleft()
        t0, c0 = samples[0]
        return (count - c0) / (now - t0) if now > t0 else 0.0

    def draw(self) -> None:
        if not self.active or self.screen is None:
            return
        width, height = self.screen.size()
        snap = self.snapshot(height)
        typed = min(text_width(snap.input), max(0, width - 3))
        self.screen.show(render(snap, width, height), 3 + typed)
        self.draws += 1

    def resized(self) -> None:
        if self.screen is not None:
            self.screen.invalidate()
        self.throttle.mark()

    def set_input(self, text: str) -> None:
        if text != self.input:
            self.input = text
            self.throttle.mark()

    def input_closed(self) -> None:
        self.say("stdin is closed: admin commands are off; stop the server with a signal.")

    # --- admin commands ---

    def say(self, text: str, kind: str = "console", *, log: bool = True) -> None:
        """Show a command's result in the status line (and, with ``log``, the chat log)."""
        entry = Entry(kind, text, self.clock.seconds())
        self.status = entry
        if log:
            self.chat.append(entry)
        self.throttle.mark()

    def error(self, text: str) -> None:
        self.say(text, "error")

    def command(self, line: str) -> None:
        self.input = ""
        line = line.strip()
        if line:
            self.commands.run(line)
        else:
            self.throttle.mark()


class _Terminal:
    """The process's own terminal: cbreak input, stdio, SIGWINCH, and restoring it all."""

    def __init__(self, console: Console, reactor: Any) -> None:
        self.console = console
        self.reactor = reactor
        self.stdio: Any = None
        self.screen: Screen | None = None
        self._saved: Any = None
        self._old_winch: Any = None

    def open(self) -> None:
        from twisted.internet import stdio

        if os.isatty(0):
            import termios
            import tty

            self._saved = termios.tcgetattr(0)
            tty.setcbreak(0)
            attrs = termios.tcgetattr(0)
            # No XON/XOFF: a stray Ctrl-S would otherwise freeze the view.
            attrs[0] &= ~termios.IXON
            termios.tcsetattr(0, termios.TCSANOW, attrs)
        # Writes go through the stdio transport: non-blocking, so a stalled
        # terminal delays the view, never the chat.
        self.stdio = stdio.StandardIO(AdminProtocol(self.console), reactor=self.reactor)
        self.screen = Screen(self.stdio.write, terminal_size)
        self._old_winch = signal.signal(signal.SIGWINCH, self._winch)

    def _winch(self, signum: int, frame: Any) -> None:
        # A signal handler may interrupt anything: hand over to the reactor.
        self.reactor.callFromThread(self.console.resized)

    def close(self) -> None:
        if self._old_winch is not None:
            signal.signal(signal.SIGWINCH, self._old_winch)
            self._old_winch = None
        writer = getattr(self.stdio, "_writer", None)
        reader = getattr(self.stdio, "_reader", None)
        if reader is not None:
            reader.stopReading()
        # stdio made the tty non-blocking (for stdin, stdout and stderr: they
        # share one file description); the shell after us expects blocking.
        for fd in (0, 1):
            try:
                os.set_blocking(fd, True)
            except OSError:
                pass
        # The reactor has stopped, so flush any frame still queued by hand
        # before the last sequences, which must not land inside it (private
        # _tempDataBuffer: see docs/architecture.md).
        for _ in range(100):
            if writer is None or not (writer.dataBuffer or writer._tempDataBuffer):
                break
            try:
                writer.doWrite()
            except OSError:
                break
        try:
            os.write(1, _LEAVE.encode())
        except OSError:
            pass
        if self._saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, self._saved)
            self._saved = None
