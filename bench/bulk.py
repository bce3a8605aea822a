"""Bulk bytes for the upload benchmark: the blocking reference sink, the sender, hash costs.

``sink``: the reference an upload through lanchat is judged against. A plain
blocking process: it listens on a loopback port, prints ``listening PORT``,
accepts **one** connection, ``recv_into`` a preallocated 4 MiB buffer and
``os.write`` of what came, until ``--size`` bytes; then ``fsync``, one
``OK`` line back (so the sender knows the bytes are stored), and once the
sender has closed, the file is removed and the process exits. Nothing else
runs in it, so its CPU (``/proc/PID/stat``) is what storing the bytes costs
the kernel and one thin loop: no hashing, no event loop, no threads.

``send``: the sender, the same for the sink and for lanchat. Blocking
``sendall`` of a seeded 4 MiB block, repeated (``block()``: the same bytes
every time, so the CRC-32 is known in advance), after an optional header
(lanchat's ``/send NAME SIZE CRC32`` line). It reads the target's CPU from
``/proc/PID/stat`` right before the first byte and right after the reply,
samples its RSS every 10 ms meanwhile (a thread), reads its socket on a
second thread so the reply is timed when it arrives, and prints one JSON
line. With ``baseline`` > 0 it first measures the target's CPU per second
before sending (the chat load running beside an upload), so the upload's
own CPU can be told apart from the chat's.

``hash_cost()``: CPU seconds per GiB of SHA-256 and CRC-32 over 4 MiB
chunks of the same block, on this CPU (``hashlib``, ``zlib``; also
``isal``/``zlib_ng`` CRC-32 where importable, for comparison only).

Usage: ``python bench/bulk.py sink --dir D --size N`` and
``python bench/bulk.py send '<json spec>'``. Standalone (no package imports):
the load generator runs it as a script.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time
import zlib
from typing import Any

GIB = 1024**3
#: The reference sink's receive buffer, and the sender's block.
BLOCK = 4 * 1024 * 1024
#: Seed of the block's bytes (random, so nothing on the way can compress them).
SEED = 20261124
CLK_TCK = os.sysconf("SC_CLK_TCK")


def block(seed: int = SEED) -> bytes:
    """The 4 MiB that every upload repeats."""
    return random.Random(seed).randbytes(BLOCK)


def chunks(size: int, data: bytes) -> list[memoryview]:
    """``size`` bytes as views of ``data`` (whole blocks, then the tail)."""
    mv = memoryview(data)
    whole, tail = divmod(size, len(data))
    return [mv] * whole + ([mv[:tail]] if tail else [])


def crc32_of(size: int, data: bytes) -> int:
    """CRC-32 of the ``size`` bytes an upload of ``data`` repeated sends."""
    crc = 0
    for c in chunks(size, data):
        crc = zlib.crc32(c, crc)
    return crc


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (dead ones too)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- hash costs ------------------------------------------------------------------


def _cpu_per_gib(fn: Any, views: list[memoryview], size: int) -> float:
    t0 = time.thread_time()
    fn(views)
    return (time.thread_time() - t0) * GIB / size


def hash_cost(size: int, data: bytes | None = None) -> dict[str, float]:
    """CPU s per GiB of SHA-256 and CRC-32 here, over ``size`` bytes in 4 MiB chunks."""
    views = chunks(size, data if data is not None else block())

    def sha(vs: list[memoryview]) -> None:
        h = hashlib.sha256()
        for v in vs:
            h.update(v)

    def crc_with(mod: Any) -> Any:
        def run(vs: list[memoryview]) -> None:
            c = 0
            for v in vs:
                c = mod.crc32(v, c)

        return run

    out = {
        "sha256_s_per_gib": round(_cpu_per_gib(sha, views, size), 3),
        "crc32_s_per_gib": round(_cpu_per_gib(crc_with(zlib), views, size), 3),
    }
    for name, module in (("isal", "isal.isal_zlib"), ("zlib_ng", "zlib_ng.zlib_ng")):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        out[f"crc32_{name}_s_per_gib"] = round(_cpu_per_gib(crc_with(mod), views, size), 4)
    return out


# --- the reference sink ------------------------------------------------------------


def serve_sink(directory: str, size: int, port: int = 0) -> None:
    """Accept one connection, store ``size`` bytes, fsync, answer ``OK``, clean up."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(1)
    print(f"listening {ls.getsockname()[1]}", flush=True)
    conn, _ = ls.accept()
    ls.close()
    fd, path = tempfile.mkstemp(prefix="refsink-", dir=directory)
    try:
        buf = bytearray(BLOCK)
        mv = memoryview(buf)
        left = size
        while left:
            n = conn.recv_into(mv, min(BLOCK, left))
            if not n:
                raise SystemExit(f"sender closed with {left} bytes missing")
            done = 0
            while done < n:
                done += os.write(fd, mv[done:n])
            left -= n
        os.fsync(fd)
        os.close(fd)
        fd = -1
        conn.sendall(b"OK\r\n")
        conn.recv(1)  # the sender has read its CPU figures and closed
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(path)
        conn.close()


