"""The upload pump: a thread that reads an upload straight from its socket.

These tests run ``Upload.pump`` on real threads over a ``socketpair``. The
results the threads hand back to "the reactor thread" go into a queue that the
test thread runs (``Loop``), so every wait is on a result, with a deadline.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import queue
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.python.threadpool import ThreadPool

from chat import transfer as transfer_module
from chat.filestore import FileStore
from chat.pump import BULK_NICENESS, Pump, Pumped, PumpEnd, SerialWorker
from chat.transfer import (
    PUMP_BUFFER_BYTES,
    PUMP_BUFFERS,
    WRITE_BEHIND,
    Stored,
    Upload,
)
from tests.support import DEADLINE


class Loop:
    """Stands in for the reactor thread: runs what worker threads hand back."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()

    def call_from_thread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.put((f, args))

    def wait(self, d: defer.Deferred[Any]) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        end = time.monotonic() + DEADLINE
        while not results:
            f, args = self.calls.get(timeout=max(0.01, end - time.monotonic()))
            f(*args)
        if isinstance(results[0], Exception):
            raise results[0]
        if hasattr(results[0], "raiseException"):
            results[0].raiseException()
        return results[0]


class NoProducer:
    def pauseProducing(self) -> None:
        raise AssertionError("a pumped upload never pauses the connection")

    resumeProducing = stopProducing = pauseProducing


@pytest.fixture
def loop() -> Loop:
    return Loop()


@pytest.fixture
def files(tmp_path: Path, loop: Loop) -> Iterator[FileStore]:
    pool = ThreadPool(minthreads=0, maxthreads=4, name="test-uploads")
    pool.start()
    store = FileStore(tmp_path, task.Clock(), pool=pool, call_from_thread=loop.call_from_thread)
    store.prepare(set())
    try:
        yield store
    finally:
        pool.stop()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)  # like a Twisted transport's socket
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def begin(files: FileStore, size: int, crc: int | None = None) -> Upload:
    return files.begin_upload("alice", "user:alice", "f.bin", size, crc, NoProducer())


def feed(sock: socket.socket, data: bytes) -> threading.Thread:
    """Send ``data`` from a thread (a full socket buffer must not block the test)."""
    t = threading.Thread(target=sock.sendall, args=(data,), daemon=True)
    t.start()
    return t


def test_the_pump_reads_exactly_its_bytes_and_leaves_the_rest(
    files: FileStore, loop: Loop, pair: tuple[socket.socket, socket.socket]
) -> None:
    server, client = pair
    data = os.urandom(3 * PUMP_BUFFER_BYTES + 12345)
    up = begin(files, len(data))
    up.write(data[:1000])  # what the reactor had read with the header
    sender = feed(client, data[1000:] + b"next line\n")
    result = loop.wait(up.pump(os.dup(server.fileno()), len(data) - 1000, 30))
    assert result == Pumped(len(data) - 1000, PumpEnd.COMPLETE)
    assert not up.pumping and up.transfer.done == len(data)
    stored: Stored = loop.wait(up.finish())
    assert files.path(stored.file_id).read_bytes() == data
    assert stored.crc32 == f"{zlib.crc32(data):08x}"
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    sender.join(DEADLINE)
    assert server.recv(100) == b"next line\n"  # still there for the line parser


