"""The wire: one ``ChatProtocol`` per connection, and the factory holding them.

A connection is an explicit state machine. ``REGISTER`` reads a user name (or
``/attach KEY``); ``CHAT`` reads chat lines and commands; ``ATTACHED`` is a
transfer connection acting for its owner's session; ``RAW`` reads exactly the
declared bytes of an upload and then returns to the state it came from;
``CLOSED`` ignores everything. Lines end in LF with an optional CR before it,
so telnet and nc both work. This module parses; ``ChatService`` decides.
"""

from __future__ import annotations

import enum
import os
import re
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, tcp
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from chat import events as ev
from chat.config import Config
from chat.limits import AddressLimiter, TokenBucket
from chat.sanitize import for_log, strip_telnet
from chat.service import ChatService, User
from chat.transfer import (
    CrcMismatch,
    Discard,
    FileStore,
    HeaderError,
    Pumped,
    PumpEnd,
    Sink,
    Upload,
    decode_file_name,
    parse_send_header,
)


class State(enum.Enum):
    REGISTER = "register"
    CHAT = "chat"
    ATTACHED = "attached"
    RAW = "raw"
    CLOSED = "closed"


PROMPT = "Choose a username:"

HELP: tuple[tuple[str, str], ...] = (
    ("/help", "this list"),
    ("/who", "who is here, and how long they have been idle"),
    ("/me ACTION", "say that you do something"),
    ("/msg NAME TEXT", "a private message to NAME"),
    ("/nick NEW", "change your name"),
    ("/history [N]", "the last N messages"),
    ("/send NAME SIZE [CRC32]", "share a file: SIZE raw bytes follow the line"),
    ("/get ID [OFFSET]", "fetch a shared file (JSON mode), or where to fetch it"),
    ("/files [N]", "recently shared files"),
    ("/session", "your session key, for a transfer connection"),
    ("/proto text|json", "switch between readable lines and JSON"),
    ("/quit [REASON]", "leave"),
    ("//TEXT", "say a line that begins with '/'"),
)

#: Commands a connection may use in each state (anything else is refused).
ALLOWED: dict[State, frozenset[str]] = {
    State.REGISTER: frozenset({"help", "proto", "quit", "attach", "pong"}),
    State.CHAT: frozenset(
        {"help", "who", "me", "msg", "nick", "history", "send", "get", "files", "session",
         "proto", "quit", "pong"}
    ),
    State.ATTACHED: frozenset({"help", "send", "get", "files", "quit", "pong"}),
}

#: Read size while an upload streams in (Twisted reads ``bufferSize`` at a time).
RAW_READ_BYTES = 256 * 1024

_SEND_HEADER = re.compile(rb"(?:^|\n)/send [^\n]*\n?", re.IGNORECASE)
_HTTP_REQUEST = re.compile(r"[A-Z]{3,7} \S+ HTTP/\d\.\d")


