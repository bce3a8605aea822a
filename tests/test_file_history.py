"""File notices in the history (issue 17, §3): a shared file stays in its room's
history, and once its bytes are gone (``/rm``, or expiry) the notice says so,
in the replay to newcomers, in ``/history``, in text and JSON, and after a
restart (the notice on disk is joined with the file's record)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support import Conn, MemoryServer
from tests.support import memory_server as make_memory_server


def share(c: Conn, name: str, size: int) -> str:
    c.feed(b"/send %s %d\n" % (name.encode(), size) + bytes(size))
    (uploaded,) = [e for e in c.events() if e["type"] == "uploaded"]
    return str(uploaded["file"]["file_id"])


def history(c: Conn) -> list[dict[str, Any]]:
    c.line("/history")
    (reply,) = [e for e in c.events() if e["type"] == "history"]
    return list(reply["messages"])


def test_a_shared_file_is_in_the_history_and_marked_once_removed(tmp_path: Path) -> None:
    mem = make_memory_server(tmp_path)
    alice = mem.user("alice", mode="json")
    alice.line("before")
    file_id = share(alice, "notes.txt", 12)
    alice.line("after")
    kept = history(alice)
    assert [(e["type"], e.get("text") or e.get("name")) for e in kept] == [
        ("message", "before"), ("file", "notes.txt"), ("message", "after")
    ]
    assert kept[1]["removed"] is False and kept[1]["expired"] is False
    alice.line(f"/rm {file_id}")
    alice.take()
    (notice,) = [e for e in history(alice) if e["type"] == "file"]
    assert notice["removed"] is True and notice["file_id"] == file_id
    bob = mem.connect()
    bob.line("bob")
    replay = bob.take().decode()
    assert "alice shared notes.txt (12 B), removed since." in replay
    assert f"/get {file_id}" not in replay


def test_expired_files_are_marked_in_the_history_and_after_a_restart(tmp_path: Path) -> None:
    mem = make_memory_server(tmp_path)
    mem.config.files.retention_days = 1
    alice = mem.user("alice", mode="json")
    old = share(alice, "old.txt", 10)
    mem.clock.advance(86400 * 2)
    new = share(alice, "new.txt", 20)
    assert mem.factory.files.sweep().result.expired == 1
    marks = {e["file_id"]: e["expired"] for e in history(alice) if e["type"] == "file"}
    assert marks == {old: True, new: False}
    mem.store.close()
    again: MemoryServer = make_memory_server(tmp_path)
    carol = again.user("carol", mode="json")
    marks = {e["file_id"]: e["expired"] for e in history(carol) if e["type"] == "file"}
    assert marks == {old: True, new: False}


def test_resume_of_an_upload_still_coming_in_is_refused_not_zero(tmp_path: Path) -> None:
    mem = make_memory_server(tmp_path)
    a = mem.user("alice", mode="json")
    a.feed(b"/send big.bin 1000 0badcafe\n" + bytes(10))
    key = a.proto.user.session  # type: ignore[union-attr]
    t = mem.connect(40001)
    t.line(f"/attach {key}")
    t.take()
    t.line("/resume big.bin 1000 0badcafe")
    (error,) = [e for e in t.events() if e["type"] == "error"]
    assert (error["code"], error["reason"], error["command"]) == ("refused", "in_progress",
                                                                   "resume")
