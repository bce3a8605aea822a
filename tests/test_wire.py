"""The wire vocabulary: commands defined once, events that survive the wire, docs that agree."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from chat import events as ev
from chat import wire
from chat.render import ERRORS, JsonRenderer, TextRenderer
from chat.wire import State
from tests.support import MemoryServer

DOCS = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
ALL = {State.REGISTER, State.PASSWORD, State.CHAT, State.ATTACHED}


def doc_table(heading: str) -> list[list[str]]:
    """The rows of the first table under ``## heading`` in docs/protocol.md."""
    text = DOCS.read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")][2:]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def test_the_docs_command_table_is_the_wire_vocabulary() -> None:
    documented = {}
    for usage, states, _ in doc_table("Commands (client → server)"):
        usage = usage.strip("`").replace("\\|", "|")
        allowed = ALL if states == "all" else {State[s.strip()] for s in states.split(",")}
        documented[usage] = allowed
    assert documented == {c.usage: set(c.states) for c in wire.COMMANDS.values()}


def test_the_docs_error_table_names_every_code_and_no_other() -> None:
    documented = set()
    for codes, _ in doc_table("Errors"):
        documented |= {c.strip(" `") for c in codes.split(",")}
    assert documented == set(ERRORS)


def test_help_is_the_vocabulary(mem: MemoryServer) -> None:
    alice = mem.user("alice", mode="json")
    alice.line("/help")
    (event,) = [e for e in alice.events() if e["type"] == "help"]
    usages = [c["usage"] for c in event["commands"]]
    assert usages == [c.usage for c in wire.COMMANDS.values() if c.listed] + ["//TEXT"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/history 5", wire.History(5)),
        ("/history", wire.History(None)),
        ("/files 0", wire.Files(count=1)),
        ("/files #dev 3", wire.Files("#dev", 3)),
        ("/part #dev gone for lunch", wire.Part("#dev", "gone for lunch")),
        ("/part lunch", wire.Part(None, "lunch")),
        ("/topic #dev the build", wire.Topic("#dev", "the build")),
        ("/topic", wire.Topic(None, None)),
        ("/kick bob #dev spam", wire.Kick("bob", "#dev", "spam")),
        ("/kick bob spam", wire.Kick("bob", None, "spam")),
        ("/private #staff on", wire.Private("#staff", True)),
        ("/lock off", wire.Lock(None, False)),
        ("/op bob #dev", wire.Op("bob", "#dev")),
        ("/who #dev", wire.Who("#dev")),
        ("/get abc 12", wire.Get("abc", 12)),
        ("/msg bob hi there", wire.Msg("bob", "hi there")),
        ("/me waves", wire.Me("waves")),
        ("/PROTO JSON", wire.Proto("json")),
        ("/quit  bye now", wire.Quit("bye now")),
        ("/send a%20b 7 0000000a", wire.Send("a%20b", 7, 10)),
    ],
)
def test_commands_parse_into_typed_values(line: str, expected: wire.Command) -> None:
    verb, args = wire.split_command(line)
    assert wire.COMMANDS[verb].parse(args.strip(" ")) == expected


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("/history x", "usage"), ("/history 1234567890", "usage"), ("/files -1", "usage"),
        ("/get", "usage"), ("/get a b", "usage"), ("/get a \u0665", "usage"),
        ("/msg bob", "usage"), ("/me  ", "usage"), ("/proto xml", "usage"),
        ("/send a", "bad_header"), ("/send a 5 xyz", "bad_header"), ("/send a +5", "bad_header"),
        ("/join", "usage"), ("/private #x maybe", "usage"),
        ("/invite", "usage"), ("/invite bob dev", "usage"), ("/who bob", "usage"),
    ],
)
def test_bad_arguments_are_refused_with_a_code(line: str, code: str) -> None:
    verb, args = wire.split_command(line)
    with pytest.raises(wire.CommandError) as refused:
        wire.COMMANDS[verb].parse(args.strip(" "))
    assert refused.value.code == code


def test_usage_errors_quote_the_commands_own_usage(mem: MemoryServer) -> None:
    alice = mem.user("alice")
    alice.line("/history lots")
    assert alice.lines() == ["!! Usage: /history [N | after ID]"]


@pytest.mark.parametrize(("state", "code"), [("register", "not_registered"), ("chat", "not_here")])
def test_the_state_gate_comes_from_each_commands_states(
    mem: MemoryServer, state: str, code: str
) -> None:
    conn = mem.connect() if state == "register" else mem.user("alice")
    conn.line("/proto json")
    conn.take()
    for command in wire.COMMANDS.values():
        current = conn.proto.state
        if current in command.states:
            continue
        conn.line(f"/{command.verb} x")
        (event,) = conn.events()
        assert (event["code"], event["command"]) == (code, command.verb)


