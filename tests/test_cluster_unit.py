"""The cluster's local half, in memory: ghosts kept in step by other nodes'
events (``chat.mirror``), what each event changes in Redis's hashes, and the
chat refusing lines while its node is cut off from Redis.

Redis itself is never faked here: what goes through it is tested against a
real ``redis-server`` in ``test_cluster_integration``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet import defer

from chat import events as ev
from chat.mirror import GhostPeer, Mirror
from tests.support import memory_server

TS = 1_700_000_000.0


def setup(tmp_path: Path) -> tuple[Any, Mirror]:
    server = memory_server(tmp_path)
    return server, Mirror(server.service, "here")


def test_a_remote_join_makes_a_ghost_that_is_listed_but_never_written_to(
    tmp_path: Path,
) -> None:
    server, mirror = setup(tmp_path)
    alice = server.user("alice", "json")
    assert mirror.apply(ev.Join(10, TS, "bob", "#lobby", True, False))
    bob = server.service.registry.get("bob")
    assert bob is not None and isinstance(bob.peer, GhostPeer)
    lobby = server.service.rooms.get("#lobby")
    assert bob in lobby.members and bob.peer not in lobby.peers
    assert [e["name"] for e in alice.events() if e["type"] == "join"] == ["bob"]
    alice.line("/who")
    assert {u["name"] for u in alice.events()[-1]["users"]} == {"alice", "bob"}
    # The same join again (a node back from a break) is not shown twice.
    mirror.apply(ev.Join(11, TS, "bob", "#lobby", True, False))
    assert not [e for e in alice.events() if e["type"] == "join"]


def test_remote_lines_reach_local_members_and_history(tmp_path: Path) -> None:
    server, mirror = setup(tmp_path)
    alice = server.user("alice", "json")
    mirror.apply(ev.Join(10, TS, "bob", "#lobby", True, False))
    alice.take()
    mirror.apply(ev.Message(11, TS, "bob", "hello from afar", "#lobby"))
    said = alice.events()
    assert [(e["id"], e["text"]) for e in said] == [(11, "hello from afar")]
    alice.line("/history")
    history = alice.events()[-1]
    assert [m["id"] for m in history["messages"]] == [11]


def test_remote_private_reaches_only_its_recipient(tmp_path: Path) -> None:
    server, mirror = setup(tmp_path)
    alice, carol = server.user("alice", "json"), server.user("carol", "json")
    mirror.apply(ev.Join(10, TS, "bob", "#lobby", True, False))
    alice.take(), carol.take()
    mirror.apply(ev.Private(12, TS, "bob", "alice", "psst"))
    assert [e["text"] for e in alice.events()] == ["psst"]
    assert carol.events() == []


def test_remote_nick_and_leave_follow_the_ghost(tmp_path: Path) -> None:
    server, mirror = setup(tmp_path)
    alice = server.user("alice", "json")
    mirror.apply(ev.Join(10, TS, "bob", "#lobby", True, False))
    mirror.apply(ev.Nick(11, TS, "bob", "robert"))
    assert server.service.registry.get("bob") is None
    assert server.service.registry.get("robert") is not None
    mirror.apply(ev.Leave(12, TS, "robert", "quit"))
    assert server.service.registry.get("robert") is None
    kinds = [(e["type"], e.get("name") or e.get("new")) for e in alice.events()
             if e["type"] in ("join", "nick", "leave")]
    assert kinds == [("join", "bob"), ("nick", "robert"), ("leave", "robert")]
    assert len(server.service.rooms.get("#lobby").members) == 1


def test_a_leave_of_a_local_user_means_this_node_was_declared_dead(tmp_path: Path) -> None:
    server, mirror = setup(tmp_path)
    server.user("alice", "json")
    assert mirror.apply(ev.Leave(12, TS, "alice", "server lost")) is False
    assert server.service.registry.get("alice") is not None  # still here: it must rejoin


def test_what_events_change_in_the_users_and_files_hashes(tmp_path: Path) -> None:
    server, mirror = setup(tmp_path)
    server.user("alice", "json")
    join = mirror.changes(ev.Join(1, TS, "alice", "#lobby", True, False))
    assert join[:3] == ["HSET", "lanchat:users", "alice"]
    assert json.loads(join[3]) == {"name": "alice", "node": "here", "account": False,
                                   "operator": False, "rooms": ["#lobby"]}
    part = mirror.changes(ev.Part(2, TS, "alice", "#lobby"))
    assert json.loads(part[3])["rooms"] == []
    assert mirror.changes(ev.Leave(3, TS, "alice", "quit"))[:3] == [
        "HDEL", "lanchat:users", "alice"
    ]
    shared = mirror.changes(ev.FileShared(4, TS, "alice", "f1", "a.txt", 3, "00000000",
                                          "ab", None, "#lobby"))
    assert shared[:3] == ["HSET", "lanchat:files", "f1"]


def test_resync_drops_vanished_ghosts_and_delivers_missed_lines(tmp_path: Path) -> None:
    server, mirror = setup(tmp_path)
    alice = server.user("alice", "json")
    mirror.apply(ev.Join(10, TS, "bob", "#lobby", True, False))
    mirror.apply(ev.Join(11, TS, "carol", "#lobby", True, False))
    alice.take()
    users = {"carol": {"name": "carol", "node": "there", "rooms": ["#lobby"]},
             "dave": {"name": "dave", "node": "there", "rooms": ["#lobby"]},
             "alice": {"name": "alice", "node": "here", "rooms": ["#lobby"]}}
    history = {"#lobby": [ev.Message(20, TS, "carol", "said while you were away", "#lobby"),
                          ev.Message(30, TS, "carol", "after the snapshot", "#lobby")]}
    missed = mirror.resync(users, history, top=25, seen=11)
    assert missed == 1
    registry = server.service.registry
    assert registry.get("bob") is None and registry.get("dave") is not None
    assert [e["text"] for e in alice.events() if e["type"] == "message"] == [
        "said while you were away"
    ]
    assert [e.id for e in server.store.recent("#lobby", 10)] == [20]  # type: ignore[attr-defined]


class CutOff:
    """A node that has lost Redis: it takes nothing."""

    ready = False

    def publish(self, event: ev.Event, to: Any, origin: Any) -> bool:
        return False

    def kick(self, user: Any, reason: str) -> None:
        raise AssertionError("not expected")

    def tell(self, op: str, data: dict[str, Any]) -> None:
        pass

    def settled(self, peer: Any) -> defer.Deferred[None]:
        return defer.succeed(None)

    def forget_session(self, name: str, key: str) -> None:
        pass


def test_lines_are_refused_with_a_clear_error_while_cut_off(tmp_path: Path) -> None:
    server = memory_server(tmp_path)
    alice, bob = server.user("alice", "json"), server.user("bob")
    server.service.cluster = CutOff()
    alice.line("anyone there?")
    alice.line("/me waves")
    alice.line("/msg bob psst")
    codes = [e["code"] for e in alice.events() if e["type"] == "error"]
    assert codes == ["cluster_down"] * 3
    assert bob.take() == b""  # bob sees nothing of it
    assert server.store.recent("#lobby", 10) == []
    bob.line("still here")
    assert "out of reach" in bob.take().decode()
    alice.line("/join #new")
    assert [e["code"] for e in alice.events() if e["type"] == "error"] == ["cluster_down"]
    assert server.service.rooms.get("#new") is None
    alice.line("/quit")  # a leave waits for Redis (the node publishes it then): none now
    assert "left" not in bob.take().decode()


def test_an_account_made_on_one_node_is_applied_on_another(tmp_path: Path) -> None:
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
    here = memory_server(tmp_path / "a")
    there = memory_server(tmp_path / "b")
    told: list[tuple[str, Any]] = []
    here.factory.accounts.changed.append(lambda key, record: told.append((key, record)))
    alice = here.user("alice", "json")
    alice.line("/register correct horse battery")
    (key, record), = told
    assert key == "alice" and record["hash"].startswith("$argon2id$")
    assert "correct horse" not in json.dumps(record)
    there.factory.accounts.apply(key, record)
    assert there.factory.accounts.verify("alice", "correct horse battery").result is True
    there.store.close()
    again = memory_server(tmp_path / "b")  # and it was written to that node's SQLite
    assert again.factory.accounts.exists("alice")
    again.factory.accounts.apply("alice", None)
    assert not again.factory.accounts.exists("alice")


def test_cluster_options_are_checked_before_anything_starts(tmp_path: Path) -> None:
    import subprocess
    import sys

    def start(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chat", "--no-console", "--data-dir", str(tmp_path), *args],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )

    alone = start("--workers", "2")
    assert alone.returncode == 2 and "--workers: needs a cluster" in alone.stderr
    bad = start("--cluster", "http://127.0.0.1:6379")
    assert bad.returncode == 2 and "cluster.redis_url" in bad.stderr
    tls = start("--workers", "2", "--cluster", "redis://127.0.0.1:1/0", "--tls")
    assert tls.returncode == 2 and "TLS" in tls.stderr
