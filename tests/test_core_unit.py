"""The chat core through in-memory transports: states, names, commands, modes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from chat.config import Config
from chat.protocol import State
from tests.support import Conn, MemoryServer, memory_server, relaxed_config


@pytest.fixture
def mem(tmp_path: Path) -> MemoryServer:
    """The core's rules, without flood control in the way (tested on its own)."""
    return memory_server(tmp_path, relaxed_config())


STAMP = r"\(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\)"


def users(mem: MemoryServer, *names: str, mode: str = "text") -> list[Conn]:
    """Register ``names`` and drain what they were sent while joining."""
    conns = [mem.user(n, mode=mode) for n in names]
    for c in conns:
        c.take()
    return conns


def test_banner_then_prompt(mem: MemoryServer) -> None:
    c = mem.connect()
    lines = c.take().split(b"\r\n")
    assert lines[0] == b"-- Welcome to lanchat."
    assert b"Choose a username:" in lines[1]
    assert c.proto.state is State.REGISTER


@pytest.mark.parametrize(
    "name",
    ["", "_alice", "-x", ".x", "a" * 33, "al ice", "alïce", "a/b", "server", "ADMIN", "Console"],
)
def test_invalid_names_are_refused_and_prompted_again(mem: MemoryServer, name: str) -> None:
    c = mem.connect()
    c.take()
    c.line(name)
    out = c.lines()
    assert out[-1] == "Choose a username:"
    if name:
        assert out[0].startswith("!! ")
    assert c.proto.state is State.REGISTER
    assert not c.transport.disconnecting
    c.line("fine_name")
    assert "Welcome to the chat, fine_name." in c.lines()


@pytest.mark.parametrize("name", ["a", "A1", "9lives", "x.y-z_w", "a" * 32])
def test_valid_names(mem: MemoryServer, name: str) -> None:
    c = mem.connect()
    c.line(name)
    assert f"Welcome to the chat, {name}." in c.lines()


def test_names_are_unique_without_regard_to_case(mem: MemoryServer) -> None:
    mem.user("Alice")
    c = mem.connect()
    c.take()
    c.line("aLICE")
    out = c.lines()
    assert out[0] == "!! The name aLICE is taken."
    assert out[-1] == "Choose a username:"


def test_registration_timeout_is_absolute(mem: MemoryServer) -> None:
    c = mem.connect()
    c.take()
    for _ in range(29):
        mem.clock.advance(2)
        c.line("bad name")  # activity must not extend the deadline
    mem.clock.advance(1)
    assert not c.transport.disconnecting
    mem.clock.advance(1)
    assert "did not choose a name in time" in c.take().decode()
    assert c.transport.disconnecting


def test_registration_timeout_is_configurable(tmp_path: Path) -> None:
    config = Config()
    config.limits.registration_timeout = 5
    server = memory_server(tmp_path, config)
    c = server.connect()
    server.clock.advance(4.9)
    assert not c.transport.disconnecting
    server.clock.advance(0.2)
    assert c.transport.disconnecting


def test_registered_connection_has_no_timeout(mem: MemoryServer) -> None:
    c = mem.user("alice")
    mem.clock.advance(3600)
    assert not c.transport.disconnecting


def test_welcome_participants_and_join_notice(mem: MemoryServer) -> None:
    a = mem.connect()
    a.line("alice")
    out = a.lines()
    assert out[2:] == [
        "Welcome to the chat, alice.",
        "-- You are the only one here.",
        "-- No messages yet.",
    ]
    b = mem.connect()
    b.line("bob")
    assert "-- Here with you (1): alice" in b.lines()
    (join,) = a.lines()
    assert re.fullmatch(STAMP + r" -- bob has joined the chat\.", join)


