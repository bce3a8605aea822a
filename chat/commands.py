"""What each command does, once the connection has read, gated and parsed it.

``Commands.run`` takes a connection and a parsed ``wire`` command and acts
through the chat service, the file service and the connection's own small
interface (``Conn``). A handler that finishes later (a store lookup, an
upload, a download) returns a Deferred: the connection reads no further line
until it fires, so every answer and effect comes in the order the commands
came. The meaning of a command is fixed here, when it is read: ``/get``
answers in the mode the connection had when ``/get`` arrived.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.python.failure import Failure

from chat import events as ev
from chat import wire
from chat.admin import Admin
from chat.cluster import ClusterDown
from chat.config import Config
from chat.door import Door
from chat.files import FileService
from chat.limits import InputLimits
from chat.registry import name_problem
from chat.roomchat import RoomChat
from chat.sanitize import for_log
from chat.service import ChatService, User
from chat.transfer import Discard, Upload
from chat.uploads import HoldReading

Answer = defer.Deferred[Any] | None


class Conn(Protocol):
    """What a handler may do with the connection that sent the command."""

    state: wire.State
    mode: str
    user: User | None
    limits_in: InputLimits

    def reply(self, event: ev.Event) -> None: ...

    def set_mode(self, mode: str) -> None: ...

    def close(self, reason: str, *, say: ev.Event | None = None, abort: bool = False) -> None: ...

    def attach(self, owner: User) -> None: ...

    def receive(
        self, size: int, sink: Any, finish: Callable[[], defer.Deferred[Any]]
    ) -> defer.Deferred[None]: ...

    def download(
        self, header: bytes, f: Any, info: ev.FileInfo, offset: int
    ) -> defer.Deferred[None]: ...

    def hold(self, reason: str) -> None: ...

    def release(self, reason: str) -> None: ...

    def uploader_key(self) -> str:
        """Whose quotas an upload on this connection counts against."""

    def upload_owner(self) -> str:
        """Whose interrupted uploads this connection may resume."""


class Commands:
    """One handler per ``wire`` command."""

    def __init__(
        self, chat: ChatService, files: FileService, door: Door, admin: Admin, config: Config
    ) -> None:
        self.chat = chat
        self.files = files
        self.door = door
        self.admin = admin
        self.accounts = door.accounts
        self.config = config
        self.rooms = RoomChat(chat)
        self._handlers: dict[type[wire.Command], Callable[[Conn, Any], Answer]] = {
            wire.Help: self.help, wire.Who: self.who, wire.Me: self.me, wire.Msg: self.msg,
            wire.Nick: self.nick, wire.History: self.history, wire.Send: self.send,
            wire.Get: self.get, wire.Resume: self.resume, wire.Files: self.list_files,
            wire.Session: self.session,
            wire.Proto: self.proto, wire.Quit: self.quit, wire.Attach: self.attach,
            wire.Pong: self.pong, wire.Join: self.join, wire.Part: self.part,
            wire.RoomList: self.room_list, wire.Names: self.names, wire.Topic: self.topic,
            wire.Invite: self.invite, wire.Kick: self.kick, wire.Private: self.private,
            wire.Lock: self.lock, wire.Op: self.op, wire.Deop: self.op,
            wire.Register: self.register, wire.Login: self.login, wire.Pass: self.server_pass,
            wire.Password: self.password, wire.Unregister: self.unregister,
            wire.Ban: self.ban, wire.Unban: self.unban, wire.Bans: self.bans,
            wire.Say: self.say, wire.Rm: self.rm,
        }
        missing = set(wire.COMMANDS.values()) - set(self._handlers)
        assert not missing, f"commands without a handler: {missing}"

    def run(self, conn: Conn, command: wire.Command) -> Answer:
        return self._handlers[type(command)](conn, command)

    # --- any state ---

    def help(self, conn: Conn, cmd: wire.Help) -> None:
        conn.reply(ev.Help(wire.help_entries()))

    def proto(self, conn: Conn, cmd: wire.Proto) -> None:
        conn.set_mode(cmd.mode)
        conn.reply(ev.Proto(cmd.mode))
        if conn.state in (wire.State.REGISTER, wire.State.PASSWORD):
            self.door.ask_again(conn)  # type: ignore[arg-type]

    def quit(self, conn: Conn, cmd: wire.Quit) -> None:
        reason = f"quit: {cmd.reason}" if cmd.reason else "quit"
        conn.close(reason, say=ev.Bye(cmd.reason or "quit"))

    def pong(self, conn: Conn, cmd: wire.Pong) -> None:
        """Any input proves a client alive; /pong is the explicit answer to a ping."""

    def attach(self, conn: Conn, cmd: wire.Attach) -> Answer:
        def found(owner: User | None) -> None:
            if owner is None:
                conn.set_mode("json")
                conn.close("bad session", say=ev.error("bad_session", "attach"))
            elif conn.state is not wire.State.CLOSED:  # (gone while Redis answered)
                conn.attach(owner)

        d = self.chat.find_session(cmd.key)
        if d.called:  # (no round trip: answered at once)
            d.addCallback(found)
            return None
        return d.addCallback(found)

    # --- participants ---

    def who(self, conn: Conn, cmd: wire.Who) -> None:
        if cmd.room is None:
            conn.reply(self.chat.who())
        else:
            _answer(conn, self.rooms.names(_user(conn), cmd.room, "who"))

    def me(self, conn: Conn, cmd: wire.Me) -> None:
        _answer(conn, self.chat.act(_user(conn), cmd.text))

    def msg(self, conn: Conn, cmd: wire.Msg) -> None:
        user = _user(conn)
        if wire.is_room(cmd.to):
            _answer(conn, self.rooms.say(user, cmd.to, cmd.text))
        else:
            _answer(conn, self.chat.private(user, cmd.to, cmd.text))

    def nick(self, conn: Conn, cmd: wire.Nick) -> Answer:
        wait = conn.limits_in.nick_wait()
        if wait > 0:
            conn.reply(ev.error("nick_flood", "nick", wait=math.ceil(wait)))
            return
        user, cluster = _user(conn), self.chat.cluster
        held = self.chat.registry.get(cmd.name)
        if cluster is None or held is user or name_problem(cmd.name):
            _answer(conn, self.chat.nick(user, cmd.name))
            return None
        if held is not None:
            conn.reply(ev.error("name_taken", "nick", name=cmd.name))
            return None

        def claimed(won: bool) -> None:
            if not won:
                conn.reply(ev.error("name_taken", "nick", name=cmd.name))
                return
            problem = self.chat.nick(user, cmd.name)
            if problem is not None:
                if cmd.name not in self.chat.registry:
                    cluster.release(cmd.name)
                conn.reply(problem)

        def cut_off(failure: Failure) -> None:
            failure.trap(ClusterDown)
            conn.reply(ev.error("cluster_down", "nick"))

        return cluster.claim(cmd.name, user.account).addCallbacks(claimed, cut_off)

    def history(self, conn: Conn, cmd: wire.History) -> None:
        room = self.chat.rooms.resolve(_user(conn), None, "history")
        if isinstance(room, ev.Error):
            conn.reply(room)
        else:
            conn.reply(self.chat.history(room, cmd.count, cmd.after))

    def session(self, conn: Conn, cmd: wire.Session) -> None:
        user = _user(conn)
        conn.reply(ev.Session(user.session, user.name))

    # --- rooms ---

    def join(self, conn: Conn, cmd: wire.Join) -> None:
        _answer(conn, self.rooms.join(_user(conn), cmd.room))

    def part(self, conn: Conn, cmd: wire.Part) -> None:
        _answer(conn, self.rooms.part(_user(conn), cmd.room, cmd.reason))

    def room_list(self, conn: Conn, cmd: wire.RoomList) -> None:
        self.rooms.listing(_user(conn))

    def names(self, conn: Conn, cmd: wire.Names) -> None:
        _answer(conn, self.rooms.names(_user(conn), cmd.room, "names"))

    def topic(self, conn: Conn, cmd: wire.Topic) -> None:
        _answer(conn, self.rooms.topic(_user(conn), cmd.room, cmd.text))

    def invite(self, conn: Conn, cmd: wire.Invite) -> None:
        _answer(conn, self.rooms.invite(_user(conn), cmd.name, cmd.room))

    def kick(self, conn: Conn, cmd: wire.Kick) -> None:
        user = _user(conn)
        if cmd.room is None and user.operator:  # a server operator naming no room
            _answer(conn, self.admin.kick(user.name, cmd.name, cmd.reason))
        else:
            _answer(conn, self.rooms.kick(user, cmd.name, cmd.room, cmd.reason))

    def private(self, conn: Conn, cmd: wire.Private) -> None:
        _answer(conn, self.rooms.flag(_user(conn), cmd.room, "private", cmd.on))

    def lock(self, conn: Conn, cmd: wire.Lock) -> None:
        _answer(conn, self.rooms.flag(_user(conn), cmd.room, "locked", cmd.on))

    def op(self, conn: Conn, cmd: wire.Op) -> None:
        on = not isinstance(cmd, wire.Deop)
        _answer(conn, self.rooms.operator(_user(conn), cmd.name, cmd.room, on))

    # --- accounts ---

    def login(self, conn: Conn, cmd: wire.Login) -> Answer:
        return self.door.login(conn, cmd.name, cmd.password)  # type: ignore[arg-type]

    def server_pass(self, conn: Conn, cmd: wire.Pass) -> Answer:
        return self.door.server_password(conn, cmd.password)  # type: ignore[arg-type]

    def register(self, conn: Conn, cmd: wire.Register) -> Answer:
        user = _user(conn)
        settings = self.config.accounts
        if user.account:
            conn.reply(ev.error("already_account", "register", name=user.name))
        elif not settings.open_registration:
            conn.reply(ev.error("registration_closed", "register"))
        elif len(cmd.password) < settings.min_password_length:
            conn.reply(ev.error("weak_password", "register", limit=settings.min_password_length))
        else:
            def made(_: object) -> None:
                user.account = True
                user.operator = self.accounts.is_operator(user.name)
                conn.reply(ev.Info(
                    f"{user.name} is an account now: next time, the name asks for this password."
                ))

            return self.accounts.create(user.name, cmd.password).addCallback(made)
        return None

    def password(self, conn: Conn, cmd: wire.Password) -> Answer:
        user = _user(conn)
        least = self.config.accounts.min_password_length
        splits = [(old, new) for old, new in cmd.splits() if len(new) >= least]
        if not user.account:
            conn.reply(ev.error("not_an_account", "password", name=user.name))
        elif not splits:
            conn.reply(ev.error("weak_password", "password", limit=least))
        else:
            def right(i: int) -> Answer:
                return self.accounts.change(user.name, splits[i][1]).addCallback(
                    lambda _: conn.reply(ev.Info("Your password is changed."))
                )

            olds = [old for old, _ in splits]
            return self.door.check_password(conn, user.name, olds, "password", right)  # type: ignore[arg-type]
        return None

    def unregister(self, conn: Conn, cmd: wire.Unregister) -> Answer:
        user = _user(conn)
        if not user.account:
            conn.reply(ev.error("not_an_account", "unregister", name=user.name))
            return None

        def right(_: int) -> Answer:
            user.account = user.operator = False
            return self.accounts.remove(user.name).addCallback(lambda _: conn.reply(
                ev.Info(f"{user.name} is an account no more: anyone may take the name "
                        "once you leave.")
            ))

        return self.door.check_password(  # type: ignore[arg-type]
            conn, user.name, [cmd.password], "unregister", right
        )

    # --- server operators ---

    def _operator(self, conn: Conn, verb: str) -> User | None:
        user = _user(conn)
        if not user.operator:
            conn.reply(ev.error("not_operator", verb))
            return None
        return user

    def ban(self, conn: Conn, cmd: wire.Ban) -> Answer:
        if user := self._operator(conn, "ban"):
            return self.admin.ban(user.name, cmd.target, cmd.seconds, cmd.reason).addCallback(
                conn.reply
            )
        return None

    def unban(self, conn: Conn, cmd: wire.Unban) -> Answer:
        if user := self._operator(conn, "unban"):
            return self.admin.unban(user.name, cmd.target).addCallback(conn.reply)
        return None

    def bans(self, conn: Conn, cmd: wire.Bans) -> None:
        if self._operator(conn, "bans"):
            conn.reply(self.admin.bans())

    def say(self, conn: Conn, cmd: wire.Say) -> None:
        if user := self._operator(conn, "say"):
            _answer(conn, self.admin.say(user.name, cmd.text))

    def rm(self, conn: Conn, cmd: wire.Rm) -> Answer:
        user = _user(conn)
        return self.admin.rm(user.name, cmd.file_id, operator=user.operator).addCallback(
            lambda problem: _answer(conn, problem)
        )

    # --- files ---

    def list_files(self, conn: Conn, cmd: wire.Files) -> Answer:
        room = self.chat.rooms.resolve(_user(conn), cmd.room, "files")
        if isinstance(room, ev.Error):
            conn.reply(room)
            return None
        return self.files.recent(cmd.count, room.name).addCallback(
            lambda files: conn.reply(ev.Files(tuple(files), room.name))
        )

    def send(self, conn: Conn, cmd: wire.Send) -> Answer:
        owner = _user(conn)
        offer = self.files.offer(
            owner, conn.uploader_key(), cmd, HoldReading(conn, "upload"), conn.upload_owner()
        )
        if isinstance(offer, Upload):
            upload = offer

            def finish() -> defer.Deferred[None]:
                return self.files.complete(upload, owner, conn.reply)

            return conn.receive(cmd.left, upload, finish)
        if offer.code == "too_large":
            # No raw mode can follow a size that will never be read: close.
            conn.close("connection lost", say=offer)
            return None
        conn.reply(offer)  # refused: the bytes are read and dropped, the connection goes on
        return conn.receive(cmd.left, Discard(), lambda: defer.succeed(None))

    def resume(self, conn: Conn, cmd: wire.Resume) -> None:
        conn.reply(self.files.held(conn.upload_owner(), cmd))

    def get(self, conn: Conn, cmd: wire.Get) -> Answer:
        text_mode = conn.mode == "text"  # what /get means is fixed now, not at the answer

        def found(info: ev.FileInfo | None) -> Answer:
            if info is None:
                conn.reply(ev.error("no_such_file", "get", file_id=_shown(cmd.file_id)))
            elif info.removed or info.expired:
                code = "removed" if info.removed else "expired"
                conn.reply(ev.error(code, "get", file_id=info.file_id))
            elif text_mode:
                conn.reply(ev.FetchHint(info))
            elif cmd.offset > info.size:
                conn.reply(ev.error("bad_offset", "get", size=info.size))
            else:
                return self.chat.delivered(conn).addCallback(
                    self._download, conn, info, cmd.offset
                )
            return None

        return self.files.find(cmd.file_id).addCallback(found)

    def _download(self, _: object, conn: Conn, info: ev.FileInfo, offset: int) -> Answer:
        """The lines before it are out: the header, then the file's bytes."""
        if conn.state is wire.State.CLOSED:
            return None
        try:
            f = self.files.store.open_file(info, offset)
        except OSError:
            conn.reply(ev.error("no_such_file", "get", file_id=info.file_id))
            return None
        header = self.chat.renderers[conn.mode].render(
            ev.Download(info, offset, info.size - offset)
        )
        return conn.download(header, f, info, offset)


def _answer(conn: Conn, problem: ev.Error | None) -> None:
    """Say what went wrong, if anything did (most commands answer only that way)."""
    if problem is not None:
        conn.reply(problem)


def _user(conn: Conn) -> User:
    assert conn.user is not None  # the state gate only lets participants this far
    return conn.user


def _shown(text: str) -> str:
    """A user-typed value fit to be named back to them."""
    return for_log(text)[:64]