@implementer(IHalfCloseableProtocol)
class ChatProtocol(LineReceiver):
    """One client connection.

    Half-closeable: ``nc -N`` and scripts close their sending side after the
    last line; the server still answers everything and stores a finished
    upload before it closes the connection.
    """

    delimiter = b"\n"
    log = Logger()
    # Thousands of these live at once: slots keep each one small.
    __slots__ = (
        "_after_raw",
        "_cut",
        "_discarding",
        "_downloading",
        "_finishing",
        "_flood",
        "_flood_call",
        "_held",
        "_held_bytes",
        "_holds",
        "_last_input",
        "_liveness_call",
        "_nicks",
        "_over_soft_limit",
        "_ping_sent_at",
        "_prereg_bytes",
        "_prereg_lines",
        "_queued_downloads",
        "_raw_left",
        "_sink",
        "_stall_call",
        "_timeout",
        "address",
        "host",
        "limit",
        "limits",
        "mode",
        "service",
        "state",
        "user",
    )

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory
        self.service: ChatService = factory.service
        self.limit = factory.config.limits.max_line_bytes
        # Room for the CR before the LF; the exact limit is checked per line.
        self.MAX_LENGTH = self.limit + 1
        limits = factory.config.limits
        self.limits = limits
        self.state = State.REGISTER
        self.mode = "text"
        self.user: User | None = None
        self.address = ""
        self.host: str | None = None
        self._timeout: Any = None
        self._flood = TokenBucket(factory.clock, limits.flood_burst, limits.flood_rate)
        self._nicks = TokenBucket(factory.clock, limits.nick_burst, 1 / limits.nick_interval)
        self._flood_call: Any = None
        self._prereg_lines = 0
        self._prereg_bytes = 0
        self._last_input = factory.clock.seconds()
        self._liveness_call: Any = None
        self._ping_sent_at: float | None = None
        self._over_soft_limit = False
        self._cut = False
        self._stall_call: Any = None
        #: Skipping the rest of a line that was too long.
        self._discarding = False
        # RAW state
        self._sink: Sink | None = None
        self._raw_left = 0
        self._after_raw = State.CHAT
        # downloads: chat lines wait while file bytes are on the wire
        self._downloading = False
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._queued_downloads: list[tuple[ev.FileInfo, int]] = []
        self._holds: frozenset[str] = frozenset()
        #: Uploads whose last byte is in, being checked and stored.
        self._finishing: list[defer.Deferred[Any]] = []

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
        # Above the soft limit the transport pauses us: commands wait for the
        # client to read (so /history in a loop cannot amplify).
        self.transport.bufferSize = self.limits.send_queue_soft_bytes
        self._watch_output()
        self._timeout = self.factory.clock.callLater(
            self.limits.registration_timeout, self._registration_expired
        )
        self._start_liveness()
        self.reply(ev.Info(self.factory.config.server.banner))
        self.reply(ev.Prompt(PROMPT))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.factory.connection_closed(self)
        self._cancel_timeout()
        for call in (self._flood_call, self._liveness_call, self._stall_call):
            if call is not None and call.active():
                call.cancel()
        if self._sink is not None:
            sink, self._sink = self._sink, None
            self._end_upload(sink)
            sink.abort("connection lost")
        if self.user is not None and self.state is not State.CLOSED:
            if self._is_owner():
                self.service.leave(self.user, "connection lost")
            else:
                self.user.attachments.discard(self)
        self.state = State.CLOSED

    def readConnectionLost(self) -> None:
        """The client will send nothing more: finish what it asked, then close."""
        if self.state is State.RAW:
            self.transport.loseConnection()  # a short upload: connectionLost discards it
            return
        self._close_when_idle()

    def _close_when_idle(self, _: object = None) -> None:
        # Work that is still running may start more (a /get lookup starts a
        # download, a download the next queued one): look again when it ends.
        pending = [d for d in self._finishing if not d.called]
        if pending:
            defer.DeferredList(pending).addBoth(self._close_when_idle)
        else:
            self.transport.loseConnection()

    def _track(self, d: defer.Deferred[Any]) -> defer.Deferred[Any]:
        """Keep a half-closed connection open until ``d`` (a reply in the making) fires."""
        self._finishing = [f for f in self._finishing if not f.called]
        self._finishing.append(d)
        return d

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()

    def disconnect(self, reason: str) -> None:
        """Close from the server side (kick, owner gone, shutdown)."""
        if self.state is State.CLOSED:
            return
        self.reply(ev.Bye(reason))
        self.drop(reason)

    def drop(self, reason: str, *, abort: bool = False) -> None:
        """Leave (with ``reason`` as the one leave notice) and close."""
        if self.state is State.CLOSED:
            return
        if self.user is not None and self._is_owner():
            self.service.leave(self.user, reason)
        elif self.user is not None:
            self.user.attachments.discard(self)
        self.state = State.CLOSED
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _is_owner(self) -> bool:
        return self.user is not None and self.user.peer is self

    def _cancel_timeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def _registration_expired(self) -> None:
        self._timeout = None
        if self.state is State.REGISTER:
            self.error("timeout", "You did not choose a name in time. Goodbye.")
            self.drop("registration timeout")

    # --- liveness: pings for JSON connections, the optional idle limit ---

    def _start_liveness(self) -> None:
        """Watch for silence where it matters: JSON pings, or a configured idle limit."""
        if self._liveness_call is None and (self.mode == "json" or self.limits.idle_timeout):
            self._schedule_liveness(self.limits.ping_interval)

    def _schedule_liveness(self, delay: float) -> None:
        if delay > 0:
            self._liveness_call = self.factory.clock.callLater(delay, self._check_liveness)

    def _check_liveness(self) -> None:
        self._liveness_call = None
        if self.state is State.CLOSED or not (self.mode == "json" or self.limits.idle_timeout):
            return
        now = self.factory.clock.seconds()
        if self.state is State.RAW:
            self._last_input = now  # a file streaming in is input; the stall timer watches it
        silent = now - self._last_input
        idle_limit = self.limits.idle_timeout
        if idle_limit and self.state is State.CHAT and silent >= idle_limit:
            self.error("idle", f"Disconnected after {idle_limit:g} seconds without input.")
            self.drop("idle timeout")
            return
        interval, grace = self.limits.ping_interval, self.limits.ping_timeout
        if self._ping_sent_at is not None and self._last_input < self._ping_sent_at:
            if now - self._ping_sent_at >= grace:
                self.drop("ping timeout", abort=True)
                return
            self._schedule_liveness(self._ping_sent_at + grace - now)
            return
        self._ping_sent_at = None
        if self.mode == "json" and silent >= interval:
            self._ping_sent_at = now
            self.reply(ev.Ping(str(int(now))))
            self._schedule_liveness(grace)
            return
        wait = interval - silent
        if idle_limit and self.state is State.CHAT:
            wait = min(wait, idle_limit - silent)
        self._schedule_liveness(max(wait, 0.01))

    # --- output ---

    def send(self, data: bytes) -> None:
        """Peer interface: write rendered bytes, unless a file is on the wire."""
        if self._cut:
            return
        if self._downloading:
            self._held.append(data)
            self._held_bytes += len(data)
        else:
            self.transport.write(data)
        self.service.stats.bytes_out += len(data)
        if (self._over_soft_limit or self._downloading) and (
            self.queued_bytes() > self.limits.send_queue_bytes
        ):
            # Not from inside a broadcast: leave (and its own broadcast) next turn.
            self._cut = True
            self.factory.clock.callLater(0, self.drop, "send queue exceeded", abort=True)

    def _watch_output(self) -> None:
        # Over TLS a registered producer stalls the handshake (seen with
        # Twisted 26.10), so there the queue is checked on every write.
        if ISSLTransport.providedBy(self.transport):
            self._over_soft_limit = True
        else:
            self.transport.registerProducer(_OutputWatch(self), True)

    def queued_bytes(self) -> int:
        """Bytes written for this client that it has not read yet."""
        return queued(self.transport) + self._held_bytes

    def output_paused(self, paused: bool) -> None:
        """The transport's buffer went over (or back under) the soft limit."""
        self._over_soft_limit = paused or ISSLTransport.providedBy(self.transport)
        if paused:
            self.hold("output")
        else:
            self.release("output")

    def reply(self, event: ev.Event) -> None:
        self.service.reply(self, event, self.user.name if self.user else None)

    def error(self, code: str, text: str, command: str | None = None) -> None:
        self.reply(ev.Error(code, text, command))

    # --- input framing ---

    def dataReceived(self, data: bytes) -> None:
        """Split input into lines (or hand it to an upload) in one pass.

        Replaces ``LineReceiver.dataReceived``, which re-splits the whole
        buffer for every line (quadratic for a segment of many lines) and
        drops the connection on a long line. Raw mode, ``setLineMode(extra)``
        and pausing keep their ``LineReceiver`` meaning.
        """
        if self.state is State.CLOSED:
            return
        if data:
            self.service.stats.bytes_in += len(data)
            self._last_input = self.factory.clock.seconds()
            if self._raw_left and self._stall_call is not None:
                self._stall_call.reset(self.limits.upload_stall_timeout)
        self._buffer += data
        if self._busyReceiving:
            return  # setLineMode(extra) from rawDataReceived: the loop below goes on
        self._busyReceiving = True
        try:
            while self._buffer and not self.paused and self.state is not State.CLOSED:
                if self.line_mode:
                    self._read_lines()
                    if self.line_mode:
                        break  # only a partial line is left (or we paused)
                else:
                    chunk, self._buffer = self._buffer, b""
                    self.rawDataReceived(chunk)
        finally:
            self._busyReceiving = False
        if "flood" in self._holds and self.state is not State.CLOSED:
            self._check_excess_flood()
        if self.state is State.RAW and not self._buffer and not self.paused:
            self._maybe_pump()

    def _read_lines(self) -> None:
        buf, pos = self._buffer, 0
        longest = self.MAX_LENGTH
        while self.line_mode and not self.paused and self.state is not State.CLOSED:
            end = buf.find(b"\n", pos)
            if end < 0:
                break
            line, pos = buf[pos:end], end + 1
            if self._discarding:
                self._discarding = False  # the end of a line already refused
            elif len(line) > longest:
                self._refuse_long_line()
            else:
                self.lineReceived(line)
        rest = buf[pos:]
        unended = self.line_mode and not self.paused and self.state is not State.CLOSED
        if unended and len(rest) > longest:
            # No end in sight: refuse it now, skip the rest of it as it comes.
            self._refuse_long_line()
            self._discarding = True
            rest = b""
        elif self._discarding and self.line_mode:
            rest = b""
        self._buffer = rest

    def _check_excess_flood(self) -> None:
        if self._held_input() > self.limits.flood_max_pending_bytes:
            self.error("excess_flood", "Excess flood: you sent too much too fast.")
            self.drop("excess flood")

    def _refuse_long_line(self) -> None:
        if self.state is State.REGISTER and self._count_before_name(self.limit):
            return
        self._line_too_long()

    def _line_too_long(self) -> None:
        self.error("line_too_long", f"Line too long (the limit is {self.limit} bytes); dropped.")

    def _held_input(self) -> int:
        """Input read but held by flood control; an upload's bytes do not count."""
        header = _SEND_HEADER.search(self._buffer)
        return header.end() if header else len(self._buffer)

    def _count_before_name(self, size: int) -> bool:
        """Count a line read before registration; True if it was one too many.

        Counted per line, not per read: an upload that arrives in the same
        segment as the name is the user's, not input before registration.
        """
        self._prereg_lines += 1
        self._prereg_bytes += size + 1
        if (
            self._prereg_lines > self.limits.prereg_max_lines
            or self._prereg_bytes > self.limits.prereg_max_bytes
        ):
            self._too_much_before_name()
            return True
        return False

    def _too_much_before_name(self) -> None:
        self.error("too_much_input", "Too much input before choosing a name. Goodbye.")
        self.drop("too much input before registration")

    def _hold_for_flood(self) -> None:
        wait = self._flood.wait()
        if wait > 0 and self.state not in (State.RAW, State.CLOSED) and self._flood_call is None:
            self.hold("flood")
            self._flood_call = self.factory.clock.callLater(wait, self._flood_over)

    def _flood_over(self) -> None:
        self._flood_call = None
        if self._flood.wait() > 0:
            self._flood_call = self.factory.clock.callLater(self._flood.wait(), self._flood_over)
        else:
            self.release("flood")

    def lineReceived(self, line: bytes) -> None:
        # CR (and telnet's CR NUL) before the LF is line ending, not text.
        line = line.rstrip(b"\r\x00")
        if self.state is State.CLOSED:
            return
        if self.state is State.REGISTER and self._count_before_name(len(line)):
            return
        # Fakelag: every line (empty ones too) costs tokens, more if long;
        # past the burst the connection is read more slowly, never dropped.
        self._flood.take(1 + len(line) // self.limits.flood_line_bytes)
        try:
            self._dispatch(line)
        finally:
            self._hold_for_flood()

    def _dispatch(self, line: bytes) -> None:
        if len(line) > self.limit:
            self._line_too_long()
            return
        text = strip_telnet(line).decode("utf-8", "replace")
        if self.state is State.REGISTER:
            self._register_line(text)
        elif self.state is State.CHAT:
            self._chat_line(text)
        elif self.state is State.ATTACHED:
            self._attached_line(text)

    # --- states ---

    def _register_line(self, text: str) -> None:
        text = text.strip()
        if not text:
            self.reply(ev.Prompt(PROMPT))
        elif text.startswith("/"):
            self._command(text)
        elif _HTTP_REQUEST.fullmatch(text):
            base = self.service.public_base
            where = f" Files are served over HTTP at {base}/files/" if base else ""
            self.error("wrong_protocol", f"This is the chat port, not HTTP.{where}")
            self.state = State.CLOSED
            self.transport.loseConnection()
        else:
            result = self.service.register(self, text, self.address)
            if isinstance(result, ev.Error):
                self.reply(result)
                self.reply(ev.Prompt(PROMPT, result.text))
                return
            self._cancel_timeout()
            self.user = result
            self.state = State.CHAT

    def _chat_line(self, text: str) -> None:
        assert self.user is not None
        if text.startswith("//"):
            self.service.say(self.user, text[1:])
        elif text.startswith("/"):
            self._command(text)
        else:
            self.service.say(self.user, text)

    def _attached_line(self, text: str) -> None:
        if text.startswith("/"):
            self._command(text)
        elif text.strip():
            self.error("attached", "A transfer connection only takes /send, /get and /files.")

    def _command(self, text: str) -> None:
        verb, _, args = text[1:].partition(" ")
        verb = verb.lower()
        handler: Callable[[str], None] | None = getattr(self, f"do_{verb}", None)
        if handler is None:
            self.error(
                "unknown_command", f"Unknown command /{for_log(verb)[:32]}. Try /help.", verb
            )
        elif verb not in ALLOWED[self.state]:
            if self.state is State.REGISTER:
                self.error("not_registered", f"Choose a name before using /{verb}.", verb)
            else:
                self.error("not_here", f"/{verb} is not available on this connection.", verb)
        else:
            handler(args.strip(" "))

    # --- commands ---

    def do_pong(self, args: str) -> None:
        """Any input proves a client alive; /pong is the explicit answer to a ping."""

    def do_help(self, args: str) -> None:
        self.reply(ev.Help(HELP))

    def do_proto(self, args: str) -> None:
        mode = args.strip().lower()
        if mode not in self.service.renderers:
            self.error("usage", "Usage: /proto text|json", "proto")
            return
        self.mode = mode
        self._start_liveness()
        self.reply(ev.Proto(mode))
        if self.state is State.REGISTER:
            self.reply(ev.Prompt(PROMPT))

    def do_quit(self, args: str) -> None:
        reason = args.strip() or "quit"
        self.reply(ev.Bye(reason))
        if self.user is not None and self._is_owner():
            self.service.leave(self.user, f"quit: {reason}" if args.strip() else "quit")
        elif self.user is not None:
            self.user.attachments.discard(self)
        self.state = State.CLOSED
        self._close_when_idle()  # an upload sent before /quit is still answered

    def do_who(self, args: str) -> None:
        self.reply(self.service.who())

    def do_me(self, args: str) -> None:
        assert self.user is not None
        problem = self.service.act(self.user, args)
        if problem:
            self.reply(problem)

    def do_msg(self, args: str) -> None:
        assert self.user is not None
        to, _, text = args.partition(" ")
        problem = self.service.private(self.user, to, text)
        if problem:
            self.reply(problem)

    def do_nick(self, args: str) -> None:
        assert self.user is not None
        if self._nicks.wait() > 0:
            self.error(
                "nick_flood",
                f"Too many name changes; try again in {self._nicks.wait():.0f} seconds.",
                "nick",
            )
            return
        self._nicks.take()
        problem = self.service.nick(self.user, args.strip())
        if problem:
            self.reply(problem)

    def do_history(self, args: str) -> None:
        n: int | None = None
        if args.strip():
            if not re.fullmatch(r"[0-9]{1,9}", args.strip()):
                self.error("usage", "Usage: /history [N]", "history")
                return
            n = int(args)
        self.reply(self.service.history(n))

    def do_session(self, args: str) -> None:
        assert self.user is not None
        self.reply(ev.Session(self.user.session, self.user.name))

    def do_attach(self, args: str) -> None:
        owner = self.service.by_session(args.strip())
        if owner is None:
            self.mode = "json"
            self.error("bad_session", "Unknown or expired session key.", "attach")
            self.state = State.CLOSED
            self.transport.loseConnection()
            return
        self._cancel_timeout()
        self.user = owner
        owner.attachments.add(self)
        self.mode = "json"
        self._start_liveness()
        self.state = State.ATTACHED
        self.reply(ev.Attached(owner.name))

    # --- files ---

    def do_files(self, args: str) -> None:
        n = 20
        if args.strip():
            if not re.fullmatch(r"[0-9]{1,4}", args.strip()):
                self.error("usage", "Usage: /files [N]", "files")
                return
            n = max(1, int(args))

        def show(files: list[ev.FileInfo]) -> None:
            self.reply(ev.Files(tuple(self.service.with_url(f) for f in files)))

        self._track(
            self.service.store.recent_files(n).addCallback(show).addErrback(self._internal, "files")
        )

    def do_send(self, args: str) -> None:
        assert self.user is not None
        files = self.factory.files
        try:
            request = parse_send_header(args)
        except HeaderError as e:
            self.error("bad_header", str(e), "send")
            return
        too_large = files.too_large(request.size)
        if too_large is not None:
            self.error("too_large", too_large, "send")
            # Leave before CLOSED: connectionLost skips the leave of a closed connection.
            if self._is_owner():
                self.service.leave(self.user, "connection lost")
            else:
                self.user.attachments.discard(self)
            self.state = State.CLOSED
            self.transport.loseConnection()
            return
        name, problem = decode_file_name(request.name_token)
        if problem is None:
            used = self.service.store.upload_totals.get(self.user.name.lower(), 0)
            problem = files.refusal(request.size, used, self.user.name)
        if problem is not None or name is None:
            self.error("refused", f"{problem} The {request.size} bytes are discarded.", "send")
            self._receive_raw(request.size, Discard())
            return
        sink = files.begin_upload(
            self.user.name, name, request.size, request.crc32, _HoldFor(self, "upload")
        )
        self._receive_raw(request.size, sink)

    def _receive_raw(self, size: int, sink: Sink) -> None:
        self._sink = sink
        self._raw_left = size
        self._after_raw = self.state
        self.state = State.RAW
        if size == 0:
            self._raw_done(b"")
        else:
            self._stall_call = self.factory.clock.callLater(
                self.limits.upload_stall_timeout, self._upload_stalled
            )
            # Bigger reads while a file streams in through the reactor.
            self.transport.bufferSize = RAW_READ_BYTES
            self.setRawMode()

    def _maybe_pump(self) -> None:
        """Let a thread read the rest of an upload straight from the socket.

        Only a plain socket transport can hand its reads over (TLS must
        decrypt on the reactor); at most ``MAX_PUMPS`` uploads are pumped.
        Reading stays held until the pump reports back.
        """
        sink = self._sink
        if not (
            isinstance(sink, Upload)
            and not sink.pumping
            and isinstance(self.transport, tcp.Connection)
            and self.factory.files.may_pump()
        ):
            return
        try:
            pumped = sink.pump(
                os.dup(self.transport.fileno()), self._raw_left, self.limits.upload_stall_timeout
            )
        except (OSError, RuntimeError) as e:  # out of descriptors or threads
            self.log.warn("Upload read by the reactor: no pump ({why})", why=e)
            return
        if self._stall_call is not None and self._stall_call.active():
            self._stall_call.cancel()  # the pump times a stall itself
        self._stall_call = None
        self.hold("pump")
        pumped.addCallback(self._pumped, sink)

    def _pumped(self, result: Pumped, sink: Upload) -> None:
        if self._sink is not sink:
            return  # discarded meanwhile (connection lost, server stopping)
        self._raw_left -= result.received
        self.service.stats.bytes_in += result.received
        self._last_input = self.factory.clock.seconds()
        if result.end is PumpEnd.COMPLETE:
            self._raw_done(b"")
            self.release("pump")
        elif result.end is PumpEnd.STALLED:
            self._upload_stalled()
        elif result.end is not PumpEnd.STOPPED:
            self.transport.loseConnection()  # a short upload: connectionLost discards it

    def _upload_stalled(self) -> None:
        self._stall_call = None
        if self.state is State.RAW:
            self.error(
                "upload_stalled",
                f"No upload data for {self.limits.upload_stall_timeout:g} seconds "
                f"({self._raw_left} bytes missing); the upload is discarded.",
                "send",
            )
            self.drop("upload stalled")

    def rawDataReceived(self, data: bytes) -> None:
        assert self._sink is not None
        if len(data) < self._raw_left:
            self._raw_left -= len(data)
            self._sink.write(data)
            return
        chunk, rest = data[: self._raw_left], data[self._raw_left :]
        self._raw_left = 0
        if chunk:
            self._sink.write(chunk)
        self._raw_done(rest)

    #: Fires when this connection's last upload has been answered.
    _last_answer: defer.Deferred[None] | None = None

    def _raw_done(self, rest: bytes) -> None:
        sink, self._sink = self._sink, None
        assert sink is not None
        if self._stall_call is not None and self._stall_call.active():
            self._stall_call.cancel()
        self._stall_call = None
        self.transport.bufferSize = self.limits.send_queue_soft_bytes
        self.state = self._after_raw
        self._hold_for_flood()
        if isinstance(sink, Upload):
            # Uploads are stored on worker threads, a small one may be ready
            # first: answer and announce them in the order they were sent.
            outcome = sink.finish()
            previous = self._last_answer
            turn: defer.Deferred[None] = defer.Deferred()
            self._last_answer = self._track(turn)

            def answer(_: object = None) -> None:
                outcome.addBoth(self._upload_finished, sink).addBoth(
                    lambda _: turn.callback(None)
                )

            if previous is None:
                answer()
            else:
                previous.addBoth(answer)
        self.setLineMode(rest)

    def _end_upload(self, sink: Sink) -> None:
        if isinstance(sink, Upload):
            self.factory.files.end_upload(sink)

    def _upload_finished(self, result: Any, upload: Upload) -> defer.Deferred[None] | None:
        self._end_upload(upload)
        owner = self.user
        assert owner is not None
        t = upload.transfer
        if isinstance(result, Failure):
            if result.check(CrcMismatch):
                self.error("crc_mismatch", f"{result.value} Nothing was stored.", "send")
            else:
                self.log.failure("Storing upload {name} failed", result, name=for_log(t.name))
                self.error("store_failed", "The server could not store the file.", "send")
            return None
        info = ev.FileInfo(
            result.file_id, t.name, result.size, result.crc32, result.sha256, owner.name,
            self.factory.clock.seconds(), None,
        )

        def recorded(_: object) -> None:
            self.reply(ev.Uploaded(self.service.with_url(info)))
            self.service.file_shared(owner, info)

        return self.service.store.add_file(info).addCallbacks(
            recorded, self._internal, errbackArgs=("send",)
        )

    def do_get(self, args: str) -> None:
        parts = args.split()
        # str.isdigit() takes Arabic-Indic and superscript digits: ASCII digits only.
        if not 1 <= len(parts) <= 2 or (
            len(parts) == 2 and not re.fullmatch(r"[0-9]{1,20}", parts[1])
        ):
            self.error("usage", "Usage: /get ID [OFFSET]", "get")
            return
        file_id = parts[0]
        offset = int(parts[1]) if len(parts) == 2 else 0

        def found(info: ev.FileInfo | None) -> None:
            if self.state is State.CLOSED:
                return
            # A record whose file is gone (removed by hand) must not promise bytes.
            if info is None or not self.factory.files.path(info.file_id).is_file():
                self.error("no_such_file", f"No file with id {for_log(file_id)[:64]}.", "get")
                return
            info = self.service.with_url(info)
            if self.mode == "text":
                self.reply(ev.FetchHint(info))
                return
            if offset > info.size:
                self.error("bad_offset", f"OFFSET is beyond the file's {info.size} bytes.", "get")
                return
            self._download(info, offset)

        lookup = self.service.store.get_file(file_id)
        self._track(lookup.addCallback(found).addErrback(self._internal, "get"))

    def _download(self, info: ev.FileInfo, offset: int) -> None:
        if self._downloading:
            # One file at a time: start after the current one.
            self._queued_downloads.append((info, offset))
            return
        self.reply(ev.Download(info, offset, info.size - offset))
        # The file's producer takes the transport; output limits resume after.
        self.transport.unregisterProducer()
        self.output_paused(False)
        self._downloading = True
        owner = self.user.name if self.user else "?"
        d = self.factory.files.send_file(info, offset, self.transport, owner)
        self._track(d.addBoth(self._download_done))

    def _download_done(self, result: Any) -> None:
        self._downloading = False
        held, self._held = self._held, []
        self._held_bytes = 0
        if self.state is not State.CLOSED:
            self._watch_output()
            self.transport.writeSequence(held)
        if self._queued_downloads and self.state is not State.CLOSED:
            self._download(*self._queued_downloads.pop(0))

    def _internal(self, failure: Failure, command: str) -> None:
        self.log.failure("/{command} failed", failure, command=command)
        if self.state is not State.CLOSED:
            self.error("internal", "Something went wrong on the server.", command)

    # --- reading paused for a reason (an upload's disk queue, flood control) ---

    def hold(self, reason: str) -> None:
        """Stop reading until every reason to hold is released."""
        if not self._holds:
            self.pauseProducing()
        self._holds = self._holds | {reason}

    def release(self, reason: str) -> None:
        if reason in self._holds:
            self._holds = self._holds - {reason}
            if not self._holds and self.state is not State.CLOSED:
                self.resumeProducing()


def queued(transport: Any) -> int:
    """Bytes a Twisted transport holds for its peer (0 if it cannot tell)."""
    for t in (transport, getattr(transport, "transport", None)):
        try:
            return len(t.dataBuffer) - t.offset + t._tempDataLen
        except AttributeError:
            continue
    return 0


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


@implementer(IPushProducer)
class _OutputWatch:
    """Registered on the transport to hear when its buffer crosses the soft limit."""

    def __init__(self, protocol: ChatProtocol) -> None:
        self._protocol = protocol

    def pauseProducing(self) -> None:
        self._protocol.output_paused(True)

    def resumeProducing(self) -> None:
        self._protocol.output_paused(False)

    def stopProducing(self) -> None:
        pass


class _Refused(Protocol):
    """Says why a connection is turned away, and closes it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        self.transport.write(f"!! {self.reason}\r\n".encode())
        self.transport.loseConnection()


@implementer(IPushProducer)
class _HoldFor:
    """An upload's view of its connection: pausing it holds reading."""

    def __init__(self, protocol: ChatProtocol, reason: str) -> None:
        self._protocol = protocol
        self._reason = reason

    def pauseProducing(self) -> None:
        self._protocol.hold(self._reason)

    def resumeProducing(self) -> None:
        self._protocol.release(self._reason)

    def stopProducing(self) -> None:
        self._protocol.release(self._reason)


class ChatFactory(ServerFactory):
    """Holds the chat service (and its registry) for every connection."""

    protocol = ChatProtocol
    noisy = False
    log = Logger()

    def __init__(
        self, service: ChatService, files: FileStore, config: Config, clock: IReactorTime
    ) -> None:
        self.service = service
        self.files = files
        self.config = config
        self.clock = clock
        self.connections: set[ChatProtocol] = set()
        limits = config.limits
        self.limiter = AddressLimiter(
            clock,
            per_address=limits.max_connections_per_address,
            per_minute=limits.max_new_connections_per_minute,
            total=limits.max_connections,
            exempt=frozenset(limits.exempt_addresses),
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
