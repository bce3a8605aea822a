"""The client reads the server's wire as typed events, and offers one list of commands.

JSON lines go through a real ``ChatConnection`` (on a ``StringTransport``)
into a ``ChatSession``: each becomes a ``chat.events`` event and the same pane
line as before; an unknown or malformed one is skipped without hurting the
connection. ``/help`` and Tab completion are both read from
``commands.command_table()``, which is built from ``chat.wire.COMMANDS`` and
the client's own commands.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from twisted.internet import task
from twisted.internet.testing import StringTransport

from chat import events as ev
from chat import wire
from chat.render import JsonRenderer
from client_tui.commands import LOCAL, command_table
from client_tui.completion import ChatCompleter
from client_tui.connection import ChatConnection, read_event
from client_tui.download import Download
from client_tui.format import local_time, short_date
from client_tui.session import ChatSession
from client_tui.transfer import TransferProtocol
from tests.tui_support import TS, TS_POSIX, FakeConn, FakeEndpoint, online

T = local_time(TS_POSIX)
FILE_ID = "ab" * 16


class Recorder:
    """A ``ChatConnection`` owner that keeps what arrives."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self.bad: list[str] = []

    def connected(self, proto: ChatConnection) -> None:
        pass

    def event(self, proto: ChatConnection, event: ev.Event) -> None:
        self.events.append(event)

    def bad_event(self, proto: ChatConnection, problem: str) -> None:
        self.bad.append(problem)

    def lost(self, proto: ChatConnection, reason: Any) -> None:
        pass


def wired(owner: Any) -> tuple[ChatConnection, StringTransport]:
    proto = ChatConnection(owner)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def feed(proto: ChatConnection, *objects: object) -> None:
    """Each object as the server writes a JSON line (strings go as they are)."""
    for obj in objects:
        line = obj if isinstance(obj, str) else json.dumps(obj)
        proto.dataReceived(line.encode("utf-8") + b"\r\n")


def session_online() -> tuple[ChatSession, ChatConnection, StringTransport]:
    s = ChatSession(task.Clock(), FakeEndpoint, "srv", name="alice")  # type: ignore[arg-type]
    proto, transport = wired(s)
    feed(
        proto,
        "-- Welcome to lanchat.",  # text mode, before the switch: not JSON
        {"type": "proto", "mode": "json"},
        {"type": "prompt", "text": "Choose a username:", "reason": None},
        {"type": "welcome", "name": "alice", "session": "k", "server": "x", "http": None},
        {"type": "participants", "names": ["bob", "alice"], "you": "alice"},
    )
    return s, proto, transport


def pane_texts(s: ChatSession) -> list[str]:
    """Pane lines, local ones without their (wall clock) time."""
    return [ln.text if ln.id is not None or ln.kind == "separator" else ln.text[9:]
            for ln in s.pane.lines]


MESSAGE = {"type": "message", "id": 1, "ts": TS, "sender": "bob", "text": "hello"}
FILEINFO = {"type": "fileinfo", "file_id": FILE_ID, "name": "talk.mp4", "size": 400_000_000,
            "crc32": "0badf00d", "sha256": "0" * 64, "uploader": "alice", "ts": TS, "url": None}


# --- wire -> typed events ---


def test_json_lines_become_typed_events() -> None:
    owner = Recorder()
    proto, transport = wired(owner)
    assert transport.value() == b"/proto json\n"
    feed(
        proto,
        "-- Welcome to lanchat.", "Choose a username:", "[1, 2]", '"text"', '{"no": "type"}',
        {"type": "history", "requested": 20, "messages": [
            MESSAGE, {**MESSAGE, "type": "action", "id": 2, "text": "waves"}]},
        {"type": "who", "users": [{"type": "participant", "name": "bob", "idle": 75.3}]},
        {"type": "files", "files": [FILEINFO]},
        {"type": "error", "code": "too_large", "text": "Too large.", "command": "send",
         "limit": 10},
        {"type": "help", "commands": [{"usage": "/who", "text": "who is here"}]},
    )
    history, who, files, error, help_ = owner.events
    assert isinstance(history, ev.History)
    assert history.messages == (ev.Message(1, TS_POSIX, "bob", "hello"),
                                ev.Action(2, TS_POSIX, "bob", "waves"))
    assert who == ev.Who((ev.Participant("bob", 75.3),))
    assert isinstance(files, ev.Files) and isinstance(files.files[0], ev.FileInfo)
    assert files.files[0].ts == TS_POSIX and files.files[0].size == 400_000_000
    assert error == ev.Error("too_large", "send", {"limit": 10}, "Too large.")
    assert help_ == ev.Help((("/who", "who is here"),))
    assert owner.bad == []


