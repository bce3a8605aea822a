"""The cluster (issue 18), black-box: real ``chat-server`` nodes sharing one real Redis.

Every test starts its own ``redis-server`` on an ephemeral port and two or
three nodes on ephemeral ports, and talks to them over sockets as users do:
chat across nodes in text and JSON, one order for everyone under concurrent
senders on different nodes, a name race, ``/msg`` and ``/who`` across nodes,
history after every node restarts, ``kill -9`` of a node, Redis going away
and coming back, a file uploaded on one node fetched from another, and
``--workers 2`` on one port.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster_support import RedisServer, free_port, needs_redis, node
from tests.support import DEADLINE, LineClient, RealServer, kill_quietly, readable

pytestmark = needs_redis


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def nodes(redis: RedisServer, tmp_path: Path) -> Iterator[list[RealServer]]:
    started = [node(redis, tmp_path / f"node{i}", f"n{i}") for i in range(3)]
    yield started
    for server in started:
        kill_quietly(server)


def json_client(server: RealServer, name: str) -> LineClient:
    c = server.client(name, json_mode=True)
    c.expect_event("history")
    return c


def text_client(server: RealServer, name: str) -> LineClient:
    c = server.client(name)
    c.expect(r"^-- (No messages yet|Last \d+ messages?:|End of history)")
    return c


def test_chat_across_nodes_in_text_and_json(nodes: list[RealServer]) -> None:
    alice = text_client(nodes[0], "alice")
    bob = json_client(nodes[1], "bob")
    alice.expect(r"-- bob has joined the chat\.")
    alice.send_line("hello from node 0")
    said = bob.expect_event("message", sender="alice")
    assert said["text"] == "hello from node 0" and said["room"] == "#lobby"
    bob.send_line("hi from node 1")
    assert bob.expect_event("message", sender="bob")["text"] == "hi from node 1"  # its echo
    alice.expect(r"^\(.*\) <bob> hi from node 1$")
    carol = json_client(nodes[2], "carol")
    alice.expect(r"-- carol has joined")
    carol.send_line("/who")
    who = carol.expect_event("who")
    assert {p["name"] for p in who["users"]} == {"alice", "bob", "carol"}
    bob.send_line("/msg alice psst")
    alice.expect(r"\*bob\* psst")
    assert bob.expect_event("private", recipient="alice")["text"] == "psst"
    carol.send_line("/names")
    names = carol.expect_event("names")
    assert {p["name"] for p in names["users"]} == {"alice", "bob", "carol"}
    alice.send_line("/quit")
    bob.expect_event("leave", name="alice")
    carol.expect_event("leave", name="alice")


def test_every_member_sees_one_order_under_concurrent_senders(
    nodes: list[RealServer],
) -> None:
    listeners = [json_client(n, f"ear{i}") for i, n in enumerate(nodes)]
    senders = [(n, f"s{i}{j}") for i, n in enumerate(nodes) for j in range(2)]
    per_sender = 60
    conns = [json_client(n, name) for n, name in senders]
    # Everyone is in: each listener has seen every join.
    for ear in listeners:
        for _, name in senders:
            ear.expect_event("join", name=name)

    def blast(conn: LineClient, name: str) -> None:
        # In a few writes, as programs send: lines cut wherever TCP cuts them.
        data = b"".join(f"{name} {k}\r\n".encode() for k in range(per_sender))
        for i in range(0, len(data), 97):
            conn.send(data[i:i + 97])

    threads = [threading.Thread(target=blast, args=(c, name))
               for c, (_, name) in zip(conns, senders, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    total = per_sender * len(senders)
    seen = []
    for ear in listeners:
        got = []
        while len(got) < total:
            event = json.loads(ear.read_line())
            if event["type"] == "message":
                got.append((event["id"], event["sender"], event["text"]))
        seen.append(got)
    assert seen[0] == seen[1] == seen[2], "members saw different orders"
    ids = [i for i, _, _ in seen[0]]
    assert ids == sorted(ids) and len(set(ids)) == total
    for _, name in senders:
        mine = [int(text.split()[1]) for _, sender, text in seen[0] if sender == name]
        assert mine == list(range(per_sender)), f"{name}'s lines out of order"


def test_two_users_racing_for_one_name_on_two_nodes(nodes: list[RealServer]) -> None:
    for attempt in range(10):
        name = f"racer{attempt}"
        a, b = LineClient(nodes[0].port), LineClient(nodes[1].port)
        for c in (a, b):
            c.send_line("/proto json")
        a.send_line(name)
        b.send_line(name)
        outcomes = []
        for c in (a, b):
            while True:
                line = c.read_line()
                if not line.startswith("{"):
                    continue  # the banner, before /proto json
                event = json.loads(line)
                if event["type"] == "welcome":
                    outcomes.append("won")
                    break
                if event["type"] == "error" and event["code"] == "name_taken":
                    outcomes.append("taken")
                    break
        assert sorted(outcomes) == ["taken", "won"], outcomes
        a.close()
        b.close()


def test_nick_across_nodes(nodes: list[RealServer]) -> None:
    alice = json_client(nodes[0], "alice")
    bob = json_client(nodes[1], "bob")
    alice.expect_event("join", name="bob")
    bob.send_line("/nick alice")
    assert bob.expect_event("error")["code"] == "name_taken"
    bob.send_line("/nick robert")
    alice.expect_event("nick", old="bob", new="robert")
    carol = json_client(nodes[2], "carol")
    carol.send_line("/who")
    names = {p["name"] for p in carol.expect_event("who")["users"]}
    assert names == {"alice", "robert", "carol"}
    # The old name is free again, anywhere.
    again = json_client(nodes[2], "bob")
    alice.expect_event("join", name="bob")
    again.close()


def test_rooms_their_rules_and_invitations_span_nodes(nodes: list[RealServer]) -> None:
    alice = json_client(nodes[0], "alice")
    bob = json_client(nodes[1], "bob")
    carol = json_client(nodes[2], "carol")
    alice.send_line("/join #dev")
    alice.expect_event("current", room="#dev")
    alice.send_line("/private on")
    alice.expect_event("info")
    alice.send_line("/topic #dev release on friday")
    alice.expect_event("topic", room="#dev")
    bob.send_line("/join #dev")
    assert bob.expect_event("error")["code"] == "invite_only"
    alice.send_line("/invite bob")
    assert bob.expect_event("invited")["room"] == "#dev"
    bob.send_line("/join #dev")
    people = bob.expect_event("participants", room="#dev")
    assert set(people["names"]) == {"alice", "bob"} and people["topic"] == "release on friday"
    alice.expect_event("join", name="bob", room="#dev")
    bob.send_line("/msg #dev hello dev")
    assert alice.expect_event("message", room="#dev")["text"] == "hello dev"
    carol.send_line("/names #dev")
    assert carol.expect_event("error")["code"] in ("no_such_room", "invite_only")
    alice.send_line("/kick bob #dev enough")
    part = bob.expect_event("part", name="bob", room="#dev")
    assert "enough" in part["reason"]
    assert bob.expect_event("current")["room"] == "#lobby"
    bob.send_line("/msg #dev still here?")
    assert bob.expect_event("error")["code"] == "not_in_room"


def test_kicks_and_bans_reach_users_on_other_nodes(redis: RedisServer, tmp_path: Path) -> None:
    ops = '\n[accounts]\noperators = ["teacher"]\n'
    servers = [node(redis, tmp_path / f"node{i}", f"k{i}", settings=ops) for i in range(2)]
    try:
        teacher = servers[0].client("teacher")
        teacher.send_line("/register correct horse battery")
        teacher.expect("is an account now")
        teacher.send_line("/quit")
        assert teacher.closed()
        teacher = LineClient(servers[0].port)
        teacher.send_line("/login teacher correct horse battery")
        teacher.expect(r"^Welcome to the chat")
        eve = text_client(servers[1], "eve")
        watcher = json_client(servers[1], "watcher")
        teacher.send_line("/kick eve being rude")
        eve.expect("kicked")
        assert eve.closed()
        assert watcher.expect_event("leave", name="eve")["reason"].startswith("kicked")
        mallory = text_client(servers[1], "mallory")
        teacher.send_line("/ban mallory 1h spam")
        teacher.expect(r"^-- Banned mallory until ")
        mallory.expect("banned: spam")
        assert mallory.closed()
        again = LineClient(servers[1].port)
        again.send_line("mallory")
        again.expect(r"^!! You are banned until .*: spam$")
        assert again.closed()
    finally:
        for server in servers:
            kill_quietly(server)


def test_an_account_logging_in_on_another_node_takes_its_session_over(
    redis: RedisServer, tmp_path: Path
) -> None:
    # Two workers of one machine: one data directory, so one set of accounts.
    shared = tmp_path / "shared"
    servers = [node(redis, shared, f"t{i}") for i in range(2)]
    try:
        alice = servers[0].client("alice")
        alice.send_line("/register correct horse battery")
        alice.expect("is an account now")
        watcher = json_client(servers[1], "watcher")
        again = LineClient(servers[1].port)
        again.send_line("/login alice correct horse battery")
        again.expect(r"^Welcome to the chat, alice\.")
        alice.expect("logged in from elsewhere")
        assert alice.closed()
        assert watcher.expect_event("leave", name="alice")["reason"] == "logged in elsewhere"
        assert watcher.expect_event("join", name="alice")["account"] is True
        guest = LineClient(servers[0].port)
        guest.send_line("alice")  # a guest may not: the name is an account's
        guest.expect("registered")
    finally:
        for server in servers:
            kill_quietly(server)


def test_history_survives_every_node_restarting(redis: RedisServer, tmp_path: Path) -> None:
    first = [node(redis, tmp_path / f"node{i}", f"n{i}") for i in range(2)]
    alice = json_client(first[0], "alice")
    bob = json_client(first[1], "bob")
    sent = []
    for k in range(5):
        alice.send_line(f"a{k}")
        bob.send_line(f"b{k}")
        sent += [f"a{k}", f"b{k}"]
    received = []
    while len(received) < len(sent):
        event = json.loads(bob.read_line())
        if event["type"] == "message":
            received.append((event["id"], event["text"]))
    for server in first:
        assert server.stop() == 0
    second = [node(redis, tmp_path / f"node{i}", f"m{i}") for i in range(2)]
    try:
        for server in second:
            carol = server.client(f"carol{server.port}", json_mode=True)
            history = carol.expect_event("history")
            assert [(e["id"], e["text"]) for e in history["messages"]][-10:] == received
            carol.close()
    finally:
        for server in second:
            kill_quietly(server)


def test_kill_9_of_a_node_frees_its_users(nodes: list[RealServer]) -> None:
    alice = json_client(nodes[0], "alice")
    bob = json_client(nodes[1], "bob")
    alice.expect_event("join", name="bob")
    alice.send_line("seen by bob")
    said = bob.expect_event("message", sender="alice")
    nodes[0].proc.send_signal(signal.SIGKILL)
    nodes[0].proc.wait()
    # Within node_timeout (3 s here) and a heartbeat: one leave, the name free.
    left = bob.expect_event("leave", name="alice", timeout=DEADLINE)
    assert left["reason"] == "server lost"
    again = nodes[2].client("alice", json_mode=True)
    history = again.expect_event("history")
    assert said["id"] in [e["id"] for e in history["messages"]]
    # Exactly one leave reached bob (the other node saw the death too).
    bob.send_line("/who")
    while True:
        event = json.loads(bob.read_line())
        assert not (event["type"] == "leave" and event["name"] == "alice")
        if event["type"] == "who":
            break


@pytest.mark.parametrize("persistent", [True, False], ids=["aof", "empty"])
def test_redis_going_away_refuses_lines_then_recovers(
    tmp_path: Path, persistent: bool
) -> None:
    """Redis killed and started again: with its append-only file (as docs/scaling.md
    advises) it comes back with everything; without, empty (the nodes say again
    who they hold)."""
    aof = ("--appendonly", "yes", "--appendfsync", "always") if persistent else ()
    redis = RedisServer(tmp_path / "redis", *aof)
    nodes = [node(redis, tmp_path / f"node{i}", f"n{i}") for i in range(3)]
    try:
        alice = json_client(nodes[0], "alice")
        dave = json_client(nodes[0], "dave")
        bob = json_client(nodes[1], "bob")
        alice.expect_event("join", name="bob")
        redis.stop()
        nodes[0].wait_for_log(r"Cluster node n0: down")
        alice.send_line("while redis is away")
        error = alice.expect_event("error")
        assert error["code"] == "cluster_down"
        dave.send_line("/quit")  # leaves while the node is cut off: told once Redis is back
        assert dave.closed()
        redis.start()
        for i in (0, 1, 2):  # ready once at start, and again now
            nodes[i].wait_log(lambda i=i: ready_count(nodes[i], f"n{i}") >= 2,
                              "resynchronised")
        # Back: lines flow again, and the users are still there for each other.
        alice.send_line("back again")
        assert bob.expect_event("message", sender="alice")["text"] == "back again"
        if persistent:  # dave's leave reached both, once, with an id of the cluster's
            alice.expect_event("message", sender="alice")
            for who in (alice, bob):
                got = [json.loads(line) for line in who.seen if line.startswith("{")]
                leaves = [e for e in got if e["type"] == "leave" and e["name"] == "dave"]
                assert len(leaves) == 1, got
                ids = [e["id"] for e in got if "id" in e]
                assert len(ids) == len(set(ids)), ids
        carol = json_client(nodes[2], "carol")
        carol.send_line("/who")
        names = {p["name"] for p in carol.expect_event("who")["users"]}
        assert names == {"alice", "bob", "carol"}  # dave is gone everywhere
    finally:
        for server in nodes:
            kill_quietly(server)
        redis.stop()


def test_a_file_shared_on_one_node_is_fetched_from_another(
    redis: RedisServer, tmp_path: Path
) -> None:
    shared = tmp_path / "shared-files"
    servers = [node(redis, tmp_path / f"node{i}", f"f{i}", "--files-dir", str(shared))
               for i in range(2)]
    try:
        alice = json_client(servers[0], "alice")
        bob = json_client(servers[1], "bob")
        data = bytes(range(256)) * 400
        alice.send_line(f"/send notes.bin {len(data)} {zlib.crc32(data):08x}")
        alice.send(data)
        shared_event = bob.expect_event("file", sender="alice")
        file_id = shared_event["file_id"]
        bob.send_line(f"/get {file_id}")
        header = bob.expect_event("download")
        assert header["length"] == len(data)
        assert bob.read_exact(len(data)) == data
        bob.send_line("/files")
        assert file_id in [f["file_id"] for f in bob.expect_event("files")["files"]]
        # Over HTTP from the node that did not store it, with real curl.
        url = f"http://127.0.0.1:{servers[1].http_port}/files/{file_id}/notes.bin"
        got = subprocess.run(["curl", "-sf", url], capture_output=True, timeout=DEADLINE)
        assert got.returncode == 0 and got.stdout == data
    finally:
        for server in servers:
            kill_quietly(server)


def test_workers_share_one_port(redis: RedisServer, tmp_path: Path) -> None:
    import sys

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat", "--no-console", "--workers", "2", "--cluster", redis.url,
         "--listen", f"tcp:{port}:interface=127.0.0.1", "--no-http",
         "--data-dir", str(tmp_path / "data"), "--node-id", "w"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    try:
        ready: set[str] = set()
        log: list[str] = []
        assert proc.stderr is not None
        deadline = time.monotonic() + DEADLINE
        while len(ready) < 2:
            left = deadline - time.monotonic()
            assert left > 0 and readable(proc.stderr.fileno(), left), "".join(log)
            raw = proc.stderr.readline()
            assert raw, "".join(log)
            log.append(raw.decode())
            m = re.search(r"Cluster node (w-w\d): ready", log[-1])
            if m:
                ready.add(m[1])
        clients = []
        for i in range(16):
            c = LineClient(port)
            c.send_line("/proto json")
            c.send_line(f"u{i}")
            c.expect(r'"type":"welcome"')
            clients.append(c)
        joined: set[str] = set()
        others = {f"u{i}" for i in range(1, 16)}
        while not others <= joined:  # u0 hears everyone arrive, whichever worker they are on
            joined.add(clients[0].expect_event("join")["name"])
        clients[0].send_line("/who")
        names = {p["name"] for p in clients[0].expect_event("who")["users"]}
        assert names == {f"u{i}" for i in range(16)}
        clients[-1].send_line("one port, many workers")
        for c in clients[:-1]:
            assert c.expect_event("message", sender="u15")["text"] == "one port, many workers"
        # Both workers hold some of the users (the kernel spreads connections).
        holders = redis_users(redis)
        assert {h["node"] for h in holders.values()} == {"w-w0", "w-w1"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0


def ready_count(server: RealServer, node_id: str) -> int:
    return sum(f"Cluster node {node_id}: ready" in line for line in server.log)


def redis_users(redis: RedisServer) -> dict[str, dict[str, object]]:
    """The cluster's ``users`` hash, read over a plain socket."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=DEADLINE) as s:
        s.sendall(b"*2\r\n$5\r\nHVALS\r\n$13\r\nlanchat:users\r\n")
        data = b""
        s.settimeout(DEADLINE)
        while True:
            data += s.recv(65536)
            lines = data.split(b"\r\n")
            count = int(lines[0][1:])
            if len(lines) >= 2 * count + 2:
                break
    values = [json.loads(lines[2 + 2 * i]) for i in range(count)]
    return {v["name"]: v for v in values}


