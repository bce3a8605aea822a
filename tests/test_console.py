"""The server console without a terminal: rendering, throttling, admin commands, logging.

``render`` is checked on what it shows (text, colour names, fitting), never on
escape codes; the redraw throttle runs on a ``task.Clock``; admin commands go
through ``AdminProtocol`` on a ``StringTransport`` against the in-memory chat
stack from ``tests.support``, so the kicked user's own connection shows what
they were told.
"""

from __future__ import annotations

import io
import itertools
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogPublisher

from chat import events as ev
from chat.config import ConsoleSettings
from chat.console import Console, Throttle
from chat.consolesources import Sources
from chat.consoleterminal import AdminProtocol, Screen
from chat.consoleview import (
    Entry,
    Snapshot,
    TransferRow,
    UserRow,
    line_text,
    render,
    text_width,
)
from chat.transfer import Transfer
from tests.support import MemoryServer, memory_server


def sources_of(mem: MemoryServer, started: float = 0.0) -> Sources:
    return Sources(mem.service, mem.factory.files.store, {}, started, mem.factory.admin,
                   [], mem.factory.files)


def texts(lines: list) -> list[str]:
    return [line_text(line) for line in lines]


def assert_fits(lines: list, width: int, height: int) -> None:
    assert len(lines) == height
    for line in lines:
        assert text_width(line_text(line)) <= width, line_text(line)


# --- render: a pure function of a snapshot ---


def test_empty_snapshot_shows_placeholders_and_prompt() -> None:
    lines = render(Snapshot(), 80, 24)
    assert_fits(lines, 80, 24)
    shown = texts(lines)
    assert shown[0].startswith("lanchat")
    assert "not listening yet" in shown[0]
    assert "users 0" in shown[1]
    assert any("(nobody is connected)" in t for t in shown)
    assert any("(nothing said yet)" in t for t in shown)
    assert not any("Transfers" in t for t in shown)  # only while something moves
    assert shown[-2] == "Type /help for the admin commands."
    assert shown[-1] == "> "


def busy() -> Snapshot:
    return Snapshot(
        addresses=(("chat", "127.0.0.1:8000"), ("http", "127.0.0.1:8001")),
        uptime=3725,
        users=(
            UserRow("alice", "127.0.0.1:50001", "text", 3600, 2),
            UserRow("bob", "10.0.0.7:41234", "json", 125, 65),
        ),
        messages=1234,
        rate=12.5,
        privates=7,
        bytes_in=2048,
        bytes_out=5 * 1024 * 1024,
        chat=(
            Entry("join", "→ alice joined", 1_700_000_000),
            Entry("message", "<alice> hello", 1_700_000_001),
            Entry("private", "(3 private messages)", 1_700_000_002),
            Entry("file", "alice shared notes.txt (1.2 KiB) abc", 1_700_000_003),
            Entry("leave", "← bob left (quit)", 1_700_000_004),
        ),
        log=("16:00:00 chat listening on 127.0.0.1:8000",),
        transfers=(
            TransferRow("alice", "big.iso", "up", 1000, 250, 5.0),
            TransferRow("bob", "notes.txt", "down", 2000, 2000, 1.0),
        ),
        status=Entry("error", "Unknown command /x. Try /help."),
        input="/kick bo",
    )


def test_busy_snapshot_shows_every_part() -> None:
    lines = render(busy(), 100, 30)
    assert_fits(lines, 100, 30)
    shown = texts(lines)
    assert "chat 127.0.0.1:8000" in shown[0] and "http 127.0.0.1:8001" in shown[0]
    assert "up 1h 2m" in shown[0]
    for part in ("users 2", "msg/s 12.5", "messages 1234", "private 7", "in 2.0 KiB",
                 "out 5.0 MiB"):
        assert part in shown[1]
    alice = next(t for t in shown if t.startswith("alice "))
    assert "127.0.0.1:50001" in alice and "text" in alice and "1h 0m" in alice
    bob = next(t for t in shown if t.startswith("bob ") and "json" in t)
    assert "2m 5s" in bob and "1m 5s" in bob
    up = next(t for t in shown if "big.iso" in t)
    assert "↑ up" in up and " 25%" in up and "50 B/s" in up and "15s left" in up
    down = next(t for t in shown if "notes.txt" in t and "down" in t)
    assert "100%" in down and "--" in down
    assert shown[-2] == "Unknown command /x. Try /help."
    assert shown[-1] == "> /kick bo"


