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
from chat.units import human_duration, human_size, plural

CRLF = b"\r\n"


# --- errors: the words for each code ---

_NAME_PROBLEMS = {
    "empty": "A name cannot be empty.",
    "too_long": "A name is at most 32 characters long.",
    "bad_chars": (
        "A name is 1 to 32 letters, digits, '_', '-' or '.', and begins with a letter or digit."
    ),
    "reserved": "The name {name} is reserved.",
}

_HEADER_PROBLEMS = {
    "fields": "Usage: /send NAME SIZE [CRC32] (NAME percent-encoded, SIZE in bytes)",
    "size": "SIZE must be a decimal number of bytes, not {value!r}.",
    "crc": "CRC32 must be exactly 8 hex digits, not {value!r}.",
}

#: Why a well-formed upload is refused (the ``reason`` of a ``refused`` error).
REFUSALS = {
    "name_utf8": "The file name is not valid UTF-8 once percent-decoded.",
    "name_dots": "{name!r} is not a file name.",
    "name_chars": (
        "A file name cannot hold '/', '\\', characters that look like them, or control or "
        "invisible characters."
    ),
    "name_long": "A file name is at most 255 bytes long.",
    "quota": "Your upload quota of {quota_human} would be exceeded ({used_human} used).",
    "daily_quota": (
        "Your daily upload quota of {quota_human} would be exceeded ({used_human} in the "
        "last 24 hours)."
    ),
    "reservation": (
        "Too much is being uploaded from your address at once (at most {quota_human} in "
        "flight, {used_human} now)."
    ),
    "disk": "Not enough disk space on the server for {size_human}.",
}


def _humanised(params: dict[str, Any]) -> dict[str, Any]:
    """The values, plus ``X_human`` for every byte count ``X``."""
    out = dict(params)
    for key in ("limit", "size", "quota", "used"):
        if isinstance(params.get(key), int):
            out[f"{key}_human"] = human_size(params[key])
    return out


def _refused(p: dict[str, Any]) -> str:
    why = REFUSALS[p["reason"]].format_map(p)
    return f"{why} The {plural(p['size'], 'byte')} {'is' if p['size'] == 1 else 'are'} discarded."


def _wrong_protocol(p: dict[str, Any]) -> str:
    where = f" Files are served over HTTP at {p['http']}/files/" if p.get("http") else ""
    return f"This is the chat port, not HTTP.{where}"


#: The words for every error code (docs/protocol.md, "Errors", lists the same codes).
ERRORS: dict[str, str | Callable[[dict[str, Any]], str]] = {
    "invalid_name": lambda p: _NAME_PROBLEMS[p["problem"]].format_map(p),
    "name_taken": "The name {name} is taken.",
    "timeout": "You did not choose a name in time. Goodbye.",
    "not_registered": "Choose a name before using /{verb}.",
    "not_here": "/{verb} is not available on this connection.",
    "unknown_command": "Unknown command /{verb}. Try /help.",
    "usage": "Usage: {usage}",
    "no_such_user": "{name} is not here.",
    "line_too_long": "Line too long (the limit is {limit} bytes); dropped.",
    "wrong_protocol": _wrong_protocol,
    "bad_session": "Unknown or expired session key.",
    "attached": "A transfer connection only takes /send, /get and /files.",
    "bad_header": lambda p: _HEADER_PROBLEMS[p["problem"]].format_map(p),
    "too_large": "The file is too large: the limit is {limit} bytes ({limit_human}).",
    "refused": _refused,
    "crc_mismatch": (
        "CRC-32 mismatch: you declared {expected}, the bytes have {actual}. Nothing was stored."
    ),
    "store_failed": "The server could not store the file.",
    "no_such_file": "No file with id {file_id}.",
    "bad_offset": "OFFSET is beyond the file's {size} bytes.",
    "kicked": "You were kicked: {reason}",
    "excess_flood": "Excess flood: you sent too much too fast.",
    "nick_flood": lambda p: (
        f"Too many name changes; try again in {plural(p['wait'], 'second')}."
    ),
    "too_much_input": "Too much input before choosing a name. Goodbye.",
    "upload_stalled": lambda p: (
        f"The upload is too slow: {plural(p['received'], 'byte')} in the last "
        f"{p['window']:g} seconds, at least {human_size(p['rate'])}/s are needed "
        f"({plural(p['missing'], 'byte')} missing); the upload is discarded."
        if "rate" in p else
        f"No upload data for {p['timeout']:g} seconds ({plural(p['missing'], 'byte')} "
        "missing); the upload is discarded."
    ),
    "idle": "Disconnected after {limit:g} seconds without input.",
    "internal": "Something went wrong on the server.",
}


def error_text(e: ev.Error) -> str:
    """The words for an error: the server's own, or those it arrived with."""
    if e.text is not None:
        return e.text
    words = ERRORS[e.code]
    params = _humanised(e.params)
    return words(params) if callable(words) else words.format_map(params)


class JsonRenderer:
    """One compact JSON object per line."""

    mode = "json"
    #: JSON clients get their own chat lines back, with id and server time.
    echo_own = True

    def render(self, event: ev.Event, viewer: str | None = None) -> bytes:
        data = event.as_json()
        if isinstance(event, ev.Error):
            data["text"] = error_text(event)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + CRLF


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
            return "-- No messages since then." if e.after is not None else "-- No messages yet."
        lines = [
            f"-- {plural(len(e.messages), 'message')} since then:" if e.after is not None
            else f"-- Last {plural(len(e.messages), 'message')}:"
        ]
        lines.extend(self.text(m, viewer) for m in e.messages)
        lines.append("-- End of history.")
        return "\r\n".join(lines)

    def _who(self, e: ev.Who, viewer: str | None) -> str:
        lines = [f"-- {len(e.users)} here:"]
        lines.extend(f"--   {u.name}  (idle {human_duration(u.idle)})" for u in e.users)
        return "\r\n".join(lines)

    def _error(self, e: ev.Error, viewer: str | None) -> str:
        return f"!! {error_text(e)}"

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
        lines = [f"-- {plural(len(e.files), 'recent file')}:"]
        lines.extend(
            f"--   {f.file_id}  {f.name}  {human_size(f.size)}  by {f.uploader}  "
            f"{self.stamp(f.ts)}"
            for f in e.files
        )
        return "\r\n".join(lines)

    def _uploaded(self, e: ev.Uploaded, viewer: str | None) -> str:
        f = e.file
        return f"-- Stored {f.name}: id {f.file_id}, {plural(f.size, 'byte')}, CRC-32 {f.crc32}."

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
