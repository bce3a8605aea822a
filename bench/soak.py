"""Soak run: many clients chatting for minutes beside a slow reader, a flooder, uploads,
an HTTP slowloris and an upload trickled a byte at a time.

``python -m bench.soak`` starts the server on loopback with its default
limits (loopback is exempt from the per-address caps, since every client
comes from there), then runs for ``--seconds``: ``--clients`` JSON clients
each say a tagged line every ``--interval`` seconds; one client registers
and never reads (it must be cut for its send queue); one client floods (it
must be cut for excess flood, then comes back and floods again); one client
uploads a file over and over; ``--slowloris`` HTTP connections each send a
header byte a second (each must be cut at the header deadline, then comes
back); one client declares a 60 MiB upload and sends a byte a second (it
must be cut as too slow, then comes back). It prints the server's RSS as it
goes and, at the end, one JSON line: messages sent, deliveries, lost,
duplicated and reordered (all 0 for the well-behaved clients), their
delivery latency p50/p99, the RSS samples, and what happened to the
misbehaving ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from bench.run import REPO, Server, free_port

PAD = "x" * 200


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Chatter:
    """A well-behaved JSON client: says tagged lines, checks what comes back."""

    def __init__(self, name: str, senders: list[str]) -> None:
        self.name = name
        self.senders = senders
        self.next_seq: dict[str, int] = {}
        self.lost = self.dup = self.reordered = self.received = 0
        self.latencies: list[float] = []
        self.sent = 0
        self.done = asyncio.Event()

    async def run(self, port: int, start: float, stop: float, interval: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        writer.write(f"/proto json\n{self.name}\n".encode())
        await writer.drain()
        listener = asyncio.create_task(self.listen(reader, writer))
        await asyncio.sleep(max(0.0, start - time.time()) + random.random() * interval)
        while time.time() < stop:
            writer.write(f"soak {self.name} {self.sent} {time.time():.6f} {PAD}\n".encode())
            self.sent += 1
            await writer.drain()
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
        writer.write(f"soak {self.name} fin 0\n".encode())
        await writer.drain()
        await listener
        writer.close()

    async def listen(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        finished: set[str] = set()
        while len(finished) < len(self.senders):
            line = await reader.readline()
            if not line:
                return
            if not line.startswith(b"{"):
                continue  # the banner and prompt, sent before /proto json
            event = json.loads(line)
            if event["type"] == "ping":
                writer.write(b"/pong\n")
                continue
            if event["type"] != "message" or not event["text"].startswith("soak "):
                continue
            _, sender, seq, stamp, *_ = [*event["text"].split(" "), "", ""]
            if seq == "fin":
                finished.add(sender)
                continue
            n = int(seq)
            expected = self.next_seq.get(sender, 0)
            if n < expected:
                self.dup += 1
            elif n > expected:
                self.lost += n - expected
                self.reordered += 1
            self.next_seq[sender] = max(expected, n + 1)
            self.received += 1
            self.latencies.append(time.time() - float(stamp))


async def slow_reader(port: int) -> str:
    """Registers, never reads; returns how the server ended it."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(s, ("127.0.0.1", port))
    await loop.sock_sendall(s, b"sleeper\n")
    return "connected (never reads)"  # the leave notice others see says the rest


async def flooder(port: int, stop: float) -> int:
    """Blasts lines; reconnects after each cut. Returns how often it was cut."""
    cuts = 0
    n = 0
    while time.time() < stop:
        n += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"flooder{n}\n".encode())
        try:
            for _ in range(2000):
                writer.write(b"F" * 100 + b"\n")
                await writer.drain()
            while await reader.readline():
                pass
            cuts += 1
        except (ConnectionError, OSError):
            cuts += 1
        writer.close()
        await asyncio.sleep(2)
    return cuts


async def uploader(port: int, stop: float, size: int) -> tuple[int, int]:
    """Uploads ``size`` bytes again and again; returns (stored, failed)."""
    data = os.urandom(size)
    crc = f"{zlib.crc32(data):08x}"
    ok = failed = 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    writer.write(b"/proto json\nuploader\n")
    while time.time() < stop:
        writer.write(f"/send soak.bin {size} {crc}\n".encode() + data)
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                return ok, failed + 1
            if not line.startswith(b"{"):
                continue
            event = json.loads(line)
            if event["type"] == "uploaded":
                ok += 1
                break
            if event["type"] == "error":
                failed += 1
                break
            if event["type"] == "ping":
                writer.write(b"/pong\n")
        await asyncio.sleep(1)
    writer.close()
    return ok, failed


