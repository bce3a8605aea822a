"""Turning server events into screen lines: fragments, nick colours, sizes, progress.

Everything here is pure (no reactor, no terminal), so it is unit-tested on its
own. A screen line is a list of ``(style, text)`` fragments; text that came
from the server or another user only ever appears as the *text* half of a
fragment, after ``clean()`` has replaced control characters, so a hostile
message or file name cannot drive the terminal. Nothing is passed through
prompt_toolkit's ``ANSI()`` or ``HTML()`` parsers.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Fragments = list[tuple[str, str]]

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


def clean(text: Any) -> str:
    """``text`` as something safe to put on the screen: controls become U+FFFD."""
    return _CONTROL.sub("\ufffd", str(text))


def nick_colour(name: str) -> str:
    """A colour for ``name`` that is the same in every run and on every machine.

    CRC-32 rather than ``hash()``: Python salts string hashes per process.
    Case-folded, because names are unique without regard to case.
    """
    return NICK_COLOURS[zlib.crc32(name.lower().encode("utf-8")) % len(NICK_COLOURS)]


def nick_style(name: str) -> str:
    return f"bold fg:{nick_colour(name)}"


def local_time(ts: str | None) -> str:
    """``HH:MM:SS`` in local time for the server's ISO 8601 UTC ``ts``."""
    if not ts:
        return datetime.now().strftime("%H:%M:%S")
    try:
        when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return "??:??:??"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone().strftime("%H:%M:%S")


def human_size(n: int | float) -> str:
    """Bytes in binary units, as people read them: ``512 B``, ``1.2 KiB``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """``0:07``, ``12:30``, ``1:02:03``."""
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
        left = human_duration((total - done) / rate) + " left"
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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(t for _, t in self.fragments)


def _stamp(event: dict[str, Any]) -> tuple[str, str]:
    return ("class:time", local_time(event.get("ts")) + " ")


def _nick(name: str, me: str | None) -> tuple[str, str]:
    style = nick_style(name)
    if me is not None and name.lower() == me.lower():
        style += " class:own-nick"
    return (style, clean(name))


def event_line(event: dict[str, Any], me: str | None) -> Line | None:
    """The pane line for a chat event, or ``None`` if the event is not a chat event."""
    kind = event.get("type")
    eid = event.get("id") if isinstance(event.get("id"), int) else None
    ts = _stamp(event)
    own = me is not None and str(event.get("sender", "")).lower() == me.lower()
    if kind == "message":
        sender = str(event.get("sender", "?"))
        text_style = "class:own" if own else "class:text"
        frags: Fragments = [
            ts,
            ("class:bracket", "<"),
            _nick(sender, me),
            ("class:bracket", "> "),
            (text_style, clean(event.get("text", ""))),
        ]
        return Line(frags, eid, "own" if own else "message")
    if kind == "action":
        sender = str(event.get("sender", "?"))
        return Line(
            [ts, ("class:action", " * "), _nick(sender, me),
             ("class:action", " " + clean(event.get("text", "")))],
            eid, "action",
        )
    if kind == "private":
        sender = str(event.get("sender", "?"))
        recipient = str(event.get("recipient", "?"))
        if own:
            frags = [ts, ("class:private", "-> *"), _nick(recipient, None),
                     ("class:private", "* " + clean(event.get("text", "")))]
        else:
            frags = [ts, ("class:private", "*"), _nick(sender, None),
                     ("class:private", "* " + clean(event.get("text", "")))]
        return Line(frags, eid, "private")
    if kind == "join":
        return _notice(ts, eid, "--> ", event.get("name"), " has joined", "join")
    if kind == "leave":
        reason = event.get("reason")
        tail = f" has left ({clean(reason)})" if reason else " has left"
        return _notice(ts, eid, "<-- ", event.get("name"), tail, "leave")
    if kind == "nick":
        old, new = str(event.get("old", "?")), str(event.get("new", "?"))
        return Line(
            [ts, ("class:notice", "-- "), _nick(old, None),
             ("class:notice", " is now known as "), _nick(new, None)],
            eid, "nick",
        )
    if kind == "notice":
        return Line(
            [ts, ("class:notice", "-- Server notice: " + clean(event.get("text", "")))],
            eid, "notice",
        )
    if kind == "file":
        sender = str(event.get("sender", "?"))
        size = event.get("size") if isinstance(event.get("size"), int) else 0
        return Line(
            [ts, ("class:file", "-- "), _nick(sender, me),
             ("class:file", " shared "), ("class:file-name", clean(event.get("name", "?"))),
             ("class:file", f" ({human_size(size)}) id "),
             ("class:file-id", clean(event.get("file_id", "?")))],
            eid, "file", {"file_id": str(event.get("file_id", ""))},
        )
    return None


def _notice(ts: tuple[str, str], eid: int | None, arrow: str, name: Any, tail: str,
            kind: str) -> Line:
    name = str(name or "?")
    return Line(
        [ts, ("class:notice", arrow), (f"class:notice fg:{nick_colour(name)}", clean(name)),
         ("class:notice", tail)],
        eid, kind,
    )


def info_line(text: str, style: str = "class:info") -> Line:
    """A local line (no server id): information, errors, transfer results."""
    return Line([("class:time", local_time(None) + " "), (style, clean(text))], None, "local")


def error_line(text: str) -> Line:
    return info_line("!! " + text, "class:error")