def test_log_kinds_have_their_colours() -> None:
    lines = render(busy(), 100, 30)

    def colour_of(text: str) -> str | None:
        for line in lines:
            for seg in line:
                if text in seg.text:
                    return seg.colour
        raise AssertionError(text)

    assert colour_of("alice joined") == "green"
    assert colour_of("bob left") == "red"
    assert colour_of("shared notes.txt") == "magenta"
    assert colour_of("<alice> hello") is None
    assert colour_of("private messages") == "blue"
    assert colour_of("Unknown command") == "red"


def overflowing() -> Snapshot:
    users = tuple(
        UserRow(f"user{i:04d}", f"192.168.{i // 256}.{i % 256}:{40000 + i}", "text", i, i)
        for i in range(500)
    )
    chat = tuple(Entry("message", f"<user{i:04d}> line {i}", 1_700_000_000 + i)
                 for i in range(1000))
    chat += (Entry("message", "<wide> " + "漢字" * 3000, 1_700_001_000),)
    transfers = tuple(TransferRow(f"u{i}", f"file{i}.bin" * 20, "up", 10**9, i * 10**6, 10.0)
                      for i in range(50))
    return Snapshot(
        addresses=(("chat", "[2001:db8::1]:8000"), ("http", "[2001:db8::1]:8001")),
        users=users, chat=chat, transfers=transfers,
        log=tuple(f"log line {i}" for i in range(200)),
        input="/say " + "x" * 500,
    )


def test_overflowing_state_fits_and_says_what_is_hidden() -> None:
    lines = render(overflowing(), 80, 30)
    assert_fits(lines, 80, 30)
    shown = texts(lines)
    more = [t for t in shown if t.startswith("… and ")]
    assert len(more) == 2  # users and transfers say how many did not fit
    hidden_users = int(more[0].split()[2])
    listed = [t for t in shown if t.startswith("user0")]
    assert len(listed) + hidden_users == 500
    # The chat keeps its newest lines, cut to the width with an ellipsis.
    chat_lines = [t for t in shown if "<" in t]
    assert chat_lines[-1].endswith("…") and "<wide> 漢字" in chat_lines[-1]
    assert "line 999" in chat_lines[-2]
    # What is being typed keeps its tail (and so the cursor) on screen.
    assert shown[-1].startswith("> x") and shown[-1].endswith("x")


def test_terminal_size_changes_the_layout() -> None:
    snap = overflowing()
    for width, height in ((200, 60), (80, 24), (40, 12), (20, 6), (10, 5), (30, 3), (5, 1)):
        lines = render(snap, width, height)
        assert_fits(lines, width, height)
    tall = texts(render(snap, 80, 60))
    short = texts(render(snap, 80, 15))
    assert sum(t.startswith("user0") for t in tall) > sum(t.startswith("user0") for t in short)
    assert texts(render(snap, 30, 1)) == ["> " + "x" * 27]
    assert render(snap, 0, 10) == [] and render(snap, 10, 0) == []


printable = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=150, deadline=None)
@given(
    names=st.lists(printable, max_size=30),
    chat=st.lists(printable, max_size=40),
    width=st.integers(1, 160),
    height=st.integers(1, 60),
    typed=printable,
)
def test_any_snapshot_fits_any_terminal(
    names: list[str], chat: list[str], width: int, height: int, typed: str
) -> None:
    snap = Snapshot(
        users=tuple(UserRow(n, n, "text", 1, 1) for n in names),
        chat=tuple(Entry("message", c, 0) for c in chat),
        transfers=tuple(TransferRow(n, n, "down", 10, 5, 1) for n in names[:3]),
        input=typed,
    )
    assert_fits(render(snap, width, height), width, height)


# --- the throttle, on a fake clock ---


def test_throttle_coalesces_a_burst_into_one_draw() -> None:
    clock = task.Clock()
    draws: list[float] = []
    throttle = Throttle(clock, 0.25, lambda: draws.append(clock.seconds()))
    for _ in range(10_000):
        throttle.mark()
    assert draws == []  # never inside mark(): off the message path
    clock.advance(0)
    assert draws == [0.0]
    # Changes right after a draw wait for the interval, however many there are.
    for _ in range(10_000):
        throttle.mark()
    clock.advance(0.1)
    assert draws == [0.0]
    clock.advance(0.15)
    assert draws == [0.0, 0.25]
    # Nothing changed: nothing drawn.
    clock.advance(10)
    assert draws == [0.0, 0.25]
    # After a quiet spell a change is drawn at once.
    throttle.mark()
    clock.advance(0)
    assert draws[-1] == 10.25


