"""The TUI's screenless pieces: event lines, colours, completion, progress, session logic.

No terminal and no sockets: ``format`` and ``completion`` are pure, and a
``ChatSession`` runs on a ``task.Clock`` with a fake chat connection, so
reconnection and deduplication are checked without waiting for anything.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from twisted.internet import defer, task
from twisted.python.failure import Failure

from client_tui.__main__ import parse_args
from client_tui.completion import ChatCompleter
from client_tui.connection import Backoff, parse_address
from client_tui.format import (
    NICK_COLOURS,
    clean,
    event_line,
    human_duration,
    human_size,
    local_time,
    nick_colour,
    progress_text,
)
from client_tui.session import ChatSession
from client_tui.transfer import safe_file_name

TS = "2026-11-23T16:37:22.046Z"
T = local_time(TS)


# --- event -> line ---


def text(event: dict[str, Any], me: str | None = "alice") -> str:
    line = event_line(event, me)
    assert line is not None
    return line.text


def test_message_lines() -> None:
    ev = {"type": "message", "id": 1, "ts": TS, "sender": "bob", "text": "hello"}
    assert text(ev) == f"{T} <bob> hello"
    line = event_line(ev, "alice")
    assert line is not None and line.id == 1 and line.kind == "message"
    own = event_line({**ev, "sender": "Alice"}, "alice")
    assert own is not None and own.kind == "own"
    assert any("own" in style for style, _ in own.fragments)


def test_other_event_lines() -> None:
    assert text({"type": "action", "id": 2, "ts": TS, "sender": "bob", "text": "waves"}) == (
        f"{T}  * bob waves"
    )
    priv = {"type": "private", "id": 3, "ts": TS, "sender": "bob", "recipient": "alice",
            "text": "psst"}
    assert text(priv) == f"{T} *bob* psst"
    assert text({**priv, "sender": "alice", "recipient": "bob"}) == f"{T} -> *bob* psst"
    assert text({"type": "join", "id": 4, "ts": TS, "name": "carol"}) == (
        f"{T} --> carol has joined"
    )
    assert text({"type": "leave", "id": 5, "ts": TS, "name": "carol", "reason": "quit: bye"}) == (
        f"{T} <-- carol has left (quit: bye)"
    )
    assert text({"type": "nick", "id": 6, "ts": TS, "old": "carol", "new": "carla"}) == (
        f"{T} -- carol is now known as carla"
    )
    assert text({"type": "notice", "id": 7, "ts": TS, "text": "going down"}) == (
        f"{T} -- Server notice: going down"
    )
    f = text({"type": "file", "id": 8, "ts": TS, "sender": "bob", "file_id": "ab" * 16,
              "name": "notes.txt", "size": 1234, "crc32": "00000000", "sha256": "0" * 64,
              "url": None})
    assert "bob shared notes.txt (1.2 KiB) id " + "ab" * 16 in f
    assert event_line({"type": "welcome"}, "alice") is None


def test_notices_are_dimmed() -> None:
    line = event_line({"type": "join", "id": 4, "ts": TS, "name": "carol"}, "alice")
    assert line is not None
    assert all("notice" in style or "time" in style for style, _ in line.fragments)


@given(st.text())
def test_hostile_text_cannot_reach_the_terminal(s: str) -> None:
    ev = {"type": "message", "id": 1, "ts": TS, "sender": "b\x1bob", "text": s}
    line = event_line(ev, None)
    assert line is not None
    for _, t in line.fragments:
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in t)
        assert "\u2028" not in t and "\u202e" not in t


def test_clean_replaces_controls() -> None:
    assert clean("a\x1b[31mb\x07\x9bc\td") == "a\ufffd[31mb\ufffd\ufffdc\ufffdd"
    assert clean("плохо ✓") == "плохо ✓"


# --- colours, sizes, progress ---


def test_nick_colour_is_stable_and_case_insensitive() -> None:
    assert nick_colour("alice") == nick_colour("ALICE") == nick_colour("Alice")
    assert nick_colour("alice") in NICK_COLOURS
    # crc32, not hash(): the same in every process.
    assert nick_colour("alice") == NICK_COLOURS[zlib.crc32(b"alice") % len(NICK_COLOURS)]
    names = [f"user{i}" for i in range(50)]
    assert len({nick_colour(n) for n in names}) > len(NICK_COLOURS) // 2


def test_sizes_and_durations() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(3 * 1024**3) == "3.0 GiB"
    assert human_duration(7) == "0:07"
    assert human_duration(750) == "12:30"
    assert human_duration(3723) == "1:02:03"


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
    got = completions(f"/send {tmp_path}/rep", [])
    assert got == ["ort.pdf"]


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
    a = parse_args(["10.0.0.2:7000", "--name", "zed", "--tls", "--cafile", "ca.pem"])
    assert (a.host, a.port, a.name, a.tls, a.cafile) == ("10.0.0.2", 7000, "zed", True, "ca.pem")
    b = parse_args([])
    assert (b.host, b.port, b.name) == ("127.0.0.1", 8000, None)


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


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False

    def loseConnection(self) -> None:
        self.closed = True


class FakeConn:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.transport = FakeTransport()

    def send_line(self, text: str) -> None:
        self.sent.append(text)


class FakeEndpoint:
    def __init__(self) -> None:
        self.attempts: list[defer.Deferred[Any]] = []

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.attempts.append(d)
        return d


def online(session: ChatSession, conn: FakeConn, history: list[dict[str, Any]]) -> None:
    session.connected(conn)  # type: ignore[arg-type]
    session.event(conn, {"type": "prompt", "text": "Choose a username:", "reason": None})  # type: ignore[arg-type]
    session.event(conn, {"type": "welcome", "name": "alice", "session": "k", "server": "x",  # type: ignore[arg-type]
                         "http": None})
    session.event(conn, {"type": "participants", "names": ["bob", "alice"], "you": "alice"})  # type: ignore[arg-type]
    session.event(conn, {"type": "history", "messages": history, "requested": 20})  # type: ignore[arg-type]


def msg(i: int) -> dict[str, Any]:
    return {"type": "message", "id": i, "ts": TS, "sender": "bob", "text": f"m{i}"}


def test_session_reconnects_with_backoff_and_dedupes() -> None:
    clock = task.Clock()
    ep = FakeEndpoint()
    s = ChatSession(clock, lambda: ep, "srv", name="alice",  # type: ignore[arg-type]
                    backoff=Backoff(rand=lambda: 0.0))
    s.start()
    c1 = FakeConn()
    online(s, c1, [msg(1), msg(2)])
    assert c1.sent == ["alice"] and s.state == "online"
    assert s.participants == ["bob", "alice"]

    s.lost(c1, Failure(ConnectionError("gone")))  # type: ignore[arg-type]
    assert s.state == "disconnected" and "disconnected, retrying" in s.status_text()
    clock.advance(0.25)
    assert len(ep.attempts) == 2
    ep.attempts[1].errback(Failure(ConnectionRefusedError("refused")))
    clock.advance(0.4)
    assert len(ep.attempts) == 2  # second delay is 0.5 s
    clock.advance(0.1)
    assert len(ep.attempts) == 3

    c2 = FakeConn()
    online(s, c2, [msg(1), msg(2), msg(3)])
    assert c2.sent == ["alice", "/history 500"]  # re-registers with the same name
    texts = [ln.text for ln in s.lines if "<bob>" in ln.text]
    assert [t.split("> ")[1] for t in texts] == ["m1", "m2", "m3"]


def test_session_asks_again_for_a_refused_name() -> None:
    s = ChatSession(task.Clock(), FakeEndpoint, "srv", name="root")  # type: ignore[arg-type]
    c = FakeConn()
    s.connected(c)  # type: ignore[arg-type]
    s.event(c, {"type": "prompt", "text": "", "reason": None})  # type: ignore[arg-type]
    assert c.sent == ["root"]
    s.event(c, {"type": "error", "code": "invalid_name", "text": "reserved", "command": None})  # type: ignore[arg-type]
    s.event(c, {"type": "prompt", "text": "", "reason": "That name is reserved."})  # type: ignore[arg-type]
    assert s.state == "naming"
    assert any("Name refused: That name is reserved." in ln.text for ln in s.lines)
    s.submit("alice")
    assert c.sent == ["root", "alice"]


def test_scrolling_holds_the_view() -> None:
    s = ChatSession(task.Clock(), FakeEndpoint, "srv")  # type: ignore[arg-type]
    for i in range(30):
        s.info(f"line {i}")
    s.scroll(-10)
    assert s.anchor == 19
    s.info("new")
    assert len(s.visible_lines()) == 20 and s.unread == 1
    s.scroll(100)
    assert s.anchor is None and s.unread == 0 and len(s.visible_lines()) == 31


def test_quit_sends_quit_and_waits_for_close() -> None:
    clock = task.Clock()
    s = ChatSession(clock, FakeEndpoint, "srv", name="alice")  # type: ignore[arg-type]
    c = FakeConn()
    online(s, c, [])
    s.submit("/quit see you")
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
