"""SQLite persistence for chat history and file records, off the reactor thread.

The database is opened synchronously at start-up, which also loads the recent
history into memory: replays and ``/history`` are answered from there and
never wait on the disk. Afterwards every statement runs through an *executor*,
a single worker thread in the server (so statements keep their order) and a
synchronous call in unit tests. ``commit`` writes one delivery batch (its
messages and the highest event id handed out) as one transaction; the chat
delivers the batch only once that has committed (see ``chat.delivery``).

The journal is WAL with ``synchronous=NORMAL``: a commit survives the
process being killed (``kill -9``, the OOM killer) the moment it returns; a
power loss or kernel crash may lose the transactions of the last moments
before it (those not yet checkpointed), never the database's integrity.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from chat import events as ev
from chat.rooms import Room

T = TypeVar("T")
Executor = Callable[[Callable[[], T]], defer.Deferred[T]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    room TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    crc32 TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    uploader TEXT NOT NULL,
    ts REAL NOT NULL,
    quota_key TEXT NOT NULL DEFAULT '',
    room TEXT NOT NULL DEFAULT '',
    removed TEXT NOT NULL DEFAULT '',
    expired TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS files_by_time ON files (ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    topic TEXT NOT NULL DEFAULT '',
    topic_by TEXT NOT NULL DEFAULT '',
    locked INTEGER NOT NULL DEFAULT 0,
    private INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS room_operators (
    room TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (room, name)
);
CREATE TABLE IF NOT EXISTS room_invites (
    room TEXT NOT NULL, name TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (room, name)
);
"""

#: Columns added since the first round, with what existing rows get (see ``open``).
_ADDED = (
    ("files", "quota_key", "'user:' || lower(uploader)"),
    ("files", "room", ":default"),
    ("history", "room", ":default"),
    ("files", "removed", "''"),
    ("files", "expired", "''"),
)

_KINDS: dict[str, type[ev.Message] | type[ev.Action]] = {
    "message": ev.Message,
    "action": ev.Action,
}


def _row(e: ev.Event) -> tuple[Any, ...]:
    """A historic event as a ``history`` row (a file notice: its details as JSON)."""
    if isinstance(e, ev.FileShared):
        text = json.dumps({"file_id": e.file_id, "name": e.name, "size": e.size,
                           "crc32": e.crc32, "sha256": e.sha256, "url": e.url})
        return (e.id, e.ts, e.type, e.sender, text, e.room or "")
    return (e.id, e.ts, e.type, e.sender, e.text, e.room or "")  # type: ignore[attr-defined]


def _event(
    id_: int, ts: float, kind: str, sender: str, text: str, room: str, gone: str | None
) -> ev.Event:
    """A ``history`` row as the event it was (``gone``: its file's fate, if any)."""
    if kind == ev.FileShared.type:
        d = json.loads(text)
        return ev.FileShared(id_, ts, sender, d["file_id"], d["name"], d["size"], d["crc32"],
                             d["sha256"], d.get("url"), room, gone == "removed",
                             gone == "expired")
    return _KINDS[kind](id_, ts, sender, text, room)


def synchronous(fn: Callable[[], T]) -> defer.Deferred[T]:
    """The executor for tests: run now, on the calling thread."""
    return defer.maybeDeferred(fn)


class ThreadExecutor:
    """Runs database work in order on one dedicated thread."""

    def __init__(self, reactor: IReactorThreads) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="chat-store")
        self._pool.start()

    def __call__(self, fn: Callable[[], T]) -> defer.Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, fn)

    def stop(self) -> None:
        self._pool.stop()


_FILE_COLUMNS = "id, name, size, crc32, sha256, uploader, ts, room, removed, expired"


def _file_info(row: tuple[Any, ...]) -> ev.FileInfo:
    *fields, room, removed, expired = row
    return ev.FileInfo(*fields, url=None, room=room or None, removed=bool(removed),
                       expired=bool(expired))


