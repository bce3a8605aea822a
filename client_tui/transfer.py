"""File transfers, each on its own ``/attach`` connection: the jobs.

A transfer never touches the chat connection: the queue (``jobs``) opens a
fresh connection per job, attaches it with the session key, runs the job,
and sends ``/quit``. An attempt that the network cuts short is *interrupted*,
not failed: the queue runs ``again()`` (a fresh job that continues it) once
it can, so a transfer resumes by itself after an outage. Uploads read the
file twice in 64 KiB steps — once cooperatively for the CRC-32 the ``/send``
header always carries (which is what lets the server keep an interrupted
upload), once through a pull producer that the transport asks for the next
chunk only when it has room — so a large file never stalls the screen.
Before sending, an upload asks ``/resume`` how much of it the server holds
and sends only the rest (``/send NAME SIZE CRC32 OFFSET``); a ``bad_offset``
names the right offset, and the next attempt uses it. Downloads live in
``download``. Each job reads the connection's typed events
(``chat.events``); one it cannot read fails the job, since raw bytes may
follow a header it missed. A paste sent as a file (``PasteUpload``) goes
the same way, from memory. An upload is shared into its owner's current
room as the server reads its header, so the header waits (``Job.gate``)
until the chat connection has made the room shown at ``/send`` the current
one. Until bytes move, a job's status says it is starting: a download's
size is not known before the server's header.
"""

from __future__ import annotations

import io
import os
import stat
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from twisted.internet import defer, task
from twisted.internet.interfaces import IPullProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from chat import events as ev
from chat.units import human_size
from client_tui.connection import JsonLines
from client_tui.format import progress_text, screen_text

CHUNK = 64 * 1024


class TransferFailed(Exception):
    """A transfer ended without success; the message is for the user."""


class Interrupted(TransferFailed):
    """A transfer cut short by the connection: it can go on once the client is back."""


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
        if self.job.finished:  # cancelled or interrupted while connecting
            self.transport.abortConnection()
            return
        self.send_line(f"/attach {self.session_key}")
        self.job.connected(self)

    def event_received(self, event: ev.Event) -> None:
        if not self.job.finished:  # (file bytes read as lines after a job ended are not events)
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
        #: a line for the user while the job runs (set by the queue)
        self.notify: Callable[[str], None] = lambda text: None
        #: where this attempt began: what the server (upload) or the ``.part`` (download) held
        self.base = 0
        #: ended by the network, not by a verdict: ``again()`` may continue it
        self.interrupted = False
        #: the next attempt needs no back-off (this one learned where to go on from)
        self.again_now = False
        #: earlier attempts in a row that moved no byte (kept by the queue)
        self.attempt = 0

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
                self.interrupt("the server closed the transfer connection")
            case ev.Ping(token=token) if self.proto is not None:
                self.proto.send_line(f"/pong {token}")

    def attached(self) -> None:
        raise NotImplementedError

    def raw(self, data: bytes) -> None:
        pass

    def lost(self, reason: Failure | None) -> None:
        self.proto = None
        if self.finished:
            return
        if self.cancelled:
            self.fail("cancelled")
        else:
            self.interrupt("connection lost")

    def gate_failed(self, failure: Failure) -> None:
        """The room could not be made current: a lost chat connection only delays the job."""
        if not self.finished:
            if failure.check(Interrupted):
                self.interrupt(failure.getErrorMessage())
            else:
                self.fail(failure.getErrorMessage())

    def interrupt(self, why: str, now: bool = False) -> None:
        """End this attempt so that ``again()`` continues it (``now``: without a back-off)."""
        if self.finished:
            return
        self.interrupted, self.again_now = True, now
        self._end(why, "")

    def again(self) -> Job | None:
        """A fresh job that continues this one after an interruption (None: none can)."""
        return None

    def moved(self) -> bool:
        """Whether this attempt moved bytes (an attempt that did is no failure to count)."""
        return self.moving and self.done > self.base

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
        progress = progress_text(self.done, self.total, elapsed, start=self.base)
        return f"{self.verb} {self.label} {progress}"


@implementer(IPullProducer)
class FileProducer:
    """Hands the transport one 64 KiB chunk each time it asks for more."""

    def __init__(self, job: Upload) -> None:
        self.job = job

    def resumeProducing(self) -> None:
        self.job.send_chunk()

    def stopProducing(self) -> None:
        self.job.close_file()


#: How often an upload that was cut short asks ``/resume`` again when the answer is 0.
ASK_AGAIN = 3


