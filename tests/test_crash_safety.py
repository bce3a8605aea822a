"""Crash safety (§3): what anyone saw survives ``kill -9``, and ids never repeat.

A real server, several clients chatting at once in text and JSON mode and one
streaming uploads, is killed with SIGKILL at a seeded random moment, then
restarted on the same data directory, again and again. After each restart:

- every message any client received before the kill is in ``/history``
  (same sender and text; the same id too where a JSON client saw it),
- the ids given out after the restart are above every id seen before it,
- ``PRAGMA integrity_check`` is ``ok``, ``DATA/tmp`` is empty, and
  ``DATA/files`` and the ``files`` table hold exactly the same ids.

Clients run on threads: each writes its lines at its own pace and a reader
records everything it receives until the connection ends.
"""

from __future__ import annotations

import json
import random
import re
import signal
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import DEADLINE, LineClient, RealServer, kill_quietly

TEXT_MESSAGE = re.compile(r"^\(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\) <([^>]+)> (.*)$")
CYCLES = 20
LINES_PER_CHATTER = 100  # four chatters: at most 400 messages a cycle, under history.max


@dataclass(frozen=True)
class Seen:
    """A message as one client received it (no id in text mode)."""

    sender: str
    text: str
    id: int | None = None


@dataclass
class Client:
    """A registered client: one thread writes its script, another records what arrives."""

    name: str
    conn: LineClient
    json_mode: bool
    messages: list[Seen] = field(default_factory=list)
    #: Every chat event id received (JSON mode): messages, joins, leaves, files.
    ids: list[int] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def join(cls, server: RealServer, name: str, json_mode: bool) -> Client:
        conn = server.client(name, json_mode=json_mode)
        if json_mode:
            conn.expect_event("history")
        else:
            conn.expect(r"^-- (No messages yet|End of history)\.$")
        conn.sock.settimeout(DEADLINE)
        return cls(name, conn, json_mode)

    def start(self, script: Iterator[bytes]) -> None:
        self.threads = [
            threading.Thread(target=self._write, args=(script,), daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _write(self, script: Iterator[bytes]) -> None:
        try:
            for data in script:
                self.conn.sock.sendall(data)
        except OSError:
            pass  # the server is gone

    def _read(self) -> None:
        buf = self.conn.buf
        try:
            while chunk := self.conn.sock.recv(65536):
                *lines, buf = (buf + chunk).split(b"\r\n")
                for line in lines:
                    self._record(line.decode("utf-8", "replace"))
        except OSError:
            pass  # reset by the dying server, or closed by the test

    def _record(self, line: str) -> None:
        if self.json_mode:
            event = json.loads(line)
            if "id" in event:
                self.ids.append(event["id"])
            if event["type"] != "message":
                return
            seen = Seen(event["sender"], event["text"], event["id"])
        elif m := TEXT_MESSAGE.match(line):
            seen = Seen(m[1], m[2])
        else:
            return
        with self.arrived:
            self.messages.append(seen)
            self.arrived.notify_all()

    def wait_for_messages(self, n: int) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.messages) >= n, DEADLINE), (
                f"only {len(self.messages)} of {n} messages arrived"
            )

    def finish(self) -> None:
        """After the kill: let the threads see the end, then close."""
        for t in self.threads:
            t.join(DEADLINE)
        self.conn.close()


def chat_lines(name: str, stop: threading.Event, interval: float) -> Iterator[bytes]:
    for n in range(LINES_PER_CHATTER):
        if stop.wait(interval):
            return
        yield f"{name} says {n}\r\n".encode()


def uploads(rng: random.Random, stop: threading.Event) -> Iterator[bytes]:
    """Files one after another, mostly small, now and then 32 MiB, in paced 64 KiB pieces."""
    block = rng.randbytes(64 * 1024)
    n = 0
    while not stop.is_set():
        size = rng.choice([1, 4096, 100_000, 700_000, 32 * 1024 * 1024])
        n += 1
        yield f"/send crash{n}.bin {size}\r\n".encode()
        for start in range(0, size, len(block)):
            if stop.wait(0.002):
                return
            yield block[: min(len(block), size - start)]