def test_history_replay_on_join_with_original_timestamps(mem: MemoryServer) -> None:
    a = mem.user("alice")
    for i in range(25):
        a.line(f"line {i}")
        mem.clock.advance(61)
    b = mem.connect()
    b.line("bob")
    out = b.lines()
    start = out.index("-- Last 20 messages:")
    replay = out[start + 1 : start + 21]
    assert [r.split("> ", 1)[1] for r in replay] == [f"line {i}" for i in range(5, 25)]
    first = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(1_700_000_000 + 5 * 61))
    assert replay[0] == f"({first}) <alice> line 5"
    assert out[start + 21] == "-- End of history."


def test_message_format_and_no_echo_in_text_mode(mem: MemoryServer) -> None:
    a, b = users(mem, "alice", "bob")
    a.take()
    a.line("hello there")
    (line,) = b.lines()
    expected = time.strftime("(%Y/%m/%d %H:%M:%S)", time.localtime(mem.clock.seconds()))
    assert line == f"{expected} <alice> hello there"
    assert a.take() == b""


def test_server_lines_end_in_crlf_and_lf_input_works(mem: MemoryServer) -> None:
    a, b = users(mem, "alice", "bob")
    a.feed(b"one\ntwo\r\nthree\n")
    data = b.take()
    assert data.count(b"\r\n") == 3
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert [ln.split(b"> ")[1] for ln in data.split(b"\r\n") if ln] == [b"one", b"two", b"three"]


def test_commands_are_case_insensitive(mem: MemoryServer) -> None:
    a = mem.user("alice")
    a.line("/HeLp")
    assert "-- Commands:" in a.lines()
    a.line("/WHO")
    assert "-- 1 here:" in a.lines()


def test_help_lists_commands(mem: MemoryServer) -> None:
    a = mem.user("alice")
    a.line("/help")
    text = "\n".join(a.lines())
    for cmd in ("/who", "/me", "/msg", "/nick", "/history", "/quit", "/send", "/get"):
        assert cmd in text


def test_who_shows_idle_time(mem: MemoryServer) -> None:
    a, b = users(mem, "alice", "bob")
    mem.clock.advance(125)
    b.line("hi")
    mem.clock.advance(5)
    a.take()
    a.line("/who")
    out = a.lines()
    assert out[0] == "-- 2 here:"
    assert "--   alice  (idle 2m 10s)" in out
    assert "--   bob  (idle 5s)" in out


def test_me_action(mem: MemoryServer) -> None:
    a, b = users(mem, "alice", "bob")
    a.line("/me waves")
    (line,) = b.lines()
    assert re.fullmatch(STAMP + r" \* alice waves", line)
    a.line("/me")
    assert a.lines() == ["!! Usage: /me ACTION"]


def test_private_messages(mem: MemoryServer) -> None:
    a, b, c = mem.user("alice"), mem.user("bob"), mem.user("carol")
    for x in (a, b, c):
        x.take()
    a.line("/msg BOB secret plans")
    (got,) = b.lines()
    assert re.fullmatch(STAMP + r" \*alice\* secret plans", got)
    (echo,) = a.lines()
    assert re.fullmatch(STAMP + r" -> \*bob\* secret plans", echo)
    assert c.take() == b""
    a.line("/msg nobody hi")
    assert a.lines() == ["!! nobody is not here."]
    # never in the shared history, nor replayed
    b.line("/history")
    assert "secret plans" not in "\n".join(b.lines())
    d = mem.connect()
    d.line("dave")
    assert "secret plans" not in d.take().decode()
    assert all(e.type != "private" for e in mem.store.recent("#lobby", 500))


def test_nick_change(mem: MemoryServer) -> None:
    a, b = users(mem, "alice", "bob")
    a.take()
    b.take()
    a.line("/nick Ally")
    for c in (a, b):
        (line,) = c.lines()
        assert line.endswith("-- alice is now known as Ally.")
    b.line("/nick ALLY")
    assert b.lines() == ["!! The name ALLY is taken."]
    b.line("/nick server")
    assert b.lines() == ["!! The name server is reserved."]
    b.line("/nick bad name")
    assert b.lines()[0].startswith("!! A name is")
    # the old name is free again, the new one is taken
    c = mem.connect()
    c.line("alice")
    assert "Welcome to the chat, alice." in c.lines()
    a.take()
    b.line("hello")
    assert a.lines()[0].endswith("<bob> hello")
    a.line("/msg alice hi")
    assert c.lines()[-1].endswith("*Ally* hi")


