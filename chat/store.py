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

import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from chat import events as ev

T = TypeVar("T")
Executor = Callable[[Callable[[], T]], defer.Deferred[T]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    crc32 TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    uploader TEXT NOT NULL,
    ts REAL NOT NULL,
    quota_key TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS files_by_time ON files (ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_KINDS: dict[str, type[ev.Message] | type[ev.Action]] = {
    "message": ev.Message,
    "action": ev.Action,
}


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


class Store:
    """History and file records in one SQLite file."""

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
        self._recent: deque[ev.Event] = deque(maxlen=max(keep, 1))
        self._last_id = 0
        self._db: sqlite3.Connection | None = None

    # --- start-up and shut-down ---

    def open(self) -> None:
        """Create the schema and load what the server needs in memory."""
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(files)")}
        if "quota_key" not in columns:  # a data directory from before quotas by uploader
            db.execute("ALTER TABLE files ADD COLUMN quota_key TEXT NOT NULL DEFAULT ''")
            db.execute("UPDATE files SET quota_key = 'user:' || lower(uploader)")
        rows = db.execute(
            "SELECT id, ts, kind, sender, text FROM history ORDER BY id DESC LIMIT ?",
            (self._recent.maxlen,),
        ).fetchall()
        for id_, ts, kind, sender, text in reversed(rows):
            self._recent.append(_KINDS[kind](id_, ts, sender, text))
        (max_history,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM history").fetchone()
        row = db.execute("SELECT value FROM meta WHERE key = 'last_id'").fetchone()
        self._last_id = max(max_history, int(row[0]) if row else 0)
        self._db = db

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

    def last_id(self) -> int:
        """The highest event id handed out so far (after a restart: recorded as reserved)."""
        return self._last_id

    def remember(self, event: ev.Event) -> None:
        """Keep a historic event for replays (``commit`` writes it)."""
        self._recent.append(event)

    def recent(self, n: int) -> list[ev.Event]:
        """The last ``n`` historic events, oldest first."""
        if n <= 0:
            return []
        items = list(self._recent)
        return items[-n:]

    def commit(self, events: Iterable[ev.Event], reserved: int | None) -> defer.Deferred[None]:
        """Write ``events``, and (if given) that no id up to ``reserved`` may be
        handed out again, in one transaction."""
        rows = [(e.id, e.ts, e.type, e.sender, e.text) for e in events]  # type: ignore[attr-defined]

        def write() -> None:
            assert self._db is not None
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO history (id, ts, kind, sender, text) "
                    "VALUES (?, ?, ?, ?, ?)",
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
                "INSERT INTO files (id, name, size, crc32, sha256, uploader, ts, quota_key) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (info.file_id, info.name, info.size, info.crc32, info.sha256,
                 info.uploader, info.ts, quota_key),
            )

        return self._run(insert)

    def get_file(self, file_id: str) -> defer.Deferred[ev.FileInfo | None]:
        def select() -> ev.FileInfo | None:
            assert self._db is not None
            row = self._db.execute(
                "SELECT id, name, size, crc32, sha256, uploader, ts FROM files WHERE id = ?",
                (file_id,),
            ).fetchone()
            return ev.FileInfo(*row, url=None) if row else None

        return self._run(select)

    def recent_files(self, n: int) -> defer.Deferred[list[ev.FileInfo]]:
        def select() -> list[ev.FileInfo]:
            assert self._db is not None
            rows = self._db.execute(
                "SELECT id, name, size, crc32, sha256, uploader, ts FROM files "
                "ORDER BY ts DESC LIMIT ?",
                (n,),
            ).fetchall()
            return [ev.FileInfo(*row, url=None) for row in reversed(rows)]

        return self._run(select)

    def quota_rows(self) -> list[tuple[str, float, int]]:
        """``(uploader key, when, size)`` of every stored file; at start-up."""
        assert self._db is not None
        return self._db.execute("SELECT quota_key, ts, size FROM files").fetchall()

    def file_ids(self) -> set[str]:
        """Every stored file id; for start-up cleaning, before the reactor runs."""
        assert self._db is not None
        return {row[0] for row in self._db.execute("SELECT id FROM files")}
