"""The cluster: several server processes (nodes) serving one chat through Redis.

Every event the chat shows to more than one connection (a line, a join, a
leave, a rename, a file) goes through one Lua script that takes the next id
(``INCR``), appends historic ones to their room's stream (trimmed to
``history.max``), updates who is where (the ``users`` hash) and publishes it
on one channel, atomically: the channel's order is the order of ids, of the
streams and of the hash, and every node, the sender's own included, delivers
events in that order. A node delivers its own users' events when they come
back from Redis, so its users and everyone else's see the same sequence.

Names are claimed in the ``users`` hash (a Lua check-and-set), so two users
racing for one name on two nodes get one winner. Each node refreshes a
liveness key every third of ``cluster.node_timeout``; a node whose key
lapsed is reaped by whichever node notices first (a script that removes it
from the node set, so it runs once): its users' leaves are published and
their names freed. A node that loses Redis refuses chat lines (``cluster_down``)
and, once both connections are back, resynchronises (users, rooms, recent
history, and the lines its users missed meanwhile) before taking lines again.
"""

from __future__ import annotations

import enum
import itertools
import json
import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from txredisapi import ConnectionError as RedisGone

from chat import events as ev
from chat.clustershare import Shared
from chat.config import ClusterSettings
from chat.mirror import Mirror, presence
from chat.redislink import Link, parse_url
from chat.redisschema import (
    CHANNEL,
    FILES,
    ID_KEY,
    LOG,
    NODES,
    SCRIPTS,
    SESSIONS,
    USERS,
    history_key,
    node_key,
)


class NodeState(enum.Enum):
    STARTING = "starting"
    SYNCING = "syncing"
    READY = "ready"
    DOWN = "down"
    STOPPED = "stopped"


class ClusterDown(Exception):
    """Redis is out of reach: nothing can be published now."""