def test_history_command_and_cap(tmp_path: Path) -> None:
    config = relaxed_config()
    config.history.max = 30
    server = memory_server(tmp_path, config)
    a = server.user("alice")
    for i in range(40):
        a.line(f"m{i}")
    a.line("/history 3")
    out = a.lines()
    assert out[0] == "-- Last 3 messages:"
    assert [ln.split("> ")[1] for ln in out[1:4]] == ["m37", "m38", "m39"]
    a.line("/history 1000")
    out = a.lines()
    assert out[0] == "-- Last 30 messages:"
    a.line("/history")
    assert a.lines()[0] == "-- Last 20 messages:"
    a.line("/history -1")
    assert a.lines() == ["!! Usage: /history [N | after ID]"]


def test_unknown_command_mentions_help(mem: MemoryServer) -> None:
    a = mem.user("alice")
    a.line("/frobnicate now")
    (line,) = a.lines()
    assert line.startswith("!! Unknown command /frobnicate") and "/help" in line


def test_double_slash_is_text_with_one_slash_removed(mem: MemoryServer) -> None:
    a, b = users(mem, "alice", "bob")
    a.line("//who is there")
    (line,) = b.lines()
    assert line.endswith("<alice> /who is there")


def test_quit_frees_name_and_one_leave_notice(mem: MemoryServer) -> None:
    a, b = users(mem, "alice", "bob")
    b.take()
    a.line("/quit gotta go")
    assert a.lines()[-1] == "-- Goodbye (gotta go)."
    assert a.transport.disconnecting
    a.close()  # the socket closing afterwards must not add a second notice
    leaves = [ln for ln in b.lines() if "has left" in ln]
    assert len(leaves) == 1 and leaves[0].endswith("alice has left the chat (quit: gotta go).")
    c = mem.connect()
    c.line("ALICE")
    assert "Welcome to the chat, ALICE." in c.lines()


def test_dropped_connection_gives_one_leave_notice(mem: MemoryServer) -> None:
    a, b = users(mem, "alice", "bob")
    b.take()
    a.close()
    a.close()
    leaves = [ln for ln in b.lines() if "has left" in ln]
    assert len(leaves) == 1 and leaves[0].endswith("(connection lost).")
    assert "alice" not in mem.service.registry


def test_unregistered_drop_gives_no_notice(mem: MemoryServer) -> None:
    b = mem.user("bob")
    c = mem.connect()
    c.close()
    assert b.take() == b""


def test_invalid_utf8_is_replaced(mem: MemoryServer) -> None:
    a, b = users(mem, "alice", "bob")
    a.feed(b"caf\xe9 \xff\xfe ok\r\n")
    (line,) = b.lines()
    assert line.endswith("<alice> caf\ufffd ok") or line.endswith("<alice> caf\ufffd \ufffd ok")
    assert not a.transport.disconnecting


@pytest.mark.parametrize(
    "payload",
    [
        b"\x1b[2J\x1b[H",  # clear screen, home
        b"\x1b]0;pwned\x07",  # set title (OSC, BEL)
        b"\x1b]8;;http://evil\x1b\\",  # hyperlink (OSC, ST)
        b"\x1bP+q\x1b\\",  # DCS
        b"\xc2\x9b31m",  # 8-bit CSI
        b"\x07\x08\x0b\x0c\x7f\x00",  # BEL BS VT FF DEL NUL
        b"\xe2\x80\xa8",  # line separator
        b"\x1b[?1049h",  # alternate screen
    ],
)
def test_control_sequences_never_reach_others(mem: MemoryServer, payload: bytes) -> None:
    a, b = users(mem, "alice", "bob")
    a.feed(b"be" + payload + b"fore\r\n")
    a.line(b"/me x" + payload)
    a.line(b"/msg bob y" + payload)
    data = b.take()
    body = data.replace(b"\r\n", b"")
    assert not re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", body)
    assert b"\xc2\x80" not in body and b"\xc2\x9b" not in body and b"\xe2\x80\xa8" not in body
    assert b"<alice> before" in data


