"""Moving files: upload sinks and counting what moves (the store: ``chat.filestore``).

An upload streams into a temporary file under ``DATA/tmp``, read from its
socket by a pump thread (or handed over by the reactor where that cannot be),
written with early write-back, and hashed (CRC-32, SHA-256) on a second worker
beside the writes; reading waits whenever a few MiB are in flight, so memory
stays flat whatever the size. When the last byte is in, the workers fsync,
check the CRC and rename the file into ``DATA/files/ID``. Anything else (a
short upload, a CRC mismatch, a write error, a server stop) deletes the
temporary file, so the store only ever holds complete files. Downloads are
read by producers, so a slow reader slows only itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from twisted.internet import defer
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.logger import Logger

from chat.partials import PartialKey
from chat.pump import Pump, Pumped, PumpEnd, SerialWorker, bulk_priority, write_behind
from chat.sanitize import INVISIBLE, for_log

if TYPE_CHECKING:
    from chat.filestore import FileStore

try:  # ISA-L's CRC-32: zlib's values for a fifteenth of the CPU (0.02 vs 0.27 s/GiB here)
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    from zlib import crc32

#: Pause reading an upload's connection above this many queued bytes.
HIGH_WATER = 4 * 1024 * 1024
#: ... and resume below this.
LOW_WATER = 1 * 1024 * 1024
#: A pump reads into this many buffers of this size (its whole memory). Fewer, larger
#: reads than 8 x 512 KiB: half the hand-offs and GIL takes per GiB, the same memory.
PUMP_BUFFERS = 4
PUMP_BUFFER_BYTES = 1024 * 1024
#: Start writing an upload back to disk every this many bytes.
WRITE_BEHIND = 8 * 1024 * 1024
#: At most this many uploads are pumped at once; more go through the reactor.
MAX_PUMPS = 8

#: Slashes, control characters, characters that hide or reorder what a reader
#: sees (``invoice\u202efdp.exe`` shows as ``invoiceexe.pdf``), and look-alikes
#: of the slash (division slash, fraction slash, big solidus, fullwidth solidus).
_NAME_FORBIDDEN = re.compile(
    f"[/\\\\\x00-\x1f\x7f-\x9f\u2028\u2029{INVISIBLE}\u2215\u2044\u29f8\uff0f]"
)


def decode_file_name(token: str) -> tuple[str, None] | tuple[None, dict[str, str]]:
    """``(name, None)`` for an acceptable percent-encoded name, else ``(None, why)``.

    ``why`` holds the ``reason`` of a ``refused`` error (``name_utf8``,
    ``name_dots``, ``name_chars``, ``name_long``) and the values it names.
    """
    try:
        name = unquote(token, errors="strict")
    except UnicodeDecodeError:
        return None, {"reason": "name_utf8"}
    if name in (".", ".."):
        return None, {"reason": "name_dots", "name": name}
    if _NAME_FORBIDDEN.search(name):
        return None, {"reason": "name_chars"}
    if len(name.encode("utf-8")) > 255:
        return None, {"reason": "name_long"}
    return name, None


def crc_hex(crc: int) -> str:
    return f"{crc & 0xFFFFFFFF:08x}"


@dataclass
class Transfer:
    """One file moving, for progress displays."""

    user: str
    name: str
    direction: str  # "up" or "down"
    size: int
    started: float
    done: int = 0
    #: Whose quota an upload counts against (``chat.quotas.uploader_key``).
    key: str = ""
    #: The room an upload is shared into.
    room: str | None = None


class CrcMismatch(Exception):
    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"CRC-32 mismatch: you declared {crc_hex(expected)}, "
                         f"the bytes have {crc_hex(actual)}.")
        self.expected = expected
        self.actual = actual


class DigestMismatch(Exception):
    """The bytes' SHA-256 is not the one declared (lowercase hex, both)."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"SHA-256 mismatch: you declared {expected}, the bytes have {actual}.")
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

    #: Bytes taken so far (a pump thread may be adding to it).
    received: int = 0

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
    """Streams one upload to a temporary file, off the reactor thread.

    Bytes arrive one of two ways. Usually the connection's reads are handed to
    a *pump* thread (:meth:`pump`) that reads the socket into a fixed set of
    buffers and writes them out, so memory is the same for a 1 KiB file and a
    1 GiB one and the reactor thread never touches the data. Where that is not
    possible (TLS, a test transport, too many uploads at once), the reactor
    passes what it reads to :meth:`write` and a writer job drains the queue,
    with the connection paused while too much is queued. Either way CRC-32
    and SHA-256 are computed by a second worker, in parallel with the writes.
    """

    log = Logger()

    def __init__(
        self,
        files: FileStore,
        transfer: Transfer,
        expected_crc: int | None,
        producer: IPushProducer,
        partial: PartialKey | None = None,
        offset: int = 0,
        expected_sha256: str | None = None,
    ) -> None:
        self._files = files
        self.transfer = transfer
        self.file_id = secrets.token_hex(16)
        self._expected_crc = expected_crc
        #: Checked where the SHA-256 is computed anyway (a worker), never on the reactor.
        self._expected_sha256 = expected_sha256.lower() if expected_sha256 else None
        self._producer = producer
        self._writer = SerialWorker(files.pool, files.call_from_thread)
        self._hasher = SerialWorker(files.pool, files.call_from_thread)
        self._crc = 0
        self._sha = hashlib.sha256()
        self._written = self._flushed = transfer.done = offset
        self._lock = threading.Condition()
        #: Chunks read but not yet written; the writer takes them all at once.
        self._chunks: list[bytes] = []
        self._draining = False
        #: Bytes read and not yet hashed: what this upload holds in memory.
        self._queued = 0
        self._paused = False
        self._error: OSError | None = None
        self._closed = False
        self._aborted = False
        self._pump: Pump | None = None
        #: Kept if interrupted (written in ``partial/``), or thrown away (in ``tmp/``).
        self._partial = partial
        if partial is None:
            self._tmp = files.tmp_dir / f"{self.file_id}.part"
            self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            return
        self._tmp = files.partials.part(partial)
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.ftruncate(self._fd, offset)  # exactly the bytes held (0: start over)
        os.lseek(self._fd, offset, os.SEEK_SET)
        files.partials.active.add(partial.stem)
        self._writer.submit(lambda: files.partials.write_record(partial, transfer.room))
        if offset:
            self._hasher.submit(lambda: self._hash_held(offset))

    @property
    def partial(self) -> PartialKey | None:
        return self._partial

    @property
    def pumping(self) -> bool:
        return self._pump is not None

    @property
    def received(self) -> int:  # type: ignore[override]
        return self.transfer.done

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
            self._writer.submit(self._drain)

    def pump(self, fd: int, size: int, stall_timeout: float) -> defer.Deferred[Pumped]:
        """Read the next ``size`` bytes from socket ``fd`` on a thread of their own.

        ``fd`` is a duplicate that the pump closes when it ends: the
        connection's own descriptor can be closed meanwhile without the pump
        ever reading from a reused number. The caller stops reading the
        connection until the result comes back. Bytes written before (through
        :meth:`write`) reach the file first.
        """
        assert self._pump is None
        done: defer.Deferred[Pumped] = defer.Deferred()
        try:
            pump = Pump(fd, size, stall_timeout)
        except OSError:
            os.close(fd)
            raise

        def ended(result: Pumped) -> None:
            self._pump = None
            pump.exited.callback(None)
            done.callback(result)

        def run() -> None:
            bulk_priority()
            result = self._run_pump(pump)
            self._writer.call_from_thread(ended, result)

        def written() -> None:
            with self._lock:
                pump.after_queued_writes = True
                self._lock.notify_all()

        thread = threading.Thread(target=run, name="chat-upload-pump", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            pump.close()
            raise
        self._pump = pump
        # Bytes queued by write() go first, so the pump's land after them.
        self._writer.submit(written)
        return done

    def _maybe_resume(self) -> None:
        with self._lock:
            drained = self._queued <= LOW_WATER
        if self._paused and drained:
            self._paused = False
            self._producer.resumeProducing()

    def finish(self) -> defer.Deferred[Stored]:
        d = self._writer.run(self._sync)
        d.addCallback(lambda _: self._hasher.run(self._digests))
        d.addCallback(lambda digests: self._writer.run(lambda: self._publish(*digests)))
        return d

    def abort(self, why: str) -> defer.Deferred[None]:
        """Stop the pump; delete the temporary file, or keep what can be resumed;
        log once that is done. Only the first call acts (the server stopping
        aborts every upload, then each connection's loss aborts its own)."""
        if self._aborted:
            return defer.succeed(None)
        self._aborted = True
        self._files.end_upload(self)

        def logged(kept: bool) -> None:
            t = self.transfer
            self.log.info(
                "Upload {name} {what} ({why}): {done} of {size} bytes had arrived",
                name=for_log(t.name), why=why, done=t.done, size=t.size,
                what="kept to be resumed" if kept else "discarded",
            )

        pump = self._pump
        if pump is None:
            gone: defer.Deferred[None] = defer.succeed(None)
        else:
            pump.stop()
            with self._lock:
                self._lock.notify_all()  # in case it waits for a buffer
            gone = defer.Deferred()
            pump.exited.chainDeferred(gone)
        return gone.addCallback(lambda _: self._writer.run(self._interrupted)).addCallback(logged)

    # worker threads

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
                self._store(chunks[start : start + 512])

    def _run_pump(self, pump: Pump) -> Pumped:
        free: deque[bytearray] = deque(bytearray(PUMP_BUFFER_BYTES) for _ in range(PUMP_BUFFERS))

        def give_back(buffer: bytearray) -> None:
            with self._lock:
                free.append(buffer)
                self._lock.notify()

        received, end = 0, PumpEnd.COMPLETE
        try:
            with self._lock:
                self._lock.wait_for(lambda: pump.after_queued_writes or pump.stopped)
            while received < pump.size:
                with self._lock:
                    self._lock.wait_for(lambda: free or pump.stopped)
                    if pump.stopped:
                        end = PumpEnd.STOPPED
                        break
                    buffer = free.popleft()
                view = memoryview(buffer)[: min(len(buffer), pump.size - received)]
                try:
                    # Read first: under load the socket almost always has data, and
                    # a poll per read was a system call for nothing.
                    n = os.readv(pump.fd, [view])
                except BlockingIOError:
                    give_back(buffer)
                    not_ready = pump.wait_readable()
                    if not_ready is not None:
                        end = not_ready
                        break
                    continue
                except OSError:
                    end = PumpEnd.ERROR
                    break
                if n == 0:
                    end = PumpEnd.EOF
                    break
                received += n
                self.transfer.done += n
                with self._lock:
                    self._queued += n
                self._store([view[:n]], lambda b=buffer: give_back(b))  # type: ignore[misc]
        finally:
            pump.close()
        return Pumped(received, end)

    def _store(self, chunks: list[Any], release: Callable[[], None] | None = None) -> None:
        """Write ``chunks`` (unless the upload failed), then have them hashed."""
        size = sum(map(len, chunks))
        if self._error is None and not self._closed:
            try:
                written = os.writev(self._fd, chunks)
                if written < size:  # a short write: finish it the simple way
                    rest = memoryview(b"".join(chunks))[written:]
                    while rest:
                        rest = rest[os.write(self._fd, rest) :]
                self._written += size
                if self._written - self._flushed >= WRITE_BEHIND:
                    # Start writing back now: the closing fsync then waits for
                    # the last few MiB, not for the whole file.
                    write_behind(self._fd, self._flushed, self._written - self._flushed)
                    self._flushed = self._written
            except OSError as e:
                self._error = e
                self._discard()
        self._hasher.submit(lambda: self._hash(chunks, size, release))

    def _hash(self, chunks: list[Any], size: int, release: Callable[[], None] | None) -> None:
        for data in chunks:
            self._crc = crc32(data, self._crc)
            self._sha.update(data)
        if release is not None:
            release()
        with self._lock:
            self._queued -= size
            resume = self._paused and self._queued <= LOW_WATER
        if resume:
            self._writer.call_from_thread(self._maybe_resume)

    def _interrupted(self) -> bool:
        """Keep a resumable upload's bytes (once all queued writes are done)."""
        if self._partial is None or self._error is not None or self._closed:
            self._discard()
            return False
        self._closed = True
        os.close(self._fd)
        self._files.partials.write_record(self._partial, self.transfer.room)  # fresh again
        return True

    def _hash_held(self, offset: int) -> None:
        """The bytes held from before the interruption count in the checksums."""
        with open(self._tmp, "rb") as f:
            left = offset
            while left:
                data = f.read(min(left, 4 * 1024 * 1024))
                if not data:
                    return  # shorter than held: the CRC-32 check will refuse it
                self._crc = crc32(data, self._crc)
                self._sha.update(data)
                left -= len(data)

    def _discard(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)
        self._tmp.unlink(missing_ok=True)
        if self._partial is not None:
            self._files.partials.drop(self._partial.stem)

    def _sync(self) -> None:
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

    def _digests(self) -> tuple[int, str]:
        return self._crc, self._sha.hexdigest()

    def _publish(self, crc: int, sha256: str) -> Stored:
        if self._expected_crc is not None and self._expected_crc != crc:
            self._discard()
            raise CrcMismatch(self._expected_crc, crc)
        if self._expected_sha256 is not None and self._expected_sha256 != sha256:
            self._discard()
            raise DigestMismatch(self._expected_sha256, sha256)
        final = self._files.path(self.file_id)
        os.rename(self._tmp, final)
        if self._partial is not None:
            self._files.partials.drop(self._partial.stem)
        self._files.fsync_dir(final.parent)
        return Stored(self.file_id, self.transfer.size, crc_hex(crc), sha256)


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
