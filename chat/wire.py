"""The wire vocabulary: connection states and commands, each defined once.

Server and client both import this module. A command is a small frozen class
holding its verb, the connection states it is allowed in, its usage and a
line of help, and a pure ``parse`` that turns the text after the verb into
typed fields or raises ``CommandError`` (Synapse's replication
``commands.py`` is the model). ``/help``, the server's state gate, the
client's completion and help, and the check of docs/protocol.md's command
table all read ``COMMANDS``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Self


class State(enum.Enum):
    """Where a connection is in its life (docs/protocol.md, "Connection states")."""

    REGISTER = "register"
    #: The next line is a password: the server's, or an account's.
    PASSWORD = "password"
    CHAT = "chat"
    ATTACHED = "attached"
    RAW = "raw"
    CLOSED = "closed"


#: The connection modes: readable lines, or one JSON object per line.
MODES: tuple[str, ...] = ("text", "json")

PROMPT = "Choose a username:"

#: A room name: ``#`` and 1-32 ASCII letters, digits, ``_``, ``-``, ``.`` (any case).
ROOM_RE = re.compile(r"#[A-Za-z0-9_.\-]{1,32}")


def room_name_problem(name: str) -> bool:
    """Whether ``name`` is not a room name."""
    return ROOM_RE.fullmatch(name) is None


def is_room(word: str) -> bool:
    """Whether an argument names a room (rather than a user): it starts with ``#``."""
    return word.startswith("#")

_ALL = frozenset({State.REGISTER, State.PASSWORD, State.CHAT, State.ATTACHED})
#: Before a name: answering the server's password, or choosing a name.
_DOOR = frozenset({State.REGISTER, State.PASSWORD})
_CHAT = frozenset({State.CHAT})
_FILES = frozenset({State.CHAT, State.ATTACHED})


