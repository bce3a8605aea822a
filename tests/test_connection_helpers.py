"""The per-connection helpers on their own: framer, reader, limits, liveness, output, uploads.

Each is driven directly, with ``StringTransport``s, ``task.Clock`` and small
fakes for the connection, so a rule of one helper fails here even when the
whole stack would hide it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import FileSender

from chat import events as ev
from chat.config import LimitSettings
from chat.framing import TOO_LONG, LineFramer
from chat.limits import InputLimits
from chat.liveness import Liveness
from chat.output import Output
from chat.reading import Reader
from chat.transfer import Discard
from chat.uploads import UploadReceiver
from chat.wire import State

# --- LineFramer ---

SCRIPT = b"one\r\ntwo\n\nthree\r\n" + b"x" * 50 + b"\nfour\n"
EXPECTED = [b"one", b"two", b"", b"three", TOO_LONG, b"four"]


def drain(framer: LineFramer) -> list[Any]:
    out = []
    while (line := framer.next_line()) is not None:
        out.append(line)
    return out


@pytest.mark.parametrize("size", range(1, len(SCRIPT) + 1))
def test_the_same_lines_at_every_chunk_size(size: int) -> None:
    framer, got = LineFramer(16), []
    for i in range(0, len(SCRIPT), size):
        framer.feed(SCRIPT[i : i + size])
        got += drain(framer)
    assert got == EXPECTED


def test_one_too_long_for_a_line_however_many_reads_it_takes() -> None:
    framer, got = LineFramer(4096), []
    for _ in range(160):  # 10 MiB, in 64 KiB reads
        framer.feed(b"z" * 65536)
        got += drain(framer)
    framer.feed(b"zz\nok\n")
    got += drain(framer)
    assert got == [TOO_LONG, b"ok"]


def test_a_line_at_the_limit_is_a_line() -> None:
    framer = LineFramer(8)
    framer.feed(b"12345678\r\n123456789\n")
    assert drain(framer) == [b"12345678", TOO_LONG]


def test_raw_bytes_are_taken_between_lines() -> None:
    framer = LineFramer(64)
    framer.feed(b"/send x 5\nABC")
    assert framer.next_line() == b"/send x 5"
    assert framer.take(5) == b"ABC"
    framer.feed(b"DE\nhello\nparti")
    assert framer.take(2) == b"DE"
    assert drain(framer) == [b"", b"hello"]
    assert framer.rest() == b"parti" and framer.buffered == 0


# --- Reader ---


@dataclass
class FakeConn:
    """A connection that records what the reader hands it; ``/slow`` waits for an answer."""

    state: State = State.CHAT
    transport: StringTransport = field(default_factory=StringTransport)
    lines: list[Any] = field(default_factory=list)
    raw_bytes: bytes = b""
    left: int = 0
    answers: list[defer.Deferred[None]] = field(default_factory=list)
    reader: Reader | None = None

    def raw_left(self) -> int:
        return self.left

    def raw(self, data: bytes) -> None:
        self.raw_bytes += data
        self.left -= len(data)
        if not self.left:
            self.state = State.CHAT
            assert self.reader is not None
            self.reader.update()

    def line(self, line: Any) -> None:
        assert self.reader is not None
        self.lines.append(line)
        if line.startswith(b"/slow"):
            answer: defer.Deferred[None] = defer.Deferred()
            self.answers.append(answer)
            self.reader.wait(answer)
        elif line.startswith(b"/send "):
            self.left = int(line.split()[1])
            self.state = State.RAW
            answer = defer.Deferred()
            self.answers.append(answer)
            self.reader.wait(answer)

    def after_input(self) -> None:
        pass


def reading() -> tuple[FakeConn, Reader]:
    conn = FakeConn()
    conn.reader = Reader(conn, 64)
    return conn, conn.reader


def test_lines_behind_a_command_in_progress_wait_and_reading_pauses() -> None:
    conn, reader = reading()
    reader.feed(b"a\n/slow\nb\n/slow\nc\n")
    assert conn.lines == [b"a", b"/slow"]
    assert conn.transport.producerState == "paused"
    conn.answers[0].callback(None)
    assert conn.lines == [b"a", b"/slow", b"b", b"/slow"]
    conn.answers[1].callback(None)
    assert conn.lines[-1] == b"c" and conn.transport.producerState == "producing"


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_the_upload_behind_a_send_flows_while_its_answer_waits(size: int) -> None:
    conn, reader = reading()
    script = b"/send 5\nABCDEnext\n"
    for i in range(0, len(script), size):
        reader.feed(script[i : i + size])
    assert conn.raw_bytes == b"ABCDE" and conn.lines == [b"/send 5"]  # "next" waits
    assert conn.transport.producerState == "paused"
    conn.answers[0].callback(None)
    assert conn.lines == [b"/send 5", b"next"]


def test_holds_stop_everything_until_all_are_released() -> None:
    conn, reader = reading()
    reader.hold("flood")
    reader.hold("output")
    reader.feed(b"a\n")
    assert conn.lines == [] and conn.transport.producerState == "paused"
    reader.release("flood")
    assert conn.lines == []
    reader.release("output")
    assert conn.lines == [b"a"] and conn.transport.producerState == "producing"


# --- InputLimits ---


class Holder:
    def __init__(self) -> None:
        self.holds: set[str] = set()

    def hold(self, reason: str) -> None:
        self.holds.add(reason)

    def release(self, reason: str) -> None:
        self.holds.discard(reason)


def test_input_before_a_name_counts_lines_and_what_has_arrived_of_the_next() -> None:
    limits = LimitSettings(prereg_max_lines=3, prereg_max_bytes=100)
    counts = InputLimits(task.Clock(), limits, Holder())
    assert not counts.before_name(10)
    assert not counts.too_much_before_name(unended=88)  # 11 + 88 bytes: at most 100
    assert counts.too_much_before_name(unended=90)
    assert not counts.before_name(1) and not counts.before_name(1)
    assert counts.before_name(1)  # the fourth line


def test_fakelag_holds_past_the_burst_and_releases_at_the_rate() -> None:
    clock, owner = task.Clock(), Holder()
    limits = LimitSettings(flood_burst=2, flood_rate=2.0)
    flood = InputLimits(clock, limits, owner)
    for _ in range(3):
        flood.charge(10)
    flood.throttle()
    assert owner.holds == {"flood"}
    clock.advance(0.99)
    assert owner.holds == {"flood"}
    clock.advance(0.01)
    assert owner.holds == set()


def test_held_upload_bytes_are_not_excess_flood() -> None:
    flood = InputLimits(task.Clock(), LimitSettings(flood_max_pending_bytes=100), Holder())
    assert flood.excess(b"x\n" * 51)
    assert not flood.excess(b"hi\n/send big.bin 100000\n" + b"\0" * 100000)


def test_nick_changes_have_their_own_allowance() -> None:
    clock = task.Clock()
    nicks = InputLimits(clock, LimitSettings(nick_burst=2, nick_interval=10.0), Holder())
    assert nicks.nick_wait() == 0 and nicks.nick_wait() == 0
    assert nicks.nick_wait() == pytest.approx(10.0)
    clock.advance(10)
    assert nicks.nick_wait() == 0


# --- Liveness ---


@dataclass
class Watched:
    state: State = State.CHAT
    mode: str = "json"
    moving: bool = False
    said: list[ev.Event] = field(default_factory=list)
    closed: list[tuple[str, Any, bool]] = field(default_factory=list)

    def busy(self) -> bool:
        return self.moving

    def reply(self, event: ev.Event) -> None:
        self.said.append(event)

    def close(self, reason: str, *, say: ev.Event | None = None, abort: bool = False) -> None:
        self.closed.append((reason, say, abort))
        self.state = State.CLOSED


def watch(**settings: Any) -> tuple[task.Clock, Watched, Liveness]:
    clock, owner = task.Clock(), Watched()
    limits = LimitSettings(**{"ping_interval": 60.0, "ping_timeout": 30.0, **settings})
    live = Liveness(clock, limits, owner)
    live.start()
    return clock, owner, live


def test_a_silent_json_connection_is_pinged_then_cut() -> None:
    clock, owner, _ = watch()
    clock.advance(60)
    assert [type(e) for e in owner.said] == [ev.Ping]
    clock.advance(29.9)
    assert owner.closed == []
    clock.advance(0.1)
    assert owner.closed == [("ping timeout", None, True)]


def test_an_answer_to_the_ping_keeps_it() -> None:
    clock, owner, live = watch()
    clock.advance(60)
    live.input()
    clock.advance(59)  # past the grace: the answer counted
    assert owner.closed == [] and len(owner.said) == 1
    clock.advance(1)  # a minute of silence again: another ping
    assert len(owner.said) == 2


def test_bytes_moving_count_as_input() -> None:
    clock, owner, _ = watch()
    owner.moving = True
    clock.advance(600)
    assert owner.said == [] and owner.closed == []


def test_text_connections_get_no_pings_but_the_idle_limit() -> None:
    clock, owner, live = watch(idle_timeout=100.0)
    owner.mode = "text"
    live.stop()
    live.start()
    clock.advance(99)
    assert owner.said == [] and owner.closed == []
    clock.advance(1)
    ((reason, say, _),) = owner.closed
    assert reason == "idle timeout" and isinstance(say, ev.Error) and say.code == "idle"


# --- Output ---


class Owner(Holder):
    overflows = 0

    def overflowed(self) -> None:
        self.overflows += 1


def test_a_download_takes_the_wire_and_lines_wait_behind_it(tmp_path: Any) -> None:
    transport, owner = StringTransport(), Owner()
    output = Output(owner, transport, LimitSettings())
    files = _Files(tmp_path)
    done = output.download(b"HEADER\r\n", files, io.BytesIO(b"0123456789"), files.info, 0, "a")
    output.write(b"a chat line\r\n")
    sender = transport.producer
    assert isinstance(sender, FileSender)
    while not done.called:
        sender.resumeProducing()
    assert transport.value() == b"HEADER\r\n0123456789a chat line\r\n"
    assert not isinstance(transport.producer, FileSender)  # the soft-limit watch is back


def test_a_download_the_client_abandons_is_a_normal_end(tmp_path: Any) -> None:
    transport, owner = StringTransport(), Owner()
    output = Output(owner, transport, LimitSettings())
    files = _Files(tmp_path)
    done = output.download(b"H\r\n", files, io.BytesIO(b"x" * 100), files.info, 0, "a")
    output.write(b"held\r\n")
    # What FileDescriptor.connectionLost does: stop the producer while it is
    # still registered. Registering anything now would raise.
    transport.producer.stopProducing()
    assert done.called and done.result is None  # no failure left to log
    assert not output.sending and output.queued() == 0


def test_past_the_cap_the_client_is_cut_once() -> None:
    transport, owner = StringTransport(), Owner()
    output = Output(owner, transport, LimitSettings(send_queue_bytes=100))
    output.paused(True)  # over the soft limit: every write is checked
    output.write(b"x" * 50)
    assert owner.overflows == 0 and owner.holds == {"output"}
    transport.dataBuffer, transport.offset, transport._tempDataLen = b"", 0, 0  # type: ignore[attr-defined]
    type(transport)._tempDataLen = property(lambda t: len(t.value()))  # type: ignore[attr-defined]
    output.write(b"x" * 51)
    output.write(b"x")
    assert owner.overflows == 1


class _Files:
    """Just what ``Output.download`` needs of a ``FileStore``."""

    def __init__(self, tmp_path: Any) -> None:
        self.info = ev.FileInfo("f" * 32, "f.bin", 10, "0" * 8, "0" * 64, "a", 0.0, None)

    def send_file(self, f: Any, info: Any, offset: int, consumer: Any, user: str) -> Any:
        return FileSender().beginFileTransfer(f, consumer)


# --- UploadReceiver ---


@dataclass
class Receiver:
    transport: StringTransport = field(default_factory=StringTransport)
    events: list[str] = field(default_factory=list)
    closed: list[tuple[str, Any]] = field(default_factory=list)

    def hold(self, reason: str) -> None: ...

    def release(self, reason: str) -> None: ...

    def received(self, n: int) -> None: ...

    def all_received(self) -> None:
        self.events.append("all received")

    def close(self, reason: str, *, say: Any = None, abort: bool = False) -> None:
        self.closed.append((reason, say))


def receiving(
    size: int, **limits: Any
) -> tuple[task.Clock, Receiver, UploadReceiver, list[str]]:
    clock, owner, finished = task.Clock(), Receiver(), []

    def finish() -> defer.Deferred[None]:
        finished.append("answered")
        return defer.succeed(None)

    settings = LimitSettings(**{"upload_stall_timeout": 60.0, "upload_min_rate": 0, **limits})
    upload = UploadReceiver(owner, Discard(), size, finish, None, clock, settings)  # type: ignore[arg-type]
    upload.start(owner.transport)
    return clock, owner, upload, finished


def test_an_empty_upload_is_complete_at_once() -> None:
    _, owner, upload, finished = receiving(0)
    assert owner.events == ["all received"] and finished == ["answered"] and upload.done.called


def test_an_upload_stalls_after_the_timeout_without_bytes() -> None:
    clock, owner, upload, _ = receiving(10)
    clock.advance(59)
    upload.write(b"12345")  # bytes reset the timer
    clock.advance(59)
    assert owner.closed == []
    clock.advance(1)
    ((reason, say),) = owner.closed
    assert reason == "upload stalled" and say.code == "upload_stalled"
    assert say.params["missing"] == 5


def test_the_last_byte_ends_raw_mode_then_the_upload_is_answered() -> None:
    clock, owner, upload, finished = receiving(4)
    upload.write(b"abc")
    assert finished == []
    upload.write(b"d")
    assert owner.events == ["all received"] and finished == ["answered"]
    clock.advance(120)
    assert owner.closed == []  # no stall timer left behind


def test_a_trickle_under_the_minimum_rate_is_cut_at_the_window() -> None:
    clock, owner, upload, _ = receiving(
        60 * 1024**2, upload_min_rate=16384, upload_rate_window=60.0
    )
    for _ in range(5):  # 1 KiB every 10 s: never silent, far too slow
        clock.advance(10)
        upload.write(b"x" * 1024)
    assert owner.closed == []
    clock.advance(15)
    ((reason, say),) = owner.closed
    assert reason == "upload too slow" and say.code == "upload_stalled"
    assert say.params["received"] < 16384 * 60


def test_an_upload_just_over_the_minimum_rate_goes_on() -> None:
    clock, owner, upload, finished = receiving(
        17000 * 600, upload_min_rate=16384, upload_rate_window=60.0
    )
    for _ in range(600):
        clock.advance(1)
        upload.write(b"x" * 17000)
    assert owner.closed == [] and finished == ["answered"]