async def slowloris(port: int, stop: float) -> int:
    """One HTTP request sent a byte a second, again and again; returns how often it was cut."""
    request = b"GET /files/" + b"a" * 32 + b"/x HTTP/1.1\r\nHost: soak\r\n" + b"X-Slow: 1\r\n" * 999
    cuts = 0
    while time.time() < stop:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for byte in request:
                if time.time() >= stop:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    if not await asyncio.wait_for(reader.read(4096), 1.0):
                        cuts += 1  # closed by the server
                        break
                except TimeoutError:
                    continue
        except (ConnectionError, OSError):
            cuts += 1
        writer.close()
    return cuts


async def trickler(port: int, stop: float) -> int:
    """Declares 60 MiB, sends a byte a second; returns how often it was cut as too slow."""
    cuts, n = 0, 0
    while time.time() < stop:
        n += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"trickler{n}\n/send slow.bin {60 * 1024 * 1024}\n".encode())
        try:
            while time.time() < stop:
                writer.write(b"t")
                await writer.drain()
                try:
                    line = await asyncio.wait_for(reader.readline(), 1.0)
                except TimeoutError:
                    continue
                if b"too slow" in line or not line:
                    cuts += 1
                    break
        except (ConnectionError, OSError):
            cuts += 1
        writer.close()
    return cuts


async def soak(args: argparse.Namespace, port: int, http_port: int, pid: int) -> dict[str, Any]:
    names = [f"c{i}" for i in range(args.clients)]
    chatters = [Chatter(n, names) for n in names]
    start = time.time() + 2 + args.clients / 200
    stop = start + args.seconds
    tasks = [asyncio.create_task(c.run(port, start, stop, args.interval)) for c in chatters]
    sleeper = await slow_reader(port)
    misbehaving = asyncio.gather(
        flooder(port, stop),
        uploader(port, stop, args.upload_size),
        asyncio.gather(*(slowloris(http_port, stop) for _ in range(args.slowloris))),
        trickler(port, stop),
    )
    samples: list[tuple[float, int]] = []
    while time.time() < stop:
        samples.append((round(time.time() - start, 1), rss_kib(pid)))
        print(f"[soak] t={samples[-1][0]:6.1f}s server RSS {samples[-1][1]} KiB", flush=True)
        await asyncio.sleep(min(5.0, max(0.5, args.seconds / 10)))
    cuts, (uploads_ok, uploads_failed), slow_cuts, trickle_cuts = await misbehaving
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    samples.append((round(time.time() - start, 1), rss_kib(pid)))
    lat = sorted(x for c in chatters for x in c.latencies)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None

    return {
        "clients": args.clients,
        "seconds": args.seconds,
        "messages_sent": sum(c.sent for c in chatters),
        "deliveries": sum(c.received for c in chatters),
        "lost": sum(c.lost for c in chatters),
        "duplicated": sum(c.dup for c in chatters),
        "reordered": sum(c.reordered for c in chatters),
        "latency_ms_p50": pct(0.50),
        "latency_ms_p99": pct(0.99),
        "rss_kib": samples,
        "slow_reader": sleeper,
        "flooder_cut": cuts,
        "uploads_ok": uploads_ok,
        "uploads_failed": uploads_failed,
        "slowloris_cut": sum(slow_cuts),
        "trickler_cut": trickle_cuts,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--clients", type=int, default=300)
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between a client's lines")
    p.add_argument("--upload-size", type=int, default=8 * 1024 * 1024)
    p.add_argument("--slowloris", type=int, default=50, help="HTTP connections trickling headers")
    p.add_argument("--header-timeout", type=float, help="the server's http_header_timeout")
    p.add_argument("--rate-window", type=float, help="the server's upload_rate_window")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="lanchat-soak-"))
    cfg = root / "soak.toml"
    limits = ["[limits]"]
    if args.header_timeout is not None:
        limits.append(f"http_header_timeout = {args.header_timeout}")
    if args.rate_window is not None:
        limits.append(f"upload_rate_window = {args.rate_window}")
    cfg.write_text("\n".join(limits) + "\n")
    port, http_port = free_port(), free_port()
    srv = Server(
        "lanchat",
        [sys.executable, "-m", "chat", "--no-console",
         "--listen", f"tcp:{port}:backlog=4096:interface=127.0.0.1",
         "--http", f"tcp:{http_port}:interface=127.0.0.1",
         "--data-dir", str(root / "data"), "--config", str(cfg)],
        port, cwd=str(REPO),
    )
    try:
        result = asyncio.run(soak(args, port, http_port, srv.pid))
    finally:
        srv.stop()
    log = srv.output()
    result["server_saw_send_queue_cut"] = "sleeper left (send queue exceeded)" in log
    result["server_saw_excess_flood"] = "left (excess flood)" in log
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