class CommandError(ValueError):
    """A command whose arguments do not parse: an error code and its values."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code, params)
        self.code = code
        self.params = params


def _digits(text: str, most: int) -> bool:
    # ASCII digits only: str.isdigit() takes Arabic-Indic and superscript digits.
    return re.fullmatch(f"[0-9]{{1,{most}}}", text) is not None


@dataclass(frozen=True, slots=True)
class Command:
    """One command: what it is called, where it is allowed, and how it parses."""

    verb: ClassVar[str]
    usage: ClassVar[str]
    summary: ClassVar[str]
    states: ClassVar[frozenset[State]] = _CHAT
    #: Whether ``/help`` lists it (``/pong`` is for programs).
    listed: ClassVar[bool] = True

    @classmethod
    def parse(cls, args: str) -> Self:
        """The command with its arguments; the default takes none (and ignores extras)."""
        return cls()

    @classmethod
    def usage_error(cls) -> CommandError:
        return CommandError("usage", usage=cls.usage)


@dataclass(frozen=True, slots=True)
class Help(Command):
    verb = "help"
    usage = "/help"
    summary = "this list"
    states = _ALL


def _room_first(args: str) -> tuple[str | None, str]:
    """``'#dev rest of it'`` -> ``('#dev', 'rest of it')``; no room named: ``(None, args)``."""
    first, _, rest = args.strip().partition(" ")
    if first and is_room(first):
        return first, rest.strip()
    return None, args.strip()


def _switch(word: str, cls: type[Command]) -> bool:
    if word.lower() not in ("on", "off"):
        raise cls.usage_error()
    return word.lower() == "on"


@dataclass(frozen=True, slots=True)
class Who(Command):
    verb = "who"
    usage = "/who [ROOM]"
    summary = "who is on the server (or in ROOM), and how long they have been idle"
    room: str | None = None

    @classmethod
    def parse(cls, args: str) -> Self:
        room, rest = _room_first(args)
        if rest:
            raise cls.usage_error()
        return cls(room)


@dataclass(frozen=True, slots=True)
class Join(Command):
    verb = "join"
    usage = "/join ROOM"
    summary = "join a room (made if new) and talk there"
    room: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        room = args.strip()  # all of it: "#a b" is a bad room name, not extra words
        if not room:
            raise cls.usage_error()
        return cls(room)


@dataclass(frozen=True, slots=True)
class Part(Command):
    verb = "part"
    usage = "/part [ROOM] [REASON]"
    summary = "leave a room (the current one if none is named)"
    room: str | None = None
    reason: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        return cls(*_room_first(args))


@dataclass(frozen=True, slots=True)
class RoomList(Command):
    verb = "rooms"
    usage = "/rooms"
    summary = "the rooms, their members and topics"


@dataclass(frozen=True, slots=True)
class Names(Command):
    verb = "names"
    usage = "/names [ROOM]"
    summary = "who is in a room (the current one if none is named)"
    room: str | None = None

    @classmethod
    def parse(cls, args: str) -> Self:
        room, rest = _room_first(args)
        if rest:
            raise cls.usage_error()
        return cls(room)


@dataclass(frozen=True, slots=True)
class Topic(Command):
    verb = "topic"
    usage = "/topic [ROOM] [TEXT]"
    summary = "show a room's topic, or set it"
    room: str | None = None
    text: str | None = None

    @classmethod
    def parse(cls, args: str) -> Self:
        room, rest = _room_first(args)
        return cls(room, rest or None)


@dataclass(frozen=True, slots=True)
class Invite(Command):
    verb = "invite"
    usage = "/invite NAME [ROOM]"
    summary = "let NAME into a room (a private one needs it)"
    name: str = ""
    room: str | None = None

    @classmethod
    def parse(cls, args: str) -> Self:
        words = args.split()
        if not 1 <= len(words) <= 2 or (len(words) == 2 and not is_room(words[1])):
            raise cls.usage_error()
        return cls(words[0], words[1] if len(words) == 2 else None)


@dataclass(frozen=True, slots=True)
class Kick(Command):
    """Out of a room (ROOM, or the current one); a server operator who names no
    room puts NAME off the server."""

    verb = "kick"
    usage = "/kick NAME [ROOM] [REASON]"
    summary = "put someone out of a room (room operators), or off the server (operators)"
    name: str = ""
    room: str | None = None
    reason: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        name, _, rest = args.strip().partition(" ")
        if not name:
            raise cls.usage_error()
        return cls(name, *_room_first(rest))


@dataclass(frozen=True, slots=True)
class Private(Command):
    verb = "private"
    usage = "/private [ROOM] on|off"
    summary = "make a room invite-only, or open (room operators)"
    room: str | None = None
    on: bool = True

    @classmethod
    def parse(cls, args: str) -> Self:
        room, rest = _room_first(args)
        return cls(room, _switch(rest, cls))


@dataclass(frozen=True, slots=True)
class Lock(Command):
    verb = "lock"
    usage = "/lock [ROOM] on|off"
    summary = "let only room operators set the topic, or anyone"
    room: str | None = None
    on: bool = True

    @classmethod
    def parse(cls, args: str) -> Self:
        room, rest = _room_first(args)
        return cls(room, _switch(rest, cls))


@dataclass(frozen=True, slots=True)
class Op(Command):
    verb = "op"
    usage = "/op NAME [ROOM]"
    summary = "make NAME an operator of a room (room operators)"
    name: str = ""
    room: str | None = None

    @classmethod
    def parse(cls, args: str) -> Self:
        words = args.split()
        if not 1 <= len(words) <= 2 or (len(words) == 2 and not is_room(words[1])):
            raise cls.usage_error()
        return cls(words[0], words[1] if len(words) == 2 else None)


@dataclass(frozen=True, slots=True)
class Deop(Op):
    verb = "deop"
    usage = "/deop NAME [ROOM]"
    summary = "NAME no longer runs a room (room operators)"


@dataclass(frozen=True, slots=True)
class Me(Command):
    verb = "me"
    usage = "/me ACTION"
    summary = "say that you do something"
    text: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        if not args.strip():
            raise cls.usage_error()
        return cls(args)


@dataclass(frozen=True, slots=True)
class Msg(Command):
    verb = "msg"
    usage = "/msg NAME|ROOM TEXT"
    summary = "a private message to NAME, or a line in ROOM without switching to it"
    to: str = ""
    text: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        to, _, text = args.partition(" ")
        if not to or not text.strip():
            raise cls.usage_error()
        return cls(to, text)


@dataclass(frozen=True, slots=True)
class Nick(Command):
    verb = "nick"
    usage = "/nick NEW"
    summary = "change your name"
    name: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        return cls(args.strip())


@dataclass(frozen=True, slots=True)
class History(Command):
    """``/history [N]``, or ``/history after ID``: what was said since event ``ID``
    (a client back after an outage asks for exactly what it missed)."""

    verb = "history"
    usage = "/history [N | after ID]"
    summary = "the last N messages, or those after message ID"
    count: int | None = None
    after: int | None = None

    @classmethod
    def parse(cls, args: str) -> Self:
        words = args.split()
        if not words:
            return cls()
        if len(words) == 1 and _digits(words[0], 9):
            return cls(int(words[0]))
        if len(words) == 2 and words[0].lower() == "after" and _digits(words[1], 19):
            return cls(after=int(words[1]))
        raise cls.usage_error()


@dataclass(frozen=True, slots=True)
class Register(Command):
    verb = "register"
    usage = "/register PASSWORD"
    summary = "make your name an account: no one else can take it"
    password: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        if not args:
            raise cls.usage_error()
        return cls(args)


@dataclass(frozen=True, slots=True)
class Login(Command):
    verb = "login"
    usage = "/login NAME PASSWORD"
    summary = "enter as your account (instead of typing a name)"
    states = frozenset({State.REGISTER})
    name: str = ""
    password: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        name, _, password = args.partition(" ")
        if not name or not password:
            raise cls.usage_error()
        return cls(name, password)


@dataclass(frozen=True, slots=True)
class Pass(Command):
    verb = "pass"
    usage = "/pass PASSWORD"
    summary = "the server's password, where it has one (before a name)"
    states = _DOOR
    password: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        if not args:
            raise cls.usage_error()
        return cls(args)


@dataclass(frozen=True, slots=True)
class Password(Command):
    """``/password OLD NEW``: passwords may hold spaces, so the server tries each
    space as the split (OLD is the part that is right)."""

    verb = "password"
    usage = "/password OLD NEW"
    summary = "change your account's password"
    #: Most splits tried: each is a password check.
    MOST_SPLITS: ClassVar[int] = 4
    text: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        old, _, new = args.partition(" ")
        if not old or not new:
            raise cls.usage_error()
        return cls(args)

    def splits(self) -> list[tuple[str, str]]:
        """The (OLD, NEW) readings of the line, the first space first."""
        spaces = [i for i, c in enumerate(self.text) if c == " "][: self.MOST_SPLITS]
        return [(self.text[:i], self.text[i + 1:]) for i in spaces
                if self.text[:i] and self.text[i + 1:]]


@dataclass(frozen=True, slots=True)
class Unregister(Command):
    verb = "unregister"
    usage = "/unregister PASSWORD"
    summary = "your name is an account no more"
    password: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        if not args:
            raise cls.usage_error()
        return cls(args)


_DURATION = re.compile(r"([0-9]{1,6})([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> float | None:
    """``'30m'`` -> 1800.0; None if ``text`` is not a duration."""
    m = _DURATION.fullmatch(text)
    return int(m[1]) * _SECONDS[m[2]] if m else None


@dataclass(frozen=True, slots=True)
class Ban(Command):
    """``/ban NAME|ADDRESS [DURATION] [REASON]``: DURATION like ``30m``, ``2h``, ``7d``
    (none: for good); ADDRESS an IP address or a CIDR network."""

    verb = "ban"
    usage = "/ban NAME|ADDRESS [DURATION] [REASON]"
    summary = "keep a name or an address out (server operators)"
    target: str = ""
    seconds: float | None = None
    reason: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        target, _, rest = args.strip().partition(" ")
        if not target:
            raise cls.usage_error()
        first, _, more = rest.strip().partition(" ")
        seconds = duration(first)
        if seconds is None:
            return cls(target, None, rest.strip())
        return cls(target, seconds, more.strip())


@dataclass(frozen=True, slots=True)
class Unban(Command):
    verb = "unban"
    usage = "/unban NAME|ADDRESS"
    summary = "lift a ban (server operators)"
    target: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        if not args.strip() or " " in args.strip():
            raise cls.usage_error()
        return cls(args.strip())


@dataclass(frozen=True, slots=True)
class Bans(Command):
    verb = "bans"
    usage = "/bans"
    summary = "who is banned, until when, and why (server operators)"


@dataclass(frozen=True, slots=True)
class Say(Command):
    verb = "say"
    usage = "/say TEXT"
    summary = "a server notice to everyone (server operators)"
    text: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        if not args.strip():
            raise cls.usage_error()
        return cls(args.strip())


@dataclass(frozen=True, slots=True)
class Rm(Command):
    verb = "rm"
    usage = "/rm ID"
    summary = "remove a file you shared (server operators: any file)"
    states = _FILES
    file_id: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        if not args.strip() or " " in args.strip():
            raise cls.usage_error()
        return cls(args.strip())


@dataclass(frozen=True, slots=True)
class Send(Command):
    """``/send NAME SIZE [CRC32 [OFFSET]]``: SIZE raw bytes follow the line
    (SIZE - OFFSET when resuming an interrupted upload at OFFSET).

    SIZE is any run of ASCII digits, however long (a size over the limit is
    refused as ``too_large``, not as a malformed header). A malformed header
    is ``bad_header``: its size is unknown, so no raw bytes are read.
    """

    verb = "send"
    usage = "/send NAME SIZE [CRC32 [OFFSET]]"
    summary = "share a file: SIZE raw bytes follow the line (from OFFSET to resume)"
    states = _FILES
    #: Digits beyond this many only mean "too large": int() refuses over ~4300.
    MAX_SIZE_DIGITS: ClassVar[int] = 4000
    name: str = ""
    size: int = 0
    crc32: int | None = None
    offset: int = 0

    @classmethod
    def parse(cls, args: str) -> Self:
        parts = args.split(" ")
        if len(parts) not in (2, 3, 4) or not parts[0]:
            raise CommandError("bad_header", problem="fields", usage=cls.usage)
        name, size, *rest = parts
        number = _size(size)
        crc = _crc(rest[0]) if rest else None
        offset = 0
        if len(rest) == 2:
            if not re.fullmatch("[0-9]{1,20}", rest[1]) or int(rest[1]) > number:
                raise CommandError("bad_header", problem="offset", value=rest[1][:64])
            offset = int(rest[1])
        return cls(name, number, crc, offset)

    @property
    def left(self) -> int:
        """The raw bytes that follow the line."""
        return self.size - self.offset


def _size(text: str) -> int:
    if not re.fullmatch("[0-9]+", text):
        raise CommandError("bad_header", problem="size", value=text[:64])
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= Send.MAX_SIZE_DIGITS else 10**Send.MAX_SIZE_DIGITS


def _crc(text: str) -> int:
    if not re.fullmatch("[0-9A-Fa-f]{8}", text):
        raise CommandError("bad_header", problem="crc", value=text[:64])
    return int(text, 16)


@dataclass(frozen=True, slots=True)
class Resume(Command):
    """``/resume NAME SIZE CRC32``: how much of an interrupted upload the server holds."""

    verb = "resume"
    usage = "/resume NAME SIZE CRC32"
    summary = "how much of an interrupted upload the server holds, to send the rest"
    states = _FILES
    name: str = ""
    size: int = 0
    crc32: int = 0

    @classmethod
    def parse(cls, args: str) -> Self:
        parts = args.split(" ")
        if len(parts) != 3 or not parts[0]:
            raise cls.usage_error()
        try:
            return cls(parts[0], _size(parts[1]), _crc(parts[2]))
        except CommandError:
            raise cls.usage_error() from None


@dataclass(frozen=True, slots=True)
class Get(Command):
    verb = "get"
    usage = "/get ID [OFFSET]"
    summary = "fetch a shared file (JSON mode), or where to fetch it"
    states = _FILES
    file_id: str = ""
    offset: int = 0

    @classmethod
    def parse(cls, args: str) -> Self:
        parts = args.split()
        if not 1 <= len(parts) <= 2 or (len(parts) == 2 and not _digits(parts[1], 20)):
            raise cls.usage_error()
        return cls(parts[0], int(parts[1]) if len(parts) == 2 else 0)


@dataclass(frozen=True, slots=True)
class Files(Command):
    verb = "files"
    usage = "/files [ROOM] [N]"
    summary = "files recently shared in a room (the current one if none is named)"
    states = _FILES
    room: str | None = None
    count: int = 20

    @classmethod
    def parse(cls, args: str) -> Self:
        room, rest = _room_first(args)
        if not rest:
            return cls(room)
        if not _digits(rest, 4):
            raise cls.usage_error()
        return cls(room, max(1, int(rest)))


@dataclass(frozen=True, slots=True)
class Session(Command):
    verb = "session"
    usage = "/session"
    summary = "your session key, for a transfer connection"


@dataclass(frozen=True, slots=True)
class Proto(Command):
    verb = "proto"
    usage = "/proto text|json"
    summary = "switch between readable lines and JSON"
    states = frozenset({State.REGISTER, State.PASSWORD, State.CHAT})
    mode: str = "text"

    @classmethod
    def parse(cls, args: str) -> Self:
        mode = args.strip().lower()
        if mode not in MODES:
            raise cls.usage_error()
        return cls(mode)


@dataclass(frozen=True, slots=True)
class Quit(Command):
    verb = "quit"
    usage = "/quit [REASON]"
    summary = "leave"
    states = _ALL
    reason: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        return cls(args.strip())


@dataclass(frozen=True, slots=True)
class Attach(Command):
    verb = "attach"
    usage = "/attach KEY"
    summary = "make this a transfer connection for KEY's owner"
    # The session key is the stronger secret: no server password needed first.
    states = _DOOR
    key: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        return cls(args.strip())


@dataclass(frozen=True, slots=True)
class Pong(Command):
    verb = "pong"
    usage = "/pong [TOKEN]"
    summary = "answer a ping (any line does)"
    states = _ALL
    listed = False
    token: str = ""

    @classmethod
    def parse(cls, args: str) -> Self:
        return cls(args.strip())


#: Every command, in the order ``/help`` lists them.
COMMANDS: dict[str, type[Command]] = {
    c.verb: c
    for c in (
        Help, Who, Me, Msg, Nick, History, Join, Part, RoomList, Names, Topic, Invite, Kick,
        Private, Lock, Op, Deop, Send, Resume, Get, Files, Rm, Session, Register, Login, Pass,
        Password, Unregister, Ban, Unban, Bans, Say, Proto, Quit, Attach, Pong,
    )
}

#: What ``/help`` shows besides the commands.
ESCAPE_HELP = ("//TEXT", "say a line that begins with '/'")


def split_command(text: str) -> tuple[str, str]:
    """``'/Nick  bob'`` -> ``('nick', ' bob')``: the verb, lower case, and the rest."""
    verb, _, args = text[1:].partition(" ")
    return verb.lower(), args


def help_entries() -> tuple[tuple[str, str], ...]:
    """``(usage, summary)`` for every command a user types, and the ``//`` escape."""
    shown = tuple((c.usage, c.summary) for c in COMMANDS.values() if c.listed)
    return (*shown, ESCAPE_HELP)