def test_tab_is_kept(mem: MemoryServer) -> None:
    a, b = users(mem, "alice", "bob")
    a.line("a\tb")
    assert b.lines()[0].endswith("<alice> a\tb")


def test_telnet_negotiation_is_never_relayed(mem: MemoryServer) -> None:
    a, b = users(mem, "alice", "bob")
    a.feed(b"\xff\xfb\x1f\xff\xfa\x18\x00xterm\xff\xf0hi\xff\xf1 there\r\n")
    (line,) = b.lines()
    assert line.endswith("<alice> hi there")


def test_telnet_negotiation_before_the_name(mem: MemoryServer) -> None:
    c = mem.connect()
    c.feed(b"\xff\xfd\x03\xff\xfb\x18alice\r\n")
    assert "Welcome to the chat, alice." in c.lines()


def test_long_line_is_dropped_and_lines_behind_it_survive(mem: MemoryServer) -> None:
    a, b = users(mem, "alice", "bob")
    a.feed(b"before\r\n" + b"x" * 5000 + b"\r\nafter one\nafter two\r\n")
    assert a.lines() == ["!! Line too long (the limit is 4096 bytes); dropped."]
    said = [ln.split("> ", 1)[1] for ln in b.lines()]
    assert said == ["before", "after one", "after two"]
    assert not a.transport.disconnecting


def test_long_line_across_segments(mem: MemoryServer) -> None:
    a, b = users(mem, "alice", "bob")
    for _ in range(10):
        a.feed(b"y" * 1000)
    a.feed(b"yyy\r\nnext")
    a.feed(b" line\r\n")
    assert a.lines() == ["!! Line too long (the limit is 4096 bytes); dropped."]
    assert [ln.split("> ", 1)[1] for ln in b.lines()] == ["next line"]


def test_line_at_the_limit_is_accepted(mem: MemoryServer) -> None:
    a, b = users(mem, "alice", "bob")
    a.feed(b"z" * 4096 + b"\r\n")
    a.feed(b"w" * 4096 + b"\n")
    a.feed(b"v" * 4097 + b"\r\n")
    assert [len(ln.split("> ", 1)[1]) for ln in b.lines()] == [4096, 4096]
    assert a.lines() == ["!! Line too long (the limit is 4096 bytes); dropped."]


def test_json_mode_before_registering(mem: MemoryServer) -> None:
    c = mem.connect()
    c.take()
    c.line("/proto json")
    events = c.events()
    assert [e["type"] for e in events] == ["proto", "prompt"]
    c.line("server")
    e = c.events()
    assert e[0] == {"type": "error", "code": "invalid_name",
                    "text": "The name server is reserved.", "command": None}
    assert e[1]["type"] == "prompt" and e[1]["reason"] == "The name server is reserved."
    c.line("alice")
    events = c.events()
    assert [e["type"] for e in events] == ["welcome", "participants", "history", "join"]
    assert events[0]["name"] == "alice" and len(events[0]["session"]) >= 22
    assert events[1]["names"] == ["alice"]


