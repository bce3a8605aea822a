"""Files in the chat: an offer becomes an upload, a stored file, then a shared one.

``FileService`` owns that path. ``offer`` decides whether a ``/send`` can be
taken (and returns the ``Error`` that says why not); ``complete`` checks and
stores an upload whose bytes are all in, records it, answers the uploader
(``uploaded``, or ``crc_mismatch`` / ``store_failed``) and announces it to
the chat, in that order; ``find`` and ``recent`` answer ``/get``, ``/files``
and the HTTP port with records whose file is really there. Nothing here
knows about connections beyond the ``Peer`` it answers.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat import events as ev
from chat import wire
from chat.sanitize import for_log
from chat.service import ChatService, User
from chat.store import Store
from chat.transfer import CrcMismatch, FileStore, Stored, Upload, crc_hex, decode_file_name


class FileService:
    """The offer -> stored -> shared path of every file, and finding them again."""

    log = Logger()

    def __init__(self, store: FileStore, db: Store, chat: ChatService, clock: IReactorTime):
        self.store = store
        self.db = db
        self.chat = chat
        self.clock = clock

    # --- uploads ---

    def offer(
        self, owner: User, key: str, send: wire.Send, producer: IPushProducer
    ) -> Upload | ev.Error:
        """An ``Upload`` to stream ``send``'s bytes into, or why not.

        ``key`` is whose quotas it counts against (``chat.quotas.uploader_key``).
        ``too_large`` means no such upload can ever be taken (the connection
        closes); ``refused`` that this one cannot (its bytes are discarded).
        """
        if owner.current is None and self.store.too_large(send.size) is None:
            return ev.error("not_in_room", "send")  # a file is shared into a room
        room = owner.current.name if owner.current else ""
        return self.offer_as(owner.name, room, key, send, producer)

    def offer_as(
        self, uploader: str, room: str, key: str, send: wire.Send, producer: IPushProducer
    ) -> Upload | ev.Error:
        """``offer`` for an uploader who need not be connected (an HTTP upload by an
        account): the file is shared into ``room`` under the name ``uploader``."""
        too_large = self.store.too_large(send.size)
        if too_large is not None:
            return too_large
        name, why = decode_file_name(send.name)
        if why is not None:
            return ev.error("refused", "send", size=send.size, **why)
        assert name is not None
        refusal = self.store.refusal(send.size, key)
        if refusal is not None:
            return refusal
        return self.store.begin_upload(uploader, key, name, send.size, send.crc32, producer, room)

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
        one removed with ``/rm`` is returned as such (``removed``).
        """

        def there(info: ev.FileInfo | None) -> ev.FileInfo | None:
            if info is None or (not info.removed and not self.store.path(info.file_id).is_file()):
                return None
            return self.chat.with_url(info)

        return self.db.get_file(file_id).addCallback(there)

    def remove(self, info: ev.FileInfo, by: str) -> defer.Deferred[None]:
        """Remove a stored file: the record says so, the bytes go, its room is told."""
        path = self.store.path(info.file_id)

        def removed(_: object) -> None:
            room = self.chat.rooms.get(info.room) if info.room else None
            event = self.chat.chat_event(
                ev.Removed, by, info.file_id, info.name, room.name if room else info.room
            )
            self.chat.broadcast(event, room)

        d = self.db.mark_removed(info.file_id, by)
        d.addCallback(lambda _: self.store.run(lambda: path.unlink(missing_ok=True)))
        return d.addCallback(removed)

    def recent(self, n: int, room: str | None = None) -> defer.Deferred[list[ev.FileInfo]]:
        """The ``n`` most recent files (shared into ``room``), oldest first, with their URLs."""
        return self.db.recent_files(n, room).addCallback(
            lambda files: [self.chat.with_url(f) for f in files]
        )
