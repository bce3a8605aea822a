"""The wire: one ``ChatProtocol`` per connection, and the factory holding them.

A connection is an explicit state machine (``wire.State``): ``REGISTER``
reads a user name (or ``/attach KEY``); ``CHAT`` reads chat lines and
commands; ``ATTACHED`` is a transfer connection acting for its owner;
``RAW`` reads exactly the declared bytes of an upload, then returns to the
state it came from; ``CLOSED`` ignores everything. Commands are taken one at
a time, in order: while one is being answered (a store lookup, an upload
being stored, a download) the lines behind it wait, read but not acted on.
This module frames, gates and dispatches; ``Commands`` acts, ``ChatService``
decides, and the helpers (``InputLimits``, ``Liveness``, ``Output``,
``UploadReceiver``) each keep one concern of the connection.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from chat import events as ev
from chat import wire
from chat.accounts import Accounts
from chat.admin import Admin
from chat.commands import Commands
from chat.config import Config
from chat.door import Door
from chat.files import FileService
from chat.framing import TOO_LONG, TooLong
from chat.limits import AddressLimiter, Exempt, InputLimits
from chat.liveness import Liveness
from chat.output import Output
from chat.partials import resume_owner
from chat.quotas import uploader_key
from chat.reading import Reader
from chat.sanitize import for_log, strip_telnet
from chat.service import ChatService, User
from chat.uploads import UploadReceiver
from chat.wire import State

__all__ = ["ChatFactory", "ChatProtocol", "State"]

_HTTP_REQUEST = re.compile(r"[A-Z]{3,7} \S+ HTTP/\d\.\d")


@implementer(IHalfCloseableProtocol)
class ChatProtocol(Protocol, TimeoutMixin):
    """One client connection.

    Half-closeable: ``nc -N`` and scripts close their sending side after the
    last line; the server still answers everything (a last line without its
    LF included) and stores a finished upload before it closes.
    """

    log = Logger()
    # Thousands of these live at once: slots keep each one small.
    __slots__ = (
        "_after_raw", "_liveness", "_output", "_reader", "_upload", "address", "asking",
        "factory", "host", "limits", "limits_in", "mode", "service", "state", "user",
    )

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory
        self.service: ChatService = factory.service
        self.limits = limits = factory.config.limits
        self.state = State.REGISTER
        self.mode = "text"
        self.user: User | None = None
        self.address = ""
        self.host: str | None = None
        self._reader = Reader(self, limits.max_line_bytes)
        self.limits_in = InputLimits(factory.clock, limits, self)
        self._liveness = Liveness(factory.clock, limits, self)
        self._output: Output | None = None
        self._upload: UploadReceiver | None = None
        self._after_raw = State.CHAT
        #: While the state is PASSWORD: what the next line is the password of.
        self.asking = ("", "")

    def callLater(self, period: float, func: Callable[[], object]) -> Any:
        # TimeoutMixin's timer runs on the factory's clock (a task.Clock in tests).
        return self.factory.clock.callLater(period, func)

    # --- connection life ---

    def connectionMade(self) -> None:
        self.factory.connections.add(self)
        peer = self.transport.getPeer()
        self.host = getattr(peer, "host", None)
        self.address = f"{self.host}:{peer.port}" if self.host else str(peer)
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
            self.transport.setTcpKeepAlive(True)
            tune_keepalive(self.transport, self.limits.keepalive_idle)
        self._output = Output(self, self.transport, self.limits)
        self.setTimeout(self.limits.registration_timeout)  # absolute: input never resets it
        self._liveness.start()
        self.reply(ev.Info(self.factory.banner))
        self.factory.door.opened(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.factory.connection_closed(self)
        self._stop_timers()
        if self._upload is not None:
            self._upload.abort("connection lost")
        if self.state is not State.CLOSED:
            self._leave("connection lost")
        self.state = State.CLOSED

    def readConnectionLost(self) -> None:
        self._reader.end()

    def writeConnectionLost(self) -> None:
        self._end()

    def _end(self) -> None:
        assert self._output is not None
        self._output.end()

    def close(self, reason: str, *, say: ev.Event | None = None, abort: bool = False) -> None:
        """The one way out: say ``say``, leave with ``reason``, close once it is sent."""
        if self.state is State.CLOSED:
            return
        if say is not None:
            self.reply(say)
        self._leave(reason)
        self.state = State.CLOSED
        self._stop_timers()
        assert self._output is not None
        if abort or self._output.sending:  # a file on the wire cannot be followed by lines
            self.transport.abortConnection()
        else:
            self.service.delivered(self).addCallback(
                lambda _: self._end()
            )

    def disconnect(self, reason: str) -> None:
        """Peer interface: closed by the server (kick, owner gone, shutdown)."""
        self.close(reason, say=ev.Bye(reason))

    def _leave(self, reason: str) -> None:
        if self.user is not None and self.user.peer is self:
            self.service.leave(self.user, reason)
        elif self.user is not None:
            self.user.attachments = self.user.attachments - {self}

    def _stop_timers(self) -> None:
        self.setTimeout(None)
        self._liveness.stop()
        self.limits_in.stop()

    def timeoutConnection(self) -> None:
        if self.state is State.REGISTER:
            self.close("registration timeout", say=ev.error("timeout"))

    # --- output ---

    def send(self, data: bytes) -> None:
        """Peer interface: rendered bytes for this client."""
        assert self._output is not None
        self.service.stats.bytes_out += len(data)
        self._output.write(data)

    def reply(self, event: ev.Event) -> None:
        self.service.reply(self, event, self.user.name if self.user else None)

    def overflowed(self) -> None:
        # Not from inside a broadcast: leave (and its own broadcast) next turn.
        self.factory.clock.callLater(0, self.close, "send queue exceeded", abort=True)

    def set_mode(self, mode: str) -> None:
        self.service.set_mode(self, mode)
        self._liveness.start()

    # --- input ---

    def dataReceived(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        self.service.stats.bytes_in += len(data)
        self._liveness.input()
        self._reader.feed(data)

    def raw_left(self) -> int:
        assert self._upload is not None
        return self._upload.left

    def raw(self, data: bytes) -> None:
        assert self._upload is not None
        self._upload.write(data)

    def after_input(self) -> None:
        reader = self._reader
        if reader.held("flood") and self.limits_in.excess(reader.framer.pending()):
            self.close("excess flood", say=ev.error("excess_flood"))
        elif self.state is State.REGISTER and self.limits_in.too_much_before_name(
            reader.framer.buffered
        ):
            self.close("too much input before registration", say=ev.error("too_much_input"))
        elif self.state is State.RAW and not reader.framer.buffered and not reader.held():
            assert self._upload is not None
            self._upload.take_over(self.transport)
        elif reader.eof and not reader.paused():
            self._input_ended()

    def _input_ended(self) -> None:
        """The client sent all it will: act on a last unended line, then close."""
        if self.state is State.RAW:
            self.transport.loseConnection()  # a short upload: connectionLost discards it
            return
        last = self._reader.framer.rest().removesuffix(b"\r")
        if last:
            self.line(last if len(last) <= self.limits.max_line_bytes else TOO_LONG)
        if self.state is not State.CLOSED and not self._reader.paused():
            self.service.delivered(self).addCallback(
                lambda _: self._end()
            )

    def line(self, line: bytes | TooLong) -> None:
        if self.state in (State.REGISTER, State.PASSWORD):
            size = self.limits.max_line_bytes if isinstance(line, TooLong) else len(line)
            if self.limits_in.before_name(size):
                self.close("too much input before registration", say=ev.error("too_much_input"))
                return
        if isinstance(line, TooLong):
            self.reply(ev.error("line_too_long", limit=self.limits.max_line_bytes))
            return
        if self.state not in (State.REGISTER, State.PASSWORD):
            self.limits_in.charge(len(line))
        text = strip_telnet(line).decode("utf-8", "replace")
        if self.state is State.REGISTER:
            self._register_line(text)
        elif self.state is State.PASSWORD:
            # Only the server's password can be answered with a command (/pass,
            # /quit): an account's password may begin with '/'.
            if self.asking[0] == "server" and text.startswith("/"):
                self._command(text)
            else:
                self._wait(self.factory.door.password(self, text), "password")
        elif self.state is State.CHAT:
            self._chat_line(text)
        elif self.state is State.ATTACHED:
            self._attached_line(text)
        if self.state in (State.CHAT, State.ATTACHED):
            self.limits_in.throttle()

    def _register_line(self, text: str) -> None:
        if not text.strip():
            self.reply(ev.Prompt(wire.PROMPT))
        elif text.startswith("/"):
            self._command(text)
        elif _HTTP_REQUEST.fullmatch(text):
            self.close("wrong protocol", say=ev.error(
                "wrong_protocol", http=self.service.public_base
            ))
        else:
            self._wait(self.factory.door.name(self, text), "name")

    def entered(self, user: User) -> None:
        """The door let this connection in as ``user``."""
        self.setTimeout(None)
        self.user = user
        self.state = State.CHAT

    def _chat_line(self, text: str) -> None:
        assert self.user is not None
        if text.startswith("/") and not text.startswith("//"):
            self._command(text)
        else:
            problem = self.service.say(self.user, text[1:] if text.startswith("//") else text)
            if problem is not None:
                self.reply(problem)

    def _attached_line(self, text: str) -> None:
        if text.startswith("/"):
            self._command(text)
        elif text.strip():
            self.reply(ev.error("attached"))

    def _command(self, text: str) -> None:
        verb, args = wire.split_command(text)
        command = wire.COMMANDS.get(verb)
        if command is None:
            self.reply(ev.error("unknown_command", verb, verb=for_log(verb)[:32]))
        elif self.state not in command.states:
            code = "not_registered" if self.state in (State.REGISTER, State.PASSWORD) else (
                "not_here"
            )
            self.reply(ev.error(code, verb, verb=verb))
        else:
            try:
                parsed = command.parse(args.strip(" "))
            except wire.CommandError as e:
                self.reply(ev.error(e.code, verb, **e.params))
                return
            self._wait(self.factory.commands.run(self, parsed), verb)

    def _wait(self, answer: defer.Deferred[Any] | None, verb: str) -> None:
        if answer is not None:  # an answer in the making: later lines wait for it
            self._reader.wait(answer.addErrback(self._internal, verb))

    def _internal(self, failure: Failure, verb: str) -> None:
        self.log.failure("/{verb} failed", failure, verb=verb)
        if self.state is not State.CLOSED:
            self.reply(ev.error("internal", verb))

    def hold(self, reason: str) -> None:
        """Stop reading until every reason to hold is released."""
        self._reader.hold(reason)

    def release(self, reason: str) -> None:
        self._reader.release(reason)

    # --- uploads and downloads ---

    def receive(
        self, size: int, sink: Any, finish: Callable[[], defer.Deferred[Any]]
    ) -> defer.Deferred[None]:
        """Read the next ``size`` raw bytes into ``sink``; fires once the upload is answered."""
        self._upload = upload = UploadReceiver(
            self, sink, size, finish, self.factory.files.store, self.factory.clock, self.limits
        )
        self._after_raw, self.state = self.state, State.RAW
        self._reader.update()
        upload.start(self.transport)
        return upload.done

    def received(self, n: int) -> None:
        self.service.stats.bytes_in += n
        self._liveness.input()

    def all_received(self) -> None:
        self._upload = None
        self.transport.bufferSize = self.limits.send_queue_soft_bytes
        self.state = self._after_raw
        self._reader.update()
        self.limits_in.throttle()

    def download(self, header: bytes, f: Any, info: ev.FileInfo, offset: int) -> Any:
        """Write ``header`` and the open file ``f``; fires after its last byte."""
        assert self._output is not None and self.user is not None
        files = self.factory.files.store
        return self._output.download(header, files, f, info, offset, self.user.name)

    def uploader_key(self) -> str:
        assert self.user is not None
        user = self.user
        return uploader_key(self.host, user.name, self.factory.shared, user.account)

    def upload_owner(self) -> str:
        assert self.user is not None
        return resume_owner(self.host, self.user.name, self.user.account)

    def attach(self, owner: User) -> None:
        """Become a transfer connection acting for ``owner``."""
        self.setTimeout(None)
        self.user = owner
        owner.attachments = owner.attachments | {self}
        self.set_mode("json")
        self.state = State.ATTACHED
        self.reply(ev.Attached(owner.name))

    def busy(self) -> bool:
        """Liveness: bytes are moving for this client (it could not answer a ping)."""
        return self.state is State.RAW or (self._output is not None and self._output.sending)


def tune_keepalive(transport: Any, idle: int) -> None:
    """Probe a silent peer after ``idle`` seconds, and give up on it after ~2 x idle."""
    if idle <= 0:
        return
    try:
        sock = transport.getHandle()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle // 3))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        # Unacknowledged data counts too: keepalive alone waits ~15 minutes.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, idle * 2000)
    except (AttributeError, OSError):
        pass  # not Linux, or not a socket: the defaults stay


class _Refused(Protocol):
    """Says why a connection is turned away, and closes it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        self.transport.write(f"!! {self.reason}\r\n".encode())
        self.transport.loseConnection()


