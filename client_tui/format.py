"""Turning typed server events into screen lines: fragments, nick colours, progress.

Everything here is pure (no reactor, no terminal), so it is unit-tested on its
own. A screen line is a list of ``(style, text)`` fragments; text that came
from the server or another user only ever appears as the *text* half of a
fragment, after ``screen_text()`` has replaced control characters, so a
hostile message or file name cannot drive the terminal. Nothing is passed
through prompt_toolkit's ``ANSI()`` or ``HTML()`` parsers. Sizes are
``chat.units.human_size``, as the server words them; ``clock_duration`` is
the client's own ``0:07`` style for transfer times.
"""

from __future__ import annotations

import functools
import re
import zlib
from dataclasses import dataclass
from datetime import datetime

from chat import events as ev
from chat.units import human_size

Fragments = list[tuple[str, str]]

#: The events that make a line in the pane (those with an ``id`` and a ``ts``).
ChatEvent = ev.ChatEvent

#: Foreground colours for nicks: distinct on dark and light backgrounds, and
#: none of them the dim grey used for notices or the red used for errors.
NICK_COLOURS: tuple[str, ...] = (
    "ansicyan",
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansimagenta",
    "ansibrightcyan",
    "ansibrightgreen",
    "ansibrightyellow",
    "ansibrightblue",
    "ansibrightmagenta",
    "#d78700",
    "#5fafaf",
)

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


def nick_colour(name: str) -> str:
    """A colour for ``name`` that is the same in every run and on every machine.

    CRC-32 rather than ``hash()``: Python salts string hashes per process.
    Case-folded, because names are unique without regard to case.
    """
    return NICK_COLOURS[zlib.crc32(name.lower().encode("utf-8")) % len(NICK_COLOURS)]


def nick_style(name: str) -> str:
    return f"bold fg:{nick_colour(name)}"


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


def progress_text(done: int, total: int, elapsed: float, width: int = 12) -> str:
    """``[######------]  50% 1.0/2.0 MiB 512.0 KiB/s 0:02 left``.

    The rate is the average since the start: steadier on screen than an
    instantaneous one, and good enough for LAN transfers.
    """
    pct = 100 if total <= 0 else min(100, int(done * 100 / total))
    rate = done / elapsed if elapsed > 0 else 0.0
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


@dataclass
class Line:
    """One line of the message pane; ``id`` is the server's event id if any."""

    fragments: Fragments
    id: int | None = None
    kind: str = "info"

    @property
    def text(self) -> str:
        return "".join(t for _, t in self.fragments)


def _stamp(event: ChatEvent) -> tuple[str, str]:
    return ("class:time", local_time(event.ts) + " ")


def _is_me(name: str, me: str | None) -> bool:
    return me is not None and name.lower() == me.lower()


def _nick(name: str, me: str | None) -> tuple[str, str]:
    style = nick_style(name)
    if _is_me(name, me):
        style += " class:own-nick"
    return (style, screen_text(name))


@functools.singledispatch
def event_line(event: ev.Event, me: str | None) -> Line | None:
    """The pane line for a chat event (``ChatEvent``); ``None`` for any other event."""
    return None


@event_line.register
def _message(event: ev.Message, me: str | None) -> Line:
    own = _is_me(event.sender, me)
    frags: Fragments = [
        _stamp(event),
        ("class:bracket", "<"),
        _nick(event.sender, me),
        ("class:bracket", "> "),
        ("class:own" if own else "class:text", screen_text(event.text)),
    ]
    return Line(frags, event.id, "own" if own else "message")


@event_line.register
def _action(event: ev.Action, me: str | None) -> Line:
    return Line(
        [_stamp(event), ("class:action", " * "), _nick(event.sender, me),
         ("class:action", " " + screen_text(event.text))],
        event.id, "action",
    )


@event_line.register
def _private(event: ev.Private, me: str | None) -> Line:
    if _is_me(event.sender, me):
        head, other = "-> *", event.recipient
    else:
        head, other = "*", event.sender
    return Line(
        [_stamp(event), ("class:private", head), _nick(other, None),
         ("class:private", "* " + screen_text(event.text))],
        event.id, "private",
    )


@event_line.register
def _join(event: ev.Join, me: str | None) -> Line:
    return _notice(event, "--> ", event.name, " has joined", "join")


@event_line.register
def _leave(event: ev.Leave, me: str | None) -> Line:
    tail = f" has left ({screen_text(event.reason)})" if event.reason else " has left"
    return _notice(event, "<-- ", event.name, tail, "leave")


@event_line.register
def _nick_change(event: ev.Nick, me: str | None) -> Line:
    return Line(
        [_stamp(event), ("class:notice", "-- "), _nick(event.old, None),
         ("class:notice", " is now known as "), _nick(event.new, None)],
        event.id, "nick",
    )


@event_line.register
def _server_notice(event: ev.Notice, me: str | None) -> Line:
    return Line(
        [_stamp(event), ("class:notice", "-- Server notice: " + screen_text(event.text))],
        event.id, "notice",
    )


@event_line.register
def _file(event: ev.FileShared, me: str | None) -> Line:
    return Line(
        [_stamp(event), ("class:file", "-- "), _nick(event.sender, me),
         ("class:file", " shared "), ("class:file-name", screen_text(event.name)),
         ("class:file", f" ({human_size(event.size)}) id "),
         ("class:file-id", screen_text(event.file_id))],
        event.id, "file",
    )


def _notice(event: ev.Join | ev.Leave, arrow: str, name: str, tail: str, kind: str) -> Line:
    return Line(
        [_stamp(event), ("class:notice", arrow),
         (f"class:notice fg:{nick_colour(name)}", screen_text(name)), ("class:notice", tail)],
        event.id, kind,
    )


def info_line(text: str, style: str = "class:info") -> Line:
    """A local line (no server id): information, errors, transfer results.

    ``text`` may hold server or user words: it is made safe here.
    """
    return Line(
        [("class:time", local_time(None) + " "), (style, screen_text(text))], None, "local"
    )


def error_line(text: str) -> Line:
    return info_line("!! " + text, "class:error")
