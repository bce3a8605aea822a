"""File transfers, each on its own ``/attach`` connection, one after another.

A transfer never touches the chat connection: ``TransferQueue`` opens a fresh
connection per job, attaches it with the session key, runs the job, and sends
``/quit``. ``/cancel`` just aborts that connection; the server discards a
partial upload, and a partial download's temporary file is removed here.
Uploads read the file twice in 64 KiB steps — once cooperatively for the
CRC-32 the ``/send`` header carries, once through a pull producer that the
transport asks for the next chunk only when it has room — so a large file
never stalls the screen. Downloads are written chunk by chunk to a temporary
name beside the destination and linked into place only after the size and
CRC-32 check out; an existing file is replaced only when the user said so.
Each job reads the connection's typed events (``chat.events``); one it
cannot read fails the job, since raw bytes may follow a header it missed.
A paste sent as a file (``PasteUpload``) goes the same way, from memory.
An upload is shared into its owner's current room as the server reads its
header, so the header waits (``TransferQueue.gate``) until the chat
connection has made the room shown at ``/send`` the current one.
Until bytes move, a job's status says it is starting: a download's size is
not known before the server's header.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from twisted.internet import defer, task
from twisted.internet.interfaces import IPullProducer, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from chat import events as ev
from chat.units import human_size
from client_tui.connection import JsonLines
from client_tui.format import progress_text, screen_text

CHUNK = 64 * 1024


class TransferFailed(Exception):
    """A transfer ended without success; the message is for the user."""


def safe_file_name(name: str, fallback: str) -> str:
    """A server-supplied name reduced to one harmless path component."""
    base = screen_text(name).replace("\ufffd", "_").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if base in ("", ".", ".."):
        return fallback
    return base[:255]


class TransferProtocol(JsonLines):
    """One attach connection, forwarding to its job."""

    def __init__(self, job: Job, session_key: str) -> None:
        self.job = job
        self.session_key = session_key

    def ready(self) -> None:
        super().ready()
        self.send_line(f"/attach {self.session_key}")
        self.job.connected(self)

    def event_received(self, event: ev.Event) -> None:
        self.job.event(event)

    def bad_event(self, problem: str) -> None:
        self.job.fail(f"the server sent an event this client cannot read ({problem})")

    def rawDataReceived(self, data: bytes) -> None:
        self.job.raw(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.job.lost(reason)


class Job:
    """Common bookkeeping: what is moving, how far it got, and the outcome."""

    verb = "?"

    def __init__(self, label: str) -> None:
        self.label = label
        self.total = 0
        self.done = 0
        self.started = 0.0
        self.proto: TransferProtocol | None = None
        self.finished = False
        self.on_end: Callable[[Job, str | None, str], None] = lambda job, err, ok: None
        self.cancelled = False
        #: bytes are on the move (before that, the size may not even be known)
        self.moving = False
        #: fires once the server's current room is the one given (set by the queue)
        self.gate: Callable[[str | None], defer.Deferred[None]] = lambda room: defer.succeed(None)

    # --- life cycle, driven by TransferQueue and TransferProtocol ---

    def prepare(self) -> Any:
        """Work before connecting (a Deferred or None)."""
        return None

    def connected(self, proto: TransferProtocol) -> None:
        self.proto = proto

    def event(self, event: ev.Event) -> None:
        """What the server says on this connection; subclasses answer their own events."""
        match event:
            case ev.Attached():
                self.started = time.monotonic()
                self.attached()
            case ev.Error(code=code, text=text):
                self.fail(text or code)
            case ev.Bye() if not self.finished:
                self.fail("the server closed the transfer connection")
            case ev.Ping(token=token) if self.proto is not None:
                self.proto.send_line(f"/pong {token}")

    def attached(self) -> None:
        raise NotImplementedError

    def raw(self, data: bytes) -> None:
        pass

    def lost(self, reason: Failure | None) -> None:
        self.proto = None
        if not self.finished:
            self.fail("cancelled" if self.cancelled else "connection lost")

    def cancel(self) -> None:
        self.cancelled = True
        if self.proto is not None:
            # abort, not lose: a close that waits to flush a 1 GiB upload is no cancel
            self.proto.transport.abortConnection()
        else:
            self.fail("cancelled")

    def succeed(self, message: str) -> None:
        self._end(None, message)

    def fail(self, message: str) -> None:
        self._end(message, "")

    def _end(self, error: str | None, message: str) -> None:
        if self.finished:
            return
        self.finished = True
        self.cleanup(error is not None)
        if self.proto is not None:
            proto, self.proto = self.proto, None
            if error is None:
                proto.send_line("/quit")
                proto.transport.loseConnection()
            else:
                proto.transport.abortConnection()
        self.on_end(self, error, message)

    def cleanup(self, failed: bool) -> None:
        pass

    def status(self) -> str:
        if not self.moving:
            return f"{self.verb} {self.label} starting\u2026"
        elapsed = time.monotonic() - self.started if self.started else 0.0
        return f"{self.verb} {self.label} {progress_text(self.done, self.total, elapsed)}"


@implementer(IPullProducer)
class FileProducer:
    """Hands the transport one 64 KiB chunk each time it asks for more."""

    def __init__(self, job: Upload) -> None:
        self.job = job

    def resumeProducing(self) -> None:
        self.job.send_chunk()

    def stopProducing(self) -> None:
        self.job.close_file()


class Upload(Job):
    verb = "send"

    def __init__(self, path: Path, reactor: Any, room: str | None = None) -> None:
        super().__init__(screen_text(path.name))
        self.path = path
        self.reactor = reactor
        #: the room to share it into (the one shown at ``/send``)
        self.room = room
        self.file: Any = None
        self.crc = 0
        self.hashing: task.CooperativeTask | None = None
        self.sending = False

    def open(self) -> tuple[IO[bytes], int]:
        """The bytes to send and how many there are (``OSError`` if they cannot be read)."""
        f = open(self.path, "rb")  # closed by close_file
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            f.close()
            raise TransferFailed(f"{self.path} is not a regular file")
        return f, st.st_size

    def prepare(self) -> Any:
        # May raise OSError: the queue reports it as this job's failure.
        self.file, self.total = self.open()
        self.started = time.monotonic()
        self.hashing = task.cooperate(self._hash())
        return self.hashing.whenDone()

    def _hash(self) -> Iterator[None]:
        crc = 0
        while True:
            data = self.file.read(CHUNK)
            if not data:
                break
            crc = zlib.crc32(data, crc)
            self.done += len(data)
            yield None
        self.crc = crc
        self.file.seek(0)
        self.done = 0
        self.hashing = None

    def attached(self) -> None:
        d = self.gate(self.room)
        d.addCallbacks(lambda _: self._header(),
                       lambda f: self.fail(f.getErrorMessage()) if not self.finished else None)

    def _header(self) -> None:
        if self.proto is None or self.finished:
            return
        name = quote(self.path.name, safe="")
        self.proto.send_line(f"/send {name} {self.total} {self.crc:08x}")
        self.sending = self.moving = True
        self.proto.transport.registerProducer(FileProducer(self), False)

    def send_chunk(self) -> None:
        if self.proto is None or self.file is None:
            return
        want = min(CHUNK, self.total - self.done)
        data = self.file.read(want) if want else b""
        if want and not data:
            self.fail("the file got shorter while it was being sent")
            return
        if data:
            self.done += len(data)
            self.proto.transport.write(data)
        if self.done >= self.total:
            self.proto.transport.unregisterProducer()
            self.close_file()
            self.sending = False

    def event(self, event: ev.Event) -> None:
        if isinstance(event, ev.Uploaded):
            self.succeed(f"Sent {self.label} ({human_size(self.total)}), id {event.file.file_id}")
        else:
            super().event(event)

    def close_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def cleanup(self, failed: bool) -> None:
        hashing, self.hashing = self.hashing, None
        if hashing is not None:
            # stop() fires whenDone's errback at once; the job is already finished.
            hashing.stop()
        if self.proto is not None and self.sending:
            self.proto.transport.unregisterProducer()
        self.close_file()

    def status(self) -> str:
        if self.hashing is not None:
            return f"checking {self.label} {progress_text(self.done, self.total, 0)}"
        return super().status()


class PasteUpload(Upload):
    """A paste sent as a file: its bytes, under the name ``name``."""

    def __init__(self, data: bytes, name: str, reactor: Any, room: str | None = None) -> None:
        super().__init__(Path(name), reactor, room)
        self.data = data

    def open(self) -> tuple[IO[bytes], int]:
        return io.BytesIO(self.data), len(self.data)


class Download(Job):
    verb = "get"

    def __init__(self, file_id: str, dest: Path, force: bool = False) -> None:
        super().__init__(screen_text(file_id[:12]))
        self.file_id = file_id
        self.dest = dest
        self.force = force
        self.final: Path | None = None
        self.tmp: Path | None = None
        self.fd: int | None = None
        self.crc = 0
        self.expect_crc = ""

    def attached(self) -> None:
        assert self.proto is not None
        self.proto.send_line(f"/get {self.file_id}")

    def event(self, event: ev.Event) -> None:
        if isinstance(event, ev.Download):
            self._begin(event)
        else:
            super().event(event)

    def _begin(self, event: ev.Download) -> None:
        assert self.proto is not None
        info = event.file
        name = safe_file_name(info.name, self.file_id)
        self.label = name
        if event.offset != 0 or event.length != info.size or info.size < 0:
            self.fail("the server sent an unexpected download header")
            return
        self.total = info.size
        self.expect_crc = info.crc32.lower()
        final = self.dest / name if self.dest.is_dir() else self.dest
        if final.exists() and not self.force:
            self.fail(f"{final} already exists; /get -f {self.file_id} to overwrite")
            return
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name[:200]}.", suffix=".part",
                                       dir=final.parent)
        except OSError as e:
            self.fail(f"cannot write to {final.parent}: {e.strerror}")
            return
        self.fd, self.tmp, self.final = fd, Path(tmp), final
        self.started = time.monotonic()
        self.moving = True
        self.proto.setRawMode()
        if self.total == 0:
            self._complete(b"")

    def raw(self, data: bytes) -> None:
        if self.fd is None:
            return
        need = self.total - self.done
        chunk, rest = data[:need], data[need:]
        try:
            # A local disk write of one network chunk: short enough for the loop.
            os.write(self.fd, chunk)
        except OSError as e:
            self.fail(f"cannot write {self.tmp}: {e.strerror}")
            return
        self.crc = zlib.crc32(chunk, self.crc)
        self.done += len(chunk)
        if self.done >= self.total:
            self._complete(rest)

    def _complete(self, rest: bytes) -> None:
        assert self.fd is not None and self.tmp is not None and self.final is not None
        if self.proto is not None:
            self.proto.setLineMode(rest)
        os.close(self.fd)
        self.fd = None
        got = f"{self.crc:08x}"
        if self.expect_crc and got != self.expect_crc:
            self.fail(f"CRC-32 mismatch for {self.label}: got {got}, expected {self.expect_crc}")
            return
        try:
            if self.force:
                os.replace(self.tmp, self.final)
            else:
                # link() refuses to replace a file that appeared meanwhile.
                os.link(self.tmp, self.final)
                os.unlink(self.tmp)
        except FileExistsError:
            self.fail(f"{self.final} already exists; /get -f {self.file_id} to overwrite")
            return
        except OSError as e:
            self.fail(f"cannot save {self.final}: {e.strerror}")
            return
        self.tmp = None
        self.succeed(f"Saved {self.label} ({human_size(self.total)}) to {self.final}")

    def cleanup(self, failed: bool) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            self.tmp = None


class TransferQueue:
    """Runs jobs one at a time; each gets its own attach connection."""

    def __init__(
        self,
        endpoint: Callable[[], IStreamClientEndpoint],
        session_key: Callable[[], str | None],
        report: Callable[[str | None, str], None],
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.endpoint = endpoint
        self.session_key = session_key
        self.report = report
        self.changed = changed
        self.current: Job | None = None
        self.pending: deque[Job] = deque()
        #: given each job: waits for the server's current room to be the one given
        self.gate: Callable[[str | None], defer.Deferred[None]] = lambda room: defer.succeed(None)

    def add(self, job: Job) -> None:
        self.pending.append(job)
        self._next()

    def _next(self) -> None:
        if self.current is not None or not self.pending:
            self.changed()
            return
        job = self.current = self.pending.popleft()
        job.on_end = self._ended
        job.gate = self.gate
        key = self.session_key()
        if key is None:
            job.fail("not connected")
            return
        try:
            prepared = job.prepare()
        except (OSError, TransferFailed) as e:
            msg = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else str(e)
            job.fail(msg)
            return
        d = defer.succeed(None) if prepared is None else prepared
        d.addCallback(lambda _: self._connect(job, key))
        d.addErrback(lambda f: job.fail(f.getErrorMessage()) if not job.finished else None)
        self.changed()

    def _connect(self, job: Job, key: str) -> Any:
        if job.finished:
            return None
        factory = Factory.forProtocol(lambda: TransferProtocol(job, key))
        d = self.endpoint().connect(factory)
        d.addErrback(lambda f: job.fail(f"cannot connect: {f.getErrorMessage()}"))
        return d

    def _ended(self, job: Job, error: str | None, message: str) -> None:
        if error is not None:
            self.report(error, f"{job.verb} {job.label} failed: {error}")
        else:
            self.report(None, message)
        if job is self.current:
            self.current = None
        self._next()

    def cancel(self) -> bool:
        """Abort the running job; the queue moves on. False if nothing ran."""
        if self.current is None:
            return False
        self.current.cancel()
        return True

    def abort_all(self, reason: str) -> None:
        pending, self.pending = list(self.pending), deque()
        for job in pending:
            job.on_end = lambda *a: None
            job.finished = True
        if self.current is not None:
            self.current.cancelled = True
            self.current.fail(reason)

    def status(self) -> str | None:
        if self.current is None:
            return None
        more = f" (+{len(self.pending)} queued)" if self.pending else ""
        return self.current.status() + more