def test_throttle_caps_the_draw_rate_under_a_steady_stream() -> None:
    clock = task.Clock()
    draws: list[float] = []
    throttle = Throttle(clock, 0.25, lambda: draws.append(clock.seconds()))
    for _ in range(1000):  # a change every 10 ms for 10 s
        throttle.mark()
        clock.advance(0.01)
    assert 38 <= len(draws) <= 41
    assert all(b - a >= 0.25 - 1e-9 for a, b in itertools.pairwise(draws))


def test_throttle_stop_cancels_the_pending_draw() -> None:
    clock = task.Clock()
    draws: list[float] = []
    throttle = Throttle(clock, 0.25, lambda: draws.append(clock.seconds()))
    throttle.mark()
    throttle.stop()
    clock.advance(1)
    assert draws == [] and not clock.getDelayedCalls()


# --- the console on the in-memory chat stack ---


class FakeScreen(Screen):
    def __init__(self, width: int = 100, height: int = 30) -> None:
        self.frames: list[list[str]] = []
        self.cursor = 0
        super().__init__(lambda data: None, lambda: (width, height))

    def show(self, lines, cursor_col):  # type: ignore[no-untyped-def]
        self.frames.append(texts(lines))
        self.cursor = cursor_col


def console_on(mem: MemoryServer, **kw: float) -> tuple[Console, FakeScreen, list[str]]:
    stops: list[str] = []
    console = Console(ConsoleSettings(**kw), mem.clock, stop=lambda: stops.append("stop"))
    screen = FakeScreen()
    sources = sources_of(mem, mem.clock.seconds())
    console.attach(sources, screen)
    mem.clock.advance(0)
    return console, screen, stops


def test_console_shows_chat_but_only_counts_private_messages(tmp_path: Path) -> None:
    mem = memory_server(tmp_path)
    console, screen, _ = console_on(mem)
    alice, bob = mem.user("alice"), mem.user("bob", "json")
    alice.line("hello there")
    for i in range(3):
        bob.line(f"/msg alice secret number {i}")
    alice.line("/me waves")
    alice.line("/msg bob another secret")
    mem.clock.advance(1)
    frame = screen.frames[-1]
    joined = "\n".join(frame)
    assert "secret" not in joined
    assert "private 4" in frame[1]
    chat = frame[frame.index(next(t for t in frame if t.startswith("── Chat"))):]
    assert any("→ alice joined" in t for t in chat)
    assert any("<alice> hello there" in t for t in chat)
    assert any("(3 private messages)" in t for t in chat)
    assert any("* alice waves" in t for t in chat)
    assert any("(1 private message)" in t for t in chat)
    assert any(t.startswith("alice ") and "text" in t for t in frame)
    assert any(t.startswith("bob ") and "json" in t for t in frame)
    console.detach()
    assert console.observe not in mem.service.observers


def test_transfers_in_flight_are_listed(tmp_path: Path) -> None:
    mem = memory_server(tmp_path)
    _console, screen, _ = console_on(mem)
    t = Transfer("carol", "movie.mkv", "down", 4 * 1024**2, mem.clock.seconds())
    mem.factory.files.store.active[id(t)] = t
    mem.clock.advance(2)
    t.done = 1024**2
    mem.clock.advance(1)
    row = next(x for x in screen.frames[-1] if "movie.mkv" in x)
    assert "carol" in row and "down" in row and " 25%" in row
    assert "341.3 KiB/s" in row and "9s left" in row


def test_a_thousand_messages_cost_a_handful_of_draws(tmp_path: Path) -> None:
    mem = memory_server(tmp_path)
    console, screen, _ = console_on(mem, refresh_per_second=4.0)
    alice = mem.user("alice")
    before = console.draws
    for i in range(1000):
        alice.line(f"message {i}")
        if i % 100 == 99:
            mem.clock.advance(0.1)  # 1000 messages over one second
    mem.clock.advance(1)
    assert console.draws - before <= 6
    assert any("<alice> message 999" in t for t in screen.frames[-1])
    assert "messages 1000" in screen.frames[-1][1]


# --- admin commands through an in-memory transport ---


def admin(console: Console) -> tuple[AdminProtocol, StringTransport]:
    proto = AdminProtocol(console)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def test_kick_tells_the_user_why_and_everyone_that_they_left(tmp_path: Path) -> None:
    mem = memory_server(tmp_path)
    console, screen, _ = console_on(mem)
    proto, _ = admin(console)
    alice, bob = mem.user("alice"), mem.user("bob")
    alice.take()
    # Delivered in pieces, as a terminal does keystroke by keystroke.
    for chunk in (b"/ki", b"ck bob too ", b"many links\r"):
        proto.dataReceived(chunk)
    assert any("You were kicked: too many links" in ln for ln in bob.lines())
    assert bob.proto.state.value == "closed"
    assert any("bob has left the chat (kicked: too many links)" in ln for ln in alice.lines())
    assert mem.service.registry.get("bob") is None
    mem.clock.advance(1)
    assert screen.frames[-1][-2] == "Kicked bob (too many links)."