def test_a_script_that_closes_after_its_lines_gets_them_all_back(
    nodes: list[RealServer],
) -> None:
    """``nc -N``'s way: lines, then EOF. Each comes back through Redis before the close."""
    watcher = json_client(nodes[1], "watcher")
    c = LineClient(nodes[0].port)
    lines = "".join(f"line {k}\r\n" for k in range(20))
    c.send(f"/proto json\r\nscripted\r\n{lines}".encode())
    c.sock.shutdown(socket.SHUT_WR)
    echoes = []
    try:
        while True:
            line = c.read_line()
            if line.startswith("{") and json.loads(line)["type"] == "message":
                echoes.append(json.loads(line)["text"])
    except EOFError:
        pass
    assert echoes == [f"line {k}" for k in range(20)]
    seen = [watcher.expect_event("message", sender="scripted")["text"] for _ in range(20)]
    assert seen == echoes


def test_a_name_given_before_the_node_is_in_the_cluster_waits_for_it(tmp_path: Path) -> None:
    """A client that connects as soon as the port listens is let in once the node
    has joined the cluster, not refused because it was still starting."""
    redis = RedisServer(tmp_path / "redis")
    redis.stop()  # its port is known; nothing answers there yet
    server = RealServer(tmp_path / "node", "--cluster", redis.url, "--node-id", "early",
                        settings="\n[cluster]\nnode_timeout = 10\n")
    try:
        c = LineClient(server.port)
        c.send_line("/proto json")
        c.send_line("early")
        redis.start()
        c.expect(r'"type":"welcome"')
        server.wait_for_log(r"Cluster node early: ready")
    finally:
        kill_quietly(server)
        redis.stop()


