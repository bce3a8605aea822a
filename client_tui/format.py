"""Turning typed server events into conversation lines: fragments, styles, progress.

Everything here is pure (no reactor, no terminal), so it is unit-tested on its
own. A ``Line`` is a list of ``(style, text)`` fragments with what the pane
needs to place and wrap it: the server's event id and time, and the width of
its head (time and nick), under which its wrapped rows start. Text that came
from the server or another user only ever appears as the *text* half of a
fragment, after ``screen_text()`` has replaced control characters, so a
hostile message or file name cannot drive the terminal; nothing is passed
through prompt_toolkit's ``ANSI()`` or ``HTML()`` parsers. Lines carry style
classes only: a nick's colour slot (``class:nick.7``; your own name
``class:nick.self``), a highlight, a web address. Sizes are
``chat.units.human_size``, as the server words them; ``clock_duration`` is
the client's own ``0:07`` style for transfer times.
"""

from __future__ import annotations

import functools
import re
import time
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime

from chat import events as ev
from chat.units import human_size
from client_tui.attention import is_highlight
from client_tui.wrap import Fragments, cells, rule, wrap

#: The events that make a line in the pane (those with an ``id`` and a ``ts``).
ChatEvent = ev.ChatEvent

#: Nick colour slots: a name hashes to one, and the screen's palette gives each
#: slot a colour (``style.py``: 20 colours on 256-colour terminals, 8 on others).
NICK_SLOTS = 20

# C0 controls (TAB included: it would break column arithmetic), DEL, C1
# controls, and the Unicode line/paragraph separators and bidi overrides that
# can reorder what a reader sees.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def screen_text(text: object) -> str:
    """``text`` as something safe to put on the screen: controls become U+FFFD.

    Not ``chat.sanitize.clean``, which removes control sequences from what
    the server stores; this keeps every character visible, neutered.
    """
    return _CONTROL.sub("\ufffd", str(text))


def nick_slot(name: str) -> int:
    """The colour slot of ``name``: the same in every run and on every machine.

    CRC-32 rather than ``hash()``: Python salts string hashes per process.
    Case-folded, because names are unique without regard to case.
    """
    return zlib.crc32(name.lower().encode("utf-8")) % NICK_SLOTS


def nick_style(name: str, me: str | None = None) -> str:
    """``class:nick.N`` for others; your own name has a style no one else gets."""
    return "class:nick.self" if _is_me(name, me) else f"class:nick.{nick_slot(name)}"


def local_day(ts: float) -> date | None:
    """The local calendar day of the POSIX time ``ts`` (``None`` if it has none)."""
    try:
        return datetime.fromtimestamp(ts).date()
    except (OverflowError, OSError, ValueError):
        return None


def day_label(day: date) -> str:
    """``Tuesday 24 November 2026``: the words of a day-change line."""
    return f"{day:%A} {day.day} {day:%B %Y}"


def short_date(ts: float) -> str:
    """``Tue 24 Nov 16:37`` for a history separator (with the year if not this one's)."""
    try:
        when = datetime.fromtimestamp(ts)
    except (OverflowError, OSError, ValueError):
        return "an unknown date"
    year = "" if when.year == datetime.now().year else f" {when.year}"
    return f"{when:%a} {when.day} {when:%b}{year} {when:%H:%M}"


def local_time(ts: float | None) -> str:
    """``HH:MM:SS`` in local time for the POSIX time ``ts`` (now, for ``None``)."""
    try:
        when = datetime.now() if ts is None else datetime.fromtimestamp(ts)
    except (OverflowError, OSError, ValueError):  # inf, NaN, years out of range
        return "??:??:??"
    return when.strftime("%H:%M:%S")


