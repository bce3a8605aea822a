"""Renderers: one event in, the bytes one connection mode puts on the wire.

``TextRenderer`` writes what a person at telnet reads; ``JsonRenderer`` writes
one JSON object per line for programs. Both end every line with CRLF. A
renderer is stateless apart from its settings, so a broadcast renders an event
once per mode and writes the same bytes to every recipient.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from chat import events as ev

CRLF = b"\r\n"


def human_size(size: int) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            if unit == "B":
                return f"{size} B"
            return f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """``3725`` -> ``'1h 2m'``: two units at most, for idle times."""
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h {m}m"
    d, h = divmod(h, 24)
    return f"{d}d {h}h"


class JsonRenderer:
    """One compact JSON object per line."""

    mode = "json"
    #: JSON clients get their own chat lines back, with id and server time.
    echo_own = True

    def render(self, event: ev.Event, viewer: str | None = None) -> bytes:
        return json.dumps(event.as_json(), ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8"
        ) + CRLF


class TextRenderer:
    """Readable lines for telnet and nc users."""

    mode = "text"
    #: telnet already shows what its user typed.
    echo_own = False

    def __init__(self, time_format: str = "%Y/%m/%d %H:%M:%S") -> None:
        self.time_format = time_format
        self._table: dict[type[ev.Event], Callable[[Any, str | None], str]] = {
            ev.Message: self._message,
            ev.Action: self._action,
            ev.Private: self._private,
            ev.Join: self._join,
            ev.Leave: self._leave,
            ev.Nick: self._nick,
            ev.Notice: self._notice,
            ev.FileShared: self._file_shared,
            ev.Prompt: self._prompt,
            ev.Welcome: self._welcome,
            ev.Participants: self._participants,
            ev.History: self._history,
            ev.Who: self._who,
            ev.Error: self._error,
            ev.Help: self._help,
            ev.Proto: lambda e, v: f"-- Protocol is now {e.mode}.",
            ev.Session: self._session,
            ev.Attached: lambda e, v: f"-- Attached to {e.name}'s session.",
            ev.Bye: lambda e, v: f"-- Goodbye ({e.reason}).",
            ev.Files: self._files,
            ev.Uploaded: self._uploaded,
            ev.FetchHint: self._fetch_hint,
            ev.Info: lambda e, v: f"-- {e.text}",
            ev.Ping: lambda e, v: f"-- ping {e.token}",
        }

    def render(self, event: ev.Event, viewer: str | None = None) -> bytes:
        return self.text(event, viewer).encode("utf-8") + CRLF

    def text(self, event: ev.Event, viewer: str | None = None) -> str:
        """The rendering without its final line ending (lines joined by CRLF)."""
        return self._table[type(event)](event, viewer)

    def stamp(self, ts: float) -> str:
        return "(" + time.strftime(self.time_format, time.localtime(ts)) + ")"

    # chat events

    def _message(self, e: ev.Message, viewer: str | None) -> str:
        return f"{self.stamp(e.ts)} <{e.sender}> {e.text}"

    def _action(self, e: ev.Action, viewer: str | None) -> str:
        return f"{self.stamp(e.ts)} * {e.sender} {e.text}"

    def _private(self, e: ev.Private, viewer: str | None) -> str:
        if viewer is not None and viewer == e.sender:
            return f"{self.stamp(e.ts)} -> *{e.recipient}* {e.text}"
        return f"{self.stamp(e.ts)} *{e.sender}* {e.text}"

    def _join(self, e: ev.Join, viewer: str | None) -> str:
        return f"{self.stamp(e.ts)} -- {e.name} has joined the chat."

    def _leave(self, e: ev.Leave, viewer: str | None) -> str:
        return f"{self.stamp(e.ts)} -- {e.name} has left the chat ({e.reason})."

    def _nick(self, e: ev.Nick, viewer: str | None) -> str:
        return f"{self.stamp(e.ts)} -- {e.old} is now known as {e.new}."

    def _notice(self, e: ev.Notice, viewer: str | None) -> str:
        return f"{self.stamp(e.ts)} -- Server notice: {e.text}"

    def _file_shared(self, e: ev.FileShared, viewer: str | None) -> str:
        where = f"/get {e.file_id}"
        if e.url:
            where += f" or {e.url}"
        return (
            f"{self.stamp(e.ts)} -- {e.sender} shared {e.name} ({human_size(e.size)}). "
            f"Fetch it with {where}"
        )

    # replies

    def _prompt(self, e: ev.Prompt, viewer: str | None) -> str:
        return e.text

    def _welcome(self, e: ev.Welcome, viewer: str | None) -> str:
        return f"Welcome to the chat, {e.name}."

    def _participants(self, e: ev.Participants, viewer: str | None) -> str:
        others = [n for n in e.names if n != e.you]
        if not others:
            return "-- You are the only one here."
        return f"-- Here with you ({len(others)}): " + ", ".join(others)

    def _history(self, e: ev.History, viewer: str | None) -> str:
        if not e.messages:
            return "-- No messages yet."
        lines = [f"-- Last {len(e.messages)} messages:"]
        lines.extend(self.text(m, viewer) for m in e.messages)
        lines.append("-- End of history.")
        return "\r\n".join(lines)

    def _who(self, e: ev.Who, viewer: str | None) -> str:
        lines = [f"-- {len(e.users)} here:"]
        lines.extend(f"--   {u.name}  (idle {human_duration(u.idle)})" for u in e.users)
        return "\r\n".join(lines)

    def _error(self, e: ev.Error, viewer: str | None) -> str:
        return f"!! {e.text}"

    def _help(self, e: ev.Help, viewer: str | None) -> str:
        width = max(len(u) for u, _ in e.commands)
        lines = ["-- Commands:"]
        lines.extend(f"--   {u.ljust(width)}  {t}" for u, t in e.commands)
        return "\r\n".join(lines)

    def _session(self, e: ev.Session, viewer: str | None) -> str:
        return (
            f"-- Your session key is {e.session}. A second connection that sends "
            f"'/attach {e.session}' can /send and /get for {e.name}."
        )

    def _files(self, e: ev.Files, viewer: str | None) -> str:
        if not e.files:
            return "-- No files shared yet."
        lines = [f"-- {len(e.files)} recent files:"]
        lines.extend(
            f"--   {f.file_id}  {f.name}  {human_size(f.size)}  by {f.uploader}  "
            f"{self.stamp(f.ts)}"
            for f in e.files
        )
        return "\r\n".join(lines)

    def _uploaded(self, e: ev.Uploaded, viewer: str | None) -> str:
        f = e.file
        return f"-- Stored {f.name}: id {f.file_id}, {f.size} bytes, CRC-32 {f.crc32}."

    def _fetch_hint(self, e: ev.FetchHint, viewer: str | None) -> str:
        f = e.file
        if f.url:
            return (
                f"-- {f.name} ({human_size(f.size)}) is at {f.url} : fetch it with "
                f"curl -O '{f.url}' or with the TUI client (files are not sent to a "
                f"text-mode connection)."
            )
        return (
            f"-- {f.name} ({human_size(f.size)}): files are not sent to a text-mode "
            f"connection; switch to /proto json or use the TUI client to fetch it."
        )