def test_json_chat_events_have_ids_and_utc_timestamps(mem: MemoryServer) -> None:
    a = mem.user("alice", mode="json")
    b = mem.user("bob", mode="json")
    a.take()
    b.line("hello")
    (mine,) = b.events()
    (theirs,) = a.events()
    assert mine == theirs  # the sender's confirmation is the same event
    assert mine["type"] == "message" and mine["sender"] == "bob" and mine["text"] == "hello"
    assert isinstance(mine["id"], int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", mine["ts"])
    b.line("again")
    assert b.events()[0]["id"] > mine["id"]


def test_every_json_line_is_an_object_with_a_type(mem: MemoryServer) -> None:
    a = mem.user("alice", mode="json")
    b = mem.user("bob")
    for cmd in ("/help", "/who", "/history", "/me hops", "/msg bob x", "/nick al", "/frob",
                "/session", "/msg", "hi"):
        a.line(cmd)
    b.line("/nick robert")
    b.line("/quit")
    lines = a.take().split(b"\r\n")
    assert lines[-1] == b""
    types = []
    for ln in lines[:-1]:
        obj = json.loads(ln)
        assert isinstance(obj, dict) and isinstance(obj["type"], str)
        types.append(obj["type"])
    for t in ("help", "who", "history", "action", "private", "nick", "error", "session",
              "message", "leave"):
        assert t in types


def test_proto_switches_back_to_text(mem: MemoryServer) -> None:
    a = mem.user("alice", mode="json")
    a.line("/proto text")
    assert a.lines() == ["-- Protocol is now text."]
    a.line("/proto yaml")
    assert a.lines() == ["!! Usage: /proto text|json"]


def test_broadcast_encodes_once_per_mode(mem: MemoryServer) -> None:
    conns = [mem.user(f"u{i}", mode="json" if i % 2 else "text") for i in range(20)]
    for c in conns:
        c.take()
    calls: list[str] = []
    for mode, renderer in mem.service.renderers.items():
        original = renderer.render

        def spy(event, viewer=None, tagged=False, _orig=original, _mode=mode):  # type: ignore[no-untyped-def]
            calls.append(_mode)
            return _orig(event, viewer, tagged)

        renderer.render = spy  # type: ignore[method-assign]
    conns[0].line("fan out")
    assert sorted(calls) == ["json", "text"]
    outs = {c.take() for c in conns[1:]}
    assert len(outs) == 2  # one rendering per mode, byte-identical per recipient


def test_one_broken_recipient_does_not_stop_a_broadcast(mem: MemoryServer) -> None:
    a, b, c = mem.user("alice"), mem.user("bob"), mem.user("carol")

    def boom(data: bytes) -> None:
        raise RuntimeError("broken transport")

    b.proto.send = boom  # type: ignore[method-assign]
    a.line("still here")
    assert c.lines()[-1].endswith("<alice> still here")


def test_commands_before_registration(mem: MemoryServer) -> None:
    c = mem.connect()
    c.take()
    c.line("/who")
    assert c.lines() == ["!! Choose a name before using /who."]
    c.line("/help")
    assert c.lines()[0] == "-- Commands:"
    c.line("/quit")
    assert c.transport.disconnecting


def test_http_request_on_chat_port(mem: MemoryServer) -> None:
    c = mem.connect()
    c.take()
    c.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    out = c.lines()
    assert out[0].startswith("!! This is the chat port, not HTTP.")
    assert "http://127.0.0.1:8001/files/" in out[0]
    assert c.transport.disconnecting
    assert len(mem.service.registry) == 0


def test_history_persists_across_a_new_store(tmp_path: Path) -> None:
    first = memory_server(tmp_path)
    a = first.user("alice")
    a.line("remember me")
    a.line("/me persists")
    first.clock.advance(0)  # the batched write
    second = memory_server(tmp_path)
    b = second.connect()
    b.line("bob")
    out = b.lines()
    assert any(ln.endswith("<alice> remember me") for ln in out)
    assert any(ln.endswith("* alice persists") for ln in out)
    c = second.user("carol", mode="json")
    c.line("next")
    (ev,) = [e for e in c.events() if e["type"] == "message"]
    assert ev["id"] > max(e.id for e in first.store.recent("#lobby", 10))