# --- the sender ------------------------------------------------------------------


def send(spec: dict[str, Any]) -> dict[str, Any]:
    """Send ``size`` bytes (after ``header``) to ``port``; time it until ``reply``."""
    size, pid = int(spec["size"]), int(spec["pid"])
    reply = spec["reply"].encode()
    failure = [m.encode() for m in spec.get("failure", [])]
    views = chunks(size, block(int(spec.get("seed", SEED))))
    baseline = float(spec.get("baseline", 0))
    base_cpu_per_s = 0.0
    base_ns = [0, 0]
    if baseline > 0:
        c0, base_ns[0] = proc_cpu(pid), time.monotonic_ns()
        time.sleep(baseline)
        c1, base_ns[1] = proc_cpu(pid), time.monotonic_ns()
        base_cpu_per_s = (c1 - c0) / ((base_ns[1] - base_ns[0]) / 1e9)

    sock = socket.create_connection(("127.0.0.1", int(spec["port"])))
    if spec.get("greeting"):  # register first (not timed): wait for the welcome
        sock.sendall(spec["greeting"].encode())
        seen = b""
        while spec["greeting_reply"].encode() not in seen:
            got = sock.recv(65536)
            if not got:
                raise SystemExit("connection closed before the welcome")
            seen = (seen + got)[-4096:]

    answer: dict[str, Any] = {}
    answered = threading.Event()

    def read() -> None:
        tail = b""
        while True:
            try:
                got = sock.recv(65536)
            except OSError:
                got = b""
            if not got:
                answer.setdefault("error", "connection closed before the reply")
                break
            tail = (tail + got)[-8192:]
            if reply in tail:
                answer["t1"] = time.monotonic_ns()
                answer["cpu1"] = proc_cpu(pid)
                break
            bad = next((m for m in failure if m in tail), None)
            if bad is not None:
                answer["error"] = tail.decode("utf-8", "replace")[-500:]
                break
        answered.set()

    rss0 = proc_rss_kib(pid)
    peak = [rss0]

    def sample() -> None:
        while not answered.wait(0.01):
            peak[0] = max(peak[0], proc_rss_kib(pid))

    me0 = time.process_time()
    cpu0 = proc_cpu(pid)
    t0 = time.monotonic_ns()
    reader = threading.Thread(target=read, daemon=True)
    sampler = threading.Thread(target=sample, daemon=True)
    reader.start()
    sampler.start()
    if spec.get("header"):
        sock.sendall(spec["header"].encode())
    for v in views:
        sock.sendall(v)
    t_sent = time.monotonic_ns()
    if not answered.wait(float(spec.get("timeout", 600))):
        raise SystemExit("no reply in time")
    sampler.join()
    peak[0] = max(peak[0], proc_rss_kib(pid))
    sock.close()
    if "error" in answer:
        raise SystemExit(f"upload failed: {answer['error']}")
    secs = (answer["t1"] - t0) / 1e9
    cpu = answer["cpu1"] - cpu0
    return {
        "upload_bytes": size,
        "upload_s": round(secs, 3),
        "upload_mb_s": round(size / secs / 1e6, 1),
        "send_s": round((t_sent - t0) / 1e9, 3),
        "t0_ns": t0,
        "t1_ns": answer["t1"],
        "server_cpu_s": round(cpu, 3),
        "server_cpu_s_per_gib": round(cpu * GIB / size, 3),
        "baseline_cpu_per_s": round(base_cpu_per_s, 4),
        "baseline_t0_ns": base_ns[0],
        "baseline_t1_ns": base_ns[1],
        # the chat load's share (measured before the upload) taken out
        "upload_cpu_s_per_gib": round(max(0.0, cpu - base_cpu_per_s * secs) * GIB / size, 3),
        "sender_cpu_s": round(time.process_time() - me0, 3),
        "server_rss_before_kib": rss0,
        "server_rss_peak_kib": peak[0],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench/bulk.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sink")
    s.add_argument("--dir", required=True)
    s.add_argument("--size", type=int, required=True)
    s.add_argument("--port", type=int, default=0)
    c = sub.add_parser("send")
    c.add_argument("spec")
    h = sub.add_parser("hash")
    h.add_argument("--size", type=int, default=GIB)
    a = p.parse_args(argv)
    if a.cmd == "sink":
        serve_sink(a.dir, a.size, a.port)
    elif a.cmd == "send":
        print(json.dumps(send(json.loads(a.spec))), flush=True)
    else:
        print(json.dumps(hash_cost(a.size)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
