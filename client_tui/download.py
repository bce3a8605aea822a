"""Downloads that survive an outage: ``Download``, written to ``DEST.part``.

The bytes go to ``DEST.part`` beside the destination, and only a whole
file whose CRC-32 matches the server's is renamed to ``DEST`` (``link``, so
an existing file is never replaced unless the user said ``-f``). A cut
connection or ``/cancel`` leaves the ``.part``: the next attempt (the
queue's, or the user's ``/get ID`` again) reads it for its CRC-32, asks
``/get ID OFFSET`` with its size, and appends. The CRC-32 at the end covers
the whole file, old bytes and new, so a ``.part`` that is not what it
seems (another file of that name, a byte gone bad on disk) is caught,
reported and removed rather than saved under the final name.

Where the ``.part`` is depends on the file's name when ``DEST`` is a
folder, and the name is known only from the server's header: a job that
does not know it yet asks ``/get ID``, and if the header shows a ``.part``
to continue it ends that attempt at once and continues on a fresh
connection (``Job.interrupt(now=True)``).
"""

from __future__ import annotations

import os
import stat
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twisted.internet import task

from chat import events as ev
from chat.units import human_size
from client_tui.format import progress_text, screen_text
from client_tui.transfer import CHUNK, Job, safe_file_name


def part_path(final: Path) -> Path:
    """Where the bytes of ``final`` are written until it is whole."""
    return final.with_name(final.name + ".part")


def held_bytes(part: Path) -> int:
    """The size of a regular ``.part`` file (0: none, or not a regular file)."""
    try:
        st = os.lstat(part)
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


