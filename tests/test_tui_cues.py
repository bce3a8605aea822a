"""The cues a chat client owes its user, checked without a screen or sockets.

Highlights and the bell, the ignore list and its file, the outbox's pacing
(against the server's own token bucket as the oracle), pastes, history
requests and what a reconnect fetches, the outage lines, offline typing,
quoted path completion, the local log, transfer status and the palettes.
A ``ChatSession`` runs on a ``task.Clock`` with a fake chat connection and
typed events, as in ``test_tui_units``.
"""

from __future__ import annotations

import shlex
import tomllib
from dataclasses import fields, replace
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.output import ColorDepth
from twisted.internet import task
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure

from chat import events as ev
from chat.config import LimitSettings
from chat.limits import TokenBucket
from client_tui import outbox as ob
from client_tui.attention import Attention, is_highlight, mentions
from client_tui.chatlog import ChatLog
from client_tui.completion import ChatCompleter, quote_path, shell_words
from client_tui.connection import Backoff
from client_tui.download import Download
from client_tui.format import NICK_SLOTS, event_line
from client_tui.outbox import Outbox
from client_tui.paste import Paste
from client_tui.session import ChatSession, Options
from client_tui.settings import Settings, SettingsError, config_dir
from client_tui.style import BASE, PALETTE_8, PALETTE_256, build_style, palette
from client_tui.transfer import PasteUpload, Upload
from tests.tui_support import TS_POSIX, FakeConn, FakeEndpoint, msg, online


def session(**options: object) -> tuple[ChatSession, FakeConn, task.Clock]:
    clock = task.Clock()
    endpoint = FakeEndpoint()
    s = ChatSession(clock, lambda: endpoint, "srv", name="alice",  # type: ignore[arg-type,return-value]
                    backoff=Backoff(rand=lambda: 0.0), options=Options(**options))  # type: ignore[arg-type]
    conn = FakeConn()
    online(s, conn, [msg(1), msg(2)])
    return s, conn, clock


def say(s: ChatSession, conn: FakeConn, *events: ev.Event) -> None:
    for event in events:
        s.event(conn, event)  # type: ignore[arg-type]


def texts(s: ChatSession) -> list[str]:
    return [ln.text for ln in s.pane.lines]


# --- highlights ---


@pytest.mark.parametrize("text", ["alice: ping", "hi Alice", "@ALICE look", "thanks alice.",
                                  "(alice)", "alice's turn", "ok,alice"])
def test_a_mention_is_the_name_as_a_word(text: str) -> None:
    assert mentions(text, "alice")


@pytest.mark.parametrize("text", ["malice", "alicex", "alice_bot", "alice.smith", "ali ce",
                                  "alice-2"])
def test_a_longer_name_is_someone_else(text: str) -> None:
    assert not mentions(text, "alice")


def test_what_highlights() -> None:
    assert is_highlight(ev.Message(1, TS_POSIX, "bob", "alice?"), "alice")
    assert not is_highlight(ev.Message(1, TS_POSIX, "alice", "alice?"), "alice")  # your own
    assert is_highlight(ev.Action(1, TS_POSIX, "bob", "waves at alice"), "Alice")
    assert is_highlight(ev.Private(1, TS_POSIX, "bob", "alice", "psst"), "alice")
    assert not is_highlight(ev.Private(1, TS_POSIX, "alice", "bob", "psst"), "alice")
    assert not is_highlight(ev.Join(1, TS_POSIX, "alice"), "alice")
    line = event_line(ev.Message(1, TS_POSIX, "bob", "alice?"), "alice")
    assert line is not None and line.highlight
    assert any("highlight" in style for style, _ in line.fragments)


def test_a_live_highlight_rings_and_is_counted_while_reading_back() -> None:
    s, conn, _ = session()
    say(s, conn, ev.Message(3, TS_POSIX, "bob", "alice: lunch?"))
    assert s.attention.bells == 1 and s.pane.unread_highlights == 0  # on screen
    for i in range(4, 80):
        say(s, conn, msg(i))
    s.pane.screen(80, 20)
    s.pane.page_up()
    say(s, conn, ev.Private(80, TS_POSIX, "bob", "alice", "psst"),
        ev.Message(81, TS_POSIX, "carol", "ALICE!"), msg(82))
    assert s.attention.bells == 3
    assert s.pane.unread_highlights == 2 and "| 2 highlights" in s.status_text()
    assert s.title() == "(2) chat-tui: alice@srv"
    s.pane.end()
    assert s.title() == "chat-tui: alice@srv" and "highlight" not in s.status_text()