SAMPLE_FILE = ev.FileInfo("ab" * 16, "notes é.txt", 5, "0000000a", "f" * 64, "alice", 1.5, None)
SAMPLES: list[ev.Event] = [
    ev.Message(1, 1_700_000_000.25, "alice", "hi", "#lobby"),
    ev.Part(9, 1_700_000_000.0, "bob", "#dev", "lunch"),
    ev.Topic(10, 1_700_000_000.0, "#dev", "the build", "alice"),
    ev.Names("#dev", (ev.Participant("alice", 2.0),)),
    ev.RoomInfo("#dev", 3, "the build", True, False, True),
    ev.Rooms((ev.RoomInfo("#dev", 3, "", False),)),
    ev.Invited("#staff", "alice"),
    ev.Current("#dev"),
    ev.Action(2, 1_700_000_000.0, "alice", "waves"),
    ev.Private(3, 1_700_000_000.0, "alice", "bob", "psst"),
    ev.Join(4, 1_700_000_000.0, "bob"),
    ev.Leave(5, 1_700_000_000.0, "bob", "quit"),
    ev.Nick(6, 1_700_000_000.0, "bob", "rob"),
    ev.Notice(7, 1_700_000_000.0, "going down"),
    ev.FileShared(8, 1_700_000_000.0, "alice", "ab" * 16, "n", 5, "0000000a", "f" * 64, None),
    ev.Prompt(wire.PROMPT, "taken"),
    ev.Participant("alice", 1.5),
    ev.Welcome("alice", "key", "lanchat", "http://127.0.0.1:8001"),
    ev.Participants(("alice", "bob"), "alice"),
    ev.History((ev.Message(1, 1.0, "a", "x"), ev.Action(2, 2.0, "a", "y")), 20),
    ev.Who((ev.Participant("alice", 0.0),)),
    ev.Error("too_large", "send", {"limit": 5}, "The file is too large."),
    ev.Help((("/help", "this list"),)),
    ev.Proto("json"),
    ev.Session("key", "alice"),
    ev.Attached("alice"),
    ev.Bye("quit"),
    SAMPLE_FILE,
    ev.Files((SAMPLE_FILE,)),
    ev.Uploaded(SAMPLE_FILE),
    ev.Download(SAMPLE_FILE, 2, 3),
    ev.FetchHint(SAMPLE_FILE),
    ev.Ping("17"),
    ev.Info("hello"),
    ev.Removed(11, 1_700_000_000.0, "alice", "ab" * 16, "notes.txt", "#dev"),
    ev.BanInfo("address", "10.0.0.0/8", 1_700_003_600.0, "spam", "alice"),
    ev.BanList((ev.BanInfo("name", "bob", None, "", "console"),)),
    ev.Prompt("The name alice is registered. Password:", None, "account"),
    ev.Welcome("alice", "key", "lanchat", None, ("#lobby",), "#lobby", True, True),
    ev.Message(12, 1_700_000_000.0, "alice", "hi", "#lobby", True),
    ev.Error("banned", None, {"until": 1_700_003_600.0, "reason": "spam"}, "You are banned."),
    ev.Resume("big%20file.iso", 10_240, "bbce3b9d", 3000),
]


def test_every_event_type_has_a_sample() -> None:
    assert {type(e) for e in SAMPLES} == set(ev.EVENTS.values())


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_events_survive_the_wire(event: ev.Event) -> None:
    line = JsonRenderer().render(event)
    assert ev.from_json(json.loads(line)) == event


@pytest.mark.parametrize(
    "data",
    [
        {"type": "message", "id": "1", "ts": "2026-01-01T00:00:00.000Z", "sender": "a", "text": ""},
        {"type": "message", "id": 1, "sender": "a", "text": "x"},
        {"type": "message", "id": 1, "ts": "yesterday", "sender": "a", "text": "x"},
        {"type": "who", "users": [{"type": "participant", "name": 3, "idle": 0}]},
        {"type": "history", "messages": [{"type": "bogus"}], "requested": 1},
        {"type": "uploaded", "file": None},
        {"type": "error", "code": 5},
        {"type": "help", "commands": "all"},
        {"type": "no such type"},
        ["not", "an", "object"],
    ],
)
def test_malformed_events_are_refused(data: Any) -> None:
    with pytest.raises(ev.BadEvent):
        ev.from_json(data)


def test_errors_carry_codes_and_values_and_the_renderer_words_them() -> None:
    error = ev.error("too_large", "send", limit=1024**3)
    assert error.text is None  # the chat logic says what, not how
    assert TextRenderer().text(error) == (
        "!! The file is too large: the limit is 1073741824 bytes (1.0 GiB)."
    )
    on_the_wire = json.loads(JsonRenderer().render(error))
    assert on_the_wire["limit"] == 1024**3 and on_the_wire["text"].startswith("The file")


def test_every_error_code_has_words() -> None:
    values = {"reason": "quota", "size": 2, "quota": 1, "used": 1,
              "name": "n", "verb": "v", "usage": "u", "limit": 1, "value": "v",
              "expected": "0", "actual": "1", "file_id": "f", "wait": 1, "timeout": 1.0,
              "missing": 1, "http": None, "room": "#dev", "target": "t",
              "until": 1_700_000_000.0, "offset": 5}
    worded = set()
    for code in ERRORS:
        for problem in ("empty", "fields"):
            try:
                text = TextRenderer().text(ev.error(code, **values, problem=problem))
            except KeyError:
                continue  # that code has no such problem
            assert text.startswith("!! ") and "{" not in text, code
            worded.add(code)
    assert worded == set(ERRORS)


def test_history_after_an_id_is_what_was_missed(mem: MemoryServer) -> None:
    alice, bob = mem.user("alice", mode="json"), mem.user("bob", mode="json")
    for text in ("one", "two", "three"):
        alice.line(text)
    ids = [e["id"] for e in bob.events() if e["type"] == "message"]
    bob.line(f"/history after {ids[0]}")
    (reply,) = [e for e in bob.events() if e["type"] == "history"]
    assert [m["text"] for m in reply["messages"]] == ["two", "three"]
    assert reply["after"] == ids[0] and reply["requested"] == 2
    bob.line(f"/history after {ids[-1]}")
    assert next(e for e in bob.events() if e["type"] == "history")["messages"] == []
