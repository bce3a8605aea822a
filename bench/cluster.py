"""The cluster benchmark: 2 nodes + Redis on this machine against 1 node.

``python -m bench.cluster [--n 1000] [--rounds 3]`` (also ``python -m bench
--only cluster [same options]``). Prints a Markdown table with PASS/FAIL
lines, then one JSON line.

It starts its own ``redis-server`` on a free loopback port (no snapshots, no
AOF, a temporary directory), then alternates rounds (which side goes first
swaps every round) of:

- **single**: one ``python -m chat`` (no ``--cluster``) with N clients;
- **cluster**: two nodes (``--cluster redis://… --node-id A`` and ``B``)
  sharing that Redis (emptied with ``FLUSHALL`` before each round), the N
  clients spread half and half (client i on node i mod 2).

Every server gets the same ``[limits]`` as ``python -m bench`` (flood and
queue limits raised, pings pushed away), history on, no HTTP. The clients
come from a separate generator process (this file with ``--gen``; asyncio,
uvloop when importable) and speak JSON (``/proto json``, then the name), so
every line carries the server's event ``id``; a JSON client also gets its own
lines back, so **every client receives every line** and every client's
sequence can be compared with every other's.

Per side and round, after all N clients are in (and a barrier line seen by
everyone):

1. **paced fan-out**: S senders (spread over the nodes) say ``rate`` lines/s
   in total for ``paced_seconds``; deliveries/s achieved (first write → last
   line received), CPU µs per delivery summed over the server processes (and
   Redis) from ``/proc/PID/stat``, p50/p99 delivery latency over 64 sampled
   clients;
2. **burst fan-out**: S senders x M lines at full speed, ``burst_repeats``
   times (as ``python -m bench``'s fan-out): deliveries/s and CPU/delivery;
3. **light load**: one sender on node A says ``light_messages`` lines
   ``light_interval_ms`` apart; send → receive latency at ``probes`` clients
   on node B (cross-node) and ``probes`` on node A (same node; on the single
   server both sets are on the one node). The other clients stop reading
   meanwhile (their lines wait in the kernel; the server still writes to
   all N), so the generator's own turn over 1000 sockets does not land in
   the latency; afterwards they read everything and are checked too;
4. **light load in a room**: the same, with only the sender and the watched
   clients in ``#light`` (the other clients stay connected, in the lobby).

Every phase checks, for every client: nothing lost or duplicated (each
``^SENDER:SEQ`` of the phase exactly once), nothing reordered (event ids
strictly increasing, and each sender's lines in the order said), and that
all N clients saw the same sequence (a hash of the (id, sender, seq) list per
client: one distinct hash).

The generator's CPU is reported but never counted: only the servers' and
Redis's. Latency is one clock (the generator's ``CLOCK_MONOTONIC`` at the
write, and at the read).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import datetime
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python bench/cluster.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen
from bench.loadgen import now_ns, percentile, proc_cpu, proc_mem, self_cpu

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REDIS = shutil.which("redis-server")
#: Cross-node p99 at light load, the issue's target.
P99_TARGET_MS = 5.0
#: The phases of one side of a round, each checked for lost/dup/reordered and one order.
PHASES = ("paced", "burst", "light", "light_room")
#: One chat line as a JSON client gets it: the event id and the bench token.
_MSG = re.compile(rb'"id":(\d+),[^\n]*?"text":"\^(\d+):(\d+):(\d+)"')
_LISTENING = re.compile(r"chat listening on [0-9.]+:(\d+)")
#: Node log lines worth reporting (Twisted's ``[namespace#level]``).
_PROBLEM = re.compile(r"#(warn|error|critical)\]|Traceback|Unhandled")
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
#: Start-up information, not a problem: the fd limit caps the connection counts.
_BENIGN = ("Open files: connection caps lowered",)


def log(msg: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the generator (a separate process) -----------------------------------------------


class Gen:
    """N JSON clients over one or two nodes; the phases; the checks."""

    dialect = "json"
    line_prefix = b""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.ports: list[int] = [int(p) for p in spec["ports"]]
        self.procs: dict[str, int] = {k: int(v) for k, v in spec["procs"].items()}
        self.clients: list[loadgen.Client] = []
        self._waiting = 0
        self._all_done: asyncio.Future[None] | None = None
        self._sync = 0
        self.next_seq: dict[int, int] = {}

    # what loadgen.Client calls back
    def client_done(self) -> None:
        self._waiting -= 1
        if self._waiting <= 0 and self._all_done is not None and not self._all_done.done():
            self._all_done.set_result(None)

    def node_of(self, c: loadgen.Client) -> int:
        return c.idx % len(self.ports)

    def cpu(self) -> dict[str, float]:
        return {name: proc_cpu(pid) for name, pid in self.procs.items()}

    async def _connect_one(self, idx: int) -> loadgen.Client:
        loop = asyncio.get_running_loop()
        c = loadgen.Client(self, idx)  # type: ignore[arg-type]
        port = self.ports[idx % len(self.ports)]
        for attempt in range(50):
            try:
                await loop.create_connection(lambda: c, "127.0.0.1", port)
                break
            except OSError:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        fut = c.wait_for(b'"type":"history"')  # after welcome and participants
        c.transport.write(b"/proto json\r\nc%d\r\n" % idx)
        await asyncio.wait_for(fut, 120)
        return c

    async def connect(self, n: int) -> None:
        sem = asyncio.Semaphore(int(self.spec.get("connect_concurrency", 100)))

        async def one(i: int) -> loadgen.Client:
            async with sem:
                return await self._connect_one(i)

        self.clients = list(await asyncio.gather(*(one(i) for i in range(n))))
        await self.barrier()

    async def barrier(self) -> None:
        """Every client has seen a line said after everything before it (joins included)."""
        self._sync += 1
        marker = b"=sync%d=" % self._sync
        futs = [c.wait_for(marker) for c in self.clients]
        self.clients[0].say(marker)
        await asyncio.wait_for(asyncio.gather(*futs), 120)

    def _token(self, c: loadgen.Client) -> tuple[bytes, tuple[int, int]]:
        q = self.next_seq.get(c.idx, 0)
        self.next_seq[c.idx] = q + 1
        return b"^%d:%d:%d" % (c.idx, q, now_ns()), (c.idx, q)

    def _arm(self, lines: int, clear: bool = True,
             clients: list[loadgen.Client] | None = None) -> asyncio.Future[None]:
        """Every client (of ``clients``) is to get ``lines`` more lines (its own included)."""
        clients = self.clients if clients is None else clients
        for c in clients:
            if clear:
                c.chunks.clear()
                c.times.clear()
            c.recording = True
            c.expect = c.count + lines
            c.done = False
        self._waiting = len(clients)
        self._all_done = asyncio.get_running_loop().create_future()
        return self._all_done

    async def _finish(self, done: asyncio.Future[None], t0: int,
                      clients: list[loadgen.Client] | None = None) -> tuple[int, bool]:
        """Wait until every client has every line; the window's end (last arrival)."""
        timed_out = False
        try:
            await asyncio.wait_for(done, float(self.spec.get("timeout", 120)))
        except TimeoutError:
            timed_out = True
        clients = self.clients if clients is None else clients
        end = max((c.times[-1] for c in clients if c.times), default=t0)
        return end, timed_out

    # the phases

    async def fanout(self, rate: float, total: int, repeats: int = 1) -> dict[str, Any]:
        """``total`` lines from the senders in turn: ``rate`` lines/s, or all at
        once (``rate`` 0); ``repeats`` times, each after the last was delivered."""
        senders = self.clients[: int(self.spec["senders"])]
        sent: list[tuple[int, int]] = []
        window = 0
        timed_out = False
        cpu0, g0 = self.cpu(), self_cpu()
        for r in range(repeats):
            done = self._arm(total, clear=r == 0)
            t0 = now_ns()
            if rate <= 0:
                for k in range(total):
                    c = senders[k % len(senders)]
                    text, tok = self._token(c)
                    c.say(text)
                    sent.append(tok)
            else:
                k = 0
                while k < total:
                    due = min(total, int((now_ns() - t0) * rate / 1e9) + 1)
                    while k < due:
                        c = senders[k % len(senders)]
                        text, tok = self._token(c)
                        c.say(text)
                        sent.append(tok)
                        k += 1
                    if k < total:
                        wait = t0 + k * 1e9 / rate - now_ns()
                        await asyncio.sleep(max(0.0, wait / 1e9))
            end, timed_out = await self._finish(done, t0)
            window += end - t0
            if timed_out:
                break
        cpu1, g1 = self.cpu(), self_cpu()
        await asyncio.sleep(0.2)  # stragglers: duplicates would show up here
        res = self.check(sent, sample=64)
        deliveries = res["deliveries"]
        cpu = {k: round(cpu1[k] - cpu0[k], 3) for k in cpu0}
        secs = window / 1e9
        res.update(
            rate=rate,
            lines=total * repeats,
            seconds=round(secs, 4),
            deliveries_per_s=round(deliveries / secs) if secs else None,
            offered_per_s=round(rate * len(self.clients)) if rate > 0 else None,
            cpu_s=cpu,
            cpu_us_per_delivery=round(sum(cpu.values()) * 1e6 / deliveries, 3)
            if deliveries else None,
            cpu_us_per_delivery_by=({k: round(v * 1e6 / deliveries, 3) for k, v in cpu.items()}
                                    if deliveries else {}),
            generator_cpu_s=round(g1 - g0, 3),
            timed_out=timed_out,
        )
        return res

    async def light(self, count: int, interval_ms: float, probes: int,
                    room: str | None = None) -> dict[str, Any]:
        """One sender on node A; latency at ``probes`` clients on B and on A.

        In the lobby (``room`` None) all N get every line, and those not
        watched stop reading meanwhile; in ``room`` only the sender and the
        watched clients are members (the others stay connected, in the lobby).
        """
        sender = self.clients[0]
        far = [c for c in self.clients if c.idx % 2 == 1][:probes]
        near = [c for c in self.clients[1:] if c.idx % 2 == 0][:probes]
        members = [sender, *far, *near]
        quiet: list[loadgen.Client] = []
        if room is None:
            audience = self.clients
            watched = {c.idx for c in members}
            quiet = [c for c in self.clients if c.idx not in watched]
        else:
            audience = members
            await self._enter(members, room.encode())
        done = self._arm(count, clients=audience)
        for c in quiet:
            c.transport.pause_reading()
        loop = asyncio.get_running_loop()
        sent: list[tuple[int, int]] = []
        cpu0 = self.cpu()
        t0 = now_ns()
        start = loop.time()
        for k in range(count):
            delay = start + k * interval_ms / 1000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            text, tok = self._token(sender)
            sender.say(text)
            sent.append(tok)
        deadline = loop.time() + float(self.spec.get("timeout", 120))
        while any(c.count < c.expect for c in members) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        cpu1 = self.cpu()
        lat_far = self.latencies(far)
        lat_near = self.latencies(near)
        for c in quiet:
            c.transport.resume_reading()
        _end, timed_out = await self._finish(done, t0, audience)
        await asyncio.sleep(0.2)
        res = self.check(sent, sample=0, clients=audience)
        cpu = {k: round(cpu1[k] - cpu0[k], 3) for k in cpu0}
        res.update(
            room=room,
            members=len(audience),
            lines=count,
            interval_ms=interval_ms,
            probes=len(far),
            far_p50_ms=percentile(lat_far, 50),
            far_p99_ms=percentile(lat_far, 99),
            far_max_ms=lat_far[-1] if lat_far else None,
            far_samples=len(lat_far),
            near_p50_ms=percentile(lat_near, 50),
            near_p99_ms=percentile(lat_near, 99),
            near_samples=len(lat_near),
            cpu_s=cpu,
            timed_out=timed_out,
        )
        return res

    async def _enter(self, members: list[loadgen.Client], room: bytes) -> None:
        """``members`` join ``room`` (it becomes their current room); then a
        barrier line there, so every node knows every member before timing starts."""
        for c in members:
            c.recording = False
            c.tail = b""
        futs = [c.wait_for(b'"you":"c%d","room":"%s"' % (c.idx, room)) for c in members]
        for c in members:
            c.transport.write(b"/join %s\r\n" % room)
        await asyncio.wait_for(asyncio.gather(*futs), 120)
        self._sync += 1
        marker = b"=sync%d=" % self._sync
        futs = [c.wait_for(marker) for c in members]
        members[0].say(marker)
        await asyncio.wait_for(asyncio.gather(*futs), 120)

    # checking

    @staticmethod
    def latencies(clients: list[loadgen.Client]) -> list[float]:
        """Send → receive, ms: each line at the arrival of the chunk that completed it."""
        out: list[float] = []
        for c in clients:
            ends: list[int] = []
            total = 0
            for ch in c.chunks:
                total += len(ch)
                ends.append(total)
            buf = b"".join(c.chunks)
            for m in _MSG.finditer(buf):
                i = bisect.bisect_left(ends, m.end())
                out.append((c.times[min(i, len(c.times) - 1)] - int(m[4])) / 1e6)
        out.sort()
        return out

    def check(self, sent: list[tuple[int, int]], sample: int,
              clients: list[loadgen.Client] | None = None) -> dict[str, Any]:
        """Lost / duplicated / reordered over every client, and one order for all."""
        clients = self.clients if clients is None else clients
        want = set(sent)
        lost = dup = reordered = deliveries = 0
        orders: dict[str, int] = {}
        for c in clients:
            found = _MSG.findall(b"".join(c.chunks))
            deliveries += len(found)
            ids = [int(f[0]) for f in found]
            toks = [(int(f[1]), int(f[2])) for f in found]
            got = set(toks)
            lost += len(want - got)
            dup += len(toks) - len(got)
            reordered += sum(1 for a, b in pairwise(ids) if b < a)  # the one order of ids
            last: dict[int, int] = {}
            for s, q in toks:  # and each sender's lines in the order said
                if q < last.get(s, -1):
                    reordered += 1
                last[s] = q
            h = hashlib.sha1(b",".join(b"%s:%s:%s" % f[:3] for f in found)).hexdigest()[:12]
            orders[h] = orders.get(h, 0) + 1
        rng = random.Random(1)
        picked = clients if len(clients) <= sample else rng.sample(clients, sample)
        lat = self.latencies(picked) if sample else []
        return {
            "clients": len(clients),
            "deliveries": deliveries,
            "expected_deliveries": len(sent) * len(clients),
            "lost": lost,
            "duplicated": dup,
            "reordered": reordered,
            "orders": len(orders),  # 1: every client saw the same sequence
            "latency_ms_p50": percentile(lat, 50),
            "latency_ms_p99": percentile(lat, 99),
            "latency_samples": len(lat),
        }

    async def run(self) -> dict[str, Any]:
        sp = self.spec
        n = int(sp["n"])
        try:
            t = time.monotonic()
            await self.connect(n)
            out: dict[str, Any] = {"n": n, "nodes": len(self.ports),
                                   "setup_s": round(time.monotonic() - t, 2)}
            out["rss_kib_after_join"] = {k: proc_mem(p)["rss_kib"] for k, p in self.procs.items()}
            # What the servers burn with N idle clients: the floor under every phase.
            idle_s = float(sp.get("idle_seconds", 3))
            cpu0 = self.cpu()
            await asyncio.sleep(idle_s)
            cpu1 = self.cpu()
            out["idle_cpu_per_s"] = {k: round((cpu1[k] - cpu0[k]) / idle_s, 4) for k in cpu0}
            senders = int(sp["senders"])
            out["paced"] = await self.fanout(float(sp["rate"]),
                                             int(float(sp["rate"]) * float(sp["paced_seconds"])))
            out["burst"] = await self.fanout(0, senders * int(sp["burst_messages"]),
                                             int(sp["burst_repeats"]))
            light = (int(sp["light_messages"]), float(sp["light_interval_ms"]), int(sp["probes"]))
            out["light"] = await self.light(*light)
            out["light_room"] = await self.light(*light, room="#light")
            idle = sum(out["idle_cpu_per_s"].values())
            for phase in ("paced", "burst"):
                r = out[phase]
                busy = sum(r["cpu_s"].values()) - idle * r["seconds"]
                r["cpu_us_per_delivery_less_idle"] = (
                    round(busy * 1e6 / r["deliveries"], 3) if r["deliveries"] else None)
            out["peak_rss_kib"] = {k: proc_mem(p)["hwm_kib"] for k, p in self.procs.items()}
            return out
        finally:
            for c in self.clients:
                if c.transport is not None:
                    c.transport.close()


