"""The operator's live view of a running server, and the admin commands typed into it.

The console is split so that almost all of it is testable without a terminal:
a ``Snapshot`` (``chat.consoleview``) is taken from ``Sources``
(``chat.consolesources``) and rendered by a pure function; ``Throttle``
coalesces any number of changes into at most ``refresh_per_second`` redraws
on the reactor clock, so the per-message cost is one attribute check; the
terminal, its line editor and its frames are ``chat.consoleterminal``'s; the
admin commands are ``chat.console_commands``'. ``Console`` ties them together,
doubles as the ``twisted.logger`` observer so log lines land in the view
(scrubbed, and appended to ``DATA/server.log``) instead of scribbling over
it, and puts the terminal back the way it found it on exit.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, LogEvent, formatEvent, textFileLogObserver
from zope.interface import implementer

from chat import events as ev
from chat.config import ConsoleSettings
from chat.console_commands import ConsoleCommands
from chat.consolesources import PrivateRun, Sources, entry_for
from chat.consoleterminal import Screen, Terminal
from chat.consoleview import Entry, RoomRow, Snapshot, TransferRow, UserRow, render, text_width
from chat.sanitize import for_log

# --- keeping redraws off the message path ---


class Throttle:
    """Coalesces ``mark()`` calls into at most one ``action()`` per ``interval``.

    ``mark`` is what the chat path pays per event: while a redraw is already
    due it returns after one attribute check.
    """

    def __init__(self, clock: IReactorTime, interval: float, action: Callable[[], None]) -> None:
        self.clock = clock
        self.interval = interval
        self.action = action
        self._dirty = False
        self._call: Any = None
        self._last = -interval

    def mark(self) -> None:
        if self._dirty:
            return
        self._dirty = True
        if self._call is None:
            delay = max(0.0, self._last + self.interval - self.clock.seconds())
            self._call = self.clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._call = None
        self._dirty = False
        self._last = self.clock.seconds()
        self.action()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._dirty = False


# --- the console ---


@implementer(ILogObserver)
class Console:
    """The live view, the admin commands, and the log observer while it is up."""

    #: Seconds of message counts the msg/s figure averages over.
    RATE_WINDOW = 5.0

    def __init__(
        self,
        settings: ConsoleSettings,
        clock: IReactorTime,
        *,
        fallback: TextIO | None = None,
        stop: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.stop = stop
        self.chat: deque[ev.Event | PrivateRun | Entry] = deque(maxlen=settings.log_lines)
        self.log: deque[str] = deque(maxlen=settings.log_lines)
        self.privates = 0
        self.status: Entry | None = None
        self.input = ""
        self.sources: Sources | None = None
        self.screen: Screen | None = None
        self.active = False
        self.draws = 0
        self.throttle = Throttle(clock, 1.0 / settings.refresh_per_second, self.draw)
        # Uptime, idle times and progress move without events: a slow tick.
        self._ticker = task.LoopingCall(self.throttle.mark)
        self._ticker.clock = clock
        self._samples: deque[tuple[float, int]] = deque()
        self._fallback = textFileLogObserver(fallback) if fallback is not None else None
        self._log_file: TextIO | None = None
        self._terminal: Terminal | None = None
        self.commands = ConsoleCommands(self)

    # --- life ---

    def attach(self, sources: Sources, screen: Screen | None, log_path: Path | None = None) -> None:
        """Start showing ``sources`` on ``screen`` (None: keep state, draw nothing)."""
        self.sources = sources
        self.screen = screen
        if log_path is not None:
            self._log_file = open(log_path, "a", encoding="utf-8")
        sources.service.observers.append(self.observe)
        self.active = True
        if screen is not None:
            screen.enter()
        self._ticker.start(1.0, now=False)
        self.throttle.mark()

    def detach(self) -> None:
        if not self.active:
            return
        self.active = False
        if self._ticker.running:
            self._ticker.stop()
        self.throttle.stop()
        if self.sources is not None and self.observe in self.sources.service.observers:
            self.sources.service.observers.remove(self.observe)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def start_terminal(self, server: Any, reactor: Any) -> None:
        """Take over the process's terminal: used by ``chat-server`` only."""
        self.stop = reactor.stop
        self._terminal = Terminal(self, reactor)
        self._terminal.open()
        log_path = server.config.data_path / "server.log"
        self.attach(Sources.of(server), self._terminal.screen, log_path)

    def close(self) -> None:
        """Stop drawing and give the terminal back (safe to call twice)."""
        self.detach()
        if self._terminal is not None:
            terminal, self._terminal = self._terminal, None
            terminal.close()
            tail = list(self.log)[-5:]
            if tail:
                # What the alternate screen took away: the last words of the log.
                sys.stdout.write("".join(line + "\n" for line in tail))
                sys.stdout.flush()

    # --- events ---

    def observe(self, event: ev.Event) -> None:
        """ChatService observer: runs once per chat event, so it stays O(1)."""
        if type(event) is ev.Private:
            self.privates += 1
            last = self.chat[-1] if self.chat else None
            if isinstance(last, PrivateRun):
                last.count += 1
            else:
                self.chat.append(PrivateRun(event.ts))
        else:
            self.chat.append(event)
        self.throttle.mark()

    def __call__(self, event: LogEvent) -> None:
        """twisted.logger observer: into the view while it is up, else to the fallback."""
        if not self.active and self._fallback is not None:
            self._fallback(event)
        try:
            # The message is one line whatever its fields hold (for_log escapes
            # newlines, so a user name cannot forge a log line); only a
            # traceback spans several.
            lines = [for_log(formatEvent(event))]
            failure = event.get("log_failure")
            if failure is not None:
                lines += [for_log(ln) for ln in failure.getTraceback().splitlines() if ln.strip()]
        except Exception:  # a log observer that raises is removed by twisted
            lines = [f"(unformattable log event {for_log(event.get('log_format'))})"]
        when = event.get("log_time") or time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(when))
        for line in lines:
            self.log.append(f"{stamp} {line}")
        if self.active and self._log_file is not None:
            day = time.strftime("%Y-%m-%d ", time.localtime(when))
            self._log_file.write("".join(f"{day}{stamp} {line}\n" for line in lines))
            self._log_file.flush()
        self.throttle.mark()

    # --- the view ---

    def snapshot(self, lines: int | None = None) -> Snapshot:
        """The state now; ``lines`` caps the chat and log lines (a screen's height)."""
        src = self.sources
        now = self.clock.seconds()
        recent = list(self.chat) if lines is None else list(self.chat)[-lines:]
        chat = tuple(entry_for(i) for i in recent)
        log = tuple(self.log) if lines is None else tuple(self.log)[-lines:]
        if src is None:
            return Snapshot(chat=chat, log=log, status=self.status, input=self.input,
                            privates=self.privates)
        stats = src.service.stats
        users = tuple(
            UserRow(u.name, u.address, getattr(u.peer, "mode", "?"), now - u.joined,
                    now - u.last_active)
            for u in src.service.registry
        )
        transfers = tuple(
            TransferRow(t.user, t.name, t.direction, t.size, t.done, now - t.started)
            for t in list(src.files.active.values())
        )
        rooms_ = src.service.rooms
        listed = sorted(rooms_.rooms.values(), key=lambda r: (-len(r.members), r.key))
        rooms = tuple(
            RoomRow(r.name, len(r.members), rooms_.per_minute(r), for_log(r.topic), r.private)
            for r in listed
        )
        return Snapshot(
            addresses=src.addresses(),
            uptime=now - src.started,
            users=users,
            rooms=rooms,
            messages=stats.messages,
            rate=self._rate(now, stats.messages),
            privates=self.privates,
            bytes_in=stats.bytes_in,
            bytes_out=stats.bytes_out,
            chat=chat,
            log=log,
            transfers=transfers,
            status=self.status,
            input=self.input,
            notes=tuple(src.notes),
            store=src.store_line(now),
        )

    def _rate(self, now: float, count: int) -> float:
        samples = self._samples
        samples.append((now, count))
        while len(samples) > 2 and now - samples[1][0] >= self.RATE_WINDOW:
            samples.popleft()
        t0, c0 = samples[0]
        return (count - c0) / (now - t0) if now > t0 else 0.0

    def draw(self) -> None:
        if not self.active or self.screen is None:
            return
        width, height = self.screen.size()
        snap = self.snapshot(height)
        typed = min(text_width(snap.input), max(0, width - 3))
        self.screen.show(render(snap, width, height), 3 + typed)
        self.draws += 1

    def resized(self) -> None:
        if self.screen is not None:
            self.screen.invalidate()
        self.throttle.mark()

    def set_input(self, text: str) -> None:
        if text != self.input:
            self.input = text
            self.throttle.mark()

    def input_closed(self) -> None:
        self.say("stdin is closed: admin commands are off; stop the server with a signal.")

    # --- admin commands ---

    def say(self, text: str, kind: str = "console", *, log: bool = True) -> None:
        """Show a command's result in the status line (and, with ``log``, the chat log)."""
        entry = Entry(kind, text, self.clock.seconds())
        self.status = entry
        if log:
            self.chat.append(entry)
        self.throttle.mark()

    def error(self, text: str) -> None:
        self.say(text, "error")

    def command(self, line: str) -> None:
        self.input = ""
        line = line.strip()
        if line:
            self.commands.run(line)
        else:
            self.throttle.mark()