def test_a_transfer_connection_or_http_upload_may_reach_another_node(
    nodes: list[RealServer], tmp_path: Path
) -> None:
    """Behind one port (``--workers``, a load balancer) chat-tui's transfer
    connection and curl's upload land on any node: the session key works there."""
    alice = json_client(nodes[0], "alice")
    key = next(json.loads(line)["session"] for line in alice.seen
               if line.startswith('{"type":"welcome"'))
    bob = json_client(nodes[2], "bob")
    t = LineClient(nodes[1].port)
    t.send_line(f"/attach {key}")
    assert json.loads(t.expect(r'"type":"attached"'))["name"] == "alice"
    data = b"attached elsewhere" * 100
    t.send(f"/send far.txt {len(data)} {zlib.crc32(data):08x}\r\n".encode() + data)
    stored = t.expect_event("uploaded")["file"]
    assert stored["name"] == "far.txt" and stored["size"] == len(data)
    assert bob.expect_event("file", sender="alice")["file_id"] == stored["file_id"]
    body = tmp_path / "put.txt"
    body.write_bytes(b"put elsewhere")
    put = subprocess.run(
        ["curl", "-sf", "-T", str(body), "-H", f"Authorization: Bearer {key}",
         f"http://127.0.0.1:{nodes[2].http_port}/upload/"],
        capture_output=True, timeout=DEADLINE,
    )
    assert put.returncode == 0, put.stderr
    assert bob.expect_event("file", sender="alice")["name"] == "put.txt"
    alice.send_line("/quit")
    assert t.closed()  # the owner left: the transfer connection goes too
    bob.expect_event("leave", name="alice")
    late = LineClient(nodes[1].port)
    late.send_line(f"/attach {key}")
    late.expect(r'"code":"bad_session"')