class Download(Job):
    """``/get ID [OFFSET]`` into ``dest`` (a folder, or the file's path)."""

    verb = "get"

    def __init__(
        self, file_id: str, dest: Path, force: bool = False, name: str | None = None
    ) -> None:
        super().__init__(screen_text(file_id[:12]))
        self.file_id = file_id
        self.dest = dest
        self.force = force
        #: the file's name as the server gave it (from an earlier attempt's header)
        self.name = name
        if name is not None:
            self.label = safe_file_name(name, file_id)
        self.final: Path | None = None
        self.part: Path | None = None
        self.fd: int | None = None
        #: bytes of the ``.part`` this attempt continues
        self.offset = 0
        self.crc = 0
        self.expect_crc = ""
        self.hashing: task.CooperativeTask | None = None
        #: the ``.part`` read before connecting (what ``offset`` and ``crc`` are of)
        self.part_read: Path | None = None
        #: the ``.part`` is no good (its CRC-32 did not match): removed at the end
        self.discard = False

    def again(self) -> Download:
        return Download(self.file_id, self.dest, self.force, self.name)

    def _target(self, name: str | None) -> Path | None:
        """The final path (None: it depends on a name not known yet)."""
        if not self.dest.is_dir():
            return self.dest
        return None if name is None else self.dest / safe_file_name(name, self.file_id)

    # --- before connecting: read the .part there is to continue ---

    def prepare(self) -> Any:
        final = self._target(self.name)
        if final is None:
            return None
        held = held_bytes(part_path(final))
        if held == 0:
            return None
        self.offset = self.total = held
        self.part_read = part_path(final)
        self.hashing = task.cooperate(self._hash(self.part_read))
        return self.hashing.whenDone()

    def _hash(self, part: Path) -> Iterator[None]:
        crc, done = 0, 0
        with open(part, "rb") as f:
            while done < self.offset:
                data = f.read(min(CHUNK, self.offset - done))
                if not data:
                    break  # it shrank meanwhile: continue from what is there
                crc = zlib.crc32(data, crc)
                done += len(data)
                self.done = done
                yield None
        self.crc, self.offset, self.done = crc, done, 0
        self.hashing = None

    # --- the server's answer ---

    def attached(self) -> None:
        assert self.proto is not None
        tail = f" {self.offset}" if self.offset else ""
        self.proto.send_line(f"/get {self.file_id}{tail}")

    def event(self, event: ev.Event) -> None:
        if isinstance(event, ev.Download):
            self._begin(event)
        else:
            super().event(event)

    def _begin(self, event: ev.Download) -> None:
        assert self.proto is not None
        info = event.file
        final = self._target(info.name)
        assert final is not None
        self.label = safe_file_name(info.name, self.file_id)
        if (
            info.size < 0
            or event.offset != self.offset
            or event.length != info.size - self.offset
            or (self.offset and part_path(final) != self.part_read)
        ):
            self.fail("the server sent an unexpected download header")
            return
        self.name, self.total, self.expect_crc = info.name, info.size, info.crc32.lower()
        if final.exists() and not self.force:
            self.fail(f"{final} already exists; /get -f {self.file_id} to overwrite")
            return
        part = part_path(final)
        if self.offset == 0 and 0 < held_bytes(part) <= self.total:
            # A .part from before: continue it, from its end, on a fresh connection.
            self.proto.setRawMode()  # what follows are file bytes: not to be read as lines
            self.interrupt(f"continuing {part.name}", now=True)
            return
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            self.fail(f"cannot write {part}: {e.strerror}")
            return
        self.fd, self.part, self.final = fd, part, final
        try:
            os.ftruncate(fd, self.offset)  # a .part too long to be ours starts over
            os.lseek(fd, self.offset, os.SEEK_SET)
        except OSError as e:
            self.fail(f"cannot write {part}: {e.strerror}")
            return
        self.done = self.base = self.offset
        self.started = time.monotonic()
        self.moving = True
        if self.offset:
            pct = int(self.offset * 100 / self.total) if self.total else 100
            self.notify(
                f"Resuming {self.label} from {part.name} at {pct}% "
                f"({human_size(self.offset)} of {human_size(self.total)})."
            )
        self.proto.setRawMode()
        if self.done >= self.total:
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
            self.fail(f"cannot write {self.part}: {e.strerror}")
            return
        self.crc = zlib.crc32(chunk, self.crc)
        self.done += len(chunk)
        if self.done >= self.total:
            self._complete(rest)

    def _complete(self, rest: bytes) -> None:
        assert self.fd is not None and self.part is not None and self.final is not None
        if self.proto is not None:
            self.proto.setLineMode(rest)
        os.close(self.fd)
        self.fd = None
        got = f"{self.crc:08x}"
        if self.expect_crc and got != self.expect_crc:
            self.discard = True
            where = f" (continuing {self.part.name})" if self.base else ""
            self.fail(
                f"CRC-32 mismatch for {self.label}{where}: got {got}, expected "
                f"{self.expect_crc}; nothing saved, the partial file is removed: "
                f"/get {self.file_id} fetches it again"
            )
            return
        try:
            if self.force:
                os.replace(self.part, self.final)
            else:
                # link() refuses to replace a file that appeared meanwhile.
                os.link(self.part, self.final)
                os.unlink(self.part)
        except FileExistsError:
            self.fail(f"{self.final} already exists; /get -f {self.file_id} to overwrite")
            return
        except OSError as e:
            self.fail(f"cannot save {self.final}: {e.strerror}")
            return
        self.part = None
        resumed = f", resumed at {human_size(self.base)}" if self.base else ""
        self.succeed(f"Saved {self.label} ({human_size(self.total)}{resumed}) to {self.final}")

    # --- the end ---

    def fail(self, message: str) -> None:
        if self.part is not None and not self.discard and self.done and not self.finished:
            message += f" ({self.part.name} is kept: /get {self.file_id} goes on from it)"
        super().fail(message)

    def cleanup(self, failed: bool) -> None:
        hashing, self.hashing = self.hashing, None
        if hashing is not None:
            hashing.stop()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        part, self.part = self.part, None
        # An interrupted .part stays, to be continued; a bad or an empty one goes.
        if part is not None and (self.discard or held_bytes(part) == 0):
            try:
                os.unlink(part)
            except OSError:
                pass

    def status(self) -> str:
        if self.hashing is not None:
            name = self.part_read.name if self.part_read else self.label
            return f"checking {name} {progress_text(self.done, self.total, 0)}"
        return super().status()