def test_history_never_rings() -> None:
    s, conn, _ = session()
    say(s, conn, ev.History((ev.Message(3, TS_POSIX, "bob", "alice?"),), 20))
    assert s.attention.bells == 0 and s.pane.lines[-1].highlight


def test_no_bell() -> None:
    s, conn, _ = session(bell=False)
    say(s, conn, ev.Message(3, TS_POSIX, "bob", "alice: lunch?"))
    assert s.attention.bells == 0 and s.pane.lines[-1].highlight


def test_attention_title() -> None:
    assert Attention.title(None, "srv", 0) == "chat-tui: srv"
    assert Attention.title("bob", "h:1", 3) == "(3) chat-tui: bob@h:1"


# --- ignore ---


def test_ignore_hides_lines_and_is_kept_in_the_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = config_dir() / "tui.toml"
    assert path == tmp_path / "lanchat" / "tui.toml"
    s, conn, _ = session(settings=Settings(path))
    s.commands.submit("/ignore Bob")
    say(s, conn, ev.Message(3, TS_POSIX, "bob", "alice: spam"),
        ev.Private(4, TS_POSIX, "bob", "alice", "spam"), ev.Join(5, TS_POSIX, "carol"))
    assert not any("spam" in t for t in texts(s)) and s.attention.bells == 0
    assert "--> carol has joined" in texts(s)[-1]
    assert tomllib.loads(path.read_text())["ignore"] == ["Bob"]
    assert Settings.load(path).is_ignored("BOB")
    s.commands.submit("/ignore")
    assert texts(s)[-1].endswith("Ignoring: Bob.")
    s.commands.submit("/unignore bob")
    say(s, conn, ev.Message(6, TS_POSIX, "bob", "back"))
    assert texts(s)[-1].endswith("<bob> back")
    assert tomllib.loads(path.read_text())["ignore"] == []


def test_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "tui.toml"
    assert Settings.load(path) == Settings(path)
    path.write_text('ignore = ["zed"]\nbell = false\npaste = "file"\nlog = "~/logs"\n')
    loaded = Settings.load(path)
    assert (loaded.ignore, loaded.bell, loaded.paste, loaded.log) == (
        ["zed"], False, "file", "~/logs")
    loaded.ignore.append("Émile \"x\"")
    loaded.save()
    again = Settings.load(path)
    assert sorted(again.ignore) == ["zed", "Émile \"x\""] and again.bell is False
    for bad in ('ignore = "zed"', "colour = 1", 'paste = "maybe"', "ignore = ["):
        path.write_text(bad)
        with pytest.raises(SettingsError, match=r"tui\.toml"):
            Settings.load(path)
    broken = Settings(path, broken=True)
    with pytest.raises(SettingsError, match="not overwriting"):
        broken.save()
    assert path.read_text() == "ignore = ["


# --- pacing ---


def test_the_outbox_uses_the_servers_defaults() -> None:
    limits = LimitSettings()
    assert (ob.FLOOD_BURST, ob.FLOOD_RATE, ob.FLOOD_LINE_BYTES, ob.MAX_LINE_BYTES) == (
        limits.flood_burst, limits.flood_rate, limits.flood_line_bytes, limits.max_line_bytes)


@given(st.lists(st.integers(min_value=0, max_value=4000), min_size=1, max_size=60))
def test_paced_lines_never_wait_at_the_server(sizes: list[int]) -> None:
    """The server's own bucket, fed each line when the outbox writes it, never has to
    hold one back: nothing piles up there, so its flood control cannot cut us."""
    clock = task.Clock()
    server = TokenBucket(clock, ob.FLOOD_BURST, ob.FLOOD_RATE)
    wrote: list[str] = []

    def arrive(text: str) -> None:
        assert server.level() >= min(ob.line_cost(text), ob.FLOOD_BURST) - 1e-9
        server.take(ob.line_cost(text))
        wrote.append(text)

    box = Outbox(clock)
    box.open(arrive)
    for n in sizes:
        box.send("x" * n)
    while box.queue:
        clock.advance(0.05)
    assert wrote == ["x" * n for n in sizes]


