"""What happens in the chat, as plain values.

Chat logic builds each event once; renderers turn it into bytes per
connection mode. Chat events (those with an ``id`` and a ``ts``) are numbered
from one server-wide sequence; the other events are replies to one connection.
Every event knows its wire ``type`` and can describe itself as a JSON-ready
dict; nothing here knows about sockets or encodings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar


def iso_utc(ts: float) -> str:
    """An ISO 8601 UTC timestamp with millisecond precision."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


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


# --- chat events: numbered, timestamped, seen by more than one connection ---


@dataclass(frozen=True, slots=True)
class Message(Event):
    type: ClassVar[str] = "message"
    historic: ClassVar[bool] = True
    id: int
    ts: float
    sender: str
    text: str


@dataclass(frozen=True, slots=True)
class Action(Event):
    type: ClassVar[str] = "action"
    historic: ClassVar[bool] = True
    id: int
    ts: float
    sender: str
    text: str


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
    type: ClassVar[str] = "join"
    id: int
    ts: float
    name: str


@dataclass(frozen=True, slots=True)
class Leave(Event):
    type: ClassVar[str] = "leave"
    id: int
    ts: float
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Nick(Event):
    type: ClassVar[str] = "nick"
    id: int
    ts: float
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Notice(Event):
    type: ClassVar[str] = "notice"
    id: int
    ts: float
    text: str


@dataclass(frozen=True, slots=True)
class FileShared(Event):
    type: ClassVar[str] = "file"
    id: int
    ts: float
    sender: str
    file_id: str
    name: str
    size: int
    crc32: str
    sha256: str
    url: str | None


# --- replies to one connection ---


@dataclass(frozen=True, slots=True)
class Prompt(Event):
    type: ClassVar[str] = "prompt"
    text: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Participant(Event):
    type: ClassVar[str] = "participant"
    name: str
    idle: float


@dataclass(frozen=True, slots=True)
class Welcome(Event):
    type: ClassVar[str] = "welcome"
    name: str
    session: str
    server: str
    http: str | None


@dataclass(frozen=True, slots=True)
class Participants(Event):
    type: ClassVar[str] = "participants"
    names: tuple[str, ...]
    you: str


@dataclass(frozen=True, slots=True)
class History(Event):
    type: ClassVar[str] = "history"
    messages: tuple[Event, ...]
    requested: int


@dataclass(frozen=True, slots=True)
class Who(Event):
    type: ClassVar[str] = "who"
    users: tuple[Participant, ...]


@dataclass(frozen=True, slots=True)
class Error(Event):
    type: ClassVar[str] = "error"
    code: str
    text: str
    command: str | None = None


@dataclass(frozen=True, slots=True)
class Help(Event):
    type: ClassVar[str] = "help"
    commands: tuple[tuple[str, str], ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "commands": [{"usage": u, "text": t} for u, t in self.commands],
        }


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


@dataclass(frozen=True, slots=True)
class Files(Event):
    type: ClassVar[str] = "files"
    files: tuple[FileInfo, ...]


@dataclass(frozen=True, slots=True)
class Uploaded(Event):
    """Confirmation to the uploader that a file is stored and announced."""

    type: ClassVar[str] = "uploaded"
    file: FileInfo


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


CHAT_EVENTS: tuple[type[Event], ...] = (
    Message, Action, Private, Join, Leave, Nick, Notice, FileShared,
)
