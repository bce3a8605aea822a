"""Interrupted uploads, kept so that they can be resumed.

An upload declared with a CRC-32 is written straight into ``DATA/partial/``,
under a name made from who sends what (the owner, the file name, its size
and CRC-32), with a small JSON record beside it. If the connection goes
(closed, reset, ``/cancel``, the server stopping or even killed) the bytes
written so far stay: ``/resume`` says how many, and ``/send NAME SIZE CRC32
OFFSET`` appends the rest. A finished upload moves from ``partial/`` to
``files/``; one untouched for ``files.resume_window`` seconds is swept away
(periodically, and at start-up). The owner is an account, or a guest's name
and address, so two people resuming files of the same name never meet.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chat.sanitize import for_log


def resume_owner(host: str | None, name: str, account: bool) -> str:
    """Whose interrupted uploads a connection may resume."""
    return f"account:{name.lower()}" if account else f"guest:{name.lower()}@{host}"


@dataclass(frozen=True)
class PartialKey:
    """What identifies an interrupted upload: who, and which file."""

    owner: str
    name: str
    size: int
    crc32: int

    @property
    def stem(self) -> str:
        text = f"{self.owner}\0{self.name}\0{self.size}\0{self.crc32:08x}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class Partials:
    """The ``partial/`` folder: what is held, for whom, and since when."""

    root: Path
    clock: IReactorTime
    window: float = 3600.0
    #: Stems of the partials an upload is writing now (not to be swept or resumed twice).
    active: set[str] = field(default_factory=set)

    log = Logger()

    @property
    def folder(self) -> Path:
        return self.root / "partial"

    def part(self, key: PartialKey) -> Path:
        return self.folder / f"{key.stem}.part"

    def _record(self, stem: str) -> Path:
        return self.folder / f"{stem}.json"

    def held(self, key: PartialKey) -> int:
        """Bytes of ``key``'s upload held (0: none, or too old to resume)."""
        try:
            record = json.loads(self._record(key.stem).read_text())
            size = self.part(key).stat().st_size
        except (OSError, ValueError):
            return 0
        if record.get("updated", 0) + self.window <= self.clock.seconds():
            return 0
        return size if size <= key.size else 0

    # --- on the upload's writer thread ---

    def write_record(self, key: PartialKey, room: str | None) -> None:
        """Say whose the bytes in ``part(key)`` are, and that they are fresh."""
        record = {"owner": key.owner, "name": key.name, "size": key.size,
                  "crc32": f"{key.crc32:08x}", "room": room, "updated": self.clock.seconds()}
        tmp = self._record(key.stem).with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self._record(key.stem))

    def drop(self, stem: str) -> None:
        for path in (self.folder / f"{stem}.part", self._record(stem)):
            path.unlink(missing_ok=True)

    def sweep(self) -> int:
        """Remove what can no longer be resumed; returns how many uploads went."""
        if not self.folder.is_dir():
            return 0
        now, gone = self.clock.seconds(), 0
        stems = {p.name.split(".", 1)[0] for p in self.folder.iterdir()}
        for stem in stems - set(self.active):
            try:
                updated = json.loads(self._record(stem).read_text()).get("updated", 0)
                fresh = updated + self.window > now
            except (OSError, ValueError):
                # No record (yet: an upload may be starting) or a broken one: the
                # part's own age decides, by the wall clock its mtime is on.
                try:
                    age = time.time() - (self.folder / f"{stem}.part").stat().st_mtime
                except OSError:
                    age = self.window
                fresh = age < self.window
            if not fresh and stem not in self.active:
                self.log.info("Removing an interrupted upload ({stem}) too old to resume",
                              stem=for_log(stem))
                self.drop(stem)
                (self.folder / f"{stem}.tmp").unlink(missing_ok=True)
                gone += 1
        return gone

    def prepare(self) -> None:
        """At start-up: the folder exists, and nothing stale is in it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sweep()