def test_a_burst_goes_at_once_then_two_a_second() -> None:
    clock = task.Clock()
    wrote: list[float] = []
    box = Outbox(clock)
    box.open(lambda text: wrote.append(clock.seconds()))
    for i in range(9):
        box.send(f"line {i}")
    assert wrote == [0.0] * 5 and box.waiting() == 4
    clock.pump([0.5] * 4)
    assert wrote == [0.0] * 5 + [0.5, 1.0, 1.5, 2.0]


def test_the_users_lines_wait_for_the_connection_and_the_clients_do_not() -> None:
    clock = task.Clock()
    box = Outbox(clock)
    box.send("typed", kept=True)
    box.send("/pong 1", kept=False)
    box.close()
    wrote: list[str] = []
    box.open(wrote.append)
    assert wrote == ["typed"]
    for i in range(8):
        box.send(f"paste {i}")
    assert len(wrote) == 5 and box.drop() == 4 and box.waiting() == 0  # the burst went


# --- pastes ---


def test_a_paste_as_lines() -> None:
    paste = Paste("one\r\n\ttwo\n\n/quit\n")
    assert paste.lines == ["one", "        two", "//quit"]  # text, never a command
    assert paste.default == "lines" and paste.seconds() == 0
    assert paste.question().startswith("Paste of 3 lines \u2014 Enter: send as 3 lines")
    many = Paste("\n".join(f"line {i}" for i in range(40)))
    assert many.default == "file" and many.seconds() == 17.5  # (40 - 5) / 2
    assert "Enter: send as paste.txt" in many.question() and "l: send as 40 lines" in (
        many.question())
    huge = Paste("short\n" + "x" * 5000)
    assert not huge.fits_lines and "l: " not in huge.question()
    assert Paste("a\r\nb").as_file == b"a\nb\n"


def test_a_paste_waits_for_an_answer() -> None:
    s, conn, _ = session()
    assert s.commands.pasted("just one line\n") == "just one line"
    assert s.commands.pasted("first\nsecond\nthird") is None
    assert s.commands.paste is not None
    sent = len(conn.sent)
    s.commands.answer("default")
    assert conn.sent[sent:] == ["first", "second", "third"] and s.commands.paste is None
    s.commands.pasted("a\nb")
    s.commands.answer("cancel")
    assert conn.sent[sent + 3:] == [] and s.commands.paste is None


def test_a_paste_as_a_file() -> None:
    s, _, _ = session()
    s.commands.pasted("a\nb")
    s.commands.answer("file")
    job = s.transfers.current
    assert isinstance(job, PasteUpload) and job.data == b"a\nb\n" and job.label == "paste.txt"
    s2, conn2, _ = session(paste="lines")
    assert s2.commands.pasted("x\ny") is None and s2.commands.paste is None
    assert conn2.sent[-2:] == ["x", "y"]


# --- history, reconnects, the outage ---


def test_a_reconnect_asks_for_what_was_missed_and_merges_it_in_order() -> None:
    s, conn, clock = session()
    s.lost(conn, Failure(ConnectionRefusedError()))  # type: ignore[arg-type]
    for _ in range(4):
        clock.advance(60)
        s.endpoint().attempts[-1].errback(Failure(ConnectionRefusedError()))  # type: ignore[attr-defined]
    outage = [t for t in texts(s) if "!!" in t]
    assert len(outage) == 1 and "Lost the connection to srv (connection refused)" in outage[0]
    assert "disconnected (connection refused), retrying in 4s" in s.status_text()  # a countdown
    conn2 = FakeConn()
    s.connected(conn2)  # type: ignore[arg-type]
    say(s, conn2, ev.Prompt("Choose a username:"), ev.Welcome("alice", "k", "x", None),
        ev.Participants(("bob", "alice"), "alice"),
        ev.History((msg(1), msg(2), msg(7)), 20),  # the server's replay: not blindly shown
        ev.Join(9, TS_POSIX, "alice"))
    assert conn2.sent == ["alice", "/history after 2"]
    assert not any("m7" in t for t in texts(s))
    say(s, conn2, ev.History((msg(3), msg(5), msg(7)), 3, after=2))
    tail = texts(s)[-6:]
    assert "Back online: reconnected to srv as alice (away 4m 0s)." in tail[0]
    assert tail[1].startswith("missed while away: 3 messages since ")
    assert [t.split("> ")[-1] for t in tail[2:5]] == ["m3", "m5", "m7"]
    assert tail[5].endswith("--> alice has joined")