def test_wire_events_render_the_same_pane_lines() -> None:
    s, proto, _ = session_online()
    assert pane_texts(s) == ["Connected to srv as alice."]
    shared = {"type": "file", "id": 8, "ts": TS, "sender": "bob", "file_id": FILE_ID,
              "name": "notes.txt", "size": 1234, "crc32": "00000000", "sha256": "0" * 64,
              "url": None}
    feed(
        proto,
        {"type": "history", "requested": 20, "messages": [MESSAGE]},
        {"type": "action", "id": 2, "ts": TS, "sender": "bob", "text": "waves"},
        {"type": "private", "id": 3, "ts": TS, "sender": "bob", "recipient": "alice",
         "text": "psst"},
        {"type": "private", "id": 4, "ts": TS, "sender": "alice", "recipient": "bob",
         "text": "psst"},
        {"type": "join", "id": 5, "ts": TS, "name": "carol"},
        {"type": "nick", "id": 6, "ts": TS, "old": "carol", "new": "carla"},
        {"type": "leave", "id": 7, "ts": TS, "name": "carla", "reason": "quit: bye"},
        shared,
        {"type": "notice", "id": 9, "ts": TS, "text": "going down"},
        MESSAGE,  # a replay: already on screen
        {"type": "info", "text": "just so you know"},
        {"type": "session", "session": "k3y", "name": "alice"},
        {"type": "error", "code": "no_such_user", "text": "No user zed here.", "command": "msg"},
        {"type": "uploaded", "file": FILEINFO},  # for transfer connections: nothing here
    )
    assert pane_texts(s)[1:] == [
        f"history: 1 message since {short_date(TS_POSIX)}",
        f"{T} <bob> hello",
        f"{T}  * bob waves",
        f"{T} *bob* psst",
        f"{T} -> *bob* psst",
        f"{T} --> carol has joined",
        f"{T} -- carol is now known as carla",
        f"{T} <-- carla has left (quit: bye)",
        f"{T} -- bob shared notes.txt (1.2 KiB): /get {FILE_ID}",
        f"{T} -- Server notice: going down",
        "just so you know",
        "Your session key: k3y",
        "!! No user zed here.",
    ]
    assert s.participants == ["bob", "alice"] and s.file_ids == [FILE_ID]


def test_the_servers_own_renderer_reaches_the_pane() -> None:
    s, proto, _ = session_online()
    renderer = JsonRenderer()
    for event in (ev.Message(11, TS_POSIX, "bob", "rendered"),
                  ev.error("no_such_user", "msg", name="zed")):
        proto.dataReceived(renderer.render(event))
    assert pane_texts(s)[-2] == f"{T} <bob> rendered"
    assert pane_texts(s)[-1].startswith("!! ") and len(pane_texts(s)[-1]) > 3


def test_who_and_files_use_the_shared_units() -> None:
    s, proto, _ = session_online()
    feed(
        proto,
        {"type": "who", "users": [{"type": "participant", "name": "bob", "idle": 75.3},
                                  {"type": "participant", "name": "alice", "idle": 0}]},
        {"type": "files", "files": [FILEINFO]},
        {"type": "files", "files": []},
    )
    assert pane_texts(s)[-3:] == [
        "On the server (2): bob (idle 1m 15s), alice (idle 0s)",
        f"  {FILE_ID}  talk.mp4  (381.5 MiB, from alice)",
        "No files shared yet.",
    ]
    assert s.file_ids == [FILE_ID]


def test_unknown_and_malformed_events_are_skipped() -> None:
    s, proto, transport = session_online()
    before = len(s.pane.lines)
    nested: dict[str, Any] = MESSAGE
    for _ in range(400):
        nested = {"type": "history", "requested": 1, "messages": [nested]}
    feed(
        proto,
        {"type": "hologram", "id": 1},  # a type from a newer server: quietly ignored
        {**MESSAGE, "id": "one"},
        {"type": "who", "users": "everyone"},
        {"type": "message", "id": 2},
        {"type": "history", "requested": 20, "messages": [{**MESSAGE, "ts": "yesterday"}]},
        json.dumps(nested),
        "{" * 100_000,
        {"type": "error", "code": 7},
    )
    # Only the first malformed event is mentioned, and the connection carries on.
    assert len(s.pane.lines) == before + 1
    assert "Ignored an event from the server" in s.pane.lines[-1].text
    assert not transport.disconnecting and s.state == "online"
    feed(proto, MESSAGE)
    assert s.pane.lines[-1].text == f"{T} <bob> hello"


