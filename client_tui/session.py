"""The client's state and behaviour, without a screen: ``ChatSession``.

It owns the chat connection (connect, register, reconnect with back-off),
turns server events into pane lines (deduplicated by event id, so a replayed
history after a reconnect adds only what was missed), keeps the participant
list, the scroll position of the pane, and the transfer queue, and interprets
what the user types. The prompt_toolkit layer (``app.py``) only draws this
state and feeds it keystrokes, which is what lets tests assert on it directly.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from client_tui.connection import Backoff, ChatConnection
from client_tui.format import Line, clean, error_line, event_line, info_line
from client_tui.transfer import Download, TransferQueue, Upload

#: Pane lines kept; older ones are dropped (the server keeps the history).
SCROLLBACK = 5000
#: How long a clean /quit may wait for the server's goodbye before closing.
QUIT_DEADLINE = 3.0

LOCAL_HELP: tuple[tuple[str, str], ...] = (
    ("/send PATH [PATH...]", "upload files, one after another, on a transfer connection"),
    ("/get ID [DEST]", "download a shared file (-f to overwrite an existing one)"),
    ("/cancel", "abort the running transfer"),
    ("/clear", "clear the message pane"),
    ("PageUp/PageDown", "scroll the messages; Tab completes commands and names"),
)


class ChatSession:
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

        self.lines: list[Line] = []
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
        #: index of the last visible pane line while reading history; None = follow
        self.anchor: int | None = None
        self.unread = 0
        #: fires once the client has left (after /quit, Ctrl-C or Ctrl-D)
        self.done: defer.Deferred[None] = defer.Deferred()
        self.transfers = TransferQueue(
            endpoint, lambda: self.session_key, self._transfer_report, self._changed
        )

    # --- pane ---

    def add(self, line: Line) -> None:
        self.lines.append(line)
        if self.anchor is not None:
            self.unread += 1
        overflow = len(self.lines) - SCROLLBACK
        if overflow > 0:
            del self.lines[:overflow]
            if self.anchor is not None:
                self.anchor = max(0, self.anchor - overflow)
        self._changed()

    def info(self, text: str) -> None:
        self.add(info_line(text))

    def error(self, text: str) -> None:
        self.add(error_line(text))

    def scroll(self, lines: int) -> None:
        """Move the view by ``lines`` (negative: back in history)."""
        if not self.lines:
            return
        last = len(self.lines) - 1
        anchor = (last if self.anchor is None else self.anchor) + lines
        if anchor >= last:
            self.anchor = None
            self.unread = 0
        else:
            self.anchor = max(0, anchor)
        self._changed()

    def visible_lines(self) -> list[Line]:
        return self.lines if self.anchor is None else self.lines[: self.anchor + 1]

    def _changed(self) -> None:
        self.changed()

    # --- connection ---

    def start(self) -> None:
        self.info(f"Connecting to {self.server_label}...")
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
        self.error(f"Cannot connect to {self.server_label}: {failure.getErrorMessage()}")
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
        self.error(f"Disconnected from {self.server_label}: {reason.getErrorMessage()}")
        self._schedule_retry()

    def send(self, text: str) -> bool:
        if self.proto is None or self.state != "online":
            self.error("Not connected: nothing was sent.")
            return False
        self.proto.send_line(text)
        return True

    # --- events from the server ---

    def event(self, proto: ChatConnection, event: dict[str, Any]) -> None:
        if proto is not self.proto:
            return
        kind = event["type"]
        handler = getattr(self, "on_" + kind, None)
        if handler is not None:
            handler(event)
        else:
            self.chat_event(event)

    def chat_event(self, event: dict[str, Any]) -> None:
        eid = event.get("id")
        if isinstance(eid, int):
            if eid in self.seen_ids:
                return  # already on screen: a replay after reconnecting
            self.seen_ids.add(eid)
        kind = event.get("type")
        if kind == "join":
            name = str(event.get("name"))
            if name.lower() not in (n.lower() for n in self.participants):
                self.participants.append(name)
        elif kind == "leave":
            self._drop(str(event.get("name")))
        elif kind == "nick":
            old, new = str(event.get("old")), str(event.get("new"))
            self.participants = [new if n.lower() == old.lower() else n for n in self.participants]
            if self.me and old.lower() == self.me.lower():
                self.me = self.name = new
        elif kind == "file":
            fid = str(event.get("file_id", ""))
            if fid and fid not in self.file_ids:
                self.file_ids.append(fid)
        line = event_line(event, self.me)
        if line is not None:
            self.add(line)
        else:
            self._changed()

    def _drop(self, name: str) -> None:
        self.participants = [n for n in self.participants if n.lower() != name.lower()]

    def on_proto(self, event: dict[str, Any]) -> None:
        pass

    def on_info(self, event: dict[str, Any]) -> None:
        self.info(clean(event.get("text", "")))

    def on_prompt(self, event: dict[str, Any]) -> None:
        reason = event.get("reason")
        if reason:
            self.error(f"Name refused: {clean(reason)}")
            self.name = None
        if self.name and self.proto is not None:
            self.proto.send_line(self.name)
            self.state = "registering"
        else:
            self.state = "naming"
            self.info("Choose a username (type it below and press Enter):")
        self._changed()

    def on_welcome(self, event: dict[str, Any]) -> None:
        self.me = self.name = str(event.get("name"))
        self.session_key = str(event.get("session"))
        self.state = "online"
        self.backoff.reset()
        self.info(f"Connected to {self.server_label} as {self.me}.")
        if self.was_online and self.proto is not None:
            # The automatic replay after welcome is short; ask for more so a
            # long outage is filled in. Lines already shown are skipped by id.
            self.proto.send_line("/history 500")
        self.was_online = True

    def on_participants(self, event: dict[str, Any]) -> None:
        names = event.get("names")
        if isinstance(names, list):
            self.participants = [str(n) for n in names]
        self._changed()

    def on_history(self, event: dict[str, Any]) -> None:
        messages = event.get("messages")
        if isinstance(messages, list):
            for m in messages:
                if isinstance(m, dict):
                    self.chat_event(m)

    def on_who(self, event: dict[str, Any]) -> None:
        users = event.get("users") or []
        parts = [f"{clean(u.get('name'))} (idle {u.get('idle')}s)" for u in users
                 if isinstance(u, dict)]
        self.info(f"Here ({len(parts)}): " + ", ".join(parts))

    def on_help(self, event: dict[str, Any]) -> None:
        self.info("Commands:")
        for c in event.get("commands") or []:
            if isinstance(c, dict) and not str(c.get("usage", "")).startswith(("/proto", "/send")):
                self.info(f"  {clean(c.get('usage')):<24} {clean(c.get('text'))}")
        for usage, text in LOCAL_HELP:
            self.info(f"  {usage:<24} {text}")

    def on_session(self, event: dict[str, Any]) -> None:
        self.info(f"Your session key: {clean(event.get('session'))}")

    def on_files(self, event: dict[str, Any]) -> None:
        files = [f for f in event.get("files") or [] if isinstance(f, dict)]
        if not files:
            self.info("No files shared yet.")
        for f in files:
            fid = str(f.get("file_id", ""))
            if fid and fid not in self.file_ids:
                self.file_ids.append(fid)
            self.info(f"  {clean(fid)}  {clean(f.get('name'))}  ({f.get('size')} bytes, "
                      f"from {clean(f.get('uploader'))})")

    def on_uploaded(self, event: dict[str, Any]) -> None:
        pass  # uploads run on transfer connections; they report there

    def on_error(self, event: dict[str, Any]) -> None:
        if self.state != "online" and event.get("code") in ("invalid_name", "name_taken"):
            return  # the prompt that follows carries the same reason
        self.error(clean(event.get("text", "error")))

    def on_bye(self, event: dict[str, Any]) -> None:
        if self.state != "quitting":
            self.error(f"The server said goodbye: {clean(event.get('reason'))}")

    def _transfer_report(self, error: str | None, message: str) -> None:
        if error is None:
            self.info(message)
        else:
            self.error(message)

    # --- what the user types ---

    def submit(self, text: str) -> None:
        text = text.replace("\r", " ").replace("\n", " ")
        if not text.strip():
            return
        if self.state == "naming":
            if text.strip().lower().startswith("/quit"):
                self.quit()
                return
            self.name = text.strip()
            if self.proto is not None:
                self.state = "registering"
                self.proto.send_line(self.name)
            self._changed()
            return
        if text.startswith("/") and not text.startswith("//"):
            verb, _, args = text[1:].partition(" ")
            handler = getattr(self, "cmd_" + verb.lower(), None)
            if handler is not None:
                handler(args.strip())
                return
        self.send(text)

    def cmd_quit(self, args: str) -> None:
        self.quit(args or None)

    def cmd_clear(self, args: str) -> None:
        self.lines.clear()
        self.anchor, self.unread = None, 0
        self._changed()

    def cmd_proto(self, args: str) -> None:
        self.error("This client always speaks JSON with the server.")

    def cmd_cancel(self, args: str) -> None:
        if not self.transfers.cancel():
            self.error("No transfer is running.")

    def cmd_send(self, args: str) -> None:
        try:
            paths = shlex.split(args)
        except ValueError as e:
            self.error(f"/send: {e}")
            return
        if not paths:
            self.error("Usage: /send PATH [PATH...]")
            return
        if self.session_key is None:
            self.error("Not connected: cannot send files.")
            return
        for p in paths:
            self.transfers.add(Upload(Path(p).expanduser(), self.reactor))

    def cmd_get(self, args: str) -> None:
        try:
            words = shlex.split(args)
        except ValueError as e:
            self.error(f"/get: {e}")
            return
        force = any(w in ("-f", "--force") for w in words)
        words = [w for w in words if w not in ("-f", "--force")]
        if not 1 <= len(words) <= 2:
            self.error("Usage: /get [-f] ID [DEST]")
            return
        if self.session_key is None:
            self.error("Not connected: cannot fetch files.")
            return
        dest = Path(words[1]).expanduser() if len(words) == 2 else self.download_dir
        self.transfers.add(Download(words[0], dest, force))

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