class Node:
    """This process's part in the cluster."""

    log = Logger()

    def __init__(
        self, reactor: Any, chat: Any, settings: ClusterSettings, *, history_max: int
    ) -> None:
        self.reactor = reactor
        self.chat = chat
        self.settings = settings
        self.id = settings.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.history_max = history_max
        self.state = NodeState.STARTING
        self.mirror = Mirror(chat, self.id, self._forgotten)
        #: Names (lower case) whose ghost going someone waits for (``take_over``).
        self._freeing: dict[str, list[defer.Deferred[bool]]] = {}
        address = parse_url(settings.redis_url)
        self._cmd = Link(reactor, address, "commands", self._cmd_up, self._down)
        self._sub = Link(reactor, address, "pub/sub", self._sub_up, self._down, self._message)
        self._sha: dict[str, str] = {}
        self._subscribed = False
        self._buffer: list[str] | None = None
        self._seq = itertools.count(1)
        #: seq -> (audience, origin) of this node's events on their way through Redis.
        self._pending: dict[int, tuple[Any, Any]] = {}
        #: name -> the session key of a user of this node who just left.
        self._gone_sessions: dict[str, str] = {}
        #: Leaves made while cut off from Redis, published once it is back.
        self._later: list[tuple[ev.Event, Any]] = []
        #: seq -> who waits for that event to be back (``settled``).
        self._settling: dict[int, list[defer.Deferred[None]]] = {}
        #: The highest event id this node has delivered.
        self.last_id = 0
        self._beat = task.LoopingCall(self._heartbeat)
        self._beat.clock = reactor
        self._syncing: defer.Deferred[None] | None = None
        self._ever_ready = False
        #: Who waits for the node's first resync (``claim`` at start-up).
        self._waiting: list[defer.Deferred[bool]] = []
        #: Told of every change of state (the console, tests).
        self.watchers: list[Callable[[NodeState], object]] = []
        #: What other nodes tell this one (``tell``): op -> handler of its data.
        self.handlers: dict[str, Callable[[dict[str, Any]], object]] = {"reply": chat.told}
        #: Accounts and rooms' settings, the same on every node.
        self.shared = Shared(self)

    @property
    def ready(self) -> bool:
        return self.state is NodeState.READY

    @property
    def redis(self) -> Any:
        """The command connection while this node is in the cluster, else None."""
        return self._cmd.protocol if self.state is NodeState.READY else None

    def _set_state(self, state: NodeState) -> None:
        if state is not self.state:
            self.log.info("Cluster node {node}: {state}", node=self.id, state=state.value)
            self.state = state
            if state is NodeState.READY:
                self._ever_ready = True
            if state in (NodeState.READY, NodeState.DOWN, NodeState.STOPPED):
                waiting, self._waiting = self._waiting, []
                for d in waiting:
                    d.callback(state is NodeState.READY)
            for watcher in self.watchers:
                watcher(state)

    def _when_ready(self) -> defer.Deferred[bool]:
        """True once the node is in the cluster; False if Redis fails it first
        or ``cluster.node_timeout`` passes."""
        return self._wait_in(self._waiting)

    def _wait_in(self, waiting: list[defer.Deferred[bool]]) -> defer.Deferred[bool]:
        """A Deferred kept in ``waiting`` (whoever empties the list fires it True),
        False if that has not happened within ``cluster.node_timeout``."""
        d: defer.Deferred[bool] = defer.Deferred()
        waiting.append(d)

        def too_late() -> None:
            if d in waiting:
                waiting.remove(d)
                d.callback(False)

        call = self.reactor.callLater(self.settings.node_timeout, too_late)

        def done(result: bool) -> bool:
            if call.active():
                call.cancel()
            return result

        return d.addCallback(done)

    # --- connections ---

    def start(self) -> None:
        self._cmd.start()
        self._sub.start()

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Leave the cluster: what is on its way is published, then the node is forgotten."""
        if self._beat.running:
            self._beat.stop()
        pending = [d for d in [self._syncing] if d is not None]
        if pending:
            yield defer.DeferredList(pending)
        cmd = self._cmd.protocol
        if cmd is not None and self.state is NodeState.READY:
            try:
                # The users' leaves were published before this (they left at shutdown).
                yield cmd.execute_command("DEL", node_key(self.id))
                yield cmd.execute_command("SREM", NODES, self.id)
            except Exception:
                pass
        self._set_state(NodeState.STOPPED)
        yield self._cmd.stop()
        yield self._sub.stop()

    def drained(self, grace: float) -> defer.Deferred[None]:
        """Fires once this node's events on their way through Redis are back
        (or ``grace`` seconds have passed)."""
        if not self._pending:
            return defer.succeed(None)
        done: defer.Deferred[None] = defer.Deferred()
        # Events come back in the order sent (or all fail together): the last one's is enough.
        self._settling.setdefault(max(self._pending), []).append(done)
        return done.addTimeout(grace, self.reactor, onTimeoutCancel=lambda result, timeout: None)

    def _cmd_up(self, proto: Any) -> defer.Deferred[None]:
        @defer.inlineCallbacks
        def load() -> Any:
            for name, script in SCRIPTS.items():
                self._sha[name] = yield proto.execute_command("SCRIPT", "LOAD", script)
            self._maybe_sync()

        return load()

    def _sub_up(self, proto: Any) -> defer.Deferred[None]:
        self._buffer = []  # from now on: kept until the snapshot says what is new

        def subscribed(_: object) -> None:
            self._subscribed = True
            self._maybe_sync()

        d: defer.Deferred[None] = proto.subscribe(CHANNEL).addCallback(subscribed)
        return d

    def _down(self) -> None:
        if self.state is NodeState.STOPPED:
            return
        self._subscribed = self._subscribed and self._sub.protocol is not None
        if self._beat.running:
            self._beat.stop()
        if self.state is not NodeState.DOWN:
            self.log.warn("Cluster node {node}: lost Redis; chat lines are refused until it "
                          "is back", node=self.id)
        self._set_state(NodeState.DOWN)
        self._sha.clear()  # a Redis that restarted has none of the scripts
        self._buffer = None
        self._fail_pending()
        # One connection may still be up: drop it too, so both come back together.
        for link in (self._cmd, self._sub):
            if link.protocol is not None:
                link.protocol.transport.loseConnection()

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for seq, (_to, origin) in pending.items():
            self.chat.not_published(origin)
            self._settled(seq)

    def settled(self, peer: Any) -> defer.Deferred[None]:
        """Fires once every event ``peer``'s user said so far is back from Redis
        (delivered here) or failed: what it said is answered before what follows."""
        mine = [seq for seq, (_, origin) in self._pending.items()
                if origin is not None and origin.peer is peer]
        if not mine:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._settling.setdefault(max(mine), []).append(d)
        return d

    def _settled(self, seq: int) -> None:
        for d in self._settling.pop(seq, ()):
            if not d.called:  # (``drained`` may have given up on it)
                d.callback(None)

    def _maybe_sync(self) -> None:
        if (self._cmd.protocol is None or not self._subscribed or len(self._sha) < len(SCRIPTS)
                or self._syncing is not None
                or self.state in (NodeState.READY, NodeState.STOPPED)):
            return
        self._set_state(NodeState.SYNCING)
        self._syncing = self._sync().addErrback(self._sync_failed)

    def _sync_failed(self, failure: Failure) -> None:
        self._syncing = None
        self.log.failure("Cluster node {node}: resynchronising failed", failure, node=self.id)
        if self._cmd.protocol is not None:
            self._cmd.protocol.transport.loseConnection()  # back to DOWN; retried on return

    @defer.inlineCallbacks
    def _sync(self) -> Any:
        cmd = self._cmd.protocol
        yield self._alive(cmd)
        if not self._beat.running:  # alive while reading a long history too
            self._beat.start(self.settings.node_timeout / 3, now=False)
        snap = yield cmd.evalsha(self._sha["snapshot"], [ID_KEY, USERS], [])
        top = int(snap[0])
        if top < self.last_id:  # Redis lost its data: ids still never go back
            yield cmd.execute_command("SET", ID_KEY, self.last_id)
            top = self.last_id
        flat = snap[1]
        users = {flat[i]: json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
        yield self.shared.sync(cmd)
        files = yield cmd.execute_command("HVALS", FILES)
        for raw in files:
            self.mirror.file_recorded(json.loads(raw))
        history = yield self._histories(cmd)
        replayed = yield self._replay(cmd, top)
        # Lines missed are in the log replayed, or else (a long break) in the streams.
        missed = self.mirror.resync(users, history, top, 0 if replayed else self.last_id)
        self.last_id = max(self.last_id, top)
        yield self._reclaim(cmd, users)
        buffered, self._buffer = self._buffer or [], None
        self._syncing = None
        self._set_state(NodeState.READY)
        for raw in buffered:
            self._take(raw, after=top)
        if missed:
            self.log.info("Cluster node {node}: delivered {n} line(s) said while it was cut off",
                          node=self.id, n=missed)

    @defer.inlineCallbacks
    def _replay(self, cmd: Any, top: int) -> Any:
        """Other nodes' events this node missed while cut off (after ``last_id``,
        up to the snapshot's ``top``), applied in order from the log; False if
        the log no longer reaches back that far (or this node is new)."""
        if not self.last_id:
            return False
        entries = yield cmd.execute_command("XRANGE", LOG, "-", "+")
        taken = []
        for _, fields in entries:
            try:
                node, _, body = fields[1].split(" ", 2)
                event = ev.from_json(json.loads(body))
            except (ValueError, ev.BadEvent):
                continue
            taken.append((node, event))
        if not taken or getattr(taken[0][1], "id", 0) > self.last_id + 1:
            return False
        for node, event in taken:
            if self.last_id < getattr(event, "id", 0) <= top and node != self.id:
                try:
                    self.mirror.apply(event, node)
                except Exception:
                    self.log.failure("Cluster: replaying {type} failed", type=event.type)
        return True

    @defer.inlineCallbacks
    def _histories(self, cmd: Any) -> Any:
        """Each room's recent history, from its stream."""
        out: dict[str, list[ev.Event]] = {}
        cursor = "0"
        keys: list[str] = []
        while True:
            cursor, found = yield cmd.execute_command(
                "SCAN", cursor, "MATCH", history_key("*"), "COUNT", 1000
            )
            keys += found
            if str(cursor) == "0":
                break
        for key in keys:
            entries = yield cmd.execute_command(
                "XREVRANGE", key, "+", "-", "COUNT", self.history_max
            )
            events = []
            for _, fields in reversed(entries):
                try:
                    events.append(ev.from_json(json.loads(fields[1])))
                except (ValueError, ev.BadEvent):
                    self.log.warn("Skipped a bad history entry in {key}", key=key)
            out[key.removeprefix(history_key(""))] = events
        return out

    @defer.inlineCallbacks
    def _reclaim(self, cmd: Any, users: dict[str, dict[str, Any]]) -> Any:
        """After a break: this node's users hold their names again, and
        entries left from users who went meanwhile are published as leaves."""
        local = {u.name.lower(): u for u in self.chat.registry if not u.remote}
        later, self._later = self._later, []
        for event, to in later:  # the leaves made meanwhile, to whom they were for
            self._publish(cmd, event, to, None)
        told = {getattr(event, "name", "").lower() for event, _ in later}
        for key, entry in users.items():
            if entry.get("node") == self.id and key not in local and key not in told:
                event = self.chat.chat_event(ev.Leave, entry.get("name", key), "connection lost")
                self._publish(cmd, event, frozenset(), None)
        for key, user in local.items():
            entry = users.get(key)
            if entry is not None and entry.get("node") == self.id:
                continue
            won = yield cmd.evalsha(self._sha["claim"], [USERS],
                                    [key, json.dumps(presence(user, self.id)), self.id])
            if not won:
                self.chat.kick(user.name, "the name was taken while this server was cut off")
                continue
            for room in user.rooms:
                self._publish(cmd, self.chat.chat_event(ev.Join, user.name, room.name, True,
                                                        user.account), frozenset(), None)

    @defer.inlineCallbacks
    def _alive(self, cmd: Any) -> Any:
        ms = int(self.settings.node_timeout * 1000)
        yield cmd.execute_command("SET", node_key(self.id), self.id, "PX", ms)
        yield cmd.execute_command("SADD", NODES, self.id)

    @defer.inlineCallbacks
    def _heartbeat(self) -> Any:
        cmd = self._cmd.protocol
        if cmd is None or self.state not in (NodeState.READY, NodeState.SYNCING):
            return
        try:
            yield self._alive(cmd)
            if self.state is not NodeState.READY:
                return  # judging others waits until this node's picture is whole
            nodes = yield cmd.execute_command("SMEMBERS", NODES)
            for node in nodes:
                if node == self.id:
                    continue
                if not (yield cmd.execute_command("EXISTS", node_key(node))):
                    n = yield cmd.evalsha(
                        self._sha["reap"], [ID_KEY, CHANNEL, USERS, NODES, LOG],
                        [node, node_key(node), ev.iso_utc(self.reactor.seconds()),
                         "server lost"],
                    )
                    self.log.warn("Cluster node {node} stopped answering: {n} user(s) left",
                                  node=node, n=n)
        except RedisGone:
            pass  # Redis went away meanwhile: the link says so, and the node goes down
        except Exception:
            self.log.failure("Cluster heartbeat failed")

    # --- out ---

    def publish(self, event: ev.Event, to: Any, origin: Any) -> bool:
        """Send ``event`` to every node; this one delivers it to ``to`` when it
        comes back. False (not sent) while Redis is out of reach."""
        cmd = self._cmd.protocol
        # While resynchronising only the node itself publishes (what it holds).
        if self.state is not NodeState.READY or cmd is None:
            if isinstance(event, ev.Leave):
                self._later.append((event, to))  # told once Redis is back
                return True
            return False
        return self._publish(cmd, event, to, origin)

    def _publish(self, cmd: Any, event: ev.Event, to: Any, origin: Any) -> bool:
        seq = next(self._seq)
        self._pending[seq] = (to, origin)
        body = event.as_json()
        body.pop("id", None)
        room = getattr(event, "room", None)
        stream = history_key(room.lower()) if event.historic and room else ""
        args: list[Any] = [self.id, seq, json.dumps(body, ensure_ascii=False,
                                                     separators=(",", ":")),
                           stream, self.history_max]
        args += self.mirror.changes(event)
        if isinstance(event, ev.Leave):
            gone = self._gone_sessions.pop(event.name.lower(), None)
            if gone is not None:
                args += ["HDEL", SESSIONS, gone, ""]
        try:
            d = cmd.evalsha(self._sha["publish"], [ID_KEY, CHANNEL, LOG], args)
        except Exception:  # txredisapi raises at once on a connection just lost
            self._pending.pop(seq, None)
            self._down()
            if event.historic or isinstance(event, ev.Private):
                self.chat.not_published(origin)
                return True  # refused, not delivered here alone
            return False
        d.addErrback(self._not_published, seq)
        return True

    def _not_published(self, failure: Failure, seq: int) -> None:
        entry = self._pending.pop(seq, None)
        self.log.failure("Publishing an event failed", failure)
        if entry is not None:
            self.chat.not_published(entry[1])
        self._settled(seq)

    def claim(self, name: str, account: bool) -> defer.Deferred[bool]:
        """Hold ``name`` for a user of this node; False if another node's user has it.

        A node still starting (its first connection to Redis, its first
        resync) makes the name wait for it, up to ``cluster.node_timeout``: a
        client that connects as soon as the port listens is let in, not
        refused. A node that lost Redis refuses at once (``ClusterDown``).
        """
        if self.state in (NodeState.STARTING, NodeState.SYNCING) and not self._ever_ready:
            return self._when_ready().addCallback(
                lambda ready: self.claim(name, account) if ready else defer.fail(ClusterDown())
            )
        cmd = self._cmd.protocol
        if self.state is not NodeState.READY or cmd is None:
            return defer.fail(ClusterDown())
        entry = json.dumps({"name": name, "node": self.id, "account": account, "rooms": []})
        d: defer.Deferred[Any] = cmd.evalsha(self._sha["claim"], [USERS],
                                             [name.lower(), entry, self.id])
        return d.addCallback(lambda won: bool(int(won)))

    def forget_session(self, name: str, key: str) -> None:
        """``name`` (of this node) leaves: their key goes with their leave."""
        self._gone_sessions[name.lower()] = key

    def session_owner(self, key: str) -> defer.Deferred[Any]:
        """The user of another node whose session key ``key`` is, or None."""
        cmd = self.redis
        if cmd is None:
            return defer.succeed(None)

        def named(name: str | None) -> Any:
            user = self.chat.registry.get(name) if name else None
            return user if user is not None and user.remote else None

        d: defer.Deferred[Any] = cmd.execute_command("HGET", SESSIONS, key)
        return d.addCallback(named)

    def release(self, name: str) -> None:
        """A claimed name that was not used after all."""
        cmd = self._cmd.protocol
        if cmd is not None and self.state is NodeState.READY:
            cmd.evalsha(self._sha["release"], [USERS], [name.lower(), self.id]).addErrback(
                lambda f: None
            )

    def kick(self, user: Any, reason: str) -> None:
        """Ask the node that holds ``user`` (a remote one) to kick them."""
        self._control({"op": "kick", "node": user.peer.node, "name": user.name,
                       "reason": reason})

    def tell(self, op: str, data: dict[str, Any]) -> None:
        """Tell the other nodes of something done here (``handlers[op]`` there)."""
        self._control({**data, "op": op})

    def take_over(self, user: Any) -> defer.Deferred[bool]:
        """An account's password was given here while its session is on another
        node: that node closes it (``taken_over``); True once the name is free
        here, False if it is not within ``cluster.node_timeout``."""
        self._control({"op": "take_over", "node": user.peer.node, "name": user.name})
        return self._wait_in(self._freeing.setdefault(user.name.lower(), []))

    def _forgotten(self, name: str) -> None:
        for d in self._freeing.pop(name.lower(), ()):
            d.callback(True)

    def _control(self, body: dict[str, Any]) -> None:
        cmd = self._cmd.protocol
        if cmd is not None and self.state is NodeState.READY:
            cmd.execute_command("PUBLISH", CHANNEL, f"{self.id} - {json.dumps(body)}")

    # --- in ---

    def _message(self, raw: str) -> None:
        if self._buffer is not None:
            self._buffer.append(raw)
        elif self.state is NodeState.READY:
            self._take(raw, after=0)

    def _take(self, raw: str, after: int) -> None:
        try:
            node, seq, body = raw.split(" ", 2)
            data = json.loads(body)
            if seq == "-":
                self._controlled(node, data)
                return
            event = ev.from_json(data)
        except (ValueError, ev.BadEvent):
            self.log.warn("Cluster: ignored a bad message {raw!r}", raw=raw[:200])
            return
        event_id = getattr(event, "id", 0)
        if event_id <= after:
            return  # already in the snapshot this node synchronised from
        self.last_id = max(self.last_id, event_id)
        self.chat.store.saw_id(event_id)
        try:
            if node == self.id:
                entry = self._pending.pop(int(seq), None)
                if entry is not None:
                    self.chat.deliver(event, *entry)
                    self._settled(int(seq))
            elif not self.mirror.apply(event, node):
                self.log.warn("Cluster node {node}: declared dead by the others; rejoining",
                              node=self.id)
                self._cmd.protocol.transport.loseConnection()
        except Exception:
            self.log.failure("Cluster: delivering {type} failed", type=event.type)

    def _controlled(self, node: str, data: dict[str, Any]) -> None:
        op = data.get("op")
        if op in ("kick", "take_over") and data.get("node") == self.id:
            user = self.chat.registry.get(str(data.get("name", "")))
            if user is None or user.remote:
                return
            if op == "kick":
                self.chat.kick(user.name, str(data.get("reason", "")))
            else:
                self.chat.taken_over(user)
        elif node != self.id and isinstance(op, str) and op in self.handlers:
            self.handlers[op](data)