def clock_duration(seconds: float) -> str:
    """A transfer time as a clock shows it: ``0:07``, ``12:30``, ``1:02:03``."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_bar(done: int, total: int, width: int = 12) -> str:
    frac = 1.0 if total <= 0 else min(1.0, max(0.0, done / total))
    full = int(frac * width)
    return "[" + "#" * full + "-" * (width - full) + "]"


def progress_text(done: int, total: int, elapsed: float, width: int = 12, start: int = 0) -> str:
    """``[######------]  50% 1.0/2.0 MiB 512.0 KiB/s 0:02 left``.

    The rate is the average since the start: steadier on screen than an
    instantaneous one, and good enough for LAN transfers. A resumed transfer
    begins at ``start`` bytes (the bar starts there), which moved no time ago,
    so they are left out of the rate.
    """
    pct = 100 if total <= 0 else min(100, int(done * 100 / total))
    rate = (done - start) / elapsed if elapsed > 0 else 0.0
    if done >= total:
        left = "done"
    elif rate > 0:
        left = clock_duration((total - done) / rate) + " left"
    else:
        left = "--:-- left"
    return (
        f"{progress_bar(done, total, width)} {pct:3d}% "
        f"{human_size(done)}/{human_size(total)} {human_size(rate)}/s {left}"
    )


#: Kinds of line that count as something said (for the "new below" count and the log).
SPOKEN = frozenset({"message", "action", "private", "file", "notice"})

# A web address as people paste them; trailing punctuation belongs to the sentence.
_URL = re.compile(r"\bhttps?://[^\s<>\"]+", re.IGNORECASE)
_URL_TAIL = ".,;:!?'\")]}"


@dataclass(eq=False)
class Line:
    """One line of the conversation; compared by identity (the pane finds it by ``is``).

    ``id`` is the server's event id (``None`` for the client's own lines),
    ``ts`` a POSIX time (the server's for events), ``indent`` the cells
    before the text, where its wrapped rows start. ``own`` marks what you
    said; ``sender`` is who said it (for ``/ignore``).
    """

    fragments: Fragments
    id: int | None = None
    kind: str = "local"
    ts: float = field(default_factory=time.time)
    indent: int = 0
    highlight: bool = False
    own: bool = False
    sender: str | None = None
    _rows: dict[int, list[Fragments]] = field(default_factory=dict, init=False, repr=False)

    @property
    def text(self) -> str:
        return "".join(t for _, t in self.fragments)

    @property
    def said(self) -> bool:
        """Something someone else said (not a join, a rename or the client's own words)."""
        return self.id is not None and self.kind in SPOKEN and not self.own

    def rows(self, width: int) -> list[Fragments]:
        """The screen rows of this line at ``width`` (wrapped once per width, then kept)."""
        rows = self._rows.get(width)
        if rows is None:
            if self.kind == "separator":
                rows = [rule(self.text, width, self.fragments[0][0])]
            else:
                rows = wrap(self.fragments, width, self.indent)
            if len(self._rows) > 4:  # a few widths (resizing); not every one ever seen
                self._rows.clear()
            self._rows[width] = rows
        return rows


def _is_me(name: str, me: str | None) -> bool:
    return me is not None and name.lower() == me.lower()


def _nick(name: str, me: str | None) -> tuple[str, str]:
    return (nick_style(name, me), screen_text(name))


def _body(text: str, style: str) -> Fragments:
    """Message text as fragments, web addresses underlined apart."""
    text = screen_text(text)
    out: Fragments = []
    at = 0
    for m in _URL.finditer(text):
        url = m.group().rstrip(_URL_TAIL)
        if url.count("(") > url.count(")") and m.group()[len(url):].startswith(")"):
            url += ")"  # a wiki-style address that ends in a bracket of its own
        if m.start() > at:
            out.append((style, text[at:m.start()]))
        out.append((style + " class:url", url))
        at = m.start() + len(url)
    if at < len(text) or not out:
        out.append((style, text[at:]))
    return out


def _line(event: ChatEvent, prefix: Fragments, body: Fragments, kind: str, **kw: object) -> Line:
    """A line for ``event``: its time, ``prefix`` (wrapped rows indent past it), ``body``."""
    head = [("class:time", local_time(event.ts) + " "), *prefix]
    indent = cells("".join(t for _, t in head))
    return Line(head + body, event.id, kind, event.ts, indent, **kw)  # type: ignore[arg-type]


@functools.singledispatch
def event_line(event: ev.Event, me: str | None) -> Line | None:
    """The pane line for a chat event (``ChatEvent``); ``None`` for any other event."""
    return None


@event_line.register
def _message(event: ev.Message, me: str | None) -> Line:
    own = _is_me(event.sender, me)
    hl = is_highlight(event, me)
    style = "class:own" if own else "class:text class:highlight" if hl else "class:text"
    prefix = [("class:bracket", "<"), _nick(event.sender, me), ("class:bracket", "> ")]
    return _line(event, prefix, _body(event.text, style), "message", highlight=hl, own=own,
                 sender=event.sender)


@event_line.register
def _action(event: ev.Action, me: str | None) -> Line:
    hl = is_highlight(event, me)
    style = "class:action class:highlight" if hl else "class:action"
    prefix = [("class:action", " * "), _nick(event.sender, me), ("class:action", " ")]
    return _line(event, prefix, _body(event.text, style), "action", highlight=hl,
                 own=_is_me(event.sender, me), sender=event.sender)


@event_line.register
def _private(event: ev.Private, me: str | None) -> Line:
    own = _is_me(event.sender, me)
    head, other = ("-> *", event.recipient) if own else ("*", event.sender)
    hl = is_highlight(event, me)
    style = "class:private class:highlight" if hl else "class:private"
    prefix = [("class:private", head), _nick(other, me), ("class:private", "* ")]
    return _line(event, prefix, _body(event.text, style), "private", highlight=hl, own=own,
                 sender=event.sender)


@event_line.register
def _join(event: ev.Join, me: str | None) -> Line:
    # Arriving on the server is joining; a /join names the room.
    where = f" {screen_text(event.room)}" if event.room and not event.arrival else ""
    return _notice(event, "--> ", event.name, " has joined" + where, "join", me)


@event_line.register
def _part(event: ev.Part, me: str | None) -> Line:
    why = f" ({screen_text(event.reason)})" if event.reason else ""
    if _is_me(event.name, me):
        return _line(event, [("class:notice", "<-- ")],
                     [("class:notice", f"You have left {screen_text(event.room)}{why}")], "part")
    return _notice(event, "<-- ", event.name, f" has left {screen_text(event.room)}{why}",
                   "part", me)


@event_line.register
def _topic(event: ev.Topic, me: str | None) -> Line:
    said = [("class:notice", " set the topic: "), *_body(event.topic, "class:topic")]
    body = [_nick(event.by, me), *(said if event.topic else
                                  [("class:notice", " cleared the topic")])]
    return _line(event, [("class:notice", "-- ")], body, "topic")


@event_line.register
def _removed(event: ev.Removed, me: str | None) -> Line:
    body = [_nick(event.by, me), ("class:file", " removed "),
            ("class:file-name", screen_text(event.name)),
            ("class:file", f" (/get {screen_text(event.file_id)} no longer works)")]
    return _line(event, [("class:file", "-- ")], body, "removed")


@event_line.register
def _leave(event: ev.Leave, me: str | None) -> Line:
    tail = f" has left ({screen_text(event.reason)})" if event.reason else " has left"
    return _notice(event, "<-- ", event.name, tail, "leave", me)


@event_line.register
def _nick_change(event: ev.Nick, me: str | None) -> Line:
    body = [_nick(event.old, me), ("class:notice", " is now known as "), _nick(event.new, me)]
    return _line(event, [("class:notice", "-- ")], body, "nick")


@event_line.register
def _server_notice(event: ev.Notice, me: str | None) -> Line:
    return _line(event, [("class:notice", "-- Server notice: ")],
                 _body(event.text, "class:notice"), "notice")


@event_line.register
def _file(event: ev.FileShared, me: str | None) -> Line:
    # The id as the command that fetches it: Tab completes it after /get.
    body = [_nick(event.sender, me), ("class:file", " shared "),
            ("class:file-name", screen_text(event.name)),
            ("class:file", f" ({human_size(event.size)}): ")]
    if event.removed or event.expired:  # (a history's notice of a file gone since)
        body.append(("class:file", "removed since" if event.removed else "expired since"))
    else:
        body.append(("class:file-id", "/get " + screen_text(event.file_id)))
    return _line(event, [("class:file", "-- ")], body, "file", own=_is_me(event.sender, me),
                 sender=event.sender)


def _notice(event: ev.Join | ev.Leave | ev.Part, arrow: str, name: str, tail: str, kind: str,
            me: str | None) -> Line:
    body = [(f"class:notice {nick_style(name, me)}", screen_text(name)), ("class:notice", tail)]
    return _line(event, [("class:notice", arrow)], body, kind)


def info_line(text: str, style: str = "class:info") -> Line:
    """A local line (no server id): information, errors, transfer results.

    ``text`` may hold server or user words: it is made safe here.
    """
    stamp = local_time(None) + " "
    return Line([("class:time", stamp), (style, screen_text(text))], indent=cells(stamp))


def error_line(text: str) -> Line:
    return info_line("!! " + text, "class:error")


def separator_line(text: str, ts: float, style: str = "class:separator.history") -> Line:
    """A rule across the pane (``── history: … ──``), dated ``ts`` for day changes."""
    return Line([(style, screen_text(text))], kind="separator", ts=ts)