class Store:
    """History, file records and rooms in one SQLite file."""

    log = Logger()

    def __init__(
        self,
        path: Path | str,
        clock: IReactorTime,
        keep: int = 500,
        executor: Executor[Any] = synchronous,
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self._run = executor
        self._keep = max(keep, 1)
        #: Recent messages per room (lower-case name), oldest first.
        self._recent: dict[str, deque[ev.Event]] = {}
        self._last_id = 0
        self._db: sqlite3.Connection | None = None

    # --- start-up and shut-down ---

    def open(self, default_room: str = "#lobby") -> None:
        """Create the schema and load what the server needs in memory.

        A data directory from an earlier version is brought up to date: its
        history and files move into ``default_room``.
        """
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        for table, column, fill in _ADDED:
            if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
                db.execute(f"UPDATE {table} SET {column} = {fill}", {"default": default_room})
        rows = db.execute(
            "SELECT h.id, h.ts, h.kind, h.sender, h.text, h.room, "
            "CASE WHEN f.removed != '' THEN 'removed' WHEN f.expired != '' THEN 'expired' END "
            "FROM (SELECT *, ROW_NUMBER() OVER "
            "(PARTITION BY lower(room) ORDER BY id DESC) AS n FROM history) AS h "
            "LEFT JOIN files AS f ON f.id = "
            "CASE WHEN h.kind = 'file' THEN json_extract(h.text, '$.file_id') END "
            "WHERE h.n <= ? ORDER BY h.id",
            (self._keep,),
        ).fetchall()
        for row in rows:
            self.remember(_event(*row))
        (max_history,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM history").fetchone()
        row = db.execute("SELECT value FROM meta WHERE key = 'last_id'").fetchone()
        self._last_id = max(max_history, int(row[0]) if row else 0)
        self._db = db

    def connection(self) -> sqlite3.Connection:
        """The database, for reading at start-up (before the reactor runs)."""
        assert self._db is not None
        return self._db

    def execute(self, fn: Callable[[sqlite3.Connection], T]) -> defer.Deferred[T]:
        """Run ``fn(db)`` on the store's thread, after what was queued before."""

        def run() -> T:
            assert self._db is not None
            with self._db:
                return fn(self._db)

        return self._run(run)

    def close(self) -> defer.Deferred[None]:
        """Close the database once the statements queued before have run."""

        def closed() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        return self._run(closed)

    # --- history ---

    def next_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def saw_id(self, event_id: int) -> None:
        """An id handed out elsewhere (a cluster's Redis): ours continue above it."""
        if event_id > self._last_id:
            self._last_id = event_id

    def last_id(self) -> int:
        """The highest event id handed out so far (after a restart: recorded as reserved)."""
        return self._last_id

    def remember(self, event: ev.Event) -> None:
        """Keep a historic event for replays of its room (``commit`` writes it)."""
        room = (getattr(event, "room", None) or "").lower()
        kept = self._recent.get(room)
        if kept is None:
            kept = self._recent[room] = deque(maxlen=self._keep)
        kept.append(event)

    def recent(self, room: str, n: int) -> list[ev.Event]:
        """The last ``n`` historic events of ``room``, oldest first."""
        kept = self._recent.get(room.lower())
        if n <= 0 or not kept:
            return []
        return list(kept)[-n:]

    def file_gone(self, file_id: str, why: str) -> None:
        """A shared file was removed (``why="removed"``) or expired: its notices
        in the history kept in memory say so (those on disk are joined with
        the file's record when loaded)."""
        for kept in self._recent.values():
            for i, e in enumerate(kept):
                if isinstance(e, ev.FileShared) and e.file_id == file_id:
                    kept[i] = replace(e, **{why: True})

    def replace_recent(self, room: str, events: list[ev.Event]) -> None:
        """``room``'s history as another source has it (a cluster's stream)."""
        self._recent[room.lower()] = deque(events, maxlen=self._keep)

    def rooms_with_history(self) -> set[str]:
        return set(self._recent)

    def commit(self, events: Iterable[ev.Event], reserved: int | None) -> defer.Deferred[None]:
        """Write ``events``, and (if given) that no id up to ``reserved`` may be
        handed out again, in one transaction."""
        rows = [_row(e) for e in events]

        def write() -> None:
            assert self._db is not None
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO history (id, ts, kind, sender, text, room) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                if reserved is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_id', ?)",
                        (str(reserved),),
                    )

        return self._run(write)

    # --- files ---

    def add_file(self, info: ev.FileInfo, quota_key: str) -> defer.Deferred[None]:
        def insert() -> None:
            assert self._db is not None
            self._db.execute(
                "INSERT INTO files (id, name, size, crc32, sha256, uploader, ts, quota_key, room) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (info.file_id, info.name, info.size, info.crc32, info.sha256,
                 info.uploader, info.ts, quota_key, info.room or ""),
            )

        return self._run(insert)

    def get_file(self, file_id: str) -> defer.Deferred[ev.FileInfo | None]:
        def select() -> ev.FileInfo | None:
            assert self._db is not None
            row = self._db.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ?", (file_id,)
            ).fetchone()
            return _file_info(row) if row else None

        return self._run(select)

    def recent_files(
        self, n: int, room: str | None = None
    ) -> defer.Deferred[list[ev.FileInfo]]:
        """The ``n`` most recent files (of ``room`` only, if given), oldest first."""

        def select() -> list[ev.FileInfo]:
            assert self._db is not None
            where, args = ("AND lower(room) = ? ", (room.lower(), n)) if room else ("", (n,))
            rows = self._db.execute(
                f"SELECT {_FILE_COLUMNS} FROM files "
                f"WHERE removed = '' AND expired = '' {where}ORDER BY ts DESC LIMIT ?",
                args,
            ).fetchall()
            return [_file_info(row) for row in reversed(rows)]

        return self._run(select)

    # --- rooms ---

    def load_rooms(self) -> list[Room]:
        """Every room kept (settings, operators, invitations); at start-up."""
        assert self._db is not None
        db = self._db
        rooms = {
            key: Room(name, topic, topic_by, bool(locked), bool(private))
            for key, name, topic, topic_by, locked, private in db.execute(
                "SELECT key, name, topic, topic_by, locked, private FROM rooms"
            )
        }
        for key, name in db.execute("SELECT room, name FROM room_operators"):
            if key in rooms:
                rooms[key].operators.add(name)
        for key, name, expires in db.execute("SELECT room, name, expires FROM room_invites"):
            if key in rooms:
                rooms[key].invites[name] = expires
        for room in rooms.values():
            room.has_history = room.key in self._recent
        return list(rooms.values())

    def save_room(self, room: Room) -> defer.Deferred[None]:
        row = (room.key, room.name, room.topic, room.topic_by, int(room.locked),
               int(room.private))
        operators = [(room.key, name) for name in room.operators]
        invites = [(room.key, name, expires) for name, expires in room.invites.items()]

        def write() -> None:
            assert self._db is not None
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute(
                    "INSERT OR REPLACE INTO rooms (key, name, topic, topic_by, locked, private) "
                    "VALUES (?, ?, ?, ?, ?, ?)", row,
                )
                self._db.execute("DELETE FROM room_operators WHERE room = ?", (room.key,))
                self._db.executemany("INSERT INTO room_operators VALUES (?, ?)", operators)
                self._db.execute("DELETE FROM room_invites WHERE room = ?", (room.key,))
                self._db.executemany("INSERT INTO room_invites VALUES (?, ?, ?)", invites)

        return self._run(write).addErrback(self._failed, "saving room")

    def delete_room(self, room: Room) -> defer.Deferred[None]:
        def write() -> None:
            assert self._db is not None
            with self._db:
                self._db.execute("BEGIN")
                for table, column in (("rooms", "key"), ("room_operators", "room"),
                                      ("room_invites", "room")):
                    self._db.execute(f"DELETE FROM {table} WHERE {column} = ?", (room.key,))

        return self._run(write).addErrback(self._failed, "deleting room")

    def _failed(self, failure: Any, what: str) -> None:
        self.log.failure("Database: {what} failed", failure, what=what)

    def mirror_file(self, info: ev.FileInfo) -> defer.Deferred[None]:
        """A file another node stored (its bytes are in the shared files directory)."""

        def insert() -> None:
            assert self._db is not None
            self._db.execute(
                "INSERT OR IGNORE INTO files (id, name, size, crc32, sha256, uploader, ts, room) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (info.file_id, info.name, info.size, info.crc32, info.sha256,
                 info.uploader, info.ts, info.room or ""),
            )

        return self._run(insert)

    def mark_removed(self, file_id: str, by: str) -> defer.Deferred[None]:
        def write() -> None:
            assert self._db is not None
            self._db.execute("UPDATE files SET removed = ? WHERE id = ?", (by, file_id))

        return self._run(write)

    def expire_files(
        self, before: float | None, max_bytes: int, now: float
    ) -> defer.Deferred[list[tuple[str, int]]]:
        """Mark expired the files shared before ``before``, then the oldest until the
        rest take at most ``max_bytes`` (0: no cap); ``(id, size)`` of each."""

        def write() -> list[tuple[str, int]]:
            assert self._db is not None
            live = self._db.execute(
                "SELECT id, size, ts FROM files WHERE removed = '' AND expired = '' "
                "ORDER BY ts, id"
            ).fetchall()
            total = sum(size for _, size, _ in live)
            gone: list[tuple[str, int]] = []
            for file_id, size, ts in live:
                if (before is not None and ts < before) or (max_bytes and total > max_bytes):
                    gone.append((file_id, size))
                    total -= size
                else:
                    break  # oldest first: the rest are newer and fit
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "UPDATE files SET expired = ? WHERE id = ?",
                    [(repr(now), file_id) for file_id, _ in gone],
                )
            return gone

        return self._run(write)

    def file_usage(self) -> tuple[int, int]:
        """How many files are kept, and their bytes; at start-up."""
        assert self._db is not None
        count, size = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM files "
            "WHERE removed = '' AND expired = ''"
        ).fetchone()
        return int(count), int(size)

    def quota_rows(self) -> list[tuple[str, float, int]]:
        """``(uploader key, when, size)`` of every stored file; at start-up."""
        assert self._db is not None
        return self._db.execute("SELECT quota_key, ts, size FROM files").fetchall()

    def file_ids(self) -> set[str]:
        """Every stored file id; for start-up cleaning, before the reactor runs."""
        assert self._db is not None
        return {row[0] for row in self._db.execute("SELECT id FROM files")}
