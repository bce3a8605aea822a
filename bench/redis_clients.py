"""Redis client choice for lanchat's opt-in cluster mode, by measurement.

``python -m bench.redis_clients [--rounds N] [--quick] [--no-reconnect]``

Compares the two candidate clients, each running where it would run in lanchat:

* **txredisapi** on Twisted's default (epoll) reactor, Deferred-native;
* **redis-py's asyncio client** (``redis.asyncio``) on Twisted's asyncio reactor
  (``twisted.internet.asyncioreactor``). lanchat's code is Twisted code, so every
  redis-py call is made the way a protocol handler would make it: the coroutine is
  wrapped as ``Deferred.fromFuture(asyncio.ensure_future(...))`` and awaited from a
  Twisted coroutine. A "native asyncio" throughput figure (no bridge) is printed
  too, for reference.

What is measured, against a private ``redis-server`` started here on a free
loopback port (no persistence, fresh data directory), each client in its own
subprocess (the reactors differ) and the clients alternated over the rounds:

1. round-trip latency (p50/p99, µs) of 5000 sequential EVALSHA calls of lanchat's
   per-message write script (INCR + XADD MAXLEN ~ 500 + PUBLISH);
2. throughput of 50k such calls with up to 100 in flight (calls/s) and the client
   process's CPU seconds (``getrusage``) per 10k calls;
3. pub/sub receive on a second connection: messages/s and client CPU per 10k
   messages while the same process publishes 50k 200-byte messages (the CPU of a
   publish-only pass is also given, so the receive cost can be told apart), and
   publish→receive latency p50/p99 at light load (one message about every 1 ms,
   2000 messages).

Then, unless ``--no-reconnect``, each client goes through Redis being killed
(SIGKILL) and restarted empty on the same port after a short (2 s) and a long
(12 s) outage, while it writes one message every 100 ms through the script and a
subscriber listens for what the script publishes. The report says whether and
how fast commands and the subscription recover, what the writes issued during the
outage got (errors or a late success) and which disconnect/connect hooks fired;
a "naive" subscriber (subscribed once, no reconnection handling) shows what each
library does by default, and a last txredisapi run with a short reconnection
backoff (0.1 s initial, 1 s max instead of ~1 s and 10 s) shows what tuning buys.
A chat node must survive Redis going away and coming back, so this matters as
much as the speed figures.

Medians over the rounds are printed with the ratio txredisapi / redis-py for each
figure, then one JSON line with everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

REDIS_SERVER = "/usr/bin/redis-server"
HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent

# lanchat's per-message write: next id, append to the room's capped stream,
# fan out to the other nodes. Keys share a hash tag so it is valid in a cluster.
WRITE_LUA = """
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 500, '*', 'id', id, 'from', ARGV[1], 'body', ARGV[2])
redis.call('PUBLISH', KEYS[3], ARGV[3])
return id
"""
ROOM_KEYS = ["{room:bench}:seq", "{room:bench}:log", "{room:bench}:chan"]
BODY = "x" * 120

LAT_CALLS = 5000
TPUT_CALLS = 50_000
IN_FLIGHT = 100
PUBSUB_MSGS = 50_000
PUBSUB_SIZE = 200
LIGHT_MSGS = 2000
LIGHT_INTERVAL = 0.001
WARMUP = 500
MAX_CONNECTIONS = 256

CLIENTS = ("txredisapi", "redis-py")

Events = list[tuple[float, str]]


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A free loopback port: bind port 0, read it back, release it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def resp_command(port: int, *args: str) -> bytes:
    """Send one command to Redis over a plain socket; return the raw reply."""
    parts = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(b"".join(parts))
        return s.recv(65536)


class RedisServer:
    """A private redis-server on a fixed loopback port, which can be killed and restarted."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port = port
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            with contextlib.suppress(OSError):
                if resp_command(self.port, "PING").startswith(b"+PONG"):
                    return
            time.sleep(0.01)
        raise RuntimeError("redis-server did not answer PING")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# --------------------------------------------------------------------------- clients


