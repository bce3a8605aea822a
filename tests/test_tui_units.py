"""The TUI's screenless pieces: event lines, colours, completion, progress, session logic.

No terminal and no sockets: ``format`` and ``completion`` are pure, and a
``ChatSession`` runs on a ``task.Clock`` with a fake chat connection and typed
events, so reconnection and deduplication are checked without waiting for
anything.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from twisted.internet import task
from twisted.python.failure import Failure

from chat import events as ev
from chat.units import human_size
from client_tui.__main__ import parse_args
from client_tui.completion import ChatCompleter
from client_tui.connection import Backoff, parse_address
from client_tui.format import (
    NICK_SLOTS,
    clock_duration,
    event_line,
    local_time,
    nick_slot,
    nick_style,
    progress_text,
    screen_text,
)
from client_tui.session import ChatSession
from client_tui.transfer import safe_file_name
from tests.tui_support import TS_POSIX, FakeConn, FakeEndpoint, msg, online

T = local_time(TS_POSIX)


# --- event -> line ---


def text(event: ev.Event, me: str | None = "alice") -> str:
    line = event_line(event, me)
    assert line is not None
    return line.text


def test_message_lines() -> None:
    event = ev.Message(1, TS_POSIX, "bob", "hello")
    assert text(event) == f"{T} <bob> hello"
    line = event_line(event, "alice")
    assert line is not None and line.id == 1 and line.kind == "message" and not line.own
    own = event_line(ev.Message(1, TS_POSIX, "Alice", "hello"), "alice")
    assert own is not None and own.own and own.kind == "message"
    assert any("own" in style for style, _ in own.fragments)


def test_other_event_lines() -> None:
    assert text(ev.Action(2, TS_POSIX, "bob", "waves")) == f"{T}  * bob waves"
    assert text(ev.Private(3, TS_POSIX, "bob", "alice", "psst")) == f"{T} *bob* psst"
    assert text(ev.Private(3, TS_POSIX, "alice", "bob", "psst")) == f"{T} -> *bob* psst"
    assert text(ev.Join(4, TS_POSIX, "carol")) == f"{T} --> carol has joined"
    assert text(ev.Leave(5, TS_POSIX, "carol", "quit: bye")) == (
        f"{T} <-- carol has left (quit: bye)"
    )
    assert text(ev.Nick(6, TS_POSIX, "carol", "carla")) == f"{T} -- carol is now known as carla"
    assert text(ev.Notice(7, TS_POSIX, "going down")) == f"{T} -- Server notice: going down"
    shared = ev.FileShared(8, TS_POSIX, "bob", "ab" * 16, "notes.txt", 1234, "00000000",
                           "0" * 64, None)
    assert "bob shared notes.txt (1.2 KiB): /get " + "ab" * 16 in text(shared)
    assert event_line(ev.Welcome("alice", "k", "x", None), "alice") is None


def test_notices_are_dimmed() -> None:
    line = event_line(ev.Join(4, TS_POSIX, "carol"), "alice")
    assert line is not None
    assert all("notice" in style or "time" in style for style, _ in line.fragments)


@given(st.text())
def test_hostile_text_cannot_reach_the_terminal(s: str) -> None:
    line = event_line(ev.Message(1, TS_POSIX, "b\x1bob", s), None)
    assert line is not None
    for _, t in line.fragments:
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in t)
        assert "\u2028" not in t and "\u202e" not in t


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_timestamp_renders(ts: float) -> None:
    assert len(text(ev.Message(1, ts, "bob", "x"))) > 0


def test_screen_text_replaces_controls() -> None:
    assert screen_text("a\x1b[31mb\x07\x9bc\td") == "a\ufffd[31mb\ufffd\ufffdc\ufffdd"
    assert screen_text("плохо ✓") == "плохо ✓"


# --- colours, sizes, progress ---


def test_nick_slot_is_stable_and_case_insensitive() -> None:
    assert nick_slot("alice") == nick_slot("ALICE") == nick_slot("Alice")
    # crc32, not hash(): the same in every process.
    assert nick_slot("alice") == zlib.crc32(b"alice") % NICK_SLOTS
    names = [f"user{i}" for i in range(50)]
    assert len({nick_slot(n) for n in names}) > NICK_SLOTS // 2
    # Your own name has a style of its own, never one of the slots others get.
    assert nick_style("Alice", "alice") == "class:nick.self"
    assert nick_style("bob", "alice") == f"class:nick.{nick_slot('bob')}"


def test_sizes_are_the_shared_ones_and_durations_a_clock() -> None:
    import client_tui.format

    assert client_tui.format.human_size is human_size  # chat.units: one meaning everywhere
    assert human_size(1536) == "1.5 KiB"
    assert clock_duration(7) == "0:07"
    assert clock_duration(750) == "12:30"
    assert clock_duration(3723) == "1:02:03"


def test_progress_text() -> None:
    mib = 1024 * 1024
    assert progress_text(mib, 2 * mib, 2.0) == (
        "[######------]  50% 1.0 MiB/2.0 MiB 512.0 KiB/s 0:02 left"
    )
    assert progress_text(0, 100, 0.0).endswith("--:-- left")
    assert progress_text(100, 100, 1.0).startswith("[############] 100%")
    assert progress_text(100, 100, 1.0).endswith("done")
    assert "100%" in progress_text(0, 0, 0.0)


# --- completion ---


def completions(text: str, names: list[str], ids: list[str] | None = None) -> list[str]:
    c = ChatCompleter(lambda: names, lambda: ids or [])
    doc = Document(text, len(text))
    return [x.text for x in c.get_completions(doc, CompleteEvent(completion_requested=True))]


def test_command_completion() -> None:
    assert completions("/se", []) == ["/send ", "/session "]
    assert completions("/QU", []) == ["/quit "]


def test_nick_completion() -> None:
    names = ["alice", "Albert", "bob"]
    assert completions("al", names) == ["Albert: ", "alice: "]
    assert completions("hi b", names) == ["bob "]
    assert completions("/msg bo", names) == ["bob "]
    assert completions("/msg zed", names) == []


def test_file_id_and_path_completion(tmp_path: Path) -> None:
    assert completions("/get ab", [], ["abcd", "ef01"]) == ["abcd "]
    (tmp_path / "report.pdf").write_text("x")
    assert completions(f"/send {tmp_path}/rep", []) == [f"{tmp_path}/report.pdf "]


# --- addresses, options, names, back-off ---


def test_parse_address() -> None:
    assert parse_address(None) == ("127.0.0.1", 8000)
    assert parse_address("chat.lan") == ("chat.lan", 8000)
    assert parse_address("chat.lan:9000") == ("chat.lan", 9000)
    assert parse_address(":9000") == ("127.0.0.1", 9000)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValueError):
        parse_address("host:http")


def test_parse_args() -> None:
    a = parse_args(["10.0.0.2:7000", "--name", "zed", "--cafile", "ca.pem"])
    assert (a.host, a.port, a.name, a.tls, a.ca) == ("10.0.0.2", 7000, "zed", True, "ca.pem")
    assert parse_args(["--ca", "ca.pem"]).ca == "ca.pem"  # --cafile is its old name
    b = parse_args([])
    assert (b.host, b.port, b.name, b.tls, b.accept) == ("127.0.0.1", 8000, None, False, None)
    # The fingerprint as people paste it (lower case, no colons) implies --tls.
    c = parse_args(["--accept-new-fingerprint", "ab" * 32])
    assert c.tls and c.accept == ":".join(["AB"] * 32)
    with pytest.raises(SystemExit):
        parse_args(["--accept-new-fingerprint", "AB:CD"])


def test_safe_file_name() -> None:
    assert safe_file_name("notes.txt", "id") == "notes.txt"
    assert safe_file_name("../../etc/passwd", "id") == "passwd"
    assert safe_file_name("..", "id") == "id"
    assert safe_file_name("a\x1b[2Jb", "id") == "a_[2Jb"


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    lo = Backoff(initial=0.5, cap=30, rand=lambda: 0.0)
    assert [lo.next() for _ in range(4)] == [0.25, 0.5, 1.0, 2.0]
    hi = Backoff(initial=0.5, cap=30, rand=lambda: 0.999999)
    delays = [hi.next() for _ in range(20)]
    assert max(delays) <= 30 and delays[-1] > 29
    hi.reset()
    assert hi.next() < 0.5


# --- the session, on a fake clock ---


def test_session_reconnects_with_backoff_and_dedupes() -> None:
    clock = task.Clock()
    ep = FakeEndpoint()
    s = ChatSession(clock, lambda: ep, "srv", name="alice",  # type: ignore[arg-type]
                    backoff=Backoff(rand=lambda: 0.0))
    s.start()
    c1 = FakeConn()
    online(s, c1, [msg(1), msg(2)])
    assert c1.sent == ["alice", "/history 0"] and s.state == "online"  # the second: lag
    assert s.participants == ["bob", "alice"]

    s.lost(c1, Failure(ConnectionError("gone")))  # type: ignore[arg-type]
    assert s.state == "disconnected" and "disconnected (gone), retrying in" in s.status_text()
    clock.advance(0.25)
    assert len(ep.attempts) == 2
    ep.attempts[1].errback(Failure(ConnectionRefusedError("refused")))
    clock.advance(0.4)
    assert len(ep.attempts) == 2  # second delay is 0.5 s
    clock.advance(0.1)
    assert len(ep.attempts) == 3

    c2 = FakeConn()
    online(s, c2, [msg(1), msg(2), msg(3)])
    # Re-registers with the same name; the replay is skipped, what was missed asked for.
    assert c2.sent == ["alice", "/history after 2"]
    s.event(c2, ev.History((msg(3),), 1, after=2))  # type: ignore[arg-type]
    texts = [ln.text for ln in s.pane.lines if "<bob>" in ln.text]
    assert [t.split("> ")[1] for t in texts] == ["m1", "m2", "m3"]


def test_session_asks_again_for_a_refused_name() -> None:
    s = ChatSession(task.Clock(), FakeEndpoint, "srv", name="root")  # type: ignore[arg-type]
    c = FakeConn()
    s.connected(c)  # type: ignore[arg-type]
    s.event(c, ev.Prompt(""))  # type: ignore[arg-type]
    assert c.sent == ["root"]
    s.event(c, ev.Error("invalid_name", None, {}, "reserved"))  # type: ignore[arg-type]
    s.event(c, ev.Prompt("", "That name is reserved."))  # type: ignore[arg-type]
    assert s.state == "naming"
    assert [ln.text[9:] for ln in s.pane.lines] == ["!! Name refused: That name is reserved.",
                                                     "Choose a username (type it below and "
                                                     "press Enter):"]
    s.commands.submit("alice")
    assert c.sent == ["root", "alice"]


def test_quit_sends_quit_and_waits_for_close() -> None:
    clock = task.Clock()
    s = ChatSession(clock, FakeEndpoint, "srv", name="alice")  # type: ignore[arg-type]
    c = FakeConn()
    online(s, c, [])
    s.commands.submit("/quit see you")
    assert c.sent[-1] == "/quit see you" and not s.done.called
    s.lost(c, Failure(ConnectionError("closed")))  # type: ignore[arg-type]
    assert s.done.called and s.state == "closed"
    # Without an answer the client gives up waiting after a deadline.
    s2 = ChatSession(clock, FakeEndpoint, "srv", name="alice")  # type: ignore[arg-type]
    c2 = FakeConn()
    online(s2, c2, [])
    s2.quit()
    clock.advance(3)
    assert s2.done.called and c2.transport.closed
