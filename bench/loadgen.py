"""The load generator: a separate process that plays many chat clients.

It speaks three dialects to one target: ``lanchat`` (our text mode: a name
line registers), ``irc`` (NICK/USER, JOIN #bench, PRIVMSG #bench) and ``raw``
(the trivial relay in ``bench/sink.py``, which needs no registration). Every
chat line it sends carries ``^SENDER:SEQ:T_NS`` (T_NS = this process's
monotonic clock at the write), so the receivers can check that nothing was
lost, duplicated or reordered and measure delivery latency without the
server's help. None of the three echoes a text line to its sender, so every
dialect delivers the same number of lines.

Receiving is kept cheap so that the generator is not what is measured: a
chunk is stored with its arrival time and its ``^`` bytes are counted; the
lines are parsed only after the measured window closes.

``light+upload`` runs the command in ``spec["upload"]`` (``bench/bulk.py
send``) while the clients chat, and takes the latency of the lines sent
during the upload (and during the sender's baseline second before it).

Usage: ``python bench/loadgen.py '<json spec>'``; prints one JSON line.
The server's CPU and memory are read from ``/proc/PID`` around the measured
window (``pid`` in the spec).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import random
import re
import resource
import sys
import time
from itertools import pairwise
from operator import itemgetter
from typing import Any

MARK = b"^"
_TOKEN = re.compile(rb"\^(\d+):(\d+):(\d+)")
_PAIR = re.compile(rb"\^(\d+):(\d+):")
CLK_TCK = os.sysconf("SC_CLK_TCK")
now_ns = time.monotonic_ns


# --- /proc -----------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    out = {"rss_kib": 0, "hwm_kib": 0}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    out["rss_kib"] = int(line.split()[1])
                elif line.startswith(b"VmHWM:"):
                    out["hwm_kib"] = int(line.split()[1])
    except OSError:
        pass
    return out


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


# --- one client --------------------------------------------------------------


class Client(asyncio.Protocol):
    """One connection. Before ``recording`` it looks for one marker at a time."""

    def __init__(self, gen: Generator, idx: int) -> None:
        self.gen = gen
        self.idx = idx
        self.transport: Any = None
        self.marker: bytes | None = None
        self.found: asyncio.Future[None] | None = None
        self.tail = b""
        self.recording = False
        self.chunks: list[bytes] = []
        self.times: list[int] = []
        self.count = 0
        self.expect = 0
        self.done = True
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.found is not None and not self.found.done():
            self.found.set_exception(ConnectionError(f"client {self.idx} lost"))

    def wait_for(self, marker: bytes) -> asyncio.Future[None]:
        self.marker = marker
        self.found = asyncio.get_running_loop().create_future()
        if marker in self.tail:
            self.tail = b""
            self.marker = None
            self.found.set_result(None)
        return self.found

    def data_received(self, data: bytes) -> None:
        if self.recording:
            self.chunks.append(data)
            self.times.append(now_ns())
            self.count += data.count(MARK)
            if not self.done and self.count >= self.expect and data.endswith(b"\n"):
                self.done = True
                self.gen.client_done()
            return
        if self.gen.dialect == "irc" and b"PING" in data:
            for line in data.split(b"\n"):
                if line.startswith(b"PING"):
                    self.transport.write(b"PONG" + line[4:].rstrip(b"\r") + b"\r\n")
        buf = self.tail + data
        if self.marker is not None and self.marker in buf:
            self.marker = None
            assert self.found is not None
            if not self.found.done():
                self.found.set_result(None)
            buf = b""
        self.tail = buf[-64:]

    def say(self, text: bytes) -> None:
        self.transport.write(self.gen.line_prefix + text + b"\r\n")

    def start_recording(self, expect: int) -> None:
        self.expect += expect
        if expect:
            self.done = False
        self.recording = True


# --- the generator -----------------------------------------------------------


class Generator:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.host = spec.get("host", "127.0.0.1")
        self.port = int(spec["port"])
        self.dialect = spec.get("dialect", "lanchat")
        self.pid = int(spec.get("pid", 0))
        self.clients: list[Client] = []
        self.line_prefix = b"PRIVMSG #bench :" if self.dialect == "irc" else b""
        self._waiting = 0
        self._all_done: asyncio.Future[None] | None = None
        self._sync = 0
        self.client_cls: type[Client] = LightClient if spec["task"].startswith("light") else Client

    # connecting and registering

    def _register(self, c: Client) -> tuple[bytes, bytes | None]:
        """What to send first, and the marker meaning 'registered'."""
        if self.dialect == "lanchat":
            return f"c{c.idx}\r\n".encode(), b"Welcome to the chat"
        if self.dialect == "irc":
            nick = f"c{c.idx}"
            return f"NICK {nick}\r\nUSER u 0 * :bench\r\n".encode(), b" 001 "
        return b"", b"=hi="  # the relay greets every connection it has accepted

    async def _connect_one(self, idx: int) -> Client:
        loop = asyncio.get_running_loop()
        c = self.client_cls(self, idx)
        for attempt in range(50):
            try:
                await loop.create_connection(lambda: c, self.host, self.port)
                break
            except OSError:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        first, marker = self._register(c)
        if marker is not None:
            fut = c.wait_for(marker)
            if first:
                c.transport.write(first)
            await asyncio.wait_for(fut, 120)
        if self.dialect == "irc" and self.spec.get("join", True):
            fut = c.wait_for(b" 366 ")
            c.transport.write(b"JOIN #bench\r\n")
            await asyncio.wait_for(fut, 120)
        return c

    async def connect(self, n: int) -> None:
        """Connect and register ``n`` more clients, ``connect_concurrency`` at a time."""
        # ngIRCd listens with a backlog of 10: a connect burst overflows its
        # accept queue and the dropped handshakes take ~100 s to recover.
        limit = int(self.spec.get("connect_concurrency", 8 if self.dialect == "irc" else 200))
        sem = asyncio.Semaphore(limit)

        async def one(i: int) -> Client:
            async with sem:
                return await self._connect_one(i)

        start = len(self.clients)
        got = await asyncio.gather(*(one(i) for i in range(start, start + n)))
        self.clients.extend(got)
        await self.barrier()

    async def barrier(self, timeout: float = 60) -> None:
        """Everything sent before now has reached every client."""
        if len(self.clients) < 2 or not self.spec.get("join", True):
            await asyncio.sleep(0.05)
            return
        self._sync += 1
        marker = f"=sync{self._sync}=".encode()
        futs = [c.wait_for(marker) for c in self.clients[1:]]
        self.clients[0].say(marker)
        await asyncio.wait_for(asyncio.gather(*futs), timeout)

    def client_done(self) -> None:
        self._waiting -= 1
        if self._waiting <= 0 and self._all_done is not None and not self._all_done.done():
            self._all_done.set_result(None)

    def close(self) -> None:
        for c in self.clients:
            if c.transport is not None:
                c.transport.close()

    # checking what arrived

    def check(
        self,
        receivers: list[Client],
        senders: list[int],
        per_sender: int,
        latency_sample: int = 64,
    ) -> dict[str, Any]:
        """Lost / duplicated / reordered counts over all receivers, and latency."""
        lost = dup = reordered = 0
        expected_full = [
            (str(s).encode(), str(q).encode()) for s in senders for q in range(per_sender)
        ]
        for c in receivers:
            buf = b"".join(c.chunks)
            pairs = _PAIR.findall(buf)
            pairs.sort(key=itemgetter(0))  # stable: per-sender order is kept
            own = str(c.idx).encode()
            expected = (
                [p for p in expected_full if p[0] != own] if c.idx in senders else (expected_full)
            )
            if pairs == expected:
                continue
            by_sender: dict[bytes, list[int]] = {}
            for s, q in pairs:
                by_sender.setdefault(s, []).append(int(q))
            for s in senders:
                if s == c.idx:
                    continue
                seqs = by_sender.get(str(s).encode(), [])
                uniq = set(seqs)
                dup += len(seqs) - len(uniq)
                lost += sum(1 for q in range(per_sender) if q not in uniq)
                reordered += sum(1 for a, b in pairwise(seqs) if b < a)
        lat: list[float] = []
        rng = random.Random(1)
        sample = (
            receivers if len(receivers) <= latency_sample else rng.sample(receivers, latency_sample)
        )
        for c in sample:
            ends: list[int] = []
            total = 0
            for ch in c.chunks:
                total += len(ch)
                ends.append(total)
            buf = b"".join(c.chunks)
            times = c.times
            for m in _TOKEN.finditer(buf):
                i = bisect.bisect_left(ends, m.end())
                lat.append((times[min(i, len(times) - 1)] - int(m[3])) / 1e6)
        lat.sort()
        return {
            "lost": lost,
            "duplicated": dup,
            "reordered": reordered,
            "latency_ms_p50": percentile(lat, 50),
            "latency_ms_p99": percentile(lat, 99),
            "latency_samples": len(lat),
        }

    # tasks

    async def fanout(self) -> dict[str, Any]:
        """N clients, S senders x M lines at full speed, repeated R rounds."""
        sp = self.spec
        n, s_count, m, rounds = (
            int(sp["n"]),
            int(sp["senders"]),
            int(sp["messages"]),
            int(sp["rounds"]),
        )
        t_setup = time.monotonic()
        await self.connect(n)
        setup_s = time.monotonic() - t_setup
        mem_idle = proc_mem(self.pid) if self.pid else {}
        senders = self.clients[:s_count]
        sender_ids = [c.idx for c in senders]
        loop = asyncio.get_running_loop()
        deliveries = 0
        window_ns = 0
        timed_out = False
        cpu0, gcpu0 = proc_cpu(self.pid) if self.pid else 0.0, self_cpu()
        for r in range(rounds):
            self._waiting = 0
            for c in self.clients:
                exp = (s_count - 1) * m if c.idx in sender_ids else s_count * m
                c.start_recording(exp)
                self._waiting += 1
                deliveries += exp
            self._all_done = loop.create_future()
            t0 = now_ns()
            base = r * m
            for q in range(m):
                for c in senders:
                    c.say(b"^%d:%d:%d" % (c.idx, base + q, now_ns()))
            try:
                await asyncio.wait_for(self._all_done, float(sp.get("timeout", 60)))
            except TimeoutError:
                timed_out = True
                window_ns += now_ns() - t0
                break
            window_ns += max(c.times[-1] for c in self.clients if c.times) - t0
        cpu1, gcpu1 = proc_cpu(self.pid) if self.pid else 0.0, self_cpu()
        mem = proc_mem(self.pid) if self.pid else {}
        await asyncio.sleep(0.2)  # stragglers: duplicates would show up here
        secs = window_ns / 1e9
        result = self.check(self.clients, sender_ids, rounds * m)
        result.update(
            n=n,
            senders=s_count,
            messages=m,
            rounds=rounds,
            deliveries=deliveries,
            seconds=round(secs, 4),
            deliveries_per_s=round(deliveries / secs) if secs else None,
            server_cpu_s=round(cpu1 - cpu0, 3),
            server_cpu_us_per_delivery=round((cpu1 - cpu0) * 1e6 / deliveries, 3)
            if self.pid and deliveries
            else None,
            generator_cpu_s=round(gcpu1 - gcpu0, 3),
            server_rss_idle_kib=mem_idle.get("rss_kib"),
            server_peak_rss_kib=mem.get("hwm_kib"),
            setup_s=round(setup_s, 2),
            timed_out=timed_out,
        )
        return result

    async def rooms(self) -> dict[str, Any]:
        """N clients in R rooms of N/R (everyone also in the lobby, ``#bench`` on IRC);
        in every room one member says M lines at full speed, R rounds."""
        sp = self.spec
        n, r, m, rounds = int(sp["n"]), int(sp["rooms"]), int(sp["messages"]), int(sp["rounds"])
        t_setup = time.monotonic()
        await self.connect(n)
        sem = asyncio.Semaphore(8 if self.dialect == "irc" else 200)

        async def enter(c: Client) -> None:
            async with sem:
                room = f"#r{c.idx % r}"
                if self.dialect == "irc":
                    fut = c.wait_for(b" 366 ")
                    c.transport.write(f"JOIN {room}\r\n".encode())
                else:
                    fut = c.wait_for(f"Now talking in {room}".encode())
                    c.transport.write(f"/join {room}\r\n".encode())
                await asyncio.wait_for(fut, 120)

        await asyncio.gather(*(enter(c) for c in self.clients))
        await asyncio.sleep(0.5)  # the last joins' notices are on their way to the members
        setup_s = time.monotonic() - t_setup
        mem_idle = proc_mem(self.pid) if self.pid else {}
        groups = [[c for c in self.clients if c.idx % r == k] for k in range(r)]
        senders = [g[0] for g in groups]
        prefix = {c.idx: (f"PRIVMSG #r{c.idx % r} :".encode() if self.dialect == "irc"
                          else b"") for c in senders}
        loop = asyncio.get_running_loop()
        deliveries = window_ns = 0
        timed_out = False
        cpu0 = proc_cpu(self.pid) if self.pid else 0.0
        for rnd in range(rounds):
            self._waiting = 0
            for g in groups:
                for c in g[1:]:
                    c.start_recording(m)
                    self._waiting += 1
                    deliveries += m
            self._all_done = loop.create_future()
            t0 = now_ns()
            for q in range(m):
                for c in senders:
                    c.transport.write(
                        prefix[c.idx] + b"^%d:%d:%d\r\n" % (c.idx, rnd * m + q, now_ns())
                    )
            try:
                await asyncio.wait_for(self._all_done, float(sp.get("timeout", 60)))
            except TimeoutError:
                timed_out = True
                window_ns += now_ns() - t0
                break
            window_ns += max(c.times[-1] for c in self.clients if c.times) - t0
        cpu1 = proc_cpu(self.pid) if self.pid else 0.0
        mem = proc_mem(self.pid) if self.pid else {}
        await asyncio.sleep(0.2)  # stragglers: duplicates would show up here
        totals = {"lost": 0, "duplicated": 0, "reordered": 0}
        for g in groups:
            checked = self.check(g[1:], [g[0].idx], rounds * m, latency_sample=0)
            for k in totals:
                totals[k] += checked[k]
        latency = self.check(self.clients, [], 0)  # latency over a sample of everyone
        secs = window_ns / 1e9
        return {
            **totals,
            "latency_ms_p50": latency["latency_ms_p50"],
            "latency_ms_p99": latency["latency_ms_p99"],
            "n": n,
            "rooms": r,
            "messages": m,
            "rounds": rounds,
            "deliveries": deliveries,
            "seconds": round(secs, 4),
            "deliveries_per_s": round(deliveries / secs) if secs else None,
            "server_cpu_s": round(cpu1 - cpu0, 3),
            "server_cpu_us_per_delivery": round((cpu1 - cpu0) * 1e6 / deliveries, 3)
            if self.pid and deliveries else None,
            "server_rss_idle_kib": mem_idle.get("rss_kib"),
            "server_peak_rss_kib": mem.get("hwm_kib"),
            "setup_s": round(setup_s, 2),
            "timed_out": timed_out,
        }

    async def light(self, upload: dict[str, Any] | None = None) -> dict[str, Any]:
        """``n`` clients each sending ``rate`` lines/s for ``seconds`` (or for an upload)."""
        sp = self.spec
        n, rate = int(sp.get("n", 10)), float(sp.get("rate", 50))
        await self.connect(n)
        for c in self.clients:
            c.start_recording(0)
        loop = asyncio.get_running_loop()
        period = 1.0 / rate
        sent = [0] * n
        stop = asyncio.Event()

        async def talk(c: Client, offset: float) -> None:
            start = loop.time() + offset
            k = 0
            while not stop.is_set():
                delay = start + k * period - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                c.say(b"^%d:%d:%d" % (c.idx, k, now_ns()))
                k += 1
            sent[c.idx] = k

        talkers = [
            asyncio.ensure_future(talk(c, i * period / n)) for i, c in enumerate(self.clients)
        ]
        extra: dict[str, Any] = {}
        if upload is not None:
            await asyncio.sleep(0.3)
            # The upload comes from its own process (``bench/bulk.py send``), so
            # that pushing a GiB cannot delay these clients' lines in this one.
            proc = await asyncio.create_subprocess_exec(
                *upload["command"], stdout=asyncio.subprocess.PIPE
            )
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"upload process failed ({proc.returncode})")
            extra = json.loads(out.decode().strip().splitlines()[-1])
        else:
            await asyncio.sleep(float(sp.get("seconds", 3)))
        stop.set()
        await asyncio.gather(*talkers)
        # every line has been sent; wait for them to arrive
        deadline = loop.time() + 10
        for c in self.clients:
            c.expect = sum(sent) - sent[c.idx]
        while loop.time() < deadline and any(c.count < c.expect for c in self.clients):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        per_sender = min(sent)
        # Senders stop at slightly different counts: check the common prefix.
        for c in self.clients:
            c.chunks = [b"".join(c.chunks)]
            c.times = [c.times[-1] if c.times else 0]
        result = self._check_light(sent)
        # The lines sent while the upload was in flight (first byte to reply),
        # and those sent in the sender's baseline second before it (no upload).
        for key, start, end in (("upload", "t0_ns", "t1_ns"),
                                ("before_upload", "baseline_t0_ns", "baseline_t1_ns")):
            if not extra.get(end):
                continue
            window = sorted(
                lat
                for c in self.clients
                for t, lat in zip(c.sent_ns, c.lat, strict=True)  # type: ignore[attr-defined]
                if extra[start] <= t <= extra[end]
            )
            result[f"{key}_latency_ms_p50"] = percentile(window, 50)
            result[f"{key}_latency_ms_p99"] = percentile(window, 99)
            result[f"{key}_latency_samples"] = len(window)
        result.update(n=n, rate=rate, sent=sum(sent), per_sender_min=per_sender, **extra)
        return result

    def _check_light(self, sent: list[int]) -> dict[str, Any]:
        lost = dup = reordered = 0
        lat: list[float] = []
        for c in self.clients:
            by: dict[int, list[int]] = {}
            buf = c.chunks[0]
            for m in _TOKEN.finditer(buf):
                by.setdefault(int(m[1]), []).append(int(m[2]))
            for s, k in enumerate(sent):
                if s == c.idx:
                    continue
                seqs = by.get(s, [])
                uniq = set(seqs)
                dup += len(seqs) - len(uniq)
                lost += sum(1 for q in range(k) if q not in uniq)
                reordered += sum(1 for a, b in pairwise(seqs) if b < a)
        for c in self.clients:
            lat.extend(c.lat)  # type: ignore[attr-defined]
        lat.sort()
        return {
            "lost": lost,
            "duplicated": dup,
            "reordered": reordered,
            "latency_ms_p50": percentile(lat, 50),
            "latency_ms_p99": percentile(lat, 99),
            "latency_samples": len(lat),
        }

    async def idle(self) -> dict[str, Any]:
        n = int(self.spec["n"])
        t0 = time.monotonic()
        if n:
            await self.connect(n)
        await asyncio.sleep(float(self.spec.get("settle", 1.0)))
        mem = proc_mem(self.pid)
        return {"n": n, "setup_s": round(time.monotonic() - t0, 2), **mem}

    async def run(self) -> dict[str, Any]:
        task = self.spec["task"]
        try:
            if task == "fanout":
                return await self.fanout()
            if task == "light":
                return await self.light()
            if task == "light+upload":
                return await self.light(upload=self.spec["upload"])
            if task == "idle":
                return await self.idle()
            if task == "rooms":
                return await self.rooms()
            raise SystemExit(f"unknown task {task}")
        finally:
            self.close()


# Light-load latency is computed as lines arrive (few lines, exact times).
def _light_data_received(self: Client, data: bytes) -> None:
    t = now_ns()
    if not self.recording:
        return _plain_data_received(self, data)
    buf = self.tail + data
    lines = buf.split(b"\n")
    self.tail = lines.pop()
    for ln in lines:
        m = _TOKEN.search(ln)
        if m is not None:
            self.count += 1
            self.lat.append((t - int(m[3])) / 1e6)  # type: ignore[attr-defined]
            self.sent_ns.append(int(m[3]))  # type: ignore[attr-defined]
            self.chunks.append(ln + b"\n")
    self.times.append(t)


_plain_data_received = Client.data_received


class LightClient(Client):
    def __init__(self, gen: Generator, idx: int) -> None:
        super().__init__(gen, idx)
        self.lat: list[float] = []
        self.sent_ns: list[int] = []

    def start_recording(self, expect: int) -> None:
        self.tail = b""
        super().start_recording(expect)

    data_received = _light_data_received  # type: ignore[assignment]


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        import uvloop  # type: ignore[import-not-found]

        loop_name = "uvloop"
        runner: Any = uvloop.run
    except ImportError:
        loop_name = "asyncio"
        runner = asyncio.run
    gen = Generator(spec)
    result = runner(gen.run())
    result["loop"] = loop_name
    result["task"] = spec["task"]
    result["dialect"] = gen.dialect
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