class BenchClient(Protocol):
    """What the benchmark needs from a client; every call returns a Deferred."""

    name: str
    events: Events

    async def setup(self, port: int) -> None: ...
    def write(self, args: list[str]) -> Any: ...
    def publish(self, channel: str, payload: bytes) -> Any: ...
    async def subscribe(self, channel: str, on_message: Callable[[bytes], None]) -> None: ...
    async def subscribe_naive(self, channel: str, on_message: Callable[[bytes], None]) -> None: ...
    def naive_subscriber_state(self) -> str: ...
    async def connected_clients(self) -> int: ...
    async def close(self) -> None: ...


def _now() -> float:
    return time.monotonic()


class TxRedisClient:
    """txredisapi: a lazy single connection (it pipelines by itself) plus a subscriber."""

    name = "txredisapi"

    def __init__(self, backoff: tuple[float, float] | None = None) -> None:
        import txredisapi
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint

        self.tx = txredisapi
        self.reactor = reactor
        self.endpoint_cls = TCP4ClientEndpoint
        self.events: Events = []
        self.factories: list[Any] = []
        self.sha = ""
        self.backoff = backoff

    def _start(self, factory: Any) -> None:
        if self.backoff:
            # defaults: first retry after ~1 s, then x e up to 10 s (plus jitter)
            factory.initialDelay, factory.maxDelay = self.backoff
        factory.startConnecting(self.endpoint_cls(self.reactor, HOST, self.port))
        self.factories.append(factory)

    async def setup(self, port: int) -> None:
        tx = self.tx
        events = self.events

        class TrackedProtocol(tx.RedisProtocol):  # type: ignore[name-defined,misc]
            def connectionMade(self) -> Any:
                events.append((_now(), "cmd connected"))
                return super().connectionMade()

            def connectionLost(self, why: Any) -> None:
                events.append((_now(), "cmd connection lost"))
                super().connectionLost(why)

        self.port = port
        factory = tx.RedisFactory(None, None, 1, isLazy=True, charset=None, convertNumbers=False)
        factory.protocol = TrackedProtocol
        self._start(factory)
        self.rc = factory.handler
        await self.rc.ping()
        self.sha = await self.rc.script_load(WRITE_LUA)
        if isinstance(self.sha, bytes):
            self.sha = self.sha.decode()

    def write(self, args: list[str]) -> Any:
        d = self.rc.evalsha(self.sha, ROOM_KEYS, args)

        def reload_on_noscript(failure: Any) -> Any:
            # the script cache is empty after Redis restarts: load it and retry once
            failure.trap(self.tx.ScriptDoesNotExist)
            d2 = self.rc.script_load(WRITE_LUA)
            d2.addCallback(lambda _sha: self.rc.evalsha(self.sha, ROOM_KEYS, args))
            return d2

        d.addErrback(reload_on_noscript)
        return d

    def publish(self, channel: str, payload: bytes) -> Any:
        return self.rc.publish(channel, payload)

    def _subscriber_factory(
        self, channel: str, on_message: Callable[[bytes], None], resubscribe: bool, label: str
    ) -> Any:
        tx = self.tx
        events = self.events

        class Subscriber(tx.SubscriberProtocol):  # type: ignore[name-defined,misc]
            def connectionMade(self) -> Any:
                events.append((_now(), f"{label} connected"))
                d = super().connectionMade()
                if resubscribe or not self.factory.subscribed_once:
                    # nothing re-subscribes for us: do it on every (re)connection
                    self.factory.subscribed_once = True
                    d.addCallback(lambda _: self.subscribe(channel))
                    d.addCallback(self.factory.on_subscribed)
                return d

            def messageReceived(self, pattern: Any, chan: Any, message: Any) -> None:
                on_message(message)

            def connectionLost(self, why: Any) -> None:
                events.append((_now(), f"{label} connection lost"))
                super().connectionLost(why)

        class Factory(tx.SubscriberFactory):  # type: ignore[name-defined,misc]
            protocol = Subscriber

            def __init__(self) -> None:
                super().__init__(isLazy=True)
                # SubscriberFactory takes neither: without this "12" arrives as int 12
                self.charset = None
                self.convertNumbers = False
                self.subscribed_once = False
                self.first = defer_mod().Deferred()

            def on_subscribed(self, reply: Any) -> Any:
                events.append((_now(), f"{label} subscribed"))
                if not self.first.called:
                    self.first.callback(None)
                return reply

        factory = Factory()
        self._start(factory)
        return factory

    async def subscribe(self, channel: str, on_message: Callable[[bytes], None]) -> None:
        f = self._subscriber_factory(channel, on_message, resubscribe=True, label="sub")
        await f.first

    async def subscribe_naive(self, channel: str, on_message: Callable[[bytes], None]) -> None:
        self.naive = self._subscriber_factory(
            channel, on_message, resubscribe=False, label="naive-sub"
        )
        await self.naive.first

    def naive_subscriber_state(self) -> str:
        return f"connections in pool: {self.naive.size} (reconnects, but not re-subscribed)"

    async def connected_clients(self) -> int:
        info = await self.rc.info("clients")  # parsed to a dict of str
        return int(info["connected_clients"])

    async def close(self) -> None:
        for f in self.factories:
            await f.disconnect()