def test_history_typed_by_the_user() -> None:
    s, conn, clock = session()
    say(s, conn, ev.History((), 0))  # the lag probe's answer
    s.commands.submit("/clear")
    s.commands.submit("/history 3")
    s.commands.submit("/history banana")
    assert conn.sent[-1] == "/history 3"
    assert texts(s)[-1].endswith("!! Usage: /history [N | after ID]")
    clock.advance(0.02)
    say(s, conn, ev.History((msg(1), msg(2), msg(3)), 3))
    assert [t.split("> ")[-1] for t in texts(s)[-3:]] == ["m1", "m2", "m3"]
    assert texts(s)[-4].startswith("history: 3 messages since")
    assert s.status_text().endswith("| online, lag 20ms | alice")
    s.commands.submit("/history 2")
    say(s, conn, ev.History((msg(2), msg(3)), 2))
    assert texts(s)[-1].endswith("All 2 messages are already in the pane.")
    s.commands.submit("/history 1")
    say(s, conn, ev.Error("internal", "history", {}, "Something went wrong."))
    clock.advance(30)
    assert conn.sent[-1] == "/history after 3"  # a lag probe, not taken for /history 1:
    say(s, conn, ev.History((), 0, after=3))
    assert texts(s)[-1].endswith("!! Something went wrong.")


def test_the_lag_probe() -> None:
    s, conn, clock = session()
    assert conn.sent[-1] == "/history 0"  # at once, for a first reading
    clock.advance(0.5)
    assert s.status_text() == "srv | online, lag 500ms | alice"  # overdue: it grows
    say(s, conn, ev.History((), 0), ev.Join(5, TS_POSIX, "carol"))
    clock.advance(30)
    assert conn.sent[-1] == "/history after 5"
    clock.advance(0.003)
    say(s, conn, ev.History((), 0, after=5))
    assert "online, lag 3ms" in s.status_text()


def test_typing_while_offline_stays_in_the_input() -> None:
    s, conn, _ = session()
    s.lost(conn, Failure(ConnectionRefusedError()))  # type: ignore[arg-type]
    assert s.commands.submit("hello?") is False
    assert s.commands.submit("/who") is False
    assert sum("stays in the input" in t for t in texts(s)) == 1
    assert s.commands.submit("/help") is True  # the client's own commands still work


# --- completion of paths ---


def complete(text: str, cwd: Path, monkeypatch: pytest.MonkeyPatch,
             ids: list[str] | None = None) -> list[str]:
    monkeypatch.chdir(cwd)
    c = ChatCompleter(lambda: ["bob"], lambda: ids or [])
    doc = Document(text, len(text))
    return [text[: len(text) + x.start_position] + x.text
            for x in c.get_completions(doc, CompleteEvent(completion_requested=True))]


def test_a_completed_path_is_quoted_so_the_command_reads_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "report 2026.txt").write_text("x")
    (tmp_path / 'say "hi".txt').write_text("x")
    (tmp_path / "my dir").mkdir()
    (tmp_path / "my dir" / "inner.bin").write_text("x")
    (tmp_path / ".hidden").write_text("x")
    assert complete("/send rep", tmp_path, monkeypatch) == ['/send "report 2026.txt" ']
    assert complete('/send "rep', tmp_path, monkeypatch) == ['/send "report 2026.txt" ']
    assert complete("/send report\\ 2", tmp_path, monkeypatch) == ['/send "report 2026.txt" ']
    assert complete("/send say", tmp_path, monkeypatch) == ['/send "say \\"hi\\".txt" ']
    assert complete("/send my", tmp_path, monkeypatch) == ['/send "my dir/"']
    assert complete('/send "my dir/"', tmp_path, monkeypatch) == ['/send "my dir/inner.bin" ']
    assert complete("/get ab", tmp_path, monkeypatch, ["abcd"]) == ["/get abcd "]
    assert complete("/get -f abcd my", tmp_path, monkeypatch) == ['/get -f abcd "my dir/"']
    assert complete("/send .h", tmp_path, monkeypatch) == ["/send .hidden "]
    for line in complete("/send ", tmp_path, monkeypatch):  # every completion parses back
        assert Path(shlex.split(line)[1]).name in {"report 2026.txt", 'say "hi".txt', "my dir"}
    # Chat text is not read as a shell would: an apostrophe is just a letter.
    assert complete("it's b", tmp_path, monkeypatch) == ["it's bob "]


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
               min_size=1))