class Upload(Job):
    """One file up: its CRC-32, what the server holds of it, then the rest."""

    verb = "send"

    def __init__(
        self, path: Path, reactor: Any, room: str | None = None, offset: int | None = None,
        expect_held: bool = False,
    ) -> None:
        super().__init__(screen_text(path.name))
        self.path = path
        self.reactor = reactor
        #: the room to share it into (the one shown at ``/send``)
        self.room = room
        #: where to go on from, known already (a ``bad_offset`` named it): no ``/resume``
        self.offset = offset
        #: an earlier attempt sent bytes: a ``resume`` of 0 may only mean that the server
        #: is still winding that attempt up, so ask again a few times before starting over
        self.expect_held = expect_held
        self.asked = 0
        self.ask_call: Any = None
        self.file: Any = None
        self.crc = 0
        self.hashing: task.CooperativeTask | None = None
        self.sending = False

    def again(self) -> Upload:
        job = self.fresh()
        job.offset = self.offset if self.again_now else None  # a bad_offset's, only
        job.expect_held = self.expect_held or self.moved() or self.base > 0
        return job

    def fresh(self) -> Upload:
        """The same upload, not started (the file is read and checked again)."""
        return Upload(self.path, self.reactor, self.room)

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
        self.gate(self.room).addCallbacks(lambda _: self._header(), self.gate_failed)

    @property
    def wire_name(self) -> str:
        return quote(self.path.name, safe="")

    def _header(self) -> None:
        if self.offset is not None:
            self._send_from(self.offset)
        else:
            self._ask()

    def _ask(self) -> None:
        """``/resume``: how much of this file (name, size and CRC-32) the server holds."""
        self.ask_call = None
        if self.proto is None or self.finished:
            return
        self.asked += 1
        self.proto.send_line(f"/resume {self.wire_name} {self.total} {self.crc:08x}")

    def _resume(self, event: ev.Resume) -> None:
        if (event.name, event.size, event.crc32.lower()) != (
            self.wire_name, self.total, f"{self.crc:08x}"
        ) or self.sending or self.ask_call is not None:
            return  # not the answer to our question
        offset = event.offset if 0 <= event.offset <= self.total else 0
        if offset == 0 and self.expect_held and self.asked <= ASK_AGAIN:
            self.ask_call = self.reactor.callLater(0.25 * 2 ** (self.asked - 1), self._ask)
            return
        self._send_from(offset)

    def _send_from(self, offset: int) -> None:
        """The header, then the bytes from ``offset`` on (0: the whole file)."""
        if self.proto is None or self.finished or self.file is None:
            return
        self.file.seek(offset)
        self.done = self.base = offset
        tail = f" {offset}" if offset else ""
        self.proto.send_line(f"/send {self.wire_name} {self.total} {self.crc:08x}{tail}")
        self.started = time.monotonic()
        self.sending = self.moving = True
        if offset:
            pct = int(offset * 100 / self.total) if self.total else 100
            self.notify(f"Resuming {self.label} at {pct}%: the server holds "
                        f"{human_size(offset)} of {human_size(self.total)}.")
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
        match event:
            case ev.Uploaded():
                resumed = f", resumed at {human_size(self.base)}" if self.base else ""
                self.succeed(f"Sent {self.label} ({human_size(self.total)}{resumed}), "
                             f"id {event.file.file_id}")
            case ev.Resume():
                self._resume(event)
            case ev.Error(code="bad_offset", params={"offset": int(held)}) if (
                0 <= held <= self.total
            ):
                # The server read the header and discards the bytes behind it: rather than
                # send them for nothing, go on from ``held`` on a fresh connection.
                self.offset = held
                self.interrupt(f"the server holds {human_size(held)}, not "
                               f"{human_size(self.base)}", now=True)
            case ev.Error(code="refused", params={"reason": "in_progress"}):
                # The server is still winding up the attempt that was cut short.
                self.interrupt("the server is still receiving the last attempt")
            case _:
                super().event(event)

    def fail(self, message: str) -> None:
        if self.cancelled and (self.moved() or self.base) and not self.finished:
            message += " (the server keeps what it got for a while: /send it again to go on)"
        super().fail(message)

    def close_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def cleanup(self, failed: bool) -> None:
        hashing, self.hashing = self.hashing, None
        if hashing is not None:
            # stop() fires whenDone's errback at once; the job is already finished.
            hashing.stop()
        if self.ask_call is not None and self.ask_call.active():
            self.ask_call.cancel()
        self.ask_call = None
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

    def fresh(self) -> Upload:
        return PasteUpload(self.data, self.path.name, self.reactor, self.room)

    def open(self) -> tuple[IO[bytes], int]:
        return io.BytesIO(self.data), len(self.data)
