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
#: The server will echo (so telnet stops echoing: a password is not shown), or not.
TELNET_ECHO_OFF = b"\xff\xfb\x01"
TELNET_ECHO_ON = b"\xff\xfc\x01"


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
    "fields": "Usage: /send NAME SIZE [CRC32 [OFFSET]] (NAME percent-encoded, SIZE in bytes)",
    "size": "SIZE must be a decimal number of bytes, not {value!r}.",
    "crc": "CRC32 must be exactly 8 hex digits, not {value!r}.",
    "offset": "OFFSET must be a decimal number of bytes no larger than SIZE, not {value!r}.",
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
    "in_progress": "That upload is already coming in on another connection.",
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


def _when(ts: float) -> str:
    """A moment to come, in the server's local time."""
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(ts))


def _wrong_protocol(p: dict[str, Any]) -> str:
    where = f" Files are served over HTTP at {p['http']}/files/" if p.get("http") else ""
    return f"This is the chat port, not HTTP.{where}"


#: The words for every error code (docs/protocol.md, "Errors", lists the same codes).
ERRORS: dict[str, str | Callable[[dict[str, Any]], str]] = {
    "invalid_name": lambda p: _NAME_PROBLEMS[p["problem"]].format_map(p),
    "name_taken": "The name {name} is taken.",
    "cluster_down": "The chat is out of reach of its other servers for a moment: this was "
                    "not sent. Try again shortly.",
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
    "digest_mismatch": (
        "SHA-256 mismatch: you declared {expected}, the bytes have {actual}. Nothing was stored."
    ),
    "store_failed": "The server could not store the file.",
    "no_such_file": "No file with id {file_id}.",
    "bad_offset": lambda p: (
        f"OFFSET must be {p['offset']}: the server holds that many bytes of this upload; "
        f"the {plural(p['size'], 'byte')} sent are discarded." if "offset" in p
        else f"OFFSET is beyond the file's {p['size']} bytes."
    ),
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
    "no_such_room": "There is no room {room}.",
    "not_in_room": lambda p: (
        f"{p['name']} is not in {p['room']}." if "name" in p
        else f"You are not in {p['room']}." if "room" in p
        else "You are in no room: /join one (e.g. /join #lobby) to talk."
    ),
    "invite_only": "{room} is invite-only: ask one of its operators for an /invite.",
    "bad_room_name": "A room name is '#' and 1 to 32 letters, digits, '_', '-' or '.'.",
    "too_many_rooms": lambda p: (
        f"The server has too many rooms (at most {p['limit']})." if p.get("reason") == "server"
        else f"You are in too many rooms (at most {p['limit']}); /part one first."
    ),
    "not_room_operator": "Only an operator of {room} can do that.",
    "topic_too_long": "A topic is at most {limit} bytes long.",
    "bad_password": "Wrong password.",
    "weak_password": "A password is at least {limit} characters long.",
    "not_an_account": "Your name is not an account: /register PASSWORD makes it one.",
    "already_account": "Your name is an account already.",
    "account_name": "An account's name is its identity: it cannot change.",
    "registered": "The name {name} belongs to an account: log in with its password.",
    "registration_closed": "Accounts are made by the server's operators here.",
    "account_required": lambda p: (
        f"This server admits accounts only, and {p['name']} is none; ask an operator."
    ),
    "too_many_attempts": lambda p: (
        f"Too many wrong passwords; try again in {plural(p['wait'], 'second')}."
    ),
    "taken_over": "Your account logged in from elsewhere; this connection is closed.",
    "banned": lambda p: (
        f"You are banned {'for good' if p.get('until') is None else 'until ' + _when(p['until'])}"
        + (f": {p['reason']}" if p.get("reason") else ".")
    ),
    "not_operator": "Only a server operator can do that.",
    "no_such_ban": "{target} is not banned.",
    "bad_ban": "Ban a name, an address or a network (e.g. 192.168.1.0/24).",
    "removed": "The file {file_id} was removed.",
    "expired": "The file {file_id} has expired: the server no longer keeps it.",
    "not_yours": "Only who shared a file (or an operator) can remove it.",
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

    def render(self, event: ev.Event, viewer: str | None = None, tagged: bool = False) -> bytes:
        if isinstance(event, ev.Echo):
            return b""  # telnet's business
        data = event.as_json()
        if isinstance(event, ev.Error):
            data["text"] = error_text(event)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + CRLF


class TextRenderer:
    """Readable lines for telnet and nc users.

    ``tagged``: the viewer is in more than one room, so every line said in a
    room carries the room (``(…) [#dev] <alice> hi``); in one room, lines read
    as on a server without rooms.
    """

    mode = "text"
    #: telnet already shows what its user typed.
    echo_own = False

    def __init__(self, time_format: str = "%Y/%m/%d %H:%M:%S") -> None:
        self.time_format = time_format
        self._table: dict[type[ev.Event], Callable[[Any, str | None, bool], str]] = {
            ev.Message: self._message,
            ev.Action: self._action,
            ev.Private: self._private,
            ev.Join: self._join,
            ev.Leave: lambda e, v, t: (
                f"{self.stamp(e.ts)} -- {e.name} has left the chat ({e.reason})."
            ),
            ev.Part: self._part,
            ev.Topic: self._topic,
            ev.Nick: lambda e, v, t: f"{self.stamp(e.ts)} -- {e.old} is now known as {e.new}.",
            ev.Notice: lambda e, v, t: f"{self._head(e, t)}-- Server notice: {e.text}",
            ev.FileShared: self._file_shared,
            ev.Resume: lambda e, v, t: (
                f"-- {e.name}: the server holds {plural(e.offset, 'byte')} of {e.size}; send "
                f"the rest with /send {e.name} {e.size} {e.crc32} {e.offset}"
                if e.offset else f"-- {e.name}: nothing held; send it all with "
                f"/send {e.name} {e.size} {e.crc32}"
            ),
            ev.Removed: lambda e, v, t: f"{self._head(e, t)}-- {e.by} removed {e.name}.",
            ev.Prompt: lambda e, v, t: e.text,
            ev.Welcome: lambda e, v, t: f"Welcome to the chat, {e.name}.",
            ev.Participants: self._participants,
            ev.History: self._history,
            ev.Who: lambda e, v, t: self._people(f"-- {len(e.users)} here:", e.users),
            ev.BanList: self._bans,
            ev.Names: lambda e, v, t: self._people(
                f"-- {e.room} ({len(e.users)}):", e.users
            ),
            ev.Rooms: self._rooms,
            ev.RoomInfo: lambda e, v, t: (
                f"-- Topic of {e.name}: {e.topic}" if e.topic else f"-- {e.name} has no topic."
            ),
            ev.Invited: lambda e, v, t: (
                f"-- {e.by} invited you to {e.room}: /join {e.room} to enter."
            ),
            ev.Current: lambda e, v, t: (
                f"-- Now talking in {e.room}." if e.room
                else "-- You are in no room: /join one to talk."
            ),
            ev.Error: lambda e, v, t: f"!! {error_text(e)}",
            ev.Help: self._help,
            ev.Proto: lambda e, v, t: f"-- Protocol is now {e.mode}.",
            ev.Session: self._session,
            ev.Attached: lambda e, v, t: f"-- Attached to {e.name}'s session.",
            ev.Bye: lambda e, v, t: f"-- Goodbye ({e.reason}).",
            ev.Files: self._files,
            ev.Uploaded: self._uploaded,
            ev.FetchHint: self._fetch_hint,
            ev.Info: lambda e, v, t: f"-- {e.text}",
            ev.Ping: lambda e, v, t: f"-- ping {e.token}",
        }

    def render(self, event: ev.Event, viewer: str | None = None, tagged: bool = False) -> bytes:
        if isinstance(event, ev.Echo):  # IAC WONT/WILL ECHO: a telnet shows (or hides) typing
            return TELNET_ECHO_ON if event.on else TELNET_ECHO_OFF
        return self.text(event, viewer, tagged).encode("utf-8") + CRLF

    def text(self, event: ev.Event, viewer: str | None = None, tagged: bool = False) -> str:
        """The rendering without its final line ending (lines joined by CRLF)."""
        return self._table[type(event)](event, viewer, tagged)

    def stamp(self, ts: float) -> str:
        return "(" + time.strftime(self.time_format, time.localtime(ts)) + ")"

    def _head(self, e: Any, tagged: bool) -> str:
        """The time, and the room where the viewer is in several: ``(…) [#dev] ``."""
        room = getattr(e, "room", None)
        return f"{self.stamp(e.ts)} [{room}] " if tagged and room else f"{self.stamp(e.ts)} "

    # chat events

    def _message(self, e: ev.Message, viewer: str | None, tagged: bool) -> str:
        return f"{self._head(e, tagged)}<{e.sender}> {e.text}"

    def _action(self, e: ev.Action, viewer: str | None, tagged: bool) -> str:
        return f"{self._head(e, tagged)}* {e.sender} {e.text}"

    def _private(self, e: ev.Private, viewer: str | None, tagged: bool) -> str:
        if viewer is not None and viewer == e.sender:
            return f"{self.stamp(e.ts)} -> *{e.recipient}* {e.text}"
        return f"{self.stamp(e.ts)} *{e.sender}* {e.text}"

    def _join(self, e: ev.Join, viewer: str | None, tagged: bool) -> str:
        if e.arrival and not tagged:
            return f"{self.stamp(e.ts)} -- {e.name} has joined the chat."
        return f"{self.stamp(e.ts)} -- {e.name} has joined {e.room}."

    def _part(self, e: ev.Part, viewer: str | None, tagged: bool) -> str:
        why = f" ({e.reason})" if e.reason else ""
        return f"{self.stamp(e.ts)} -- {e.name} has left {e.room}{why}."

    def _topic(self, e: ev.Topic, viewer: str | None, tagged: bool) -> str:
        if not e.topic:
            return f"{self.stamp(e.ts)} -- {e.by} cleared the topic of {e.room}."
        return f"{self.stamp(e.ts)} -- {e.by} set the topic of {e.room}: {e.topic}"

    def _file_shared(self, e: ev.FileShared, viewer: str | None, tagged: bool) -> str:
        if e.removed or e.expired:
            return (f"{self._head(e, tagged)}-- {e.sender} shared {e.name} "
                    f"({human_size(e.size)}), {'removed' if e.removed else 'expired'} since.")
        where = f"/get {e.file_id}"
        if e.url:
            where += f" or {e.url}"
        return (
            f"{self._head(e, tagged)}-- {e.sender} shared {e.name} ({human_size(e.size)}). "
            f"Fetch it with {where}"
        )

    # replies

    def _participants(self, e: ev.Participants, viewer: str | None, tagged: bool) -> str:
        others = [n for n in e.names if n != e.you]
        where = f" in {e.room}" if tagged and e.room else ""
        if not others:
            lines = [f"-- You are the only one{where or ' here'}."]
        else:
            lines = [f"-- Here with you{where} ({len(others)}): " + ", ".join(others)]
        if e.topic:
            lines.append(f"-- Topic of {e.room}: {e.topic}")
        return "\r\n".join(lines)

    def _history(self, e: ev.History, viewer: str | None, tagged: bool) -> str:
        where = f" in {e.room}" if tagged and e.room else ""
        if not e.messages:
            return f"-- No messages{where} since then." if e.after is not None else (
                f"-- No messages{where} yet."
            )
        count = plural(len(e.messages), "message")
        lines = [f"-- {count}{where} since then:" if e.after is not None
                 else f"-- Last {count}{where}:"]
        lines.extend(self.text(m, viewer, False) for m in e.messages)
        lines.append("-- End of history.")
        return "\r\n".join(lines)

    def _people(self, title: str, users: tuple[ev.Participant, ...]) -> str:
        lines = [title]
        lines.extend(
            f"--   {u.name}  (idle {human_duration(u.idle)}{', account' if u.account else ''})"
            for u in users
        )
        return "\r\n".join(lines)

    def _bans(self, e: ev.BanList, viewer: str | None, tagged: bool) -> str:
        if not e.bans:
            return "-- Nobody is banned."
        lines = [f"-- {plural(len(e.bans), 'ban')}:"]
        for b in e.bans:
            until = "for good" if b.until is None else "until " + self.stamp(b.until)
            why = f": {b.reason}" if b.reason else ""
            lines.append(f"--   {b.target}  {until}, by {b.by}{why}")
        return "\r\n".join(lines)

    def _rooms(self, e: ev.Rooms, viewer: str | None, tagged: bool) -> str:
        if not e.rooms:
            return "-- No rooms."
        lines = [f"-- {plural(len(e.rooms), 'room')}:"]
        for r in e.rooms:
            marks = [plural(r.members, "member")]
            marks += ["you are in it"] if r.joined else []
            marks += ["private"] if r.private else []
            marks += ["topic-locked"] if r.locked else []
            lines.append(f"--   {r.name}  ({', '.join(marks)})" + (f"  {r.topic}" if r.topic
                                                                  else ""))
        return "\r\n".join(lines)

    def _help(self, e: ev.Help, viewer: str | None, tagged: bool) -> str:
        width = max(len(u) for u, _ in e.commands)
        lines = ["-- Commands:"]
        lines.extend(f"--   {u.ljust(width)}  {t}" for u, t in e.commands)
        return "\r\n".join(lines)

    def _session(self, e: ev.Session, viewer: str | None, tagged: bool) -> str:
        return (
            f"-- Your session key is {e.session}. A second connection that sends "
            f"'/attach {e.session}' can /send and /get for {e.name}."
        )

    def _files(self, e: ev.Files, viewer: str | None, tagged: bool) -> str:
        where = f" in {e.room}" if tagged and e.room else ""
        if not e.files:
            return f"-- No files shared{where} yet."
        lines = [f"-- {plural(len(e.files), 'recent file')}{where}:"]
        lines.extend(
            f"--   {f.file_id}  {f.name}  {human_size(f.size)}  by {f.uploader}  "
            f"{self.stamp(f.ts)}"
            for f in e.files
        )
        return "\r\n".join(lines)

    def _uploaded(self, e: ev.Uploaded, viewer: str | None, tagged: bool) -> str:
        f = e.file
        return f"-- Stored {f.name}: id {f.file_id}, {plural(f.size, 'byte')}, CRC-32 {f.crc32}."

    def _fetch_hint(self, e: ev.FetchHint, viewer: str | None, tagged: bool) -> str:
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
