"""Runs the real TUI Application in its own process, driven over stdin/stdout.

The tests cannot install the asyncio reactor inside pytest (other test modules
may already have imported the default one), so each TUI test starts this
script with chat-tui's own arguments. It builds the session and Application
exactly as ``chat-tui`` does, but with ``create_pipe_input()`` and
``DummyOutput``, and answers one JSON command per line:

- ``{"op": "keys", "text": ...}``: type into the application;
- ``{"op": "wait", "until": {...}, "timeout": s}``: reply once the condition
  holds (checked on every state change), or with ``ok: false`` at the deadline;
- ``{"op": "snapshot"}``: the pane's lines and the rows it draws, participants,
  state, status, unread counts, bells rung, a paste waiting for an answer, the
  room bar and the room shown.

When the application ends it prints ``{"event": "exited"}`` and exits 0.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from client_tui.__main__ import build, install_reactor, parse_args, run
from client_tui.bars import tab_label

reactor: Any = install_reactor()

from prompt_toolkit.input import create_pipe_input  # noqa: E402
from prompt_toolkit.output import DummyOutput  # noqa: E402
from twisted.internet import stdio, task  # noqa: E402
from twisted.internet.defer import ensureDeferred  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402


def row_text(row: list[tuple[str, str]]) -> str:
    return "".join(t for _, t in row)


def snapshot(session: Any) -> dict[str, Any]:
    view = session.pane.view
    return {
        "lines": [ln.text for ln in session.pane.lines],
        # The pane as drawn at its last size (DummyOutput's 80x40 screen).
        "screen": [row_text(r) for r in session.pane.screen(view.width, view.height)],
        "participants": list(session.participants),
        "state": session.state,
        "me": session.me,
        "status": session.status_text(),
        "reading_back": session.pane.reading_back,
        "unread": session.pane.unread,
        "highlights": session.pane.unread_highlights,
        "bells": session.attention.bells,
        "title": session.title(),
        "paste": session.commands.paste.question() if session.commands.paste else None,
        "people_visible": session.people_visible,
        "transfer": session.transfers.status(),
        "input": session.input_text(),
        # The room bar's labels (``2:#dev(3!)``) and the room shown.
        "rooms": [tab_label(n, r.name, r.pane.unread, r.pane.unread_highlights)
                  for n, r in enumerate(session.rooms, 1)],
        "room": session.rooms.shown.name,
    }


def holds(session: Any, until: dict[str, Any]) -> bool:
    snap = snapshot(session)
    for key, rows in (("line", snap["lines"]), ("screen", snap["screen"])):
        if key in until:
            rx = re.compile(until[key])
            if sum(1 for ln in rows if rx.search(ln)) < until.get("count", 1):
                return False
    if "participants" in until and sorted(snap["participants"]) != sorted(until["participants"]):
        return False
    for key in ("state", "input", "reading_back", "unread", "highlights", "room"):
        if key in until and snap[key] != until[key]:
            return False
    if "status" in until and not re.search(until["status"], snap["status"]):
        return False
    if "bells" in until and snap["bells"] < until["bells"]:
        return False
    if "paste" in until and (snap["paste"] is not None) != until["paste"]:
        return False
    if until.get("idle") and snap["transfer"] is not None:
        return False
    return True


class Commands(LineReceiver):
    delimiter = b"\n"

    def __init__(self, session: Any, pipe: Any) -> None:
        self.session = session
        self.pipe = pipe
        self.waiting: list[tuple[dict[str, Any], Any]] = []
        self.poll: task.LoopingCall | None = None
        previous = session.on_change

        def changed() -> None:
            previous()
            # Check after the current call stack: the state may be mid-update.
            reactor.callLater(0, self.check)

        session.on_change = changed

    def reply(self, obj: dict[str, Any]) -> None:
        self.transport.write(json.dumps(obj).encode() + b"\n")

    def lineReceived(self, line: bytes) -> None:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "keys":
            self.pipe.send_text(cmd["text"])
            self.reply({"ok": True})
        elif op == "snapshot":
            self.reply({"ok": True, "snapshot": snapshot(self.session)})
        elif op == "wait":
            until = cmd["until"]
            if holds(self.session, until):
                self.reply({"ok": True, "snapshot": snapshot(self.session)})
                return
            entry: list[Any] = [until, None]
            entry[1] = reactor.callLater(cmd.get("timeout", 10), self.expire, entry)
            self.waiting.append(entry)  # type: ignore[arg-type]
            # Some changes (keys typed into the buffer) do not notify: poll too.
            if self.poll is None or not self.poll.running:
                self.poll = task.LoopingCall(self.check)
                self.poll.start(0.05, now=False)

    def check(self) -> None:
        for entry in list(self.waiting):
            if holds(self.session, entry[0]):
                self.waiting.remove(entry)
                entry[1].cancel()
                self.reply({"ok": True, "snapshot": snapshot(self.session)})
        if not self.waiting and self.poll is not None and self.poll.running:
            self.poll.stop()

    def expire(self, entry: Any) -> None:
        if entry in self.waiting:
            self.waiting.remove(entry)
            self.reply({"ok": False, "error": "timeout", "snapshot": snapshot(self.session)})


def main() -> None:
    args = parse_args(sys.argv[1:])
    with create_pipe_input() as pipe:
        session, app = build(reactor, args, input=pipe, output=DummyOutput())
        commands = Commands(session, pipe)
        stdio.StandardIO(commands, reactor=reactor)

        try:
            task.react(lambda r: ensureDeferred(run(r, session, app)))
        except SystemExit:
            pass
        # Written directly: the reactor that would flush a transport write is gone.
        os.write(1, json.dumps({"event": "exited", "state": session.state}).encode() + b"\n")


if __name__ == "__main__":
    main()