def test_a_quoted_path_reads_back_as_itself(path: str) -> None:
    assert shlex.split(quote_path(path)) == [path]
    assert shell_words("/send " + quote_path(path))[-1][1] == path


@given(st.lists(st.text(alphabet="ab '\"\\", min_size=1), max_size=5))
def test_shell_words_reads_as_shlex_does(words: list[str]) -> None:
    line = " ".join(quote_path(w) for w in words)
    assert [w for _, w in shell_words(line) if w] == shlex.split(line)


# --- the local log, transfers, looks ---


def test_the_local_log_keeps_a_file_a_day(tmp_path: Path) -> None:
    log = ChatLog(tmp_path / "logs", "srv")
    s, conn, _ = session(log=log)
    day1 = datetime(2026, 11, 23, 23, 59).timestamp()
    day2 = datetime(2026, 11, 24, 0, 1).timestamp()
    say(s, conn, ev.Message(3, day1, "bob", "late"), ev.Message(4, day2, "bob", "early"))
    s.pane.info("a notice of the client's own")  # not logged
    say(s, conn, ev.History((ev.Message(1, day1, "bob", "replayed"),), 20))  # nor this
    log.close()
    first = (tmp_path / "logs" / "2026-11-23.log").read_text().splitlines()
    second = (tmp_path / "logs" / "2026-11-24.log").read_text().splitlines()
    assert first[0].startswith("--- Log opened ") and first[0].endswith("(srv)")
    assert first[1:] == ["23:59:00 <bob> late"]
    assert second[1:] == ["00:01:00 <bob> early"]


def test_a_transfer_says_starting_until_bytes_move(tmp_path: Path) -> None:
    download = Download("ab" * 16, tmp_path)
    assert download.status() == "get abababababab starting\u2026"
    upload = Upload(tmp_path / "x.bin", task.Clock())
    assert "0 B/0 B" not in upload.status()


def test_palettes() -> None:
    assert len(set(PALETTE_256)) >= 16 and len(set(PALETTE_8)) == 8
    assert palette(ColorDepth.DEPTH_8_BIT) == PALETTE_256
    assert palette(ColorDepth.DEPTH_4_BIT) == PALETTE_8
    for colour in PALETTE_8:
        assert "red" not in colour and "black" not in colour and "white" not in colour
    assert not {BASE["error"], BASE["info"]} & {f"bold fg:{c}" for c in PALETTE_256}
    style = build_style(ColorDepth.DEPTH_8_BIT)
    own = style.get_attrs_for_style_str("class:nick.self")
    others = {style.get_attrs_for_style_str(f"class:nick.{i}").color for i in range(NICK_SLOTS)}
    assert own.color not in others and len(others) == NICK_SLOTS


def test_web_addresses_are_underlined() -> None:
    line = event_line(ev.Message(1, TS_POSIX, "bob", "see https://x.org/a_(b). ok"), "alice")
    assert line is not None
    urls = [t for style, t in line.fragments if "url" in style]
    assert urls == ["https://x.org/a_(b)"] and line.text.endswith("see https://x.org/a_(b). ok")


def test_options_have_defaults() -> None:
    assert {f.name for f in fields(Options)} == {"bell", "paste", "log", "settings"}
    assert Options().settings.path is None


def test_a_file_gone_since_is_shown_so_in_the_history() -> None:
    shared = ev.FileShared(5, TS_POSIX, "bob", "f1", "notes.txt", 12, "0" * 8, "0" * 64, None)
    live = event_line(shared, "alice")
    assert live is not None and "/get f1" in live.text
    for gone, words in ((replace(shared, removed=True), "removed since"),
                        (replace(shared, expired=True), "expired since")):
        line = event_line(gone, "alice")
        assert line is not None and words in line.text and "/get" not in line.text