def test_pump_memory_is_its_buffers(
    files: FileStore, loop: Loop, pair: tuple[socket.socket, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With hashing held up, the pump stops reading once its buffers are all in use."""
    server, client = pair
    data = os.urandom(4 * PUMP_BUFFERS * PUMP_BUFFER_BYTES)
    up = begin(files, len(data))
    gate, starved = threading.Event(), threading.Event()
    real_hash, real_wait_for = Upload._hash, up._lock.wait_for

    def held_hash(self: Upload, *args: Any) -> None:
        gate.wait(DEADLINE)
        real_hash(self, *args)

    def wait_for(predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        if up.transfer.done and not predicate():
            starved.set()  # waiting for a buffer (not for the writes queued before)
        return real_wait_for(predicate, timeout)

    monkeypatch.setattr(Upload, "_hash", held_hash)
    monkeypatch.setattr(up._lock, "wait_for", wait_for)
    sender = feed(client, data)
    pumped = up.pump(os.dup(server.fileno()), len(data), 30)
    assert starved.wait(DEADLINE), "the pump never ran out of buffers"
    assert 0 < up.transfer.done <= PUMP_BUFFERS * PUMP_BUFFER_BYTES
    gate.set()
    assert loop.wait(pumped) == Pumped(len(data), PumpEnd.COMPLETE)
    stored = loop.wait(up.finish())
    assert files.path(stored.file_id).read_bytes() == data
    sender.join(DEADLINE)


def test_the_pump_reports_a_closed_connection(
    files: FileStore, loop: Loop, pair: tuple[socket.socket, socket.socket]
) -> None:
    server, client = pair
    up = begin(files, 10_000)
    client.sendall(b"x" * 4000)
    client.shutdown(socket.SHUT_WR)
    assert loop.wait(up.pump(os.dup(server.fileno()), 10_000, 30)) == Pumped(4000, PumpEnd.EOF)
    loop.wait(up.abort("connection lost"))
    assert list(files.tmp_dir.iterdir()) == [] and list(files.files_dir.iterdir()) == []


def test_the_pump_times_a_stall(
    files: FileStore, loop: Loop, pair: tuple[socket.socket, socket.socket]
) -> None:
    server, client = pair
    up = begin(files, 10_000)
    client.sendall(b"x" * 100)
    started = time.monotonic()
    result = loop.wait(up.pump(os.dup(server.fileno()), 10_000, 0.2))
    assert result == Pumped(100, PumpEnd.STALLED)
    assert time.monotonic() - started >= 0.2


def test_abort_stops_the_pump_before_the_file_is_deleted(
    files: FileStore, loop: Loop, pair: tuple[socket.socket, socket.socket]
) -> None:
    server, client = pair
    up = begin(files, 10_000)
    client.sendall(b"x" * 100)
    pumped = up.pump(os.dup(server.fileno()), 10_000, 30)
    end = time.monotonic() + DEADLINE
    while up.transfer.done < 100:  # the pump is now waiting for more
        assert time.monotonic() < end
        time.sleep(0.001)
    aborted = up.abort("server stopping")
    assert loop.wait(pumped) == Pumped(100, PumpEnd.STOPPED)
    loop.wait(aborted)
    assert list(files.tmp_dir.iterdir()) == []
    client.sendall(b"y" * 10)  # the socket is the connection's again, unread
    assert server.recv(100) == b"y" * 10


def test_write_behind_starts_writeback_every_few_mib(
    files: FileStore, loop: Loop, pair: tuple[socket.socket, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, int]] = []
    real = transfer_module.write_behind

    def record(fd: int, offset: int, n: int) -> None:
        calls.append((offset, n))
        real(fd, offset, n)

    monkeypatch.setattr(transfer_module, "write_behind", record)
    server, client = pair
    size = 3 * WRITE_BEHIND + 5
    up = begin(files, size)
    sender = feed(client, b"w" * size)
    assert loop.wait(up.pump(os.dup(server.fileno()), size, 30)).end is PumpEnd.COMPLETE
    loop.wait(up.finish())
    sender.join(DEADLINE)
    assert len(calls) >= 2 and calls[0][0] == 0
    for (offset, n), (following, _) in itertools.pairwise(calls):
        assert n >= WRITE_BEHIND and following == offset + n  # each range once, in order


def test_the_pump_reads_first_and_polls_only_when_the_socket_is_empty(
    files: FileStore, loop: Loop, pair: tuple[socket.socket, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A poll before every read was a system call for nothing while data streams in."""
    polls: list[int] = []  # the bytes read by each poll
    real = Pump.wait_readable

    def wait_readable(self: Pump) -> PumpEnd | None:
        polls.append(up.transfer.done)
        return real(self)

    monkeypatch.setattr(Pump, "wait_readable", wait_readable)
    server, client = pair
    data = os.urandom(60_000)
    client.sendall(data)  # all in the socket before the pump starts: no poll needed
    up = begin(files, len(data) + 10)
    pumped = up.pump(os.dup(server.fileno()), len(data) + 10, 30)
    end = time.monotonic() + DEADLINE
    while not polls:  # it reads until the socket runs dry, then waits
        assert time.monotonic() < end
        time.sleep(0.001)
    assert polls == [len(data)]
    client.sendall(b"0123456789")
    assert loop.wait(pumped) == Pumped(len(data) + 10, PumpEnd.COMPLETE)
    stored = loop.wait(up.finish())
    assert files.path(stored.file_id).read_bytes() == data + b"0123456789"
    assert stored.crc32 == f"{zlib.crc32(data + b'0123456789'):08x}"


def test_crc32_is_isa_l_and_gives_zlibs_values() -> None:
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    assert transfer_module.crc32 is isal_zlib.crc32
    data = os.urandom(100_000)
    assert transfer_module.crc32(memoryview(data)[7:], 12345) == zlib.crc32(data[7:], 12345)


def test_file_work_runs_at_a_lower_priority(
    files: FileStore, loop: Loop, pair: tuple[socket.socket, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    expected = min(19, niceness() + BULK_NICENESS)
    worker = SerialWorker(files.pool, loop.call_from_thread)
    assert loop.wait(worker.run(niceness)) == expected
    assert niceness() == expected - BULK_NICENESS  # the calling thread is untouched

    seen: list[int] = []
    real = Upload._run_pump

    def run_pump(self: Upload, pump: Any) -> Pumped:
        seen.append(niceness())
        return real(self, pump)

    monkeypatch.setattr(Upload, "_run_pump", run_pump)
    server, client = pair
    up = begin(files, 10)
    client.sendall(b"0123456789")
    loop.wait(up.pump(os.dup(server.fileno()), 10, 30))
    assert seen == [expected]


def test_a_pump_that_cannot_start_leaves_nothing_open(
    files: FileStore, pair: tuple[socket.socket, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Out of threads: the caller falls back to reading on the reactor."""
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    server, _ = pair
    up = begin(files, 10)
    before = sorted(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError):
        up.pump(os.dup(server.fileno()), 10, 30)
    assert not up.pumping
    assert sorted(os.listdir("/proc/self/fd")) == before
