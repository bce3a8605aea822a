"""The client's state and behaviour, without a screen: ``ChatSession``.

It owns the chat connection (connect, register, reconnect with back-off),
turns the server's typed events (``chat.events``) into pane lines
(deduplicated by event id, so a replayed history after a reconnect adds only
what was missed), keeps the participant list and the transfer queue, and
answers pings. Events are dispatched on their class; one this client has no
use for is ignored. The pane's lines and scroll position are a ``Pane``, and
what the user types is read by a ``CommandLine``. The prompt_toolkit layer
(``app.py``) only draws this state and feeds it keystrokes, which is what
lets tests assert on it directly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from chat import events as ev
from chat.units import human_duration, human_size
from client_tui.commands import CommandLine
from client_tui.connection import Backoff, ChatConnection
from client_tui.format import ChatEvent, event_line
from client_tui.pane import Pane
from client_tui.transfer import TransferQueue

#: How long a clean /quit may wait for the server's goodbye before closing.
QUIT_DEADLINE = 3.0


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
    ) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.server_label = server_label
        self.name = name  # the name to (re-)register with
        self.download_dir = download_dir or Path.cwd()
        self.backoff = backoff or Backoff()
        self.changed: Callable[[], None] = lambda: None
        #: what is typed but not yet sent (set by the app; for tests and status)
        self.input_text: Callable[[], str] = lambda: ""

        self.pane = Pane(self._changed)
        self.commands = CommandLine(self)
        self.seen_ids: set[int] = set()
        self.file_ids: list[str] = []
        self.participants: list[str] = []
        self.me: str | None = None
        self.session_key: str | None = None
        #: connecting, registering, naming (waiting for the user), online,
        #: disconnected, quitting, closed
        self.state = "connecting"
        self.proto: ChatConnection | None = None
        self.retry: IDelayedCall | None = None
        self.retry_at = 0.0
        self.quit_timer: IDelayedCall | None = None
        self.was_online = False
        #: whether a malformed event was reported (once; later ones pass quietly)
        self.reported_bad_event = False
        #: fires once the client has left (after /quit, Ctrl-C or Ctrl-D)
        self.done: defer.Deferred[None] = defer.Deferred()
        self.transfers = TransferQueue(
            endpoint, lambda: self.session_key, self._transfer_report, self._changed
        )

    def _changed(self) -> None:
        self.changed()

    # --- connection ---

    def start(self) -> None:
        self.pane.info(f"Connecting to {self.server_label}...")
        self._connect()

    def _connect(self) -> None:
        self.retry = None
        if self.state in ("quitting", "closed"):
            return
        self.state = "connecting"
        self._changed()
        d = defer.maybeDeferred(
            lambda: self.endpoint().connect(Factory.forProtocol(lambda: ChatConnection(self)))
        )
        d.addErrback(self._connect_failed)

    def _connect_failed(self, failure: Failure) -> None:
        if self.state in ("quitting", "closed"):
            self._finish()
            return
        self.state = "disconnected"
        self.pane.error(f"Cannot connect to {self.server_label}: {failure.getErrorMessage()}")
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        delay = self.backoff.next()
        self.retry_at = self.reactor.seconds() + delay
        self.retry = self.reactor.callLater(delay, self._connect)
        self._changed()

    def retry_in(self) -> float:
        return max(0.0, self.retry_at - self.reactor.seconds()) if self.retry else 0.0

    def connected(self, proto: ChatConnection) -> None:
        self.proto = proto
        self.state = "registering"
        self._changed()

    def lost(self, proto: ChatConnection, reason: Failure) -> None:
        if proto is not self.proto:
            return
        self.proto = None
        self.session_key = None
        self.transfers.abort_all("the chat connection was lost")
        if self.state in ("quitting", "closed"):
            self._finish()
            return
        self.state = "disconnected"
        self.me = None
        self.pane.error(f"Disconnected from {self.server_label}: {reason.getErrorMessage()}")
        self._schedule_retry()

    def send(self, text: str) -> bool:
        if self.proto is None or self.state != "online":
            self.pane.error("Not connected: nothing was sent.")
            return False
        self.proto.send_line(text)
        return True

    def choose_name(self, name: str) -> None:
        """The name the user typed when the server asked for one."""
        self.name = name
        if self.proto is not None:
            self.state = "registering"
            self.proto.send_line(name)
        self._changed()

    # --- events from the server ---

    def event(self, proto: ChatConnection, event: ev.Event) -> None:
        if proto is self.proto:
            self.handle(event)

    def bad_event(self, proto: ChatConnection, problem: str) -> None:
        """A malformed event is skipped; the first one is mentioned, in case it matters."""
        if proto is self.proto and not self.reported_bad_event:
            self.reported_bad_event = True
            self.pane.error(f"Ignored an event from the server that this client cannot read "
                            f"({problem}); later ones are ignored quietly.")

    @functools.singledispatchmethod
    def handle(self, event: ev.Event) -> None:
        """One event from the server. Those with no handler (proto, uploaded...) need none."""

    @handle.register
    def _chat(self, event: ChatEvent) -> None:
        if event.id in self.seen_ids:
            return  # already on screen: a replay after reconnecting
        self.seen_ids.add(event.id)
        match event:
            case ev.Join(name=name) if name.lower() not in (n.lower() for n in self.participants):
                self.participants.append(name)
            case ev.Leave(name=name):
                self.participants = [n for n in self.participants if n.lower() != name.lower()]
            case ev.Nick(old=old, new=new):
                self.participants = [new if n.lower() == old.lower() else n
                                     for n in self.participants]
                if self.me and old.lower() == self.me.lower():
                    self.me = self.name = new
            case ev.FileShared(file_id=file_id):
                self._remember_file(file_id)
        line = event_line(event, self.me)
        if line is not None:  # always, for a chat event
            self.pane.add(line)

    def _remember_file(self, file_id: str) -> None:
        """Keep ``file_id`` for Tab completion after ``/get``."""
        if file_id and file_id not in self.file_ids:
            self.file_ids.append(file_id)

    @handle.register
    def _info(self, event: ev.Info) -> None:
        self.pane.info(event.text)

    @handle.register
    def _prompt(self, event: ev.Prompt) -> None:
        if event.reason:
            self.pane.error(f"Name refused: {event.reason}")
            self.name = None
        if self.name and self.proto is not None:
            self.proto.send_line(self.name)
            self.state = "registering"
        else:
            self.state = "naming"
            self.pane.info("Choose a username (type it below and press Enter):")
        self._changed()

    @handle.register
    def _welcome(self, event: ev.Welcome) -> None:
        self.me = self.name = event.name
        self.session_key = event.session
        self.state = "online"
        self.backoff.reset()
        self.pane.info(f"Connected to {self.server_label} as {self.me}.")
        if self.was_online and self.proto is not None:
            # The automatic replay after welcome is short; ask for more so a
            # long outage is filled in. Lines already shown are skipped by id.
            self.proto.send_line("/history 500")
        self.was_online = True

    @handle.register
    def _participants(self, event: ev.Participants) -> None:
        self.participants = list(event.names)
        self._changed()

    @handle.register
    def _history(self, event: ev.History) -> None:
        for message in event.messages:
            if isinstance(message, ev.CHAT_EVENTS):  # a history holds nothing else
                self.handle(message)

    @handle.register
    def _who(self, event: ev.Who) -> None:
        here = [f"{u.name} (idle {human_duration(u.idle)})" for u in event.users]
        self.pane.info(f"Here ({len(here)}): " + ", ".join(here))

    @handle.register
    def _session(self, event: ev.Session) -> None:
        self.pane.info(f"Your session key: {event.session}")

    @handle.register
    def _files(self, event: ev.Files) -> None:
        if not event.files:
            self.pane.info("No files shared yet.")
        for f in event.files:
            self._remember_file(f.file_id)
            self.pane.info(f"  {f.file_id}  {f.name}  ({human_size(f.size)}, from {f.uploader})")

    @handle.register
    def _error(self, event: ev.Error) -> None:
        if self.state != "online" and event.code in ("invalid_name", "name_taken"):
            return  # the prompt that follows carries the same reason
        self.pane.error(event.text or event.code)

    @handle.register
    def _bye(self, event: ev.Bye) -> None:
        if self.state != "quitting":
            self.pane.error(f"The server said goodbye: {event.reason}")

    @handle.register
    def _ping(self, event: ev.Ping) -> None:
        # A silent JSON connection is cut unless it answers (docs/protocol.md, "Limits").
        if self.proto is not None:
            self.proto.send_line(f"/pong {event.token}")

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
            self.proto.send_line("/quit" + (f" {reason}" if reason else ""))
            self.quit_timer = self.reactor.callLater(QUIT_DEADLINE, self._finish)
        else:
            self._finish()
        self._changed()

    def _finish(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        if self.quit_timer is not None and self.quit_timer.active():
            self.quit_timer.cancel()
        if self.proto is not None:
            proto, self.proto = self.proto, None
            proto.transport.loseConnection()
        if not self.done.called:
            self.done.callback(None)
        self._changed()

    # --- status bar ---

    def status_text(self) -> str:
        state = self.state
        if state == "disconnected" and self.retry is not None:
            state = f"disconnected, retrying in {self.retry_in():.0f}s"
        who = self.me or self.name or "(no name)"
        parts = [self.server_label, state, who]
        transfer = self.transfers.status()
        if transfer:
            parts.append(transfer)
        return " | ".join(parts)
