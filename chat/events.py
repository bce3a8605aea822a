"""What happens in the chat, as plain values, shared by the server and the client.

Chat logic builds each event once; renderers turn it into bytes per
connection mode. Chat events (those with an ``id`` and a ``ts``) are numbered
from one server-wide sequence; the other events are replies to one connection.
Every event knows its wire ``type``, describes itself as a JSON-ready dict
(``as_json``) and is read back from one (``from_json``, which checks every
field's type), so the client works with the same typed values the server
built. Events hold codes and values, never sentences: words are the
renderer's. Nothing here knows about sockets or encodings.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Self


def iso_utc(ts: float) -> str:
    """An ISO 8601 UTC timestamp with millisecond precision."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def parse_iso(text: str) -> float:
    """The POSIX time of an ``iso_utc`` timestamp (a naive one is taken as UTC)."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class BadEvent(ValueError):
    """A JSON object that is not a well-formed event of a known type."""


class UnknownEvent(BadEvent):
    """A JSON object whose ``type`` is none this version knows (a newer server's)."""


#: The largest integer a field may hold: sizes and ids fit in SQLite's 64 bits.
MAX_INT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event: a wire type and a JSON form."""

    type: ClassVar[str] = "event"
    #: Whether the event is part of the shared, replayable history.
    historic: ClassVar[bool] = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "ts":
                value = iso_utc(value)
            elif isinstance(value, Event):
                value = value.as_json()
            elif isinstance(value, tuple):
                value = [v.as_json() if isinstance(v, Event) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """The event ``data`` describes; ``BadEvent`` if it is not one of this class."""
        if not isinstance(data, dict) or data.get("type") != cls.type:
            raise BadEvent(f"not a {cls.type} event: {_what(data)}")
        hints = _hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise BadEvent(f"{cls.type}: no {f.name}")
                continue
            value = data[f.name]
            if f.name == "ts" and isinstance(value, str):
                try:
                    value = parse_iso(value)
                except ValueError:
                    raise BadEvent(f"{cls.type}: bad ts {value[:40]!r}") from None
            values[f.name] = _typed(hints[f.name], value, f"{cls.type}.{f.name}")
        return cls(**values)


# --- chat events: numbered, timestamped, seen by more than one connection ---


@dataclass(frozen=True, slots=True)
class Message(Event):
    type: ClassVar[str] = "message"
    historic: ClassVar[bool] = True
    id: int
    ts: float
    sender: str
    text: str
    room: str | None = None
    #: The sender is an account (a guest cannot pass for one).
    account: bool = False


@dataclass(frozen=True, slots=True)
class Action(Event):
    type: ClassVar[str] = "action"
    historic: ClassVar[bool] = True
    id: int
    ts: float
    sender: str
    text: str
    room: str | None = None
    account: bool = False


@dataclass(frozen=True, slots=True)
class Private(Event):
    type: ClassVar[str] = "private"
    id: int
    ts: float
    sender: str
    recipient: str
    text: str


@dataclass(frozen=True, slots=True)
class Join(Event):
    """Someone joined a room; ``arrival``: on arriving on the server (not ``/join``)."""

    type: ClassVar[str] = "join"
    id: int
    ts: float
    name: str
    room: str | None = None
    arrival: bool = False
    account: bool = False


@dataclass(frozen=True, slots=True)
class Leave(Event):
    """Someone left the server: seen once by everyone who shared a room with them."""

    type: ClassVar[str] = "leave"
    id: int
    ts: float
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Part(Event):
    """Someone left one room (``/part``, or kicked from it); ``reason`` may be empty."""

    type: ClassVar[str] = "part"
    id: int
    ts: float
    name: str
    room: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Topic(Event):
    """A room's topic was set (``topic`` empty: cleared) by ``by``."""

    type: ClassVar[str] = "topic"
    id: int
    ts: float
    room: str
    topic: str
    by: str


@dataclass(frozen=True, slots=True)
class Nick(Event):
    type: ClassVar[str] = "nick"
    id: int
    ts: float
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Notice(Event):
    """A server notice: to everyone, or (``room``) to one room."""

    type: ClassVar[str] = "notice"
    id: int
    ts: float
    text: str
    room: str | None = None


@dataclass(frozen=True, slots=True)
class FileShared(Event):
    """A file shared in a room; kept in its history, where it is later marked
    ``removed`` (``/rm``) or ``expired`` (retention) once its bytes are gone."""

    type: ClassVar[str] = "file"
    historic: ClassVar[bool] = True
    id: int
    ts: float
    sender: str
    file_id: str
    name: str
    size: int
    crc32: str
    sha256: str
    url: str | None
    room: str | None = None
    removed: bool = False
    expired: bool = False


@dataclass(frozen=True, slots=True)
class Removed(Event):
    """``by`` removed a shared file: its id no longer fetches anything."""

    type: ClassVar[str] = "removed"
    id: int
    ts: float
    by: str
    file_id: str
    name: str
    room: str | None = None


# --- replies to one connection ---


@dataclass(frozen=True, slots=True)
class Prompt(Event):
    """Asking for a name; ``reason`` says (in the renderer's words) why the last was refused."""

    type: ClassVar[str] = "prompt"
    text: str
    reason: str | None = None
    #: What the next line is: ``name``, or a password (``server``, ``account``,
    #: ``new``: one to make an account with).
    expects: str = "name"


@dataclass(frozen=True, slots=True)
class Echo(Event):
    """Telnet echo off while a password is typed (text mode only; JSON gets nothing)."""

    type: ClassVar[str] = "echo"
    on: bool


@dataclass(frozen=True, slots=True)
class Participant(Event):
    type: ClassVar[str] = "participant"
    name: str
    idle: float
    account: bool = False


@dataclass(frozen=True, slots=True)
class Welcome(Event):
    """The name was accepted; ``rooms`` the user is in, ``room`` the current one."""

    type: ClassVar[str] = "welcome"
    name: str
    session: str
    server: str
    http: str | None
    rooms: tuple[str, ...] = ()
    room: str | None = None
    account: bool = False
    operator: bool = False


@dataclass(frozen=True, slots=True)
class Participants(Event):
    """Who is in a room, sent to who just joined it (or made it current), and its topic."""

    type: ClassVar[str] = "participants"
    names: tuple[str, ...]
    you: str
    room: str | None = None
    topic: str = ""


@dataclass(frozen=True, slots=True)
class History(Event):
    type: ClassVar[str] = "history"
    messages: tuple[Message | Action | FileShared, ...]
    requested: int
    #: Set when the reply is to ``/history after ID``: the messages after that id.
    after: int | None = None
    room: str | None = None


@dataclass(frozen=True, slots=True)
class Who(Event):
    type: ClassVar[str] = "who"
    users: tuple[Participant, ...]


@dataclass(frozen=True, slots=True)
class Names(Event):
    """The members of one room, with idle times (``/names``, ``/who ROOM``)."""

    type: ClassVar[str] = "names"
    room: str
    users: tuple[Participant, ...]


@dataclass(frozen=True, slots=True)
class RoomInfo(Event):
    """One room as ``/rooms`` lists it."""

    type: ClassVar[str] = "roominfo"
    name: str
    members: int
    topic: str
    joined: bool
    private: bool = False
    locked: bool = False


@dataclass(frozen=True, slots=True)
class Rooms(Event):
    type: ClassVar[str] = "rooms"
    rooms: tuple[RoomInfo, ...]


@dataclass(frozen=True, slots=True)
class Invited(Event):
    """``by`` invited you into ``room`` (a private room then lets you in)."""

    type: ClassVar[str] = "invited"
    room: str
    by: str


@dataclass(frozen=True, slots=True)
class BanInfo(Event):
    """One ban: ``kind`` ``name`` or ``address``, ``until`` (None: for good)."""

    type: ClassVar[str] = "ban"
    kind: str
    target: str
    until: float | None
    reason: str
    by: str


@dataclass(frozen=True, slots=True)
class BanList(Event):
    type: ClassVar[str] = "bans"
    bans: tuple[BanInfo, ...]


@dataclass(frozen=True, slots=True)
class Current(Event):
    """Your current room changed: plain lines, ``/me`` and ``/send`` go there (None: none)."""

    type: ClassVar[str] = "current"
    room: str | None


@dataclass(frozen=True, slots=True)
class Error(Event):
    """Something refused: a code (docs/protocol.md, "Errors") and the values it names.

    The chat logic leaves ``text`` empty; the renderer words the code. A
    client reading the wire gets the server's words in ``text``, and the
    values (a limit, a size, a wait) as fields of their own.
    """

    type: ClassVar[str] = "error"
    #: The values a JSON client gets as fields of their own (docs/protocol.md).
    PUBLIC: ClassVar[frozenset[str]] = frozenset(
        {"limit", "size", "wait", "reason", "until", "offset"}
    )
    code: str
    command: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    text: str | None = None

    def as_json(self) -> dict[str, Any]:
        out = {"type": self.type, "code": self.code, "text": self.text, "command": self.command}
        out.update((k, v) for k, v in self.params.items() if k in self.PUBLIC)
        return out

    @classmethod
    def from_json(cls, data: Any) -> Self:
        if not isinstance(data, dict) or data.get("type") != cls.type:
            raise BadEvent(f"not an error event: {_what(data)}")
        code, text, command = data.get("code"), data.get("text"), data.get("command")
        if not isinstance(code, str) or not isinstance(text, str | None) or not isinstance(
            command, str | None
        ):
            raise BadEvent("error: bad code, text or command")
        params = {k: v for k, v in data.items() if k not in ("type", "code", "text", "command")}
        return cls(code, command, params, text)


def error(code: str, command: str | None = None, **params: Any) -> Error:
    """An ``Error`` with its values, to be worded by the renderer."""
    return Error(code, command, params)


@dataclass(frozen=True, slots=True)
class Help(Event):
    type: ClassVar[str] = "help"
    commands: tuple[tuple[str, str], ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "commands": [{"usage": u, "text": t} for u, t in self.commands],
        }

    @classmethod
    def from_json(cls, data: Any) -> Self:
        if not isinstance(data, dict) or data.get("type") != cls.type:
            raise BadEvent(f"not a help event: {_what(data)}")
        rows = data.get("commands")
        if not isinstance(rows, list) or not all(
            isinstance(r, dict) and isinstance(r.get("usage"), str)
            and isinstance(r.get("text"), str)
            for r in rows
        ):
            raise BadEvent("help: bad commands")
        return cls(tuple((r["usage"], r["text"]) for r in rows))


@dataclass(frozen=True, slots=True)
class Proto(Event):
    type: ClassVar[str] = "proto"
    mode: str


@dataclass(frozen=True, slots=True)
class Session(Event):
    type: ClassVar[str] = "session"
    session: str
    name: str


@dataclass(frozen=True, slots=True)
class Attached(Event):
    type: ClassVar[str] = "attached"
    name: str


@dataclass(frozen=True, slots=True)
class Bye(Event):
    type: ClassVar[str] = "bye"
    reason: str


@dataclass(frozen=True, slots=True)
class FileInfo(Event):
    """A stored attachment, as listed by ``/files``."""

    type: ClassVar[str] = "fileinfo"
    file_id: str
    name: str
    size: int
    crc32: str
    sha256: str
    uploader: str
    ts: float
    url: str | None
    room: str | None = None
    #: Removed (``/rm``): the record stays, the bytes are gone.
    removed: bool = False
    #: Expired (``files.retention_days``, ``files.max_store_bytes``): the same.
    expired: bool = False


@dataclass(frozen=True, slots=True)
class Files(Event):
    type: ClassVar[str] = "files"
    files: tuple[FileInfo, ...]
    room: str | None = None


@dataclass(frozen=True, slots=True)
class Uploaded(Event):
    """Confirmation to the uploader that a file is stored and announced."""

    type: ClassVar[str] = "uploaded"
    file: FileInfo


@dataclass(frozen=True, slots=True)
class Resume(Event):
    """Answer to ``/resume``: ``offset`` bytes of that upload are held (0: none)."""

    type: ClassVar[str] = "resume"
    name: str
    size: int
    crc32: str
    offset: int


@dataclass(frozen=True, slots=True)
class Download(Event):
    """Header of a ``/get``: exactly ``length`` raw bytes follow this line."""

    type: ClassVar[str] = "download"
    file: FileInfo
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class FetchHint(Event):
    """Text mode's answer to ``/get``: where to fetch, never the bytes."""

    type: ClassVar[str] = "fetch"
    file: FileInfo


@dataclass(frozen=True, slots=True)
class Ping(Event):
    """JSON connections that have been silent: any line (``/pong``) answers."""

    type: ClassVar[str] = "ping"
    token: str


@dataclass(frozen=True, slots=True)
class Info(Event):
    """A line of plain information in reply to a command."""

    type: ClassVar[str] = "info"
    text: str


#: The events of the conversation itself: numbered, timestamped, seen by more than one.
ChatEvent = (
    Message | Action | Private | Join | Leave | Part | Topic | Nick | Notice | FileShared | Removed
)
CHAT_EVENTS: tuple[type[Event], ...] = typing.get_args(ChatEvent)

#: Every event a server sends in JSON, by wire type (``Echo`` is telnet bytes only).
EVENTS: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        *CHAT_EVENTS, Prompt, Participant, Welcome, Participants, History, Who, Names, RoomInfo,
        Rooms, Invited, Current, BanInfo, BanList, Error, Help, Proto, Session, Attached,
        Bye, FileInfo, Files,
        Uploaded, Resume, Download, FetchHint, Ping, Info,
    )
}