def test_say_who_files_help_and_quit(tmp_path: Path) -> None:
    mem = memory_server(tmp_path)
    console, screen, stops = console_on(mem)
    proto, _ = admin(console)
    alice = mem.user("alice")
    alice.take()
    proto.dataReceived(b"/say maintenance at noon\n")
    assert any("Server notice: maintenance at noon" in ln for ln in alice.lines())
    proto.dataReceived(b"/who\n")
    assert console.status is not None and console.status.text == "1 connected."
    assert any("alice  127.0.0.1:40000  text" in e.text for e in console.chat
               if isinstance(e, Entry))
    proto.dataReceived(b"/files\n")
    assert console.status.text == "No files have been shared."
    proto.dataReceived(b"/HELP\n")
    mem.clock.advance(1)
    frame = "\n".join(screen.frames[-1])
    for usage in ("/who", "/kick NAME [REASON]", "/say [ROOM] TEXT", "/files", "/quit"):
        assert usage in frame
    assert stops == []
    proto.dataReceived(b"/quit\n")
    assert stops == ["stop"]


def test_files_lists_recent_uploads(tmp_path: Path) -> None:
    mem = memory_server(tmp_path)
    console, _, _ = console_on(mem)
    proto, _ = admin(console)
    info = ev.FileInfo("ab" * 16, "report.pdf", 2048, "00000000", "0" * 64, "alice", 1.0, None)
    mem.store.add_file(info, "user:carol")
    proto.dataReceived(b"/files\n")
    entries = [e.text for e in console.chat if isinstance(e, Entry)]
    assert any("report.pdf" in t and "2.0 KiB" in t and "by alice" in t for t in entries)


def test_bad_commands_show_an_error_in_the_view(tmp_path: Path) -> None:
    mem = memory_server(tmp_path)
    console, screen, stops = console_on(mem)
    proto, _ = admin(console)
    cases = {
        b"/frobnicate\n": "Unknown command /frobnicate. Try /help.",
        b"/kick\n": "Usage: /kick NAME [REASON]",
        b"/kick nobody\n": "nobody is not here.",
        b"/ban\n": "Usage: /ban NAME|ADDRESS [DURATION] [REASON]",
        b"/ban 10.0.0.0/99\n": "Ban a name, an address or a network (e.g. 192.168.1.0/24).",
        b"/unban carol\n": "carol is not banned.",
        b"/oper ghost\n": "ghost is not an account (they can /register first).",
        b"/rm f-nope\n": "No file with id f-nope.",
        b"/say   \n": "Usage: /say [ROOM] TEXT",
        b"/files 3\n": "Usage: /files",
        b"hello\n": "Admin commands start with '/'. Try /help.",
        b"/\x1b[31mred\n": "Unknown command /red. Try /help.",
    }
    for line, error in cases.items():
        proto.dataReceived(line)
        mem.clock.advance(1)
        status = screen.frames[-1][-2]
        assert status == error
        assert console.status is not None and console.status.kind == "error"
    assert stops == []


def test_line_editing(tmp_path: Path) -> None:
    mem = memory_server(tmp_path)
    console, screen, _ = console_on(mem)
    proto, _ = admin(console)
    proto.dataReceived(b"/wha\x7f\x7fho")
    mem.clock.advance(1)
    assert screen.frames[-1][-1] == "> /who"
    assert screen.cursor == 3 + len("/who")
    proto.dataReceived(b"\x15/sa\x1b[Dy caf\xc3")  # Ctrl-U, an arrow key, half a UTF-8 char
    proto.dataReceived(b"\xa9\r\n")
    assert console.status is not None and console.status.text == "Notice sent to everyone."
    assert any("notice: café" in e.text for e in map(_entry, console.chat))
    mem.clock.advance(1)
    assert screen.frames[-1][-1] == "> "


def _entry(item: object) -> Entry:
    from chat.consolesources import entry_for

    return entry_for(item)  # type: ignore[arg-type]


def test_closed_stdin_keeps_the_view(tmp_path: Path) -> None:
    mem = memory_server(tmp_path)
    console, _, stops = console_on(mem)
    proto, _ = admin(console)
    proto.readConnectionLost()
    assert console.active and stops == []
    assert console.status is not None and "stdin is closed" in console.status.text


# --- log lines: into the view, never raw onto the terminal ---


