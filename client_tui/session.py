"""The client's state and behaviour, without a screen: ``ChatSession``.

It owns the chat connection (connect, register, reconnect with back-off)
and what hangs off it: the rooms (``Rooms``: a ``Pane`` each, their members
and topics), the paced ``Outbox`` every line goes through, the
``HistoryFlow`` that tells ``history`` replies apart and fetches what an
outage missed, the ``RoomFlow`` that keeps the server's current room the
one shown, the ``Login`` that answers the server's prompts, and the
transfer queue. Events from the server are handled by a ``Receiver``; what
the user types is read by a ``CommandLine``. An outage is one line in the
pane ("lost the connection; retrying…"), a countdown in the status bar, and
one line when the client is back. A TLS certificate that fails its check
(``pinning``) is not an outage: the client says why and stops trying. The
prompt_toolkit layer (``app.py``) only draws this state and feeds it
keystrokes, which is what lets tests assert on it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from chat import events as ev
from chat.units import human_duration
from client_tui.attention import Attention
from client_tui.chatlog import ChatLog
from client_tui.commands import CommandLine
from client_tui.connection import Backoff, ChatConnection
from client_tui.history import HistoryFlow
from client_tui.jobs import TransferQueue
from client_tui.login import Login
from client_tui.outbox import Outbox
from client_tui.pane import Pane
from client_tui.pinning import Trust
from client_tui.receive import Receiver
from client_tui.roomflow import RoomFlow
from client_tui.rooms import Rooms
from client_tui.settings import Settings
from client_tui.status import status_text, title

#: How long a clean /quit may wait for the server's goodbye before closing.
QUIT_DEADLINE = 3.0


@dataclass
class Options:
    """What the user chose beyond the server: the bell, pastes, the log, the settings file."""

    bell: bool = True
    #: what a paste of several lines does: ``ask``, ``lines`` or ``file``
    paste: str = "ask"
    log: ChatLog | None = None
    #: ``Settings(None)`` keeps the ignore list in memory only
    settings: Settings = field(default_factory=lambda: Settings(None))


def _why(failure: Failure) -> str:
    """A connection failure in a few words (Twisted's own are long)."""
    for kind, words in _FAILURES:
        if failure.check(kind):
            return words
    return failure.getErrorMessage()


_FAILURES: tuple[tuple[type[Exception], str], ...] = (
    (error.ConnectionRefusedError, "connection refused"),
    (error.ConnectionDone, "closed by the server"),
    (error.ConnectionLost, "connection lost"),
    (error.TimeoutError, "timed out"),
    (error.DNSLookupError, "no such host"),
)


class ChatSession:
    """One user's chat: the connection, what the server said, and what is on screen."""

    def __init__(
        self,
        reactor: Any,
        endpoint: Callable[[], IStreamClientEndpoint],
        server_label: str,
        name: str | None = None,
        download_dir: Path | None = None,
        backoff: Backoff | None = None,
        options: Options | None = None,
        trust: Trust | None = None,
    ) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.server_label = server_label
        self.name = name  # the name to (re-)register with
        self.download_dir = download_dir or Path.cwd()
        self.backoff = backoff or Backoff()
        self.options = options or Options()
        self.settings = self.options.settings
        self.on_change: Callable[[], None] = lambda: None
        #: what is typed but not yet sent, and replacing it (set by the app)
        self.input_text: Callable[[], str] = lambda: ""
        self.set_input: Callable[[str], None] = lambda text: None

        self.rooms = Rooms(self.changed)
        self.attention = Attention(self.options.bell)
        self.outbox = Outbox(reactor, self.changed)
        self.receiver = Receiver(self)
        self.history = HistoryFlow(reactor, self._send_tracked, self.receiver.merge)
        self.roomflow = RoomFlow(self)
        self.login = Login(self)
        self.commands = CommandLine(self)
        self.file_ids: list[str] = []
        #: names known to be accounts (lower case), from what the server says of them
        self.accounts: set[str] = set()
        #: you are a server operator (``welcome.operator``)
        self.operator = False
        #: the TLS certificate check (``None``: plain TCP, or checked against CAs)
        self.trust = trust
        if trust is not None:
            trust.notice = lambda text: self.pane.info(text)
        #: whether the list of people is shown: ``None`` leaves it to the width
        self.show_people: bool | None = None
        #: whether it is on screen now (the app keeps this current)
        self.people_visible = True
        self.me: str | None = None
        self.session_key: str | None = None
        #: connecting, registering, naming or password (waiting for the user), online,
        #: disconnected, refused (the server's certificate), quitting, closed
        self.state = "connecting"
        self.proto: ChatConnection | None = None
        self.retry: IDelayedCall | None = None
        self.retry_at = 0.0
        self.quit_timer: IDelayedCall | None = None
        #: when the last outage began (``None``: never online, or back)
        self.outage_since: float | None = None
        self.was_online = False
        #: why the connection is down, for the status bar
        self.last_error = ""
        #: the server's reason in its goodbye, if it said one
        self.goodbye: str | None = None
        self.outage_reported = False
        self.offline_noted = False
        #: whether a malformed event was reported (once; later ones pass quietly)
        self.reported_bad_event = False
        #: fires once the client has left (after /quit, Ctrl-C or Ctrl-D)
        self.done: defer.Deferred[None] = defer.Deferred()
        self.transfers = TransferQueue(
            endpoint, lambda: self.session_key, self._transfer_report, self.changed, reactor
        )
        self.transfers.gate = self.roomflow.when_current

    def changed(self) -> None:
        self.on_change()

    @property
    def pane(self) -> Pane:
        """The pane on screen (the client's own notices go there)."""
        return self.rooms.pane

    @property
    def participants(self) -> list[str]:
        """Who is in the room shown."""
        return self.rooms.shown.members

    # --- connection ---

    def start(self) -> None:
        self.pane.info(f"Connecting to {self.server_label}...")
        self._connect()

    def _connect(self) -> None:
        self.retry = None
        if self.state in ("quitting", "closed"):
            return
        self.state = "connecting"
        self.changed()
        d = defer.maybeDeferred(
            lambda: self.endpoint().connect(Factory.forProtocol(lambda: ChatConnection(self)))
        )
        d.addErrback(self._connect_failed)

    def _connect_failed(self, failure: Failure) -> None:
        if self.state in ("quitting", "closed"):
            self._finish()
            return
        if self.state != "connecting":
            return  # already said
        if self.trust is not None and self.trust.refusal:
            # A certificate that failed its check: say why, and do not try again.
            self.state = "refused"
            for line in self.trust.refusal.splitlines():
                self.pane.error(line)
            self.changed()
            return
        self.state = "disconnected"
        self._outage(_why(failure), "Cannot connect to")

    def failed(self, reason: Failure) -> None:
        """The connection ended before it could be used (its TLS handshake failed)."""
        self._connect_failed(reason)

    def _outage(self, why: str, verb: str) -> None:
        """Say once per outage that the connection is down, then retry (quietly)."""
        self.last_error = why.rstrip(".")
        if not self.outage_reported:
            self.outage_reported = True
            self.pane.error(f"{verb} {self.server_label} ({self.last_error}); retrying\u2026")
        delay = self.backoff.next()
        self.retry_at = self.reactor.seconds() + delay
        self.retry = self.reactor.callLater(delay, self._connect)
        self.changed()

    def retry_in(self) -> float:
        return max(0.0, self.retry_at - self.reactor.seconds()) if self.retry else 0.0

    def connected(self, proto: ChatConnection) -> None:
        self.proto = proto
        self.state = "registering"
        self.goodbye = None
        self.changed()

    def lost(self, proto: ChatConnection, reason: Failure) -> None:
        if proto is not self.proto:
            return
        self.proto = None
        self.session_key = None
        self.outbox.close()
        self.history.lost()
        self.roomflow.lost()
        self.login.lost()
        self.transfers.interrupt_all("the chat connection was lost")
        if self.state in ("quitting", "closed"):
            self._finish()
            return
        if self.state == "online":
            self.outage_since = self.reactor.seconds()
            self.outage_reported = False  # a new outage
        self.state = "disconnected"
        self.me = None
        why = f"the server said: {self.goodbye}" if self.goodbye else _why(reason)
        self._outage(why, "Lost the connection to")

    def proto_send(self, text: str) -> None:
        """A line straight onto the connection (before the outbox opens: name, passwords)."""
        if self.proto is not None:
            self.proto.send_line(text)

    def choose_name(self, name: str) -> None:
        """The name the user typed when the server asked for one."""
        self.name = name
        if self.proto is not None:
            self.state = "registering"
            self.proto.send_line(name)
        self.changed()

    def registered(self, event: ev.Welcome) -> None:
        self.me = self.name = event.name
        self.session_key = event.session
        self.operator = event.operator
        if event.account:
            self.accounts.add(event.name.lower())
        self.login.welcomed(event.account)
        self.state = "online"
        self.backoff.reset()
        if self.outage_since is not None:
            away = human_duration(self.reactor.seconds() - self.outage_since)
            self.pane.info(f"Back online: reconnected to {self.server_label} as {event.name} "
                           f"(away {away}).")
        else:
            self.pane.info(f"Connected to {self.server_label} as {event.name}.")
        self.outage_since, self.outage_reported, self.offline_noted = None, False, False
        self.roomflow.welcome(event, reconnect=self.was_online)
        assert self.proto is not None
        self.outbox.open(self.proto.send_line)  # (after the catch-up was queued first)
        self.history.start()
        self.was_online = True
        self.transfers.resume()  # what the outage interrupted goes on

    # --- what goes out ---

    def say(self, text: str) -> bool:
        """A line the user entered, for the server; ``False`` (kept in the input) if offline."""
        if self.state != "online":
            if not self.offline_noted:
                self.offline_noted = True
                self.pane.error("Not connected: what you typed stays in the input; "
                                "press Enter again once back online.")
            return False
        self.roomflow.ensure()  # the line goes to the room shown
        self.outbox.send(text)
        return True

    def send_own(self, text: str) -> None:
        """A line of the client's own (a ping's answer): dropped if the connection goes."""
        self.outbox.send(text, kept=False)

    def _send_tracked(self, text: str, sent: Callable[[], None]) -> None:
        self.outbox.send(text, kept=False, sent=sent)

    def toggle_people(self) -> None:
        """Show the list of people if it is hidden (even on a narrow screen), else hide it."""
        self.show_people = not self.people_visible
        self.changed()

    def remember_file(self, file_id: str) -> None:
        """Keep ``file_id`` for Tab completion after ``/get``."""
        if file_id and file_id not in self.file_ids:
            self.file_ids.append(file_id)

    # --- events from the server ---

    def event(self, proto: ChatConnection, event: ev.Event) -> None:
        if proto is self.proto:
            self.receiver.handle(event)

    def bad_event(self, proto: ChatConnection, problem: str) -> None:
        """A malformed event is skipped; the first one is mentioned, in case it matters."""
        if proto is self.proto and not self.reported_bad_event:
            self.reported_bad_event = True
            self.pane.error(f"Ignored an event from the server that this client cannot read "
                            f"({problem}); later ones are ignored quietly.")

    def _transfer_report(self, error: str | None, message: str) -> None:
        if error is None:
            self.pane.info(message)
        else:
            self.pane.error(message)

    # --- leaving ---

    def quit(self, reason: str | None = None) -> None:
        """Leave cleanly: /quit to the server, then wait (briefly) for it to close."""
        if self.state == "quitting":
            self._finish()  # asked twice: stop waiting
            return
        if self.state == "closed":
            return
        online = self.proto is not None
        self.state = "quitting"
        self.transfers.abort_all("cancelled: leaving")
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        self.retry = None
        if online and self.proto is not None:
            # Straight out, past anything still paced in the outbox.
            self.proto.send_line("/quit" + (f" {reason}" if reason else ""))
            self.quit_timer = self.reactor.callLater(QUIT_DEADLINE, self._finish)
        else:
            self._finish()
        self.changed()

    def _finish(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self.history.lost()
        self.outbox.close()
        if self.quit_timer is not None and self.quit_timer.active():
            self.quit_timer.cancel()
        if self.proto is not None:
            proto, self.proto = self.proto, None
            proto.transport.loseConnection()
        if self.options.log is not None:
            self.options.log.close()
        if not self.done.called:
            self.done.callback(None)
        self.changed()

    # --- status bar and title ---

    def status_text(self, server: bool = True) -> str:
        """The status bar's words (``server=False``: without the server, for narrow screens)."""
        return status_text(self, server)

    def title(self) -> str:
        return title(self)