def from_json(data: Any) -> Event:
    """The event a decoded JSON line describes; ``BadEvent`` if it is none we know."""
    cls = EVENTS.get(data.get("type")) if isinstance(data, dict) else None
    if cls is None:
        raise UnknownEvent(f"unknown event: {_what(data)}")
    return cls.from_json(data)


def _what(value: Any) -> str:
    """A short description of a JSON value (never its repr: it may nest without end)."""
    if isinstance(value, dict):
        return f"an object of type {str(value.get('type'))[:40]!r}"
    if isinstance(value, str | int | float | bool) or value is None:
        return repr(value)[:40]
    return f"a {type(value).__name__}"


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _typed(hint: Any, value: Any, where: str) -> Any:
    """``value`` (decoded JSON) as the field type ``hint`` says, or ``BadEvent``."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(hint):
            try:
                return _typed(option, value, where)
            except BadEvent:
                continue
    elif origin is tuple and isinstance(value, list):
        item, *more = typing.get_args(hint)
        if more == [Ellipsis]:
            return tuple(_typed(item, v, where) for v in value)
        if len(value) == len(more) + 1:
            return tuple(_typed(t, v, where) for t, v in zip((item, *more), value, strict=True))
    elif origin is dict and isinstance(value, dict):
        return value
    elif hint is Event:
        return from_json(value)
    elif isinstance(hint, type) and issubclass(hint, Event):
        return hint.from_json(value)
    elif hint is type(None) and value is None:
        return None
    elif hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value) and abs(value) <= MAX_INT:
            return float(value)
    elif hint is int and type(value) is int:
        if abs(value) <= MAX_INT:
            return value
    elif hint in (str, bool) and type(value) is hint:
        return value
    elif hint is Any:
        return value
    raise BadEvent(f"{where}: unexpected {_what(value)}")
