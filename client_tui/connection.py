"""The network side of the chat connection: typed events from JSON lines, endpoints, back-off.

``JsonLines`` is the framing both of our connection kinds share (the chat
connection and the per-transfer ``/attach`` connections): LF-terminated lines,
each a JSON object read into a typed ``chat.events`` event, with raw mode
available for download bytes. The server speaks text until it has seen
``/proto json`` (or ``/attach``), so lines that are not JSON, and objects of
a type this client does not know, are ignored: the client never parses human
text. An object of a known type with bad fields goes to ``bad_event``.
Over TLS nothing is written until the handshake is done, so a server whose
certificate fails the check (``pinning``) never receives a byte; a
connection that ends before that is reported as a failed connection.
``ChatConnection`` forwards everything to an owner object (``ChatSession``),
which holds all the state; ``Backoff`` computes reconnection delays, and
``make_endpoint`` builds the TCP or TLS endpoint from the command line.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener, IStreamClientEndpoint
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from chat import events as ev

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def read_event(data: object) -> ev.Event | None:
    """The typed event a decoded JSON line holds; ``None`` if it holds no type we know.

    Raises ``chat.events.BadEvent`` for a known type with missing or mistyped fields.
    """
    try:
        return ev.from_json(data)
    except ev.UnknownEvent:
        return None  # a newer server's event, or not an event at all


@implementer(IHandshakeListener)
class JsonLines(LineReceiver):
    """LF-terminated JSON objects in, UTF-8 lines out; ``ready`` once bytes may go out."""

    # The server ends lines with CRLF; splitting on LF and dropping the CR
    # also copes with a server that sends bare LF.
    delimiter = b"\n"
    # A ``history`` reply can carry 500 messages of up to 4 KiB each.
    MAX_LENGTH = 16 * 1024 * 1024
    #: whether ``ready`` ran (a connection lost before it never reached the server)
    is_ready = False

    def connectionMade(self) -> None:
        # Chat is small interactive writes: Nagle would add ~10 ms to each.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:
                pass
        if not _is_tls(self.transport):
            self.ready()
        # Over TLS: nothing may be written before the server's certificate has passed,
        # which it has once the handshake completes (handshakeCompleted).

    def handshakeCompleted(self) -> None:
        self.ready()

    def ready(self) -> None:
        """The connection may be written to (TCP: at once; TLS: the certificate checked)."""
        self.is_ready = True

    def lineReceived(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            data = json.loads(line.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            return  # text-mode banner or prompt before the mode switch
        try:
            event = read_event(data)
        except ev.BadEvent as e:
            self.bad_event(str(e))
            return
        if event is not None:
            self.event_received(event)

    def event_received(self, event: ev.Event) -> None:
        raise NotImplementedError

    def bad_event(self, problem: str) -> None:
        """A line that names a known event type but is not a well-formed one."""
        raise NotImplementedError

    def send_line(self, text: str) -> None:
        # One line only: a CR or LF inside would let input smuggle a second command.
        text = text.replace("\r", " ").replace("\n", " ")
        self.transport.write(text.encode("utf-8") + b"\n")

    def lineLengthExceeded(self, line: bytes) -> None:
        # A line this long is not from a sane server: drop the connection
        # rather than buffer without limit.
        self.transport.abortConnection()


class Owner(Protocol):
    def connected(self, proto: ChatConnection) -> None: ...
    def event(self, proto: ChatConnection, event: ev.Event) -> None: ...
    def bad_event(self, proto: ChatConnection, problem: str) -> None: ...
    def lost(self, proto: ChatConnection, reason: Failure) -> None: ...
    def failed(self, reason: Failure) -> None: ...


class ChatConnection(JsonLines):
    """The chat connection: asks for JSON mode, then forwards every event."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner

    def ready(self) -> None:
        super().ready()
        self.send_line("/proto json")
        self.owner.connected(self)

    def event_received(self, event: ev.Event) -> None:
        self.owner.event(self, event)

    def bad_event(self, problem: str) -> None:
        self.owner.bad_event(self, problem)

    def connectionLost(self, reason: Failure | None = None) -> None:
        reason = reason or Failure(ConnectionError("closed"))
        if self.is_ready:
            self.owner.lost(self, reason)
        else:  # the TLS handshake failed (a refused certificate, say): no connection
            self.owner.failed(reason)


class Backoff:
    """Exponential back-off with jitter, capped: 0.5 s, 1 s, 2 s … 30 s.

    The jitter (each delay is scaled by a random factor in [0.5, 1)) keeps a
    room full of clients from reconnecting in lock-step after a restart.
    """

    def __init__(
        self,
        initial: float = 0.5,
        cap: float = 30.0,
        factor: float = 2.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.rand = rand
        self.attempt = 0

    def next(self) -> float:
        base = min(self.cap, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return base * (0.5 + self.rand() / 2)

    def reset(self) -> None:
        self.attempt = 0


def parse_address(text: str | None) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``:PORT`` or ``[v6]:PORT`` → (host, port)."""
    if not text:
        return DEFAULT_HOST, DEFAULT_PORT
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port: {port!r}")
    return host or DEFAULT_HOST, int(port) if port else DEFAULT_PORT


def make_endpoint(
    reactor: Any, host: str, port: int, tls: bool = False, ca: str | None = None,
    trust: Any = None,
) -> IStreamClientEndpoint:
    """TCP; or TLS checked against ``ca`` (or the system's CAs), or pinned by ``trust``
    (a ``pinning.Trust``: trust on first use)."""
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host, port, timeout=10)
    if trust is not None:
        from client_tui.pinning import PinnedTLS

        endpoint = wrapClientTLS(PinnedTLS(host, trust), endpoint)
    elif tls or ca:
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        root = Certificate.loadPEM(Path(ca).read_bytes()) if ca else None
        endpoint = wrapClientTLS(optionsForClientTLS(host, trustRoot=root), endpoint)
    return endpoint


def _is_tls(transport: object) -> bool:
    try:
        from twisted.protocols.tls import TLSMemoryBIOProtocol
    except ImportError:  # no pyOpenSSL: no TLS either
        return False
    return isinstance(transport, TLSMemoryBIOProtocol)