def defer_mod() -> Any:
    from twisted.internet import defer

    return defer


class RedisPyClient:
    """redis.asyncio on the asyncio reactor; each call bridged to a Deferred."""

    name = "redis-py"

    def __init__(self) -> None:
        import redis.asyncio as aredis
        from redis.asyncio.connection import Connection

        self.aredis = aredis
        self.events: Events = []
        events = self.events

        class TrackedConnection(Connection):
            async def on_connect_check_health(self, check_health: bool = True) -> None:
                # the handshake after every (re)connect; Connection.on_connect() is not
                # called on the reconnect path
                await super().on_connect_check_health(check_health)
                events.append((_now(), f"conn {id(self) % 10000} connected"))

            async def disconnect(self, *args: Any, **kwargs: Any) -> None:
                was = self.is_connected
                await super().disconnect(*args, **kwargs)
                if was:
                    events.append((_now(), f"conn {id(self) % 10000} disconnected"))

        self.conn_cls = TrackedConnection
        self.tasks: list[asyncio.Task[Any]] = []
        self.pubsubs: list[Any] = []

    def _d(self, coro: Coroutine[Any, Any, Any]) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromFuture(asyncio.ensure_future(coro))

    async def setup(self, port: int) -> None:
        # the default pool caps at 100 connections and *raises* MaxConnectionsError
        # past that (see default_pool_burst): 100 calls in flight + 2 subscribers need more
        self.r = self.aredis.Redis(host=HOST, port=port, max_connections=MAX_CONNECTIONS)
        # keep every other default (retry policy, timeouts) and only add the hooks
        self.r.connection_pool.connection_class = self.conn_cls
        self.script = self.r.register_script(WRITE_LUA)  # EVALSHA, SCRIPT LOAD on NOSCRIPT
        await self._d(self.r.ping())

    def write(self, args: list[str]) -> Any:
        return self._d(self.script(keys=ROOM_KEYS, args=args))

    def publish(self, channel: str, payload: bytes) -> Any:
        return self._d(self.r.publish(channel, payload))

    async def _subscribe(
        self, channel: str, on_message: Callable[[bytes], None], handle_errors: bool, label: str
    ) -> asyncio.Task[Any]:
        ps = self.r.pubsub(ignore_subscribe_messages=True)
        self.pubsubs.append(ps)
        events = self.events

        def handler(message: dict[str, Any]) -> None:
            on_message(message["data"])

        async def on_error(exc: BaseException, pubsub: Any) -> None:
            # run() gives up on a lost connection once the retries are spent;
            # with a handler it goes on, and the next read reconnects and
            # re-subscribes (PubSub.on_connect)
            events.append((_now(), f"{label} error {type(exc).__name__}"))
            await asyncio.sleep(0.2)

        await self._d(ps.subscribe(**{channel: handler}))
        events.append((_now(), f"{label} subscribed"))
        task = asyncio.ensure_future(ps.run(exception_handler=on_error if handle_errors else None))
        self.tasks.append(task)
        return task

    async def subscribe(self, channel: str, on_message: Callable[[bytes], None]) -> None:
        await self._subscribe(channel, on_message, True, "sub")

    async def subscribe_naive(self, channel: str, on_message: Callable[[bytes], None]) -> None:
        self.naive = await self._subscribe(channel, on_message, False, "naive-sub")

    def naive_subscriber_state(self) -> str:
        if not self.naive.done():
            return "run() still running"
        exc = self.naive.exception() if not self.naive.cancelled() else None
        return f"run() task ended: {type(exc).__name__}: {exc}"

    async def connected_clients(self) -> int:
        info = await self._d(self.r.info("clients"))
        return int(info["connected_clients"])

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for ps in self.pubsubs:
            with contextlib.suppress(Exception):
                await self._d(ps.aclose())
        await self._d(self.r.aclose())