def test_read_event_tells_unknown_from_malformed() -> None:
    assert read_event({"type": "hologram"}) is None
    assert read_event(["message"]) is None
    assert read_event({"type": 5}) is None
    assert read_event(MESSAGE) == ev.Message(1, TS_POSIX, "bob", "hello")
    with pytest.raises(ev.BadEvent):
        read_event({"type": "message", "id": 1})


def test_pings_are_answered() -> None:
    _, proto, transport = session_online()
    transport.clear()
    feed(proto, {"type": "ping", "token": "1700000000"})
    assert transport.value() == b"/pong 1700000000\n"


def test_a_transfer_fails_on_an_event_it_cannot_read(tmp_path: Any) -> None:
    job = Download(FILE_ID, tmp_path)
    ended: list[str | None] = []
    job.on_end = lambda _job, error, _msg: ended.append(error)
    proto = TransferProtocol(job, "k3y")
    transport = StringTransport()
    proto.makeConnection(transport)
    feed(proto, {"type": "ping", "token": "7"}, {"type": "attached", "name": "alice"})
    assert transport.value() == b"/attach k3y\n/pong 7\n/get " + FILE_ID.encode() + b"\n"
    feed(proto, {"type": "download", "file": {**FILEINFO, "size": "big"}, "offset": 0,
                 "length": 5})
    assert ended and ended[0] is not None and "cannot read" in ended[0]
    assert list(tmp_path.iterdir()) == []


# --- one list of commands for /help and Tab ---


def completed_commands() -> list[str]:
    c = ChatCompleter(lambda: [], lambda: [])
    doc = Document("/", 1)
    return [x.text.strip() for x in c.get_completions(doc, CompleteEvent(True))]


def help_rows() -> list[tuple[str, str]]:
    s = ChatSession(task.Clock(), FakeEndpoint, "srv")  # type: ignore[arg-type]
    s.commands.submit("/help")
    texts = pane_texts(s)
    assert texts[0] == "Commands:"
    # "  USAGE  SUMMARY": usages are padded to one width, at least two spaces after
    rows = [re.fullmatch(r"  (.*?)  +(.*)", t) for t in texts[1:]]
    return [(m[1], m[2]) for m in rows if m]


def help_verbs() -> list[str]:
    return sorted(u.split()[0] for u, _ in help_rows() if u.startswith("/") and u[1] != "/")


def test_help_and_completion_come_from_one_table() -> None:
    table = command_table()
    assert sorted(completed_commands()) == sorted("/" + verb for verb in table)
    assert help_verbs() == sorted("/" + verb for verb in table)
    assert help_rows()[: len(table)] == list(table.values())
    # Every command a participant may type on the server, and the client's own.
    for c in wire.COMMANDS.values():
        if wire.State.CHAT in c.states and c.listed and c.verb != "proto":
            assert c.verb in table
    assert {"cancel", "clear", "send", "get", "quit", "help"} <= set(table)
    assert not {"proto", "pong", "attach"} & set(table)


def test_the_clients_usage_wins_where_it_runs_a_command() -> None:
    rows = dict(help_rows())
    assert rows["/get [-f] ID [DEST]"] == LOCAL["get"].summary
    assert "/send PATH [PATH...]" in rows
    usages = " ".join(rows)
    assert "/get ID [OFFSET]" not in usages and "/send NAME SIZE" not in usages
    assert "//TEXT" in rows and "PageUp/PageDown" in rows


def test_a_new_server_command_shows_up_in_both(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass(frozen=True, slots=True)
    class Zap(wire.Command):
        verb = "zap"
        usage = "/zap NAME"
        summary = "zap someone"

    @dataclass(frozen=True, slots=True)
    class Early(wire.Command):
        verb = "early"
        usage = "/early"
        summary = "only before a name"
        states = frozenset({wire.State.REGISTER})

    monkeypatch.setitem(wire.COMMANDS, "zap", Zap)
    monkeypatch.setitem(wire.COMMANDS, "early", Early)
    assert "/zap" in completed_commands() and "/zap" in help_verbs()
    assert "/early" not in completed_commands() and "/early" not in help_verbs()


def test_local_commands_run_here_and_others_go_to_the_server() -> None:
    s = ChatSession(task.Clock(), FakeEndpoint, "srv", name="alice")  # type: ignore[arg-type]
    conn = FakeConn()
    online(s, conn, [])
    sent = len(conn.sent)
    s.commands.submit("/proto text")
    s.commands.submit("/Help")
    s.commands.submit("/get")
    assert conn.sent[sent:] == []
    assert pane_texts(s)[-1] == f"!! Usage: {LOCAL['get'].usage}"
    s.commands.submit("/who")
    s.commands.submit("//slash")
    assert conn.sent[sent:] == ["/who", "//slash"]
