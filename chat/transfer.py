"""Moving files: the SEND header, upload sinks, downloads and the file store.

An upload streams into a temporary file under ``DATA/tmp`` on a worker thread
(writes, CRC-32 and SHA-256 never run on the reactor thread), with the
connection paused while too much is queued, so memory stays flat whatever the
size. When the last byte is in, the worker checks the CRC, fsyncs and renames
the file into ``DATA/files/ID``. Anything else (a short upload, a CRC mismatch,
a write error, a server stop) deletes the temporary file, so the store only
ever holds complete files. Downloads are read by producers, so a slow reader
slows only itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import threading
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from twisted.internet import defer
from twisted.internet.interfaces import IConsumer, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.python.threadpool import ThreadPool

from chat import events as ev
from chat.render import human_size
from chat.sanitize import for_log

#: Pause reading an upload's connection above this many queued bytes.
HIGH_WATER = 4 * 1024 * 1024
#: ... and resume below this.
LOW_WATER = 1 * 1024 * 1024

_SIZE = re.compile(r"[0-9]{1,20}")
_CRC = re.compile(r"[0-9A-Fa-f]{8}")
_NAME_FORBIDDEN = re.compile(r"[/\\\x00-\x1f\x7f-\x9f\u2028\u2029]")


class HeaderError(ValueError):
    """A malformed SEND header: its size is unknown, so nothing is read raw."""


@dataclass(frozen=True)
class SendRequest:
    name_token: str
    size: int
    crc32: int | None


def parse_send_header(args: str) -> SendRequest:
    """Parse the arguments of ``/send NAME SIZE [CRC32]``."""
    parts = args.split(" ")
    if len(parts) not in (2, 3) or not parts[0]:
        raise HeaderError("Usage: /send NAME SIZE [CRC32] (NAME percent-encoded, SIZE in bytes)")
    name, size, *crc = parts
    if not _SIZE.fullmatch(size):
        raise HeaderError(f"SIZE must be a decimal number of bytes, not {size!r}.")
    if crc and not _CRC.fullmatch(crc[0]):
        raise HeaderError(f"CRC32 must be exactly 8 hex digits, not {crc[0]!r}.")
    return SendRequest(name, int(size), int(crc[0], 16) if crc else None)


def decode_file_name(token: str) -> tuple[str | None, str | None]:
    """``(name, None)`` for an acceptable percent-encoded name, else ``(None, why)``."""
    try:
        name = unquote(token, errors="strict")
    except UnicodeDecodeError:
        return None, "The file name is not valid UTF-8 once percent-decoded."
    if name in (".", ".."):
        return None, f"{name!r} is not a file name."
    if _NAME_FORBIDDEN.search(name):
        return None, "A file name cannot hold '/', '\\' or control characters."
    if len(name.encode("utf-8")) > 255:
        return None, "A file name is at most 255 bytes long."
    return name, None


def crc_hex(crc: int) -> str:
    return f"{crc & 0xFFFFFFFF:08x}"


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
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                fn = self._queue.popleft()
            fn()


@dataclass
class Transfer:
    """One file moving, for progress displays."""

    user: str
    name: str
    direction: str  # "up" or "down"
    size: int
    started: float
    done: int = 0


class CrcMismatch(Exception):
    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"CRC-32 mismatch: you declared {crc_hex(expected)}, "
                         f"the bytes have {crc_hex(actual)}.")
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class Stored:
    file_id: str
    size: int
    crc32: str
    sha256: str


class Sink:
    """Where the raw bytes of one SEND go."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> defer.Deferred[Any]:
        raise NotImplementedError

    def abort(self, why: str) -> defer.Deferred[None]:
        raise NotImplementedError


class Discard(Sink):
    """The sink of a refused upload: bytes are counted and dropped."""

    def __init__(self) -> None:
        self.received = 0

    def write(self, data: bytes) -> None:
        self.received += len(data)

    def finish(self) -> defer.Deferred[Any]:
        return defer.succeed(None)

    def abort(self, why: str) -> defer.Deferred[None]:
        return defer.succeed(None)