def history(server: RealServer, name: str) -> tuple[list[dict[str, Any]], int]:
    """``/history 500`` and the id of this client's own join, from a fresh JSON client."""
    checker = server.client(name, json_mode=True)
    try:
        join_id = checker.expect_event("join", name=name)["id"]
        checker.send_line("/history 500")
        return checker.expect_event("history")["messages"], join_id
    finally:
        checker.close()


def check_data_dir(data: Path) -> None:
    """SQLite intact, no temporary upload left, every file recorded and every record filed."""
    with closing(sqlite3.connect(data / "chat.sqlite3")) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        recorded = {row[0] for row in db.execute("SELECT id FROM files")}
    assert list((data / "tmp").iterdir()) == []
    assert {p.name for p in (data / "files").iterdir()} == recorded


def check_nothing_lost(server: RealServer, before: list[Client], checker: str) -> None:
    messages, join_id = history(server, checker)
    kept = {Seen(m["sender"], m["text"], m["id"]) for m in messages if m["type"] == "message"}
    kept |= {Seen(m.sender, m.text) for m in kept}  # as text mode shows them
    for client in before:
        lost = [m for m in client.messages if m not in kept]
        assert not lost, f"{client.name} received before the kill, gone after: {lost[:5]}"
        assert all(i < join_id for i in client.ids), (
            f"{client.name} saw id {max(client.ids)} before the kill, {join_id} came after it"
        )
    check_data_dir(server.data_dir)


def kill_9(server: RealServer) -> None:
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()


@pytest.mark.slow
def test_kill_9_under_load_loses_nothing_anyone_saw(tmp_path: Path) -> None:
    """§3 k: 20 kill -9 / restart cycles under chat and uploads on one data directory."""
    data = tmp_path / "data"
    rng = random.Random(20261123)
    before: list[Client] = []
    for cycle in range(CYCLES + 1):
        server = RealServer(data)
        try:
            if before:
                check_nothing_lost(server, before, f"check{cycle}")
            if cycle == CYCLES:
                break
            stop = threading.Event()
            chatters = [
                Client.join(server, f"c{cycle}{who}", json_mode=who.startswith("j"))
                for who in ("t1", "t2", "j1", "j2")
            ]
            uploader = Client.join(server, f"c{cycle}up", json_mode=True)
            uploader.start(uploads(random.Random(rng.random()), stop))
            for c in chatters:
                c.start(chat_lines(c.name, stop, interval=rng.uniform(0.001, 0.004)))
            # The random moment: right after a JSON client has had its k-th message.
            chatters[2].wait_for_messages(rng.randint(5, 3 * LINES_PER_CHATTER))
            kill_9(server)
            stop.set()
            for c in [*chatters, uploader]:
                c.finish()
            before = [*chatters, uploader]
        finally:
            kill_quietly(server)


def test_ids_never_repeat_after_kill_9(tmp_path: Path) -> None:
    """§3 l: ids seen before a kill -9 are all below every id given out after it."""
    data = tmp_path / "data"
    server = RealServer(data)
    try:
        watcher = server.client("watcher", json_mode=True)
        carol = server.client("carol", json_mode=True)
        carol.send_line("said before the kill")
        dave = server.client("dave")
        dave.send_line("/quit")
        watcher.expect_event("leave", name="dave")
        events = [json.loads(ln) for ln in watcher.seen if ln.startswith("{")]
        before = [e["id"] for e in events if "id" in e]
        kill_9(server)
    finally:
        kill_quietly(server)
    assert len(before) >= 4  # joins of carol and dave, carol's message, dave's leave

    server = RealServer(data)
    try:
        eve = server.client("eve", json_mode=True)
        after = [eve.expect_event("join", name="eve")["id"]]
        eve.send_line("said after the restart")
        after.append(eve.expect_event("message", sender="eve")["id"])
        server.client("frank")
        after.append(eve.expect_event("join", name="frank")["id"])
        assert max(before) < min(after), (before, after)
    finally:
        kill_quietly(server)