# --------------------------------------------------------------------------- benchmark


def sleep(seconds: float) -> Any:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds)


def payload_now(size: int = PUBSUB_SIZE) -> bytes:
    stamp = b"%020d" % time.perf_counter_ns()
    return stamp + b"p" * (size - len(stamp))


async def run_window(n: int, window: int, call: Callable[[int], Any]) -> None:
    """n calls with up to `window` in flight: `window` loops that each await one call."""
    from twisted.internet.defer import Deferred, gatherResults

    counter = iter(range(n))

    async def loop() -> None:
        for i in counter:
            await call(i)

    await gatherResults([Deferred.fromCoroutine(loop()) for _ in range(window)])


async def measure(client: BenchClient, port: int, quick: bool) -> dict[str, Any]:
    from twisted.internet.defer import Deferred

    scale = 10 if quick else 1
    lat_calls, tput_calls = LAT_CALLS // scale, TPUT_CALLS // scale
    ps_msgs, light_msgs = PUBSUB_MSGS // scale, LIGHT_MSGS // scale
    res: dict[str, Any] = {}
    await client.setup(port)

    for i in range(WARMUP):
        await client.write(["alice", BODY, f"warm {i}"])

    # 1. sequential latency
    lat: list[float] = []
    for i in range(lat_calls):
        t0 = time.perf_counter_ns()
        await client.write(["alice", BODY, f"m {i}"])
        lat.append((time.perf_counter_ns() - t0) / 1000)
    res["evalsha_p50_us"] = percentile(lat, 50)
    res["evalsha_p99_us"] = percentile(lat, 99)

    # 2. throughput with up to IN_FLIGHT in flight
    c0, t0f = cpu_seconds(), time.perf_counter()
    await run_window(tput_calls, IN_FLIGHT, lambda i: client.write(["alice", BODY, f"m {i}"]))
    wall, cpu = time.perf_counter() - t0f, cpu_seconds() - c0
    res["evalsha_calls_per_s"] = tput_calls / wall
    res["evalsha_cpu_s_per_10k"] = cpu / tput_calls * 10_000
    res["server_connections_after_burst"] = await client.connected_clients()

    # 3a. publish-only cost (nobody subscribed to this channel)
    c0, t0f = cpu_seconds(), time.perf_counter()
    await run_window(ps_msgs, IN_FLIGHT, lambda i: client.publish("nobody", payload_now()))
    res["publish_only_cpu_s_per_10k"] = (cpu_seconds() - c0) / ps_msgs * 10_000
    res["publish_only_per_s"] = ps_msgs / (time.perf_counter() - t0f)

    # 3b. pub/sub receive throughput
    state: dict[str, Any] = {"n": 0, "target": 0, "done": None, "lat": None}

    def on_message(data: bytes) -> None:
        state["n"] += 1
        if state["lat"] is not None:
            state["lat"].append((time.perf_counter_ns() - int(data[:20])) / 1000)
        if state["n"] >= state["target"] and state["done"] is not None:
            d, state["done"] = state["done"], None
            d.callback(None)

    await client.subscribe("bench", on_message)
    from twisted.internet import reactor

    state.update(n=0, target=ps_msgs, done=Deferred())
    done = state["done"]
    done.addTimeout(120, reactor)
    c0, t0f = cpu_seconds(), time.perf_counter()
    await run_window(ps_msgs, IN_FLIGHT, lambda i: client.publish("bench", payload_now()))
    try:
        await done
    except Exception as exc:
        res.setdefault("problems", []).append(
            f"pub/sub: only {state['n']}/{ps_msgs} received ({type(exc).__name__})"
        )
    wall, cpu = time.perf_counter() - t0f, cpu_seconds() - c0
    res["sub_msgs_per_s"] = state["n"] / wall
    res["sub_cpu_s_per_10k"] = cpu / max(1, state["n"]) * 10_000
    res["sub_rx_cpu_s_per_10k"] = res["sub_cpu_s_per_10k"] - res["publish_only_cpu_s_per_10k"]

    # 3c. light-load publish->receive latency
    state.update(n=0, target=light_msgs, done=Deferred(), lat=[])
    done = state["done"]
    done.addTimeout(60, reactor)
    for _ in range(light_msgs):
        client.publish("bench", payload_now())
        await sleep(LIGHT_INTERVAL)
    with contextlib.suppress(Exception):
        await done
    res["sub_latency_p50_us"] = percentile(state["lat"], 50)
    res["sub_latency_p99_us"] = percentile(state["lat"], 99)
    res["sub_latency_n"] = len(state["lat"])
    await client.close()
    return res