class ChatFactory(ServerFactory):
    """Holds the chat service (and its registry) for every connection."""

    protocol = ChatProtocol
    noisy = False
    log = Logger()

    def __init__(
        self,
        service: ChatService,
        files: FileService,
        accounts: Accounts,
        config: Config,
        clock: IReactorTime,
    ) -> None:
        self.service = service
        self.files = files
        self.accounts = accounts
        self.door = Door(config, service, accounts, clock)
        self.admin = Admin(service, accounts, files, clock)
        self.commands = Commands(service, files, self.door, self.admin, config)
        self.config = config
        self.clock = clock
        #: The first line every connection gets (with the TLS fingerprint, if any).
        self.banner = config.server.banner
        self.connections: set[ChatProtocol] = set()
        limits = config.limits
        #: Addresses everyone may share (loopback): counted by user name instead.
        self.shared = Exempt(limits.exempt_addresses)
        self.limiter = AddressLimiter(
            clock,
            per_address=limits.max_connections_per_address,
            per_minute=limits.max_new_connections_per_minute,
            total=limits.max_connections,
            exempt=limits.exempt_addresses,
            max_tracked=limits.max_tracked_addresses,
        )

    def buildProtocol(self, addr: Any) -> Protocol:
        host = getattr(addr, "host", None)
        refusal = self.limiter.refusal(host)
        if refusal is not None:
            self.log.info("Refused a connection from {host}: {why}", host=host, why=refusal)
            return _Refused(refusal)
        self.limiter.opened(host)
        return ChatProtocol(self)

    def connection_closed(self, conn: ChatProtocol) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.limiter.closed(conn.host)