class Upload(Sink):
    """Streams one upload to a temporary file on a worker thread."""

    log = Logger()

    def __init__(
        self,
        files: FileStore,
        transfer: Transfer,
        expected_crc: int | None,
        producer: IPushProducer,
    ) -> None:
        self._files = files
        self.transfer = transfer
        self.file_id = secrets.token_hex(16)
        self._expected_crc = expected_crc
        self._producer = producer
        self._worker = SerialWorker(files.pool, files.call_from_thread)
        self._tmp = files.tmp_dir / f"{self.file_id}.part"
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._crc = 0
        self._sha = hashlib.sha256()
        self._lock = threading.Lock()
        #: Chunks read but not yet written; the worker takes them all at once.
        self._chunks: list[bytes] = []
        self._draining = False
        self._queued = 0
        self._paused = False
        self._error: OSError | None = None
        self._closed = False

    # reactor thread

    def write(self, data: bytes) -> None:
        self.transfer.done += len(data)
        with self._lock:
            self._chunks.append(data)
            self._queued += len(data)
            over = self._queued > HIGH_WATER
            start, self._draining = not self._draining, True
        if over and not self._paused:
            self._paused = True
            self._producer.pauseProducing()
        if start:
            self._worker.submit(self._drain)

    def _maybe_resume(self) -> None:
        with self._lock:
            drained = self._queued <= LOW_WATER
        if self._paused and drained:
            self._paused = False
            self._producer.resumeProducing()

    def finish(self) -> defer.Deferred[Stored]:
        return self._worker.run(self._complete)

    def abort(self, why: str) -> defer.Deferred[None]:
        """Delete the temporary file (after queued writes); log once it is gone."""
        done, size = self.transfer.done, self.transfer.size

        def logged(result: object) -> object:
            self.log.info(
                "Upload {name} discarded ({why}): {done} of {size} bytes had arrived",
                name=for_log(self.transfer.name), why=why, done=done, size=size,
            )
            return result

        return self._worker.run(self._discard).addBoth(logged)

    # worker thread

    def _drain(self) -> None:
        """Write everything queued, in as few system calls as possible.

        One job per batch rather than per 64 KiB read: the per-chunk hand-off
        between threads, not hashing or writing, was what bounded throughput.
        """
        while True:
            with self._lock:
                chunks, self._chunks = self._chunks, []
                if not chunks:
                    self._draining = False
                    return
            for start in range(0, len(chunks), 512):
                self._write(chunks[start : start + 512])

    def _write(self, chunks: list[bytes]) -> None:
        size = sum(map(len, chunks))
        if self._error is None and not self._closed:
            try:
                written = os.writev(self._fd, chunks)
                if written < size:  # a short write: finish it the simple way
                    rest = memoryview(b"".join(chunks))[written:]
                    while rest:
                        rest = rest[os.write(self._fd, rest) :]
                for data in chunks:
                    self._crc = zlib.crc32(data, self._crc)
                    self._sha.update(data)
            except OSError as e:
                self._error = e
                self._discard()
        with self._lock:
            self._queued -= size
            resume = self._paused and self._queued <= LOW_WATER
        if resume:
            self._worker.call_from_thread(self._maybe_resume)

    def _discard(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)
        self._tmp.unlink(missing_ok=True)

    def _complete(self) -> Stored:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise OSError("upload was discarded")
        try:
            os.fsync(self._fd)
        except OSError:
            self._discard()
            raise
        os.close(self._fd)
        self._closed = True
        if self._expected_crc is not None and self._expected_crc != self._crc:
            self._tmp.unlink(missing_ok=True)
            raise CrcMismatch(self._expected_crc, self._crc)
        final = self._files.path(self.file_id)
        os.rename(self._tmp, final)
        self._files.fsync_dir(final.parent)
        return Stored(self.file_id, self.transfer.size, crc_hex(self._crc), self._sha.hexdigest())