def gen_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    try:
        import uvloop  # type: ignore[import-not-found]

        loop_name, runner = "uvloop", uvloop.run
    except ImportError:
        loop_name, runner = "asyncio", asyncio.run
    result = runner(Gen(spec).run())
    result["loop"] = loop_name
    print(json.dumps(result), flush=True)


# --- the servers ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """A private ``redis-server`` on a free loopback port, no persistence."""

    def __init__(self, directory: Path) -> None:
        if REDIS is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / "redis.log"
        for _attempt in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory),
                 "--save", "", "--appendonly", "no", "--logfile", str(self.log_path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            end = time.monotonic() + 10
            while time.monotonic() < end and self.proc.poll() is None:
                # Ours, not another Redis that took the port first: its pid answers.
                info = self.command("INFO", "server")
                if f"process_id:{self.proc.pid}" in info:
                    return
                time.sleep(0.02)
            self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.log_path}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def command(self, *args: str) -> str:
        """One command over a plain socket; the reply, raw."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall((f"*{len(args)}\r\n" + "".join(
                    f"${len(a.encode())}\r\n{a}\r\n" for a in args)).encode())
                reply = s.recv(65536)
                if reply.startswith(b"$"):
                    size = int(reply[1:reply.index(b"\r\n")])
                    while len(reply) < size + len(b"$%d\r\n\r\n" % size):
                        more = s.recv(65536)
                        if not more:
                            break
                        reply += more
                return reply.decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Node:
    """``python -m chat`` on an ephemeral loopback port; a cluster node once ready."""

    def __init__(self, root: Path, config: Path, tag: str, cluster: str | None = None) -> None:
        self.tag = tag
        self.data = Path(tempfile.mkdtemp(prefix=f"data-{tag}-", dir=root))
        self.log_path = root / f"{self.data.name}.log"
        args = [sys.executable, "-m", "chat", "--no-console",
                "--listen", "tcp:0:backlog=4096:interface=127.0.0.1", "--no-http",
                "--data-dir", str(self.data), "--config", str(config)]
        if cluster:
            args += ["--cluster", cluster, "--node-id", tag]
        self._log = open(self.log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=str(REPO),
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.port = 0
        self._terminated = False
        ready = f"Cluster node {tag}: ready" if cluster else None
        end = time.monotonic() + 60
        while time.monotonic() < end:
            text = self.output()
            if not self.port and (m := _LISTENING.search(text)):
                self.port = int(m[1])
            if self.port and (ready is None or ready in text):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"node {tag} did not start: {self.output()[-2000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def problems(self) -> list[str]:
        """Warnings and errors in the log, each with its traceback (one string each)."""
        out: list[str] = []
        taking = False
        for ln in self.output().splitlines():
            if _STAMP.match(ln):
                taking = bool(_PROBLEM.search(ln)) and not any(b in ln for b in _BENIGN)
                if taking:
                    out.append(ln)
            elif taking and out:
                out[-1] += "\n" + ln
        return out

    def terminate(self) -> None:
        # Once: a second SIGTERM while it shuts down makes Twisted log
        # ReactorNotRunning at "critical".
        if self.proc.poll() is None and not self._terminated:
            self._terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


# --- the runner ----------------------------------------------------------------------


class ClusterBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="lanchat-cluster-bench-", dir=args.tmp))
        from bench.run import bench_limits, toml_value  # the same limits as python -m bench

        self.limits = bench_limits(0)
        self.config = self.root / "bench.toml"
        self.config.write_text("[limits]\n" + "".join(
            f"{k} = {toml_value(v)}\n" for k, v in self.limits.items()))
        self.redis: Redis | None = None

    def spec(self, ports: list[int], procs: dict[str, int]) -> dict[str, Any]:
        a = self.args
        return {"ports": ports, "procs": procs, "n": a.n, "senders": a.senders, "rate": a.rate,
                "paced_seconds": a.paced_seconds, "burst_messages": a.burst_messages,
                "burst_repeats": a.burst_repeats, "light_messages": a.light_messages,
                "light_interval_ms": a.light_interval_ms, "probes": a.probes,
                "timeout": a.timeout}

    def gen(self, spec: dict[str, Any]) -> dict[str, Any]:
        p = subprocess.run([sys.executable, "-m", "bench.cluster", "--gen", json.dumps(spec)],
                           capture_output=True, timeout=1800, cwd=str(REPO))
        out = p.stdout.decode().strip().splitlines()
        if p.returncode != 0 or not out:
            raise RuntimeError(f"generator failed ({p.returncode}): {p.stderr.decode()[-3000:]}")
        return json.loads(out[-1])

    def single(self) -> dict[str, Any]:
        node = Node(self.root, self.config, "single")
        try:
            r = self.gen(self.spec([node.port], {"server": node.pid}))
        finally:
            node.stop()
        r["log_problems"] = node.problems()
        self._log_side("single", r)
        shutil.rmtree(node.data, ignore_errors=True)
        return r

    def cluster(self) -> dict[str, Any]:
        assert self.redis is not None
        self.redis.command("FLUSHALL")
        nodes: list[Node] = []
        try:
            for tag in ("A", "B"):
                nodes.append(Node(self.root, self.config, tag, cluster=self.redis.url))
            a, b = nodes
            r = self.gen(self.spec([a.port, b.port],
                                   {"node A": a.pid, "node B": b.pid, "redis": self.redis.pid}))
        finally:
            for node in nodes:
                node.terminate()
            for node in nodes:
                node.stop()
        r["log_problems"] = [f"{n.tag}: {ln}" for n in nodes for ln in n.problems()]
        self._log_side("cluster", r)
        for node in nodes:
            shutil.rmtree(node.data, ignore_errors=True)
        return r

    @staticmethod
    def _log_side(name: str, r: dict[str, Any]) -> None:
        p, b, li, ro = r["paced"], r["burst"], r["light"], r["light_room"]
        log(f"{name}: paced {p['deliveries_per_s']:,}/s {p['cpu_us_per_delivery']} us/deliv "
            f"p99 {_f(p['latency_ms_p99'])} ms; burst {b['deliveries_per_s']:,}/s "
            f"{b['cpu_us_per_delivery']} us/deliv; light A->B p50/p99 lobby "
            f"{_f(li['far_p50_ms'])}/{_f(li['far_p99_ms'])} ms, room {_f(ro['far_p50_ms'])}/"
            f"{_f(ro['far_p99_ms'])} ms; lost/dup/reord/orders "
            + " ".join(f"{x['lost']}/{x['duplicated']}/{x['reordered']}/{x['orders']}"
                       for x in (p, b, li, ro))
            + (f"; {len(r['log_problems'])} log warning(s)" if r["log_problems"] else ""))

    def run(self) -> dict[str, Any]:
        from bench.run import alternating_pairs, raise_nofile

        a = self.args
        res: dict[str, Any] = {"meta": {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
            f"Linux {platform.release()}",
            "python": platform.python_version(),
            "redis": _redis_version(),
            "load_avg_before": os.getloadavg(),
            "nofile": raise_nofile(),
            **{k: getattr(a, k) for k in ("n", "rounds", "senders", "rate", "paced_seconds",
                                          "burst_messages", "burst_repeats", "light_messages",
                                          "light_interval_ms", "probes")},
            "limits_written": self.limits,
        }}
        self.redis = Redis(self.root / "redis")
        log(f"redis-server {res['meta']['redis']} on port {self.redis.port} (pid {self.redis.pid})")
        t0 = time.monotonic()
        try:
            res["rounds"] = alternating_pairs(a.rounds, {"single": self.single,
                                                         "cluster": self.cluster})
        finally:
            self.redis.stop()
        res["meta"]["wall_s"] = round(time.monotonic() - t0, 1)
        res["meta"]["load_avg_after"] = os.getloadavg()
        res["summary"] = summary(res)
        return res

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _redis_version() -> str | None:
    if REDIS is None:
        return None
    out = subprocess.run([REDIS, "--version"], capture_output=True, timeout=5).stdout.decode()
    m = re.search(r"v=(\S+)", out)
    return m[1] if m else out.strip()


# --- the report ----------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    got = sorted(v for v in values if v is not None)
    if not got:
        return None
    k = len(got) // 2
    return round(got[k] if len(got) % 2 else (got[k - 1] + got[k]) / 2, 3)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def summary(res: dict[str, Any]) -> dict[str, Any]:
    rounds = res["rounds"]
    s: dict[str, Any] = {}
    for side in ("single", "cluster"):
        rs = [r[side] for r in rounds]

        def med(phase: str, key: str, rs: list[dict[str, Any]] = rs) -> float | None:
            return _median([r[phase][key] for r in rs])

        by = {k: _median([r["paced"]["cpu_us_per_delivery_by"].get(k) for r in rs])
              for k in rs[0]["paced"]["cpu_us_per_delivery_by"]}
        s[side] = {
            "paced_deliveries_per_s": med("paced", "deliveries_per_s"),
            "paced_offered_per_s": rs[0]["paced"]["offered_per_s"],
            "paced_cpu_us_per_delivery": med("paced", "cpu_us_per_delivery"),
            "paced_cpu_us_per_delivery_by": by,
            "paced_p50_ms": med("paced", "latency_ms_p50"),
            "paced_p99_ms": med("paced", "latency_ms_p99"),
            "burst_deliveries_per_s": med("burst", "deliveries_per_s"),
            "burst_cpu_us_per_delivery": med("burst", "cpu_us_per_delivery"),
            "burst_cpu_us_per_delivery_by": {
                k: _median([r["burst"]["cpu_us_per_delivery_by"].get(k) for r in rs])
                for k in rs[0]["burst"]["cpu_us_per_delivery_by"]},
            "burst_p99_ms": med("burst", "latency_ms_p99"),
            "light_far_p50_ms": med("light", "far_p50_ms"),
            "light_far_p99_ms": med("light", "far_p99_ms"),
            "light_far_p99s_ms": [r["light"]["far_p99_ms"] for r in rs],
            "light_near_p50_ms": med("light", "near_p50_ms"),
            "light_near_p99_ms": med("light", "near_p99_ms"),
            "room_far_p50_ms": med("light_room", "far_p50_ms"),
            "room_far_p99_ms": med("light_room", "far_p99_ms"),
            "room_far_p99s_ms": [r["light_room"]["far_p99_ms"] for r in rs],
            "room_near_p50_ms": med("light_room", "near_p50_ms"),
            "room_near_p99_ms": med("light_room", "near_p99_ms"),
            "room_members": rs[0]["light_room"]["members"],
            "lost_dup_reordered": [sum(r[p][k] for r in rs for p in PHASES)
                                   for k in ("lost", "duplicated", "reordered")],
            "deliveries_checked": sum(r[p]["deliveries"] for r in rs
                                      for p in PHASES),
            "one_order": all(r[p]["orders"] == 1 for r in rs for p in PHASES),
            "timed_out": any(r[p]["timed_out"] for r in rs for p in PHASES),
            "setup_s": _median([r["setup_s"] for r in rs]),
            "idle_cpu_per_s": _median([sum(r["idle_cpu_per_s"].values()) for r in rs]),
            "rss_kib_after_join": rs[-1]["rss_kib_after_join"],
            "log_problems": sum(len(r["log_problems"]) for r in rs),
        }
    one, two = s["single"], s["cluster"]
    s["ratios"] = {
        k: [_ratio(r["cluster"][p][key], r["single"][p][key]) for r in rounds]
        for k, p, key in (("paced_cpu", "paced", "cpu_us_per_delivery"),
                          ("burst_cpu", "burst", "cpu_us_per_delivery"),
                          ("burst_rate", "burst", "deliveries_per_s"),
                          ("paced_rate", "paced", "deliveries_per_s"))
    }
    s["ratio"] = {k: _median(v) for k, v in s["ratios"].items()}
    s["targets"] = [
        (f"cross-node p99 at light load <= {P99_TARGET_MS:g} ms, lobby: all N get every "
         f"line (median of {len(rounds)} rounds)",
         f"{_f(two['light_far_p99_ms'])} ms (rounds: {_list(two['light_far_p99s_ms'])}; "
         f"single node {_f(one['light_far_p99_ms'])} ms)",
         two["light_far_p99_ms"] is not None and two["light_far_p99_ms"] <= P99_TARGET_MS),
        (f"cross-node p99 at light load <= {P99_TARGET_MS:g} ms, a room of "
         f"{two['room_members']} (N connected; median of {len(rounds)} rounds)",
         f"{_f(two['room_far_p99_ms'])} ms (rounds: {_list(two['room_far_p99s_ms'])}; "
         f"single node {_f(one['room_far_p99_ms'])} ms)",
         two["room_far_p99_ms"] is not None and two["room_far_p99_ms"] <= P99_TARGET_MS),
        ("cluster: nothing lost / duplicated / reordered",
         f"{two['lost_dup_reordered']} over {two['deliveries_checked']:,} deliveries",
         two["lost_dup_reordered"] == [0, 0, 0] and not two["timed_out"]),
        ("cluster: the same order at every member (every phase, every round)",
         "one sequence" if two["one_order"] else "**differs**", two["one_order"]),
        ("single node: nothing lost / duplicated / reordered, one order",
         f"{one['lost_dup_reordered']}, {'one sequence' if one['one_order'] else 'differs'}",
         one["lost_dup_reordered"] == [0, 0, 0] and one["one_order"] and not one["timed_out"]),
    ]
    return s


def _f(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _list(vs: list[float | None]) -> str:
    return ", ".join(_f(v) for v in vs)


def _int(v: float | None) -> str:
    return "-" if v is None else f"{round(v):,}"


def render(res: dict[str, Any]) -> str:
    m, s = res["meta"], res["summary"]
    one, two, ratio, ratios = s["single"], s["cluster"], s["ratio"], s["ratios"]
    la = " / ".join(f"{x:.1f}" for x in m["load_avg_before"])
    L = [
        f"Run: {m['date']} on {m['machine']}; Python {m['python']}; redis {m['redis']}; "
        f"N={m['n']} JSON clients, {m['rounds']} rounds (single and cluster alternating); "
        f"load average before {la}",
        "",
        f"Paced: {m['senders']} senders x {m['rate']:g} lines/s in total for "
        f"{m['paced_seconds']:g} s; burst: {m['senders']} x {m['burst_messages']} lines at full "
        f"speed, {m['burst_repeats']} times; light: {m['light_messages']} lines "
        f"{m['light_interval_ms']:g} ms apart from node A, latency at {m['probes']} clients on "
        f"node B. Medians of rounds; CPU = server processes (+ Redis) only.",
        "",
        "| | 1 node | 2 nodes + Redis | cluster / single (per round) |",
        "|---|---:|---:|---:|",
    ]

    def by(d: dict[str, float | None]) -> str:
        return " + ".join(f"{k} {_f(v, 3)}" for k, v in d.items())

    rows = [
        ("paced fan-out: deliveries/s (offered)",
         f"{_int(one['paced_deliveries_per_s'])} ({_int(one['paced_offered_per_s'])})",
         f"{_int(two['paced_deliveries_per_s'])} ({_int(two['paced_offered_per_s'])})",
         f"{_f(ratio['paced_rate'])}x ({_list(ratios['paced_rate'])})"),
        ("paced fan-out: CPU us per delivery",
         _f(one["paced_cpu_us_per_delivery"], 3),
         f"{_f(two['paced_cpu_us_per_delivery'], 3)} "
         f"({by(two['paced_cpu_us_per_delivery_by'])})",
         f"{_f(ratio['paced_cpu'])}x ({_list(ratios['paced_cpu'])})"),
        ("paced fan-out: delivery p50 / p99 ms",
         f"{_f(one['paced_p50_ms'])} / {_f(one['paced_p99_ms'])}",
         f"{_f(two['paced_p50_ms'])} / {_f(two['paced_p99_ms'])}", ""),
        ("burst fan-out: deliveries/s", _int(one["burst_deliveries_per_s"]),
         _int(two["burst_deliveries_per_s"]),
         f"{_f(ratio['burst_rate'])}x ({_list(ratios['burst_rate'])})"),
        ("burst fan-out: CPU us per delivery", _f(one["burst_cpu_us_per_delivery"], 3),
         f"{_f(two['burst_cpu_us_per_delivery'], 3)} "
         f"({by(two['burst_cpu_us_per_delivery_by'])})",
         f"{_f(ratio['burst_cpu'])}x ({_list(ratios['burst_cpu'])})"),
        ("burst fan-out: delivery p99 ms", _f(one["burst_p99_ms"]), _f(two["burst_p99_ms"]), ""),
        ("light load in the lobby (all N), A -> B: p50 / p99 ms (cluster: cross-node)",
         f"{_f(one['light_far_p50_ms'])} / {_f(one['light_far_p99_ms'])}",
         f"{_f(two['light_far_p50_ms'])} / {_f(two['light_far_p99_ms'])}",
         f"{_f(_ratio(two['light_far_p99_ms'], one['light_far_p99_ms']))}x p99"),
        ("light load, A -> A: p50 / p99 ms (same node)",
         f"{_f(one['light_near_p50_ms'])} / {_f(one['light_near_p99_ms'])}",
         f"{_f(two['light_near_p50_ms'])} / {_f(two['light_near_p99_ms'])}", ""),
        (f"light load in a room of {two['room_members']}, A -> B: p50 / p99 ms",
         f"{_f(one['room_far_p50_ms'])} / {_f(one['room_far_p99_ms'])}",
         f"{_f(two['room_far_p50_ms'])} / {_f(two['room_far_p99_ms'])}",
         f"{_f(_ratio(two['room_far_p99_ms'], one['room_far_p99_ms']))}x p99"),
        (f"light load in a room of {two['room_members']}, A -> A: p50 / p99 ms",
         f"{_f(one['room_near_p50_ms'])} / {_f(one['room_near_p99_ms'])}",
         f"{_f(two['room_near_p50_ms'])} / {_f(two['room_near_p99_ms'])}", ""),
        ("lost / duplicated / reordered (all phases and rounds)",
         "/".join(map(str, one["lost_dup_reordered"])),
         "/".join(map(str, two["lost_dup_reordered"])), ""),
        ("deliveries checked; same sequence at every member",
         f"{one['deliveries_checked']:,}; {'yes' if one['one_order'] else 'NO'}",
         f"{two['deliveries_checked']:,}; {'yes' if two['one_order'] else 'NO'}", ""),
        ("RSS after the joins, MiB",
         " + ".join(f"{v / 1024:.1f}" for v in one["rss_kib_after_join"].values()),
         " + ".join(f"{k} {v / 1024:.1f}" for k, v in two["rss_kib_after_join"].items()), ""),
        ("N clients connected and joined, s (median)", _f(one["setup_s"]), _f(two["setup_s"]),
         ""),
        ("CPU s per s with the N clients idle (all processes)", _f(one["idle_cpu_per_s"], 3),
         _f(two["idle_cpu_per_s"], 3), ""),
        ("warnings/errors in the server logs", str(one["log_problems"]),
         str(two["log_problems"]), ""),
    ]
    for row in rows:
        L.append("| " + " | ".join(row) + " |")
    L += ["", "| target | measured | met |", "|---|---|---|"]
    for name, val, ok in s["targets"]:
        L.append(f"| {name} | {val} | {'PASS' if ok else '**FAIL**'} |")
    problems = [p for r in res["rounds"] for side in ("single", "cluster")
                for p in r[side]["log_problems"]]
    if problems:
        L += ["", "Server log warnings/errors (first 10):", ""]
        for p in problems[:10]:
            lines = p.splitlines()
            L += [f"    {ln[:300]}" for ln in lines[:20]]
            if len(lines) > 20:
                L.append(f"    ... ({len(lines) - 20} more lines)")
    return "\n".join(L)


# --- command line --------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="clients (spread over the nodes)")
    p.add_argument("--rounds", type=int, default=3, help="alternating single/cluster rounds")
    p.add_argument("--senders", type=int, default=10)
    p.add_argument("--rate", type=float, default=20.0,
                   help="paced fan-out: lines per second, all senders together")
    p.add_argument("--paced-seconds", type=float, default=5.0)
    p.add_argument("--burst-messages", type=int, default=50, help="lines per sender per burst")
    p.add_argument("--burst-repeats", type=int, default=3)
    p.add_argument("--light-messages", type=int, default=200)
    p.add_argument("--light-interval-ms", type=float, default=10.0)
    p.add_argument("--probes", type=int, default=20,
                   help="light load: receivers watched on each node")
    p.add_argument("--timeout", type=float, default=120.0, help="per phase, seconds")
    p.add_argument("--tmp", default=None, help="where data directories go (default: $TMPDIR)")
    p.add_argument("--json-out", help="also write the JSON result to this file")
    p.add_argument("--gen", metavar="SPEC", help=argparse.SUPPRESS)  # the generator process
    a = p.parse_args(argv)
    if a.n < 2 or a.rounds < 1 or a.senders < 1 or a.senders > a.n:
        p.error("need --n >= 2, --rounds >= 1 and 1 <= --senders <= --n")
    return a


def run(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse(argv)
    b = ClusterBench(a)
    try:
        return b.run()
    finally:
        b.cleanup()


def from_bench_argv(argv: list[str]) -> list[str] | None:
    """``python -m bench --only cluster [options]``: this benchmark's own options, else None."""
    rest = list(argv)
    for i, arg in enumerate(rest):
        if arg == "--only" and i + 1 < len(rest) and rest[i + 1] == "cluster":
            return rest[:i] + rest[i + 2:]
        if arg == "--only=cluster":
            return rest[:i] + rest[i + 1:]
    return None


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.gen is not None:
        gen_main(a.gen)
        return 0
    res = run(argv)
    print(render(res))
    print()
    line = json.dumps(res, separators=(",", ":"))
    print(line)
    if a.json_out:
        Path(a.json_out).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