def test_log_lines_go_to_the_view_and_the_file_scrubbed(tmp_path: Path) -> None:
    mem = memory_server(tmp_path)
    fallback = io.StringIO()
    console = Console(ConsoleSettings(), mem.clock, fallback=fallback)
    publisher = LogPublisher(console)
    log = Logger(observer=publisher)
    log.info("before the view: {x}", x="early")
    assert "before the view: early" in fallback.getvalue()
    screen = FakeScreen()
    console.attach(sources_of(mem), screen,
                   tmp_path / "server.log")
    log.info("{name} joined", name="eve\x1b[2J\x1b]0;pwned\x07\nforged line")
    mem.clock.advance(1)
    frame = "\n".join(screen.frames[-1])
    assert "eve\\nforged line joined" in frame
    assert "\x1b" not in frame and "pwned" not in frame
    assert "eve" not in fallback.getvalue()  # nothing written over the view
    console.detach()
    written = (tmp_path / "server.log").read_text()
    assert "eve\\nforged line joined" in written and "\x1b" not in written
    log.info("after the view")
    assert "after the view" in fallback.getvalue()


def test_screen_rewrites_only_changed_lines() -> None:
    out: list[bytes] = []
    screen = Screen(out.append, lambda: (40, 5))
    lines = render(Snapshot(), 40, 5)
    screen.show(lines, 3)
    first = b"".join(out)
    out.clear()
    screen.show(lines, 3)
    assert len(b"".join(out)) < 20 < len(first)  # just the cursor position
    screen.invalidate()
    out.clear()
    screen.show(lines, 3)
    assert len(b"".join(out)) >= len(first)


# --- what the console costs, measured ---


def test_console_costs_a_small_fraction_of_throughput(tmp_path: Path) -> None:
    """300 users and a steady message stream, with and without the console drawing.

    The console draws at its real rate (4 a second of wall time) into a
    screen that paints every frame, so snapshot, render and paint are paid in
    full. Two measures: the time spent drawing as a share of the run (stable
    under load), and the throughput of the best of five runs each way,
    interleaved, so a noisy neighbour hurts both sides alike.
    """
    messages = 2000
    drawing: list[float] = []

    def run(with_console: bool) -> float:
        where = tmp_path / f"run{time.perf_counter_ns()}"
        where.mkdir()
        mem = memory_server(where)
        if with_console:
            console = Console(ConsoleSettings(), mem.clock)
            screen = Screen(lambda data: None, lambda: (160, 50))
            console.attach(sources_of(mem), screen)
            spent = [0.0]
            draw = console.draw

            def timed_draw() -> None:
                t = time.perf_counter()
                draw()
                spent[0] += time.perf_counter() - t

            console.throttle.action = timed_draw
        users = [mem.user(f"user{i}") for i in range(300)]
        speaker = users[0]
        for u in users:
            u.transport.clear()
        start = last = time.perf_counter()
        for i in range(messages):
            speaker.line(f"message number {i}")
            if i % 50 == 0:
                for u in users:
                    u.transport.clear()
                now = time.perf_counter()
                if now - last >= 0.25:
                    mem.clock.advance(now - last)  # due draws happen here
                    last = now
        elapsed = time.perf_counter() - start
        if with_console:
            assert console.draws >= 1
            drawing.append(spent[0] / elapsed)
            console.detach()
        return messages / elapsed

    bare, shown = [], []
    for _ in range(5):
        bare.append(run(False))
        shown.append(run(True))
    cost = 1 - max(shown) / max(bare)
    print(f"\nthroughput without console {max(bare):.0f} msg/s, with {max(shown):.0f} msg/s "
          f"(cost {cost:.1%}); drawing took {min(drawing):.1%} of the run")
    assert min(drawing) < 0.05
    assert cost < 0.15


def test_the_header_shows_store_usage_and_the_last_sweep(tmp_path: Path) -> None:
    mem = memory_server(tmp_path)
    mem.config.files.retention_days = 1
    console = Console(ConsoleSettings(), mem.clock)
    screen = FakeScreen(width=250)
    console.attach(sources_of(mem, mem.clock.seconds()), screen)
    alice = mem.user("alice")
    alice.feed(b"/send a.bin 2048\n" + bytes(2048))
    mem.clock.advance(1)
    header = screen.frames[-1][1]
    assert "store 1 file 2.0 KiB, " in header and " free" in header
    mem.clock.advance(86400)
    mem.factory.files.sweep()
    mem.clock.advance(1)
    header = screen.frames[-1][1]
    assert "store 0 files 0 B" in header and "swept 1s ago: 1 expired, 0 partial" in header
