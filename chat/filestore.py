"""The file store: the data directory's files, temporaries and partial uploads.

``FileStore`` holds where files live (``DATA/files``, or a directory the
nodes of a cluster share), cleans up at start-up, says why an upload cannot
be taken (an ``Error`` holding a code and its values: too large, quota, disk
space), starts uploads and sends files, and keeps what is moving now.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IConsumer, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.python.threadpool import ThreadPool

from chat import events as ev
from chat.partials import PartialKey, Partials
from chat.pump import SerialWorker
from chat.quotas import Quotas
from chat.sanitize import for_log
from chat.transfer import MAX_PUMPS, Counting, Transfer, Upload


@dataclass
class FileStore:
    """The data directory's ``files/`` and ``tmp/``, and what is moving.

    With ``shared`` (``server.files_dir``, which a cluster's nodes share) the
    files live there, and so do the temporaries (``.tmp/NODE``) and partial
    uploads (``.uploads/partial``), so that storing one is a rename on the
    same filesystem; files no record here knows are then left alone (another
    node may have just stored them).
    """

    root: Path
    clock: IReactorTime
    shared: Path | None = None
    #: This process's name among those sharing ``shared`` (its temporaries).
    node: str = "node"
    max_upload: int = 1024**3
    disk_margin: int = 64 * 1024**2
    #: Upload quotas (none unless given).
    quotas: Quotas = None  # type: ignore[assignment]
    pool: ThreadPool | None = None
    call_from_thread: Callable[..., Any] | None = None
    #: Seconds an interrupted upload is kept to be resumed.
    resume_window: float = 3600.0
    active: dict[int, Transfer] = field(default_factory=dict)
    uploads: set[Upload] = field(default_factory=set)

    log = Logger()

    def __post_init__(self) -> None:
        if self.quotas is None:
            self.quotas = Quotas(self.clock)
        uploads = self.root if self.shared is None else self.shared / ".uploads"
        self.partials = Partials(uploads, self.clock, self.resume_window)

    @property
    def files_dir(self) -> Path:
        return self.root / "files" if self.shared is None else self.shared

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp" if self.shared is None else self.shared / ".tmp" / self.node

    def path(self, file_id: str) -> Path:
        return self.files_dir / file_id

    def prepare(self, known_ids: set[str]) -> None:
        """Create the folders; remove stale temporaries and unrecorded files.

        Runs once at start-up, before connections are accepted.
        """
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.partials.prepare()
        for stale in self.tmp_dir.iterdir():
            self.log.info("Removing stale temporary upload {name}", name=for_log(stale.name))
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        # (Where files are shared, one unrecorded here may be another node's.)
        for stored in self.files_dir.iterdir() if self.shared is None else ():
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

    def too_large(self, size: int) -> ev.Error | None:
        """``too_large`` (naming the limit) if no upload of ``size`` bytes can ever be taken."""
        if size > self.max_upload:
            return ev.error("too_large", "send", limit=self.max_upload)
        return None

    def refusal(self, size: int, key: str) -> ev.Error | None:
        """Why a well-formed upload of ``size`` bytes by ``key`` cannot be stored now.

        Uploads still streaming in count too: against the uploader's quotas
        in full, against free disk space for the bytes they have yet to write.
        """
        in_flight = [u.transfer for u in self.uploads]
        mine = sum(t.size for t in in_flight if t.key == key)
        over = self.quotas.refusal(key, size, mine)
        if over is not None:
            return ev.error("refused", "send", size=size, **over)
        free = shutil.disk_usage(self.root).free - sum(t.size - t.done for t in in_flight)
        if size + self.disk_margin > free:
            return ev.error("refused", "send", reason="disk", size=size)
        return None

    def run(self, fn: Callable[[], Any]) -> defer.Deferred[Any]:
        """Blocking file work (a big unlink) off the reactor thread; at once without a pool."""
        return SerialWorker(self.pool, self.call_from_thread).run(fn)

    def may_pump(self) -> bool:
        return sum(u.pumping for u in self.uploads) < MAX_PUMPS

    def begin_upload(
        self, user: str, key: str, name: str, size: int, crc: int | None, producer: IPushProducer,
        room: str | None = None, partial: PartialKey | None = None, offset: int = 0,
        expected_sha256: str | None = None,
    ) -> Upload:
        """An upload into ``tmp/``; with ``partial``, into ``partial/``, kept if interrupted
        (``offset``: the bytes held from before, which it continues). ``crc`` and
        ``expected_sha256`` (hex), if given, must match the bytes or nothing is stored."""
        transfer = Transfer(user, name, "up", size, self.clock.seconds(), key=key, room=room)
        upload = Upload(self, transfer, crc, producer, partial, offset, expected_sha256)
        self.active[id(transfer)] = transfer
        self.uploads.add(upload)
        return upload

    def end_upload(self, upload: Upload) -> None:
        self.active.pop(id(upload.transfer), None)
        self.uploads.discard(upload)
        if upload.partial is not None:
            self.partials.active.discard(upload.partial.stem)

    def open_file(self, info: ev.FileInfo, offset: int) -> Any:
        """A stored file, open and at ``offset`` (``OSError`` if it is gone)."""
        f = open(self.path(info.file_id), "rb")
        f.seek(offset)
        return f

    def send_file(
        self, f: Any, info: ev.FileInfo, offset: int, consumer: IConsumer, user: str
    ) -> defer.Deferred[Any]:
        """Stream the open file ``f`` (from ``open_file``) into ``consumer``; close it after."""
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
        return defer.DeferredList(aborts, consumeErrors=True)
