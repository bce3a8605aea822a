"""Files in the chat: an offer becomes an upload, a stored file, then a shared one.

``FileService`` owns that path. ``offer`` decides whether a ``/send`` can be
taken (and returns the ``Error`` that says why not); ``complete`` checks and
stores an upload whose bytes are all in, records it, answers the uploader
(``uploaded``, or ``crc_mismatch`` / ``digest_mismatch`` / ``store_failed``) and
announces it to the chat, in that order; ``find`` and ``recent`` answer ``/get``,
``/files`` and the HTTP port with records whose file is really there. Nothing here
knows about connections beyond the ``Peer`` it answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat import events as ev
from chat import wire
from chat.config import FileSettings
from chat.filestore import FileStore
from chat.partials import PartialKey
from chat.sanitize import for_log
from chat.service import ChatService, User
from chat.store import Store
from chat.transfer import (
    CrcMismatch,
    DigestMismatch,
    Stored,
    Upload,
    crc_hex,
    decode_file_name,
)


@dataclass(frozen=True)
class Swept:
    """What one sweep did (the console shows the last)."""

    at: float
    expired: int = 0
    freed: int = 0
    partials: int = 0


class FileService:
    """The offer -> stored -> shared path of every file, finding them again, and
    letting them go (``/rm``, expiry)."""

    log = Logger()

    def __init__(
        self, store: FileStore, db: Store, chat: ChatService, clock: IReactorTime,
        settings: FileSettings | None = None,
    ):
        self.store = store
        self.db = db
        self.chat = chat
        self.clock = clock
        self.settings = settings or FileSettings()
        #: Files kept and their bytes (not removed, not expired).
        self.count, self.bytes = db.file_usage()
        self.last_sweep: Swept | None = None

    # --- uploads ---

    def offer(
        self, owner: User, key: str, send: wire.Send, producer: IPushProducer,
        holder: str | None = None, expected_sha256: str | None = None,
    ) -> Upload | ev.Error:
        """An ``Upload`` to stream ``send``'s bytes into, or why not.

        ``key`` is whose quotas it counts against (``chat.quotas.uploader_key``);
        ``holder`` whose interrupted uploads it may resume (``chat.partials``;
        None: it is not kept if interrupted); ``expected_sha256`` (hex) the SHA-256
        the bytes must have, checked by the upload's worker. ``too_large`` means no
        such upload can ever be taken (the connection closes); ``refused`` and
        ``bad_offset`` that this one cannot (its bytes are discarded).
        """
        if owner.current is None and self.store.too_large(send.size) is None:
            return ev.error("not_in_room", "send")  # a file is shared into a room
        room = owner.current.name if owner.current else ""
        return self.offer_as(owner.name, room, key, send, producer, holder, expected_sha256)

    def offer_as(
        self, uploader: str, room: str, key: str, send: wire.Send, producer: IPushProducer,
        holder: str | None = None, expected_sha256: str | None = None,
    ) -> Upload | ev.Error:
        """``offer`` for an uploader who need not be connected (an HTTP upload by an
        account): the file is shared into ``room`` under the name ``uploader``."""
        too_large = self.store.too_large(send.size)
        if too_large is not None:
            return too_large
        name, why = decode_file_name(send.name)
        if why is not None:
            return ev.error("refused", "send", size=send.left, **why)
        assert name is not None
        partial = None
        if holder is not None and send.crc32 is not None:
            partial = PartialKey(holder, name, send.size, send.crc32)
            if partial.stem in self.store.partials.active:
                return ev.error("refused", "send", size=send.left, reason="in_progress")
            held = self.store.partials.held(partial)
            if send.offset not in (0, held):  # 0 starts over
                return ev.error("bad_offset", "send", offset=held, size=send.left)
        elif send.offset:
            return ev.error("bad_offset", "send", offset=0, size=send.left)
        refusal = self.store.refusal(send.size, key)
        if refusal is not None:
            return refusal
        return self.store.begin_upload(
            uploader, key, name, send.size, send.crc32, producer, room, partial, send.offset,
            expected_sha256,
        )

    def held(self, holder: str, resume: wire.Resume) -> ev.Resume | ev.Error:
        """``/resume``: how many bytes of that interrupted upload are kept."""
        name, why = decode_file_name(resume.name)
        if why is not None:
            return ev.error("refused", "resume", size=0, **why)
        assert name is not None
        key = PartialKey(holder, name, resume.size, resume.crc32)
        if key.stem in self.store.partials.active:
            # Still coming in (or being put away after a cut): ask again shortly.
            return ev.error("refused", "resume", size=0, reason="in_progress")
        return ev.Resume(resume.name, resume.size, crc_hex(resume.crc32),
                         self.store.partials.held(key))

    def complete(
        self, upload: Upload, owner: User | None, answer: Callable[[ev.Event], None]
    ) -> defer.Deferred[None]:
        """Check and store a whole upload, then ``answer`` the uploader (``uploaded``,
        or the error) and tell the chat.

        Fires once both are on their way (errors are answers too).
        """
        d = upload.finish()
        d.addCallback(self._record, upload, owner)
        d.addCallbacks(self._shared, self._failed, (owner, answer), errbackArgs=(upload, answer))
        return d.addBoth(self._ended, upload)

    def _record(
        self, stored: Stored, upload: Upload, owner: User | None
    ) -> defer.Deferred[ev.FileInfo]:
        t = upload.transfer
        info = ev.FileInfo(
            stored.file_id, t.name, stored.size, stored.crc32, stored.sha256, t.user,
            self.clock.seconds(), None, t.room,
        )
        self.store.quotas.stored(t.key, info.size)
        self.count, self.bytes = self.count + 1, self.bytes + info.size
        return self.db.add_file(info, t.key).addCallback(lambda _: info)

    def _shared(
        self, info: ev.FileInfo, owner: User | None, answer: Callable[[ev.Event], None]
    ) -> None:
        answer(ev.Uploaded(self.chat.with_url(info)))
        self.chat.file_shared(info, owner)

    def _failed(
        self, failure: Failure, upload: Upload, answer: Callable[[ev.Event], None]
    ) -> None:
        mismatch = failure.check(CrcMismatch)
        if mismatch:
            e: CrcMismatch = failure.value  # type: ignore[assignment]
            error = ev.error(
                "crc_mismatch", "send", expected=crc_hex(e.expected), actual=crc_hex(e.actual)
            )
        elif failure.check(DigestMismatch):
            m: DigestMismatch = failure.value  # type: ignore[assignment]
            error = ev.error("digest_mismatch", "send", expected=m.expected, actual=m.actual)
        else:
            self.log.failure(
                "Storing upload {name} failed", failure, name=for_log(upload.transfer.name)
            )
            error = ev.error("store_failed", "send")
        answer(error)

    def _ended(self, result: object, upload: Upload) -> None:
        self.store.end_upload(upload)

    # --- finding files ---

    def find(self, file_id: str) -> defer.Deferred[ev.FileInfo | None]:
        """The record of ``file_id`` (with its URL) if its file is there, else None.

        A record whose file is gone (removed by hand) must not promise bytes;
        one removed with ``/rm`` or expired is returned as such (``removed``,
        ``expired``).
        """

        def there(info: ev.FileInfo | None) -> ev.FileInfo | None:
            gone = info is not None and (info.removed or info.expired)
            if info is None or (not gone and not self.store.path(info.file_id).is_file()):
                return None
            return self.chat.with_url(info)

        return self.db.get_file(file_id).addCallback(there)

    def remove(self, info: ev.FileInfo, by: str) -> defer.Deferred[None]:
        """Remove a stored file: the record says so, the bytes go, its room is told."""
        path = self.store.path(info.file_id)

        def removed(_: object) -> None:
            self.db.file_gone(info.file_id, "removed")
            room = self.chat.rooms.get(info.room) if info.room else None
            event = self.chat.chat_event(
                ev.Removed, by, info.file_id, info.name, room.name if room else info.room
            )
            self.chat.broadcast(event, room)

        self.count, self.bytes = self.count - 1, self.bytes - info.size
        d = self.db.mark_removed(info.file_id, by)
        d.addCallback(lambda _: self.store.run(lambda: path.unlink(missing_ok=True)))
        return d.addCallback(removed)

    def sweep(self) -> defer.Deferred[Swept]:
        """Expire files past ``files.retention_days`` or over ``files.max_store_bytes``
        (oldest first), and remove interrupted uploads too old to resume; the
        disk work runs off the reactor thread."""
        now = self.clock.seconds()
        days = self.settings.retention_days
        before = now - days * 86400 if days else None

        def unlink(gone: list[tuple[str, int]]) -> defer.Deferred[Swept]:
            for file_id, _ in gone:
                self.db.file_gone(file_id, "expired")
            self.count -= len(gone)
            self.bytes -= sum(size for _, size in gone)

            def work() -> Swept:
                for file_id, _ in gone:
                    self.store.path(file_id).unlink(missing_ok=True)
                partials = self.store.partials.sweep()
                return Swept(now, len(gone), sum(size for _, size in gone), partials)

            return self.store.run(work)

        def done(swept: Swept) -> Swept:
            self.last_sweep = swept
            if swept.expired or swept.partials:
                self.log.info(
                    "Sweep: {n} file(s) expired ({freed} bytes freed), {p} interrupted "
                    "upload(s) removed", n=swept.expired, freed=swept.freed, p=swept.partials,
                )
            return swept

        d = self.db.expire_files(before, self.settings.max_store_bytes, now)
        return d.addCallback(unlink).addCallback(done)

    def recent(self, n: int, room: str | None = None) -> defer.Deferred[list[ev.FileInfo]]:
        """The ``n`` most recent files (shared into ``room``), oldest first, with their URLs."""
        return self.db.recent_files(n, room).addCallback(
            lambda files: [self.chat.with_url(f) for f in files]
        )