class Counting:
    """Wraps a consumer (a transport, a web request) to count what a Transfer sends.

    Everything but ``write`` passes straight through to the wrapped object.
    """

    def __init__(self, consumer: IConsumer, transfer: Transfer) -> None:
        self._consumer = consumer
        self._transfer = transfer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)

    def write(self, data: bytes) -> None:
        self._transfer.done += len(data)
        self._consumer.write(data)


@dataclass
class FileStore:
    """The data directory's ``files/`` and ``tmp/``, and what is moving."""

    root: Path
    clock: IReactorTime
    max_upload: int = 1024**3
    disk_margin: int = 64 * 1024**2
    user_quota: int = 0
    pool: ThreadPool | None = None
    call_from_thread: Callable[..., Any] | None = None
    active: dict[int, Transfer] = field(default_factory=dict)
    uploads: set[Upload] = field(default_factory=set)

    log = Logger()

    @property
    def files_dir(self) -> Path:
        return self.root / "files"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def path(self, file_id: str) -> Path:
        return self.files_dir / file_id

    def prepare(self, known_ids: set[str]) -> None:
        """Create the folders; remove stale temporaries and unrecorded files.

        Runs once at start-up, before connections are accepted.
        """
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp_dir.iterdir():
            self.log.info("Removing stale temporary upload {name}", name=for_log(stale.name))
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        for stored in self.files_dir.iterdir():
            if stored.name not in known_ids:
                self.log.info("Removing unrecorded file {name}", name=for_log(stored.name))
                if stored.is_dir() and not stored.is_symlink():
                    shutil.rmtree(stored)
                else:
                    stored.unlink()

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def too_large(self, size: int) -> str | None:
        if size > self.max_upload:
            return (f"The file is too large: the limit is {self.max_upload} bytes "
                    f"({human_size(self.max_upload)}).")
        return None

    def refusal(self, size: int, uploaded_so_far: int, user: str = "") -> str | None:
        """Why a well-formed upload of ``size`` bytes cannot be stored now.

        Uploads still streaming in count too: against the user's quota in
        full, against free disk space for the bytes they have yet to write.
        """
        in_flight = [u.transfer for u in self.uploads]
        used = uploaded_so_far + sum(t.size for t in in_flight if t.user.lower() == user.lower())
        if self.user_quota and used + size > self.user_quota:
            return (f"Your upload quota of {human_size(self.user_quota)} would be exceeded "
                    f"({human_size(used)} used).")
        free = shutil.disk_usage(self.root).free - sum(t.size - t.done for t in in_flight)
        if size + self.disk_margin > free:
            return f"Not enough disk space on the server for {human_size(size)}."
        return None

    def begin_upload(
        self, user: str, name: str, size: int, crc: int | None, producer: IPushProducer
    ) -> Upload:
        transfer = Transfer(user, name, "up", size, self.clock.seconds())
        upload = Upload(self, transfer, crc, producer)
        self.active[id(transfer)] = transfer
        self.uploads.add(upload)
        return upload

    def end_upload(self, upload: Upload) -> None:
        self.active.pop(id(upload.transfer), None)
        self.uploads.discard(upload)

    def send_file(
        self, info: ev.FileInfo, offset: int, consumer: IConsumer, user: str
    ) -> defer.Deferred[Any]:
        """Stream a stored file from ``offset`` into ``consumer``."""
        f = open(self.path(info.file_id), "rb")
        f.seek(offset)
        transfer = Transfer(user, info.name, "down", info.size - offset, self.clock.seconds())
        self.active[id(transfer)] = transfer
        sender = FileSender()
        sender.CHUNK_SIZE = 64 * 1024
        d = sender.beginFileTransfer(f, Counting(consumer, transfer))

        def done(result: object) -> object:
            f.close()
            self.active.pop(id(transfer), None)
            return result

        return d.addBoth(done)

    def abort_all(self, why: str) -> defer.Deferred[Any]:
        """Discard every upload in progress (server shutdown)."""
        aborts = [u.abort(why) for u in list(self.uploads)]
        for u in list(self.uploads):
            self.end_upload(u)
        return defer.DeferredList(aborts, consumeErrors=True)
