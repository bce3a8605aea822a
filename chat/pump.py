"""Threads that move file bytes: serial workers, the socket pump, early write-back.

An upload's bytes never pass through the reactor thread when they can be
helped: a ``Pump`` is a socket (a duplicate of the connection's descriptor),
a wake-up pipe and a stop flag, read on a thread of its own; a
``SerialWorker`` runs jobs in order on a thread pool (writes on one, hashes
on another); ``write_behind`` starts the kernel writing a file back before
its final fsync; and ``bulk_priority`` lowers the CPU priority of every
thread that moves bulk data, so chat on the reactor thread goes first.
"""

from __future__ import annotations

import ctypes
import enum
import os
import select
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.python.threadpool import ThreadPool

#: The nice value of threads that move file data (see ``bulk_priority``).
BULK_NICENESS = 10


_thread_state = threading.local()


def bulk_priority() -> None:
    """Lower this thread's CPU priority (once): chat on the reactor thread goes first.

    On a busy machine an upload then takes the CPU that chat leaves, instead
    of adding milliseconds to every message. Linux only (per-thread nice).
    """
    if getattr(_thread_state, "bulk", False):
        return
    _thread_state.bulk = True
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICENESS)
    except (AttributeError, OSError):
        pass


class SerialWorker:
    """Runs submitted callables in order, one at a time, on a thread pool.

    Without a pool (unit tests) it runs them at once on the calling thread.
    """

    def __init__(
        self, pool: ThreadPool | None, call_from_thread: Callable[..., Any] | None = None
    ) -> None:
        self._pool = pool
        self._call = call_from_thread or (lambda f, *a: f(*a))
        self._queue: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._running = False

    def submit(self, fn: Callable[[], None]) -> None:
        if self._pool is None:
            fn()
            return
        with self._lock:
            self._queue.append(fn)
            if self._running:
                return
            self._running = True
        self._pool.callInThread(self._drain)

    def run(self, fn: Callable[[], Any]) -> defer.Deferred[Any]:
        """Submit ``fn`` and get its result back on the reactor thread."""
        d: defer.Deferred[Any] = defer.Deferred()

        def job() -> None:
            try:
                result = fn()
            except BaseException as e:  # handed to the Deferred, not lost
                self._call(d.errback, e)
            else:
                self._call(d.callback, result)

        self.submit(job)
        return d

    def call_from_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        self._call(fn, *args)

    def _drain(self) -> None:
        bulk_priority()
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                fn = self._queue.popleft()
            fn()


class PumpEnd(enum.Enum):
    """Why a pump stopped reading."""

    COMPLETE = "all bytes read"
    EOF = "the client closed the connection"
    ERROR = "reading the socket failed"
    STALLED = "no data for the stall timeout"
    STOPPED = "stopped by the server"


@dataclass(frozen=True)
class Pumped:
    received: int
    end: PumpEnd


class Pump:
    """A pump's socket, its wake-up pipe and its stop flag."""

    def __init__(self, fd: int, size: int, stall_timeout: float) -> None:
        self.fd = fd
        self.size = size
        self.stopped = False
        self.after_queued_writes = False
        self.exited: defer.Deferred[None] = defer.Deferred()
        #: Guards the wake-up pipe: never write to a number closed (and reused).
        self._closing = threading.Lock()
        self._closed = False
        self._stall_ms = max(1, int(stall_timeout * 1000))
        self._wake_r, self._wake_w = os.pipe()
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._poll.register(self._wake_r, select.POLLIN)

    def stop(self) -> None:
        """From any thread: make the pump end at its next step."""
        self.stopped = True
        with self._closing:
            if not self._closed:
                os.write(self._wake_w, b"x")

    def wait_readable(self) -> PumpEnd | None:
        """None once the socket has data (or an error or EOF); else why the pump ends."""
        if self.stopped:
            return PumpEnd.STOPPED
        events = dict(self._poll.poll(self._stall_ms))
        if self.stopped or self._wake_r in events:
            return PumpEnd.STOPPED
        return None if events else PumpEnd.STALLED

    def close(self) -> None:
        with self._closing:
            self._closed = True
            for fd in (self.fd, self._wake_r, self._wake_w):
                os.close(fd)


def _sync_file_range() -> Callable[[int, int, int], None]:
    """``sync_file_range(fd, offset, n, SYNC_FILE_RANGE_WRITE)`` where Linux has it."""
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return lambda fd, offset, n: None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]

    def start_writeback(fd: int, offset: int, n: int) -> None:
        call(fd, offset, n, 2)  # SYNC_FILE_RANGE_WRITE: start, do not wait

    return start_writeback


write_behind = _sync_file_range()