async def default_pool_burst(port: int, n: int = 150) -> str | None:
    """redis-py with a default Redis(): what n concurrent commands get."""
    import redis.asyncio as aredis

    r = aredis.Redis(host=HOST, port=port)
    results = await asyncio.gather(*(r.ping() for _ in range(n)), return_exceptions=True)
    await r.aclose()
    errors = [e for e in results if isinstance(e, BaseException)]
    if not errors:
        return None
    return (
        f"default Redis(): {len(errors)}/{n} concurrent commands failed with "
        f"{type(errors[0]).__name__}: {errors[0]} (pool max_connections defaults to 100 "
        "and does not wait); this bench uses max_connections="
        f"{MAX_CONNECTIONS}, lanchat should use BlockingConnectionPool"
    )


async def native_asyncio_throughput(port: int, quick: bool) -> dict[str, float]:
    """redis-py without the Deferred bridge: plain asyncio tasks awaiting the script."""
    import redis.asyncio as aredis

    n = TPUT_CALLS // (10 if quick else 1)
    r = aredis.Redis(host=HOST, port=port)
    script = r.register_script(WRITE_LUA)
    for i in range(WARMUP):
        await script(keys=ROOM_KEYS, args=["alice", BODY, f"warm {i}"])
    counter = iter(range(n))

    async def loop() -> None:
        for i in counter:
            await script(keys=ROOM_KEYS, args=["alice", BODY, f"m {i}"])

    c0, t0 = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(IN_FLIGHT)))
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    lat: list[float] = []
    for i in range(LAT_CALLS // (10 if quick else 1)):
        t1 = time.perf_counter_ns()
        await script(keys=ROOM_KEYS, args=["alice", BODY, f"s {i}"])
        lat.append((time.perf_counter_ns() - t1) / 1000)
    await r.aclose()
    return {
        "native_evalsha_calls_per_s": n / wall,
        "native_evalsha_cpu_s_per_10k": cpu / n * 10_000,
        "native_evalsha_p50_us": percentile(lat, 50),
    }


# --------------------------------------------------------------------------- reconnection


async def reconnect_test(client: BenchClient, outage: float) -> dict[str, Any]:
    """Kill Redis under a writing+subscribed client, restart it empty, watch recovery."""
    tmp = Path(tempfile.mkdtemp(prefix="redis-reconnect-"))
    server = RedisServer(free_port(), tmp)
    server.start()
    writes: list[dict[str, Any]] = []
    received: list[tuple[float, int]] = []
    naive_received: list[float] = []
    try:
        await client.setup(server.port)

        def on_message(data: bytes) -> None:
            received.append((_now(), int(data.split(b" ")[1])))

        await client.subscribe(ROOM_KEYS[2], on_message)
        await client.subscribe_naive(ROOM_KEYS[2], lambda _d: naive_received.append(_now()))

        t_start = _now()
        t_kill = t_start + 1.0
        t_up = t_kill + outage
        t_end = t_up + 15.0
        killed = restarted = False
        seq = 0
        while _now() < t_end:
            now = _now()
            if not killed and now >= t_kill:
                server.kill()
                killed, t_kill = True, _now()
                client.events.append((t_kill, "** redis killed"))
            if not restarted and now >= t_up:
                server.start()
                restarted, t_up = True, _now()
                client.events.append((t_up, "** redis restarted (empty)"))
            seq += 1
            rec: dict[str, Any] = {"seq": seq, "t": _now(), "done": None, "ok": None}
            writes.append(rec)

            def done(result: Any, rec: dict[str, Any] = rec) -> None:
                rec["done"] = _now()
                rec["ok"] = True

            def failed(f: Any, rec: dict[str, Any] = rec) -> None:
                rec["done"] = _now()
                rec["ok"] = False
                rec["err"] = f"{type(f.value).__name__}: {str(f.value)[:60]}"

            try:
                d = client.write(["alice", "hi", f"seq {seq}"])
                d.addCallbacks(done, failed)
            except Exception as exc:  # raised synchronously
                rec.update(done=_now(), ok=False, err=f"{type(exc).__name__} (sync)")
            if restarted and received and received[-1][0] > t_up and now > t_up + 3:
                break
            await sleep(0.1)
        await sleep(1.0)
        before_up = [w for w in writes if t_kill <= w["t"] < t_up]
        after_up = [w for w in writes if w["t"] >= t_up]
        ok_after = [w["done"] for w in writes if w["ok"] and w["done"] > t_up]
        errs: dict[str, int] = {}
        for w in writes:
            if w["ok"] is False:
                errs[w["err"]] = errs.get(w["err"], 0) + 1
        out_lat = [w["done"] - w["t"] for w in before_up if w["done"] is not None]
        rx_after = [t for t, _s in received if t > t_up]
        result = {
            "outage_s": round(t_up - t_kill, 2),
            "writes_during_outage": len(before_up),
            "outage_writes_ok_late": sum(1 for w in before_up if w["ok"]),
            "outage_writes_failed": sum(1 for w in before_up if w["ok"] is False),
            "outage_writes_pending_at_end": sum(1 for w in before_up if w["done"] is None),
            "outage_write_max_wait_s": round(max(out_lat), 2) if out_lat else None,
            "first_error_after_kill_s": min(
                (round(w["done"] - t_kill, 2) for w in writes if w["ok"] is False), default=None
            ),
            "errors": errs,
            "cmd_recovered_after_restart_s": round(min(ok_after) - t_up, 2) if ok_after else None,
            "writes_after_restart_failed": sum(1 for w in after_up if w["ok"] is False),
            "sub_recovered_after_restart_s": round(min(rx_after) - t_up, 2) if rx_after else None,
            "naive_sub_got_messages_after_restart": any(t > t_up for t in naive_received),
            "naive_sub_state": client.naive_subscriber_state(),
            "events": [
                f"{t - t_kill:+.2f}s {what}" for t, what in client.events if t >= t_kill - 0.5
            ],
        }
        with contextlib.suppress(Exception):
            await client.close()
        return result
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- workers


def make_client(name: str, tx_backoff: str | None = None) -> BenchClient:
    if name == "redis-py":
        return RedisPyClient()
    if tx_backoff:
        initial, maximum = (float(x) for x in tx_backoff.split(","))
        return TxRedisClient((initial, maximum))
    return TxRedisClient()


def worker(args: argparse.Namespace) -> int:
    if args.worker == "redis-py":
        from twisted.internet import asyncioreactor

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
    from twisted.internet import reactor, task
    from twisted.internet.defer import Deferred, ensureDeferred

    out: dict[str, Any] = {"reactor": type(reactor).__name__}

    async def main() -> None:
        if args.reconnect:
            for outage in args.reconnect:
                out[f"outage_{outage:g}s"] = await reconnect_test(
                    make_client(args.worker, args.tx_backoff), outage
                )
            return
        out.update(await measure(make_client(args.worker), args.port, args.quick))
        if args.worker == "redis-py":
            out.update(
                await Deferred.fromFuture(
                    asyncio.ensure_future(native_asyncio_throughput(args.port, args.quick))
                )
            )
            problem = await Deferred.fromFuture(
                asyncio.ensure_future(default_pool_burst(args.port))
            )
            if problem:
                out.setdefault("problems", []).append(problem)

    def run(_reactor: Any) -> Awaitable[None]:
        return ensureDeferred(main())

    try:
        task.react(run)
    except SystemExit as exc:
        if exc.code:
            return int(exc.code)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def run_worker(name: str, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.redis_clients", "--worker", name, *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    raise RuntimeError(f"{name} worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


# --------------------------------------------------------------------------- report

FIGURES = [
    ("evalsha_p50_us", "EVALSHA sequential p50 (µs)", False),
    ("evalsha_p99_us", "EVALSHA sequential p99 (µs)", False),
    ("evalsha_calls_per_s", "EVALSHA, 100 in flight (calls/s)", True),
    ("evalsha_cpu_s_per_10k", "  client CPU s per 10k calls", False),
    ("server_connections_after_burst", "  Redis connections held after burst", False),
    ("publish_only_per_s", "PUBLISH only, 100 in flight (msg/s)", True),
    ("publish_only_cpu_s_per_10k", "  client CPU s per 10k publishes", False),
    ("sub_msgs_per_s", "pub/sub received (msg/s)", True),
    ("sub_cpu_s_per_10k", "  client CPU s per 10k msgs (pub+sub)", False),
    ("sub_rx_cpu_s_per_10k", "  of which receiving (minus publish-only)", False),
    ("sub_latency_p50_us", "pub->sub latency @1k msg/s p50 (µs)", False),
    ("sub_latency_p99_us", "pub->sub latency @1k msg/s p99 (µs)", False),
]


def fmt(v: float) -> str:
    if v != v:  # nan
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a tenth of the calls (a smoke run)")
    ap.add_argument("--no-reconnect", action="store_true")
    ap.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--reconnect", type=float, nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--tx-backoff", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)

    versions = {p: metadata.version(p) for p in ("txredisapi", "redis", "twisted")}
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions["hiredis"] = metadata.version("hiredis")
    server_version = subprocess.run(
        [REDIS_SERVER, "--version"], capture_output=True, text=True
    ).stdout.split()[2]
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {server_version}, "
        f"{versions}" + ("" if "hiredis" in versions else " (no hiredis: pure-Python parsers)")
    )

    tmp = Path(tempfile.mkdtemp(prefix="redis-bench-"))
    server = RedisServer(free_port(), tmp)
    server.start()
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in CLIENTS}
    extra = ["--port", str(server.port)] + (["--quick"] if args.quick else [])
    try:
        for rnd in range(args.rounds):
            order = CLIENTS if rnd % 2 == 0 else CLIENTS[::-1]
            for name in order:
                resp_command(server.port, "FLUSHALL")
                resp_command(server.port, "SCRIPT", "FLUSH")
                t0 = time.perf_counter()
                r = run_worker(name, extra)
                results[name].append(r)
                print(
                    f"round {rnd + 1} {name:<10} done in {time.perf_counter() - t0:5.1f}s "
                    f"({r['reactor']}): {r['evalsha_calls_per_s']:,.0f} calls/s, "
                    f"{r['sub_msgs_per_s']:,.0f} msg/s",
                    flush=True,
                )
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    med: dict[str, dict[str, float]] = {
        c: {k: statistics.median(r[k] for r in results[c]) for k, _l, _h in FIGURES}
        for c in CLIENTS
    }
    print(
        f"\nmedians of {args.rounds} rounds"
        + (" (QUICK: a tenth of the calls)" if args.quick else "")
    )
    print(
        f"{'figure':<44}{'txredisapi':>12}{'redis-py':>12}{'tx/py':>8}  better"
        "  (per-round range tx | py)"
    )
    for key, label, higher in FIGURES:
        a, b = med["txredisapi"][key], med["redis-py"][key]
        ratio = a / b if b else float("nan")
        better = ("tx" if (a > b) == higher else "py") if a != b else "="
        if key == "server_connections_after_burst":
            better = ""
        spread = " | ".join(
            f"{fmt(min(r[key] for r in results[c]))}-{fmt(max(r[key] for r in results[c]))}"
            for c in CLIENTS
        )
        print(f"{label:<44}{fmt(a):>12}{fmt(b):>12}{ratio:>8.2f}  {better:<6}  {spread}")
    native = {
        k: statistics.median(r[k] for r in results["redis-py"])
        for k in (
            "native_evalsha_calls_per_s",
            "native_evalsha_cpu_s_per_10k",
            "native_evalsha_p50_us",
        )
    }
    print(
        "redis-py without the Deferred bridge (plain asyncio tasks): "
        f"{native['native_evalsha_calls_per_s']:,.0f} calls/s, "
        f"{native['native_evalsha_cpu_s_per_10k']:.3f} CPU s/10k, "
        f"sequential p50 {native['native_evalsha_p50_us']:.0f} µs"
    )
    problems = {c: sorted({p for r in results[c] for p in r.get("problems", [])}) for c in CLIENTS}
    for c, ps in problems.items():
        for p in ps:
            print(f"PROBLEM {c}: {p}")

    reconnect: dict[str, Any] = {}
    if not args.no_reconnect:
        print("\nreconnection: Redis SIGKILLed under load, restarted empty on the same port")
        runs = [(name, name, ["--reconnect", "2", "12"]) for name in CLIENTS]
        runs.append(
            (
                "txredisapi, initialDelay=0.1 s maxDelay=1 s",
                "txredisapi",
                ["--reconnect", "12", "--tx-backoff", "0.1,1"],
            )
        )
        for label, name, flags in runs:
            reconnect[label] = run_worker(name, flags)
            for key, r in reconnect[label].items():
                if not key.startswith("outage_"):
                    continue
                print(f"\n[{label}] outage {r['outage_s']} s")
                for k, v in r.items():
                    if k != "events":
                        print(f"  {k}: {v}")
                print(
                    "  events: "
                    + "; ".join(r["events"][:14])
                    + (" ..." if len(r["events"]) > 14 else "")
                )
    print(
        "\nJSON "
        + json.dumps(
            {
                "versions": versions,
                "medians": med,
                "native": native,
                "rounds": results,
                "reconnect": reconnect,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
