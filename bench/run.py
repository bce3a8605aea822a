"""The benchmark runner: lanchat next to ngIRCd, on loopback, in one run.

``python -m bench`` (full, ~5-10 minutes), ``python -m bench --quick`` (~1-2
minutes) and ``python -m bench --smoke`` (seconds; what CI runs). Every
server is started here on a free loopback port with a fresh data directory;
the load comes from ``bench/loadgen.py`` in a separate process; CPU and memory
are read from ``/proc``. The results are a table and one JSON line.
See bench/README.md for what is measured and the results of a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import fcntl
import json
import math
import os
import platform
import pty
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import bulk

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NGIRCD = shutil.which("ngircd") or (
    "/usr/sbin/ngircd" if os.path.exists("/usr/sbin/ngircd") else None
)
GIB = 1024**3
#: The uploads of one round, in order (reversed every other round): lanchat
#: with 10 clients chatting and alone, the reference sink alone and with the
#: same chat load on an idle lanchat beside it.
UPLOAD_SIDES = ("lanchat", "lanchat_alone", "reference", "reference_chat")
#: Free space an upload place keeps beyond the upload (lanchat's disk margin is 64 MiB).
UPLOAD_SPARE = 256 * 1024**2


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def filesystem_of(path: Path) -> dict[str, str]:
    """The mount that holds ``path``: its type, device and mount point."""
    real = os.path.realpath(path)
    best = {"type": "?", "device": "?", "mount": "/"}
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best["mount"]):
                best = {"type": fstype, "device": dev, "mount": mnt}
    return best


def run_json(args: list[str], timeout: float = 900) -> dict[str, Any]:
    """Run a helper process; its last stdout line is a JSON object."""
    p = subprocess.run(args, capture_output=True, timeout=timeout, cwd=str(REPO))
    out = p.stdout.decode().strip().splitlines()
    if p.returncode != 0 or not out:
        raise RuntimeError(f"{args[1:3]} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    return json.loads(out[-1])


# --- servers ------------------------------------------------------------------


def bench_limits(upload_size: int) -> dict[str, Any]:
    """[limits] for the throughput runs: only keys that ``LimitSettings`` has.

    Flood control and per-address connection caps are being added to
    ``LimitSettings`` by another change; whatever such keys exist when this
    runs are raised (every bench client comes from 127.0.0.1).
    """
    sys.path.insert(0, str(REPO))
    from chat.config import LimitSettings

    out: dict[str, Any] = {}
    raise_words = (
        "flood",
        "burst",
        "rate",
        "per_second",
        "lines_per",
        "messages_per",
        "queue",
        "sendq",
        "send_buffer",
        "output",
        "backlog",
        "connections",
        "per_address",
        "per_peer",
        "per_ip",
        "clients",
        "max_users",
    )
    keep_words = ("delay", "penalty", "interval", "timeout", "seconds")
    for f in dataclasses.fields(LimitSettings):
        default = f.default
        name = f.name
        if name == "registration_timeout":
            out[name] = 600.0
        elif name in ("ping_interval", "ping_timeout"):
            out[name] = 3600.0  # idle bench clients do not answer pings
        elif name == "exempt_addresses":
            out[name] = ["127.0.0.1"]
        elif name == "max_upload_bytes":
            out[name] = max(int(default), upload_size, 2 * GIB)
        elif name in ("max_line_bytes", "disk_margin_bytes", "user_quota_bytes"):
            continue
        elif name in ("guest_quota_bytes", "account_quota_bytes",
                      "upload_reservation_per_address_bytes"):
            out[name] = 0  # the runs upload several GiB as one user
        elif any(w in name for w in keep_words):
            continue
        elif any(w in name for w in raise_words):
            if isinstance(default, bool):
                if "enabled" in name or name.endswith("flood") or "kick" in name:
                    out[name] = False
            elif isinstance(default, int):
                out[name] = max(default, 10**9)
            elif isinstance(default, float):
                out[name] = max(default, 1e9)
    return out


def alternating_pairs(
    count: int, sides: dict[str, Callable[[], dict[str, Any]]]
) -> list[dict[str, dict[str, Any]]]:
    """Run both ``sides`` back to back ``count`` times, swapping which goes first."""
    names = list(sides)
    return [
        {name: sides[name]() for name in (names if i % 2 == 0 else names[::-1])}
        for i in range(count)
    ]


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, list)):
        return json.dumps(v)
    return repr(v)


class Server:
    """One server process (ours, ngIRCd or a sink) on a loopback port."""

    def __init__(
        self, name: str, args: list[str], port: int, *, tty: bool = False, cwd: str | None = None
    ) -> None:
        self.name = name
        self.port = port
        self._pty_master: int | None = None
        self._drain: threading.Thread | None = None
        self.tty_bytes = 0
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if tty:
            master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            env["TERM"] = env.get("TERM") or "xterm-256color"
            if env["TERM"] == "dumb":
                env["TERM"] = "xterm-256color"
            env["COLUMNS"], env["LINES"] = "120", "40"
            self.proc = subprocess.Popen(
                args,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
            os.close(slave)
            self._pty_master = master
            self._drain = threading.Thread(target=self._drain_pty, daemon=True)
            self._drain.start()
        else:
            self.errfile = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=self.errfile,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
            )
        try:
            wait_port(port, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"{name} did not start: {self.output()[-2000:]}") from None

    def _drain_pty(self) -> None:
        assert self._pty_master is not None
        while True:
            try:
                data = os.read(self._pty_master, 65536)
            except OSError:
                return
            if not data:
                return
            self.tty_bytes += len(data)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if self._pty_master is not None:
            return ""
        self.errfile.seek(0)
        return self.errfile.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._pty_master is not None:
            try:
                os.close(self._pty_master)
            except OSError:
                pass


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="lanchat-bench-", dir=args.tmp))
        self.results: dict[str, Any] = {}
        self.config_limits: dict[str, Any] = {}
        self._tmpfs: Path | None = None

    # servers

    def lanchat(self, *, console: bool = False, tag: str = "", data: Path | None = None) -> Server:
        data = data or Path(tempfile.mkdtemp(prefix=f"data{tag}-", dir=self.root))
        self.config_limits = bench_limits(self.args.upload_size)
        cfg = data.parent / f"bench{tag}.toml"
        lines = ["[limits]"] + [f"{k} = {toml_value(v)}" for k, v in self.config_limits.items()]
        cfg.write_text("\n".join(lines) + "\n")
        port = free_port()
        args = [
            sys.executable,
            "-m",
            "chat",
            "--listen",
            f"tcp:{port}:backlog=4096:interface=127.0.0.1",
            "--no-http",
            "--data-dir",
            str(data),
            "--config",
            str(cfg),
        ]
        if not console:
            args.insert(3, "--no-console")
        s = Server("lanchat", args, port, tty=console, cwd=str(REPO))
        s.data_dir = data  # type: ignore[attr-defined]
        return s

    def ngircd(self) -> Server | None:
        if NGIRCD is None:
            return None
        d = Path(tempfile.mkdtemp(prefix="ngircd-", dir=self.root))
        port = free_port()
        (d / "motd").write_text("bench\n")
        (d / "ngircd.conf").write_text(
            f"""[Global]
Name = bench.local
Info = lanchat benchmark reference
Listen = 127.0.0.1
Ports = {port}
MotdFile = {d}/motd
PidFile = {d}/ngircd.pid
ServerUID = {os.getuid()}
ServerGID = {os.getgid()}

[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 16
MaxPenaltyTime = 0
PingTimeout = 3600
PongTimeout = 3600
IdleTimeout = 0

[Options]
DNS = no
Ident = no
PAM = no
# Relaxed flood protection for every client (also a larger send queue):
DefaultUserModes = F
"""
        )
        return Server("ngircd", [NGIRCD, "-n", "-f", str(d / "ngircd.conf")], port)

    def sink(self, mode: str) -> Server:
        port = free_port()
        return Server(f"sink-{mode}", [sys.executable, str(HERE / "sink.py"), mode,
                                       "--port", str(port)], port)

    # the generator

    def gen(self, spec: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
        p = subprocess.run(
            [sys.executable, str(HERE / "loadgen.py"), json.dumps(spec)],
            capture_output=True,
            timeout=timeout,
            cwd=str(REPO),
        )
        out = p.stdout.decode().strip().splitlines()
        if p.returncode != 0 or not out:
            raise RuntimeError(
                f"loadgen {spec['task']} failed ({p.returncode}): {p.stderr.decode()[-3000:]}"
            )
        return json.loads(out[-1])

    # sections

    def fanout(self, target: str, n: int, rounds: int, console: bool = False) -> dict[str, Any]:
        a = self.args
        srv = self._start(target, console=console)
        if srv is None:
            return {}
        try:
            dialect = {"lanchat": "lanchat", "ngircd": "irc", "relay": "raw"}[target]
            r = self.gen(
                {
                    "task": "fanout",
                    "port": srv.port,
                    "pid": srv.pid,
                    "dialect": dialect,
                    "n": n,
                    "senders": a.senders,
                    "messages": a.messages,
                    "rounds": rounds,
                }
            )
        finally:
            srv.stop()
        if console:
            r["console_tty_bytes"] = srv.tty_bytes  # what the console drew meanwhile
        log(
            f"fanout {target}{' +console' if console else ''} N={n}: "
            f"{r['deliveries_per_s']:,} deliveries/s, "
            f"{r['server_cpu_us_per_delivery']} us/delivery, p50 {_ms(r['latency_ms_p50'])} "
            f"p99 {_ms(r['latency_ms_p99'])}, lost {r['lost']} dup {r['duplicated']} "
            f"reordered {r['reordered']}, peak RSS {r['server_peak_rss_kib']} KiB"
        )
        return r

    def rooms(self, target: str) -> dict[str, Any]:
        """N clients in rooms of ten, everyone also in the lobby; one talker per room."""
        a = self.args
        srv = self._start(target)
        if srv is None:
            return {}
        try:
            r = self.gen(
                {
                    "task": "rooms",
                    "port": srv.port,
                    "pid": srv.pid,
                    "dialect": "irc" if target == "ngircd" else "lanchat",
                    "n": a.rooms_n,
                    "rooms": a.rooms_n // 10,
                    "messages": a.messages,
                    "rounds": a.rooms_rounds,
                }
            )
        finally:
            srv.stop()
        log(
            f"rooms {target} N={a.rooms_n} in {a.rooms_n // 10} rooms: "
            f"{r['deliveries_per_s']:,} deliveries/s, {r['server_cpu_us_per_delivery']} "
            f"us/delivery, p99 {_ms(r['latency_ms_p99'])}, lost {r['lost']} dup "
            f"{r['duplicated']} reordered {r['reordered']}, idle RSS {r['server_rss_idle_kib']} KiB"
        )
        return r

    def _start(self, target: str, console: bool = False) -> Server | None:
        if target == "lanchat":
            return self.lanchat(console=console, tag="-console" if console else "")
        if target == "ngircd":
            return self.ngircd()
        return self.sink("relay")

    def light(self, target: str) -> dict[str, Any]:
        srv = self._start(target)
        if srv is None:
            return {}
        try:
            r = self.gen(
                {
                    "task": "light",
                    "port": srv.port,
                    "pid": srv.pid,
                    "dialect": "irc" if target == "ngircd" else "lanchat",
                    "n": 10,
                    "rate": 50,
                    "seconds": self.args.light_seconds,
                }
            )
        finally:
            srv.stop()
        log(
            f"light {target}: p50 {_ms(r['latency_ms_p50'])} p99 {_ms(r['latency_ms_p99'])} "
            f"lost {r['lost']}"
        )
        return r

    def idle(self, target: str, n: int) -> dict[str, Any]:
        srv = self._start(target)
        if srv is None:
            return {}
        try:
            r = self.gen(
                {
                    "task": "idle",
                    "port": srv.port,
                    "pid": srv.pid,
                    "dialect": "irc" if target == "ngircd" else "lanchat",
                    "n": n,
                    # IRC clients are registered (001) but join no channel: a
                    # 10 000-member JOIN storm takes ngIRCd many minutes here.
                    "join": False,
                }
            )
        finally:
            srv.stop()
        log(f"idle {target} N={n}: RSS {r['rss_kib']} KiB (setup {r['setup_s']} s)")
        return r

    def upload(self) -> dict[str, Any]:
        """lanchat's ``/send`` next to the blocking reference sink, on tmpfs and on the disk.

        ``upload_runs`` rounds. Each round runs, on each filesystem, the four
        ``UPLOAD_SIDES`` back to back with the same bytes, in an order
        reversed from one round to the next: lanchat while 10 clients chat
        (its MB/s, chat latency and RSS), lanchat alone (its CPU: the chat
        load costs the server ~0.3 CPU s per second, as much as the target's
        margin), the reference sink alone, and the reference with the same
        chat on an idle lanchat beside it (the control); then it measures
        SHA-256 and CRC-32 here. The
        summary takes ratios within each round and their medians: the machine
        is shared and the disk's own speed moves by a third from one GiB to
        the next.
        """
        a = self.args
        data = bulk.block()
        places = self.upload_places()
        crcs: dict[int, int] = {}
        out: dict[str, Any] = {"filesystems": {}, "hash": []}
        for name, place in places.items():
            crcs.setdefault(place["size"], bulk.crc32_of(place["size"], data))
            out["filesystems"][name] = {**place, "path": str(place["path"]), "runs": []}
        for i in range(a.upload_runs):
            for name, place in places.items():
                size, d = place["size"], place["path"]
                order = UPLOAD_SIDES[:: 1 if i % 2 == 0 else -1]
                run: dict[str, Any] = {"order": list(order)}
                for side in order:
                    chat = side.endswith("chat")
                    if side.startswith("reference"):
                        run[side] = self._upload_reference(d, size, chat)
                    else:
                        run[side] = self._upload_lanchat(d, size, crcs[size], side == "lanchat")
                out["filesystems"][name]["runs"].append(run)
                ours, quiet = run["lanchat"], run["lanchat_alone"]
                ref, ref_chat = run["reference"], run["reference_chat"]
                log(
                    f"upload {_size(size)} on {name} ({i + 1}/{a.upload_runs}): "
                    f"lanchat+chat {ours['upload_mb_s']} MB/s, RSS "
                    f"+{(ours['server_rss_peak_kib'] - ours['server_rss_before_kib']) / 1024:.1f} "
                    f"MiB, chat p99 {_ms(ours.get('upload_latency_ms_p99'))}; lanchat alone "
                    f"{quiet['upload_mb_s']} MB/s, {quiet['server_cpu_s_per_gib']} CPU s/GiB; "
                    f"reference {ref['upload_mb_s']} MB/s, {ref['server_cpu_s_per_gib']} CPU "
                    f"s/GiB; "
                    f"reference+chat {ref_chat['upload_mb_s']} MB/s, chat p99 "
                    f"{_ms(ref_chat.get('upload_latency_ms_p99'))}"
                )
            h = bulk.hash_cost(max(p["size"] for p in places.values()), data)
            out["hash"].append(h)
            log(f"hashes here: {h}")
        return out

    def upload_places(self) -> dict[str, dict[str, Any]]:
        """Where the uploads go: a tmpfs (no disk) and the data directory's filesystem.

        Each gets the configured size if its free space allows (size, plus
        lanchat's disk margin, plus room to spare), else the largest power of
        two MiB that fits; the runner says so.
        """
        a = self.args
        places: dict[str, dict[str, Any]] = {}
        candidates: list[tuple[str, Path | None]] = [
            ("tmpfs", self.tmpfs_root()),
            ("disk", self.root),
        ]
        for name, where in candidates:
            if where is None:
                log("no tmpfs found (try --tmpfs DIR): the tmpfs upload pairs are skipped")
                continue
            d = Path(tempfile.mkdtemp(prefix=f"upload-{name}-", dir=where))
            fs = filesystem_of(d)
            if name == "disk" and fs["type"] == "tmpfs":
                log(f"warning: the data directory {d} is on tmpfs, not on a disk")
            size = a.upload_size
            free = shutil.disk_usage(d).free - UPLOAD_SPARE
            if free < size:
                size = 1024**2 * 2 ** int(math.log2(max(free, 2 * 1024**2) // 1024**2))
                log(f"{name} ({d}): {free / GIB:.2f} GiB free, uploads of {size / GIB:.3f} "
                    f"GiB there instead of {a.upload_size / GIB:.2f}")
            places[name] = {"path": d, "size": size, **fs}
        return places

    def tmpfs_root(self) -> Path | None:
        """A fresh directory under ``--tmpfs`` (taken as given) or /dev/shm (if a tmpfs)."""
        if self._tmpfs is None:
            base = Path(self.args.tmpfs or "/dev/shm")
            if not base.is_dir():
                return None
            if filesystem_of(base)["type"] != "tmpfs":
                if not self.args.tmpfs:
                    return None
                log(f"warning: --tmpfs {base} is not a tmpfs")
            self._tmpfs = Path(tempfile.mkdtemp(prefix="lanchat-bench-", dir=base))
        return self._tmpfs

    def _upload_lanchat(self, place: Path, size: int, crc: int, chat: bool) -> dict[str, Any]:
        """One ``/send`` of ``size`` bytes (CRC-32 declared), while 10 clients chat or alone."""
        data = Path(tempfile.mkdtemp(prefix="data-", dir=place))
        srv = self.lanchat(tag="-upload", data=data)
        try:
            send = {
                "port": srv.port,
                "pid": srv.pid,
                "size": size,
                "greeting": "uploader\r\n",
                "greeting_reply": "Welcome to the chat",
                "header": f"/send bench.bin {size} {crc:08x}\r\n",
                "reply": "-- Stored",
                "failure": ["\n!! "],
            }
            command = [sys.executable, str(HERE / "bulk.py"), "send"]
            if not chat:
                return run_json([*command, json.dumps(send)])
            send["baseline"] = self.args.upload_baseline  # the chat load's CPU per second
            return self.gen(
                {
                    "task": "light+upload",
                    "port": srv.port,
                    "pid": srv.pid,
                    "n": 10,
                    "rate": 50,
                    "upload": {"command": [*command, json.dumps(send)]},
                }
            )
        finally:
            srv.stop()
            shutil.rmtree(data, ignore_errors=True)
            cfg = place / "bench-upload.toml"
            cfg.unlink(missing_ok=True)

    def _upload_reference(self, place: Path, size: int, chat: bool) -> dict[str, Any]:
        """The same bytes into the blocking reference sink (``bench/bulk.py sink``).

        With ``chat``, 10 clients chat meanwhile through a lanchat server that
        has no upload: the same load on the machine's two cores as beside
        lanchat's own upload, so this is the control for its throughput and
        its chat latency.
        """
        sink = subprocess.Popen(
            [sys.executable, str(HERE / "bulk.py"), "sink", "--dir", str(place),
             "--size", str(size)],
            stdout=subprocess.PIPE,
            text=True,
        )
        srv: Server | None = None
        data: Path | None = None
        try:
            assert sink.stdout is not None
            port = int(sink.stdout.readline().split()[1])
            spec: dict[str, Any] = {"port": port, "pid": sink.pid, "size": size, "reply": "OK"}
            command = [sys.executable, str(HERE / "bulk.py"), "send"]
            if chat:
                data = Path(tempfile.mkdtemp(prefix="data-", dir=place))
                srv = self.lanchat(tag="-upload", data=data)
                spec["baseline"] = self.args.upload_baseline
                result = self.gen(
                    {
                        "task": "light+upload",
                        "port": srv.port,
                        "pid": srv.pid,
                        "n": 10,
                        "rate": 50,
                        "upload": {"command": [*command, json.dumps(spec)]},
                    }
                )
            else:
                result = run_json([*command, json.dumps(spec)])
            sink.wait(60)  # it removes its file once the sender has closed
            return result
        finally:
            if sink.poll() is None:
                sink.kill()
                sink.wait()
            if srv is not None:
                srv.stop()
            if data is not None:
                shutil.rmtree(data, ignore_errors=True)
                (place / "bench-upload.toml").unlink(missing_ok=True)

    def console(self) -> dict[str, Any]:
        """Fan-out at N=1000 without and with the console, ``console_runs`` pairs.

        Each pair runs back to back, alternating which goes first; the cost
        is taken per pair (one pair alone moved between -8% and +6% here).
        """
        n = 1000
        rounds = self.args.rounds.get(n, 3)
        runs = alternating_pairs(
            self.args.console_runs,
            {
                "no_console": lambda: self.fanout("lanchat", n, rounds),
                "console": lambda: self.fanout("lanchat", n, rounds, console=True),
            },
        )
        return {"runs": runs}

    def run(self) -> dict[str, Any]:
        a = self.args
        res = self.results
        res["meta"] = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
            f"{_mem_total()} GiB, Linux {platform.release()}",
            "python": platform.python_version(),
            "ngircd": _ngircd_version(),
            "mode": a.mode,
            "senders": a.senders,
            "messages": a.messages,
            "nofile": raise_nofile(),
        }
        res["meta"]["limits_written"] = bench_limits(a.upload_size)
        log(f"lanchat [limits] for the runs: {res['meta']['limits_written']}")
        if NGIRCD is None:
            log(
                "ngircd is not installed: the ngIRCd columns are skipped. "
                "Install it with: apt-get install ngircd"
            )
        targets = ["lanchat"] + (["ngircd"] if NGIRCD and a.mode != "smoke" else [])

        if "fanout" in a.sections:
            res["fanout"] = {}
            for n in a.ns:
                rounds = a.rounds.get(n, 2)
                row: dict[str, Any] = {}
                if a.mode != "smoke":
                    row["relay"] = self.fanout("relay", n, rounds)
                for t in targets:
                    row[t] = self.fanout(t, n, rounds)
                res["fanout"][str(n)] = row
        if "light" in a.sections:
            res["light"] = {t: self.light(t) for t in targets}
        if "rooms" in a.sections:
            res["rooms"] = {t: self.rooms(t) for t in targets}
        if a.mode != "smoke" and "idle" in a.sections:
            res["idle"] = {t: {str(n): self.idle(t, n) for n in a.idle_ns} for t in targets}
        if a.upload_runs and "upload" in a.sections:
            res["upload"] = self.upload()
        if a.console_runs and "console" in a.sections:
            res["console"] = self.console()
        return res

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self._tmpfs is not None:
            shutil.rmtree(self._tmpfs, ignore_errors=True)


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        kb = int(f.readline().split()[1])
    return round(kb / 1024**2)


def _ngircd_version() -> str | None:
    if NGIRCD is None:
        return None
    try:
        out = subprocess.run([NGIRCD, "--version"], capture_output=True, timeout=5).stdout
        return out.decode().splitlines()[0]
    except Exception:
        return "unknown"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} ms"


# --- the report ------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b in (None, 0):
        return None
    return round(a / b, 2)


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return round(statistics.median(got), 3) if got else None


def upload_summary(up: dict[str, Any]) -> dict[str, Any]:
    """Per filesystem: medians of each side, and of the ratios within each round.

    CPU: lanchat alone against the floor of its round, i.e. the reference
    sink's CPU plus the SHA-256 and CRC-32 cost measured right after it.
    Throughput, chat latency and RSS: lanchat while 10 clients chat.
    """
    hashes = up["hash"]
    out: dict[str, Any] = {
        "sha256_s_per_gib": _median([h["sha256_s_per_gib"] for h in hashes]),
        "crc32_s_per_gib": _median([h["crc32_s_per_gib"] for h in hashes]),
    }
    for k in ("crc32_isal_s_per_gib", "crc32_zlib_ng_s_per_gib"):
        if hashes and all(k in h for h in hashes):
            out[k] = _median([h[k] for h in hashes])
    for name, fs in up["filesystems"].items():
        runs = fs["runs"]
        if not runs:
            continue
        ours = [r["lanchat"] for r in runs]
        alone = [r["lanchat_alone"] for r in runs]
        refs = [r["reference"] for r in runs]
        ref_chats = [r["reference_chat"] for r in runs]
        floors = [
            round(ref["server_cpu_s_per_gib"] + h["sha256_s_per_gib"] + h["crc32_s_per_gib"], 3)
            for ref, h in zip(refs, hashes, strict=True)
        ]
        cpu_ratios = [
            _ratio(q["server_cpu_s_per_gib"], f) for q, f in zip(alone, floors, strict=True)
        ]
        mb_ratios = [_ratio(o["upload_mb_s"], r["upload_mb_s"]) for o, r in zip(ours, refs,
                                                                            strict=True)]
        alone_ratios = [_ratio(q["upload_mb_s"], r["upload_mb_s"]) for q, r in zip(alone, refs,
                                                                               strict=True)]
        chat_ratios = [_ratio(o["upload_mb_s"], r["upload_mb_s"]) for o, r in zip(ours, ref_chats,
                                                                              strict=True)]
        out[name] = {
            "fs": f"{fs['type']} {fs['device']}",
            "path": fs["path"],
            "size": fs["size"],
            "pairs": len(runs),
            "mb_s": _median([o["upload_mb_s"] for o in ours]),
            "alone_mb_s": _median([q["upload_mb_s"] for q in alone]),
            "reference_mb_s": _median([r["upload_mb_s"] for r in refs]),
            "mb_s_ratios": mb_ratios,
            "mb_s_ratio": _median(mb_ratios),
            "reference_chat_mb_s": _median([r["upload_mb_s"] for r in ref_chats]),
            "chat_mb_s_ratios": chat_ratios,
            "chat_mb_s_ratio": _median(chat_ratios),
            "reference_chat_p99_ms": _median([r.get("upload_latency_ms_p99") for r in ref_chats]),
            "reference_chat_p99s_ms": [r.get("upload_latency_ms_p99") for r in ref_chats],
            "alone_mb_s_ratios": alone_ratios,
            "alone_mb_s_ratio": _median(alone_ratios),
            "cpu_s_per_gib": _median([q["server_cpu_s_per_gib"] for q in alone]),
            "reference_cpu_s_per_gib": _median([r["server_cpu_s_per_gib"] for r in refs]),
            "floor_cpu_s_per_gib": _median(floors),
            "cpu_ratios": cpu_ratios,
            "cpu_ratio": _median(cpu_ratios),
            "chat_server_cpu_s_per_gib": _median([o["server_cpu_s_per_gib"] for o in ours]),
            "chat_cpu_s_per_s": _median([o["baseline_cpu_per_s"] for o in ours]),
            "chat_upload_cpu_s_per_gib": _median([o["upload_cpu_s_per_gib"] for o in ours]),
            "chat_p50_ms": _median([o.get("upload_latency_ms_p50") for o in ours]),
            "chat_p99s_ms": [o.get("upload_latency_ms_p99") for o in ours],
            "chat_p99_ms": _median([o.get("upload_latency_ms_p99") for o in ours]),
            "chat_samples": sum(o.get("upload_latency_samples", 0) for o in ours),
            "chat_p99_before_ms": _median([o.get("before_upload_latency_ms_p99") for o in ours]),
            "chat_lost": sum(o["lost"] for o in ours),
            "rss_before_kib": ours[0]["server_rss_before_kib"],
            "rss_growth_mib": round(
                max(o["server_rss_peak_kib"] - o["server_rss_before_kib"] for o in ours + alone)
                / 1024,
                1,
            ),
        }
    return out


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """Headline figures, ratios and targets."""
    s: dict[str, Any] = {}
    for n, row in res.get("fanout", {}).items():
        ours, ng, relay = row.get("lanchat", {}), row.get("ngircd", {}), row.get("relay", {})
        s[f"fanout_{n}"] = {
            "deliveries_per_s": ours.get("deliveries_per_s"),
            "ngircd_deliveries_per_s": ng.get("deliveries_per_s"),
            "generator_ceiling_per_s": relay.get("deliveries_per_s"),
            "cpu_us_per_delivery": ours.get("server_cpu_us_per_delivery"),
            "ngircd_cpu_us_per_delivery": ng.get("server_cpu_us_per_delivery"),
            "cpu_ratio": _ratio(
                ours.get("server_cpu_us_per_delivery"), ng.get("server_cpu_us_per_delivery")
            ),
            "throughput_ratio": _ratio(ours.get("deliveries_per_s"), ng.get("deliveries_per_s")),
            "p50_ms": ours.get("latency_ms_p50"),
            "p99_ms": ours.get("latency_ms_p99"),
            "ngircd_p99_ms": ng.get("latency_ms_p99"),
            "lost_dup_reordered": [ours.get("lost"), ours.get("duplicated"), ours.get("reordered")],
            "peak_rss_kib": ours.get("server_peak_rss_kib"),
            "ngircd_peak_rss_kib": ng.get("server_peak_rss_kib"),
        }
    light = res.get("light", {})
    s["light"] = {
        "p50_ms": light.get("lanchat", {}).get("latency_ms_p50"),
        "p99_ms": light.get("lanchat", {}).get("latency_ms_p99"),
        "ngircd_p50_ms": light.get("ngircd", {}).get("latency_ms_p50"),
        "ngircd_p99_ms": light.get("ngircd", {}).get("latency_ms_p99"),
        "lost": light.get("lanchat", {}).get("lost"),
    }
    rooms = res.get("rooms", {})
    if rooms.get("lanchat"):
        ours, ng = rooms["lanchat"], rooms.get("ngircd", {})
        lobby_only = res.get("idle", {}).get("lanchat", {}).get(str(ours["n"]), {}).get("rss_kib")
        s["rooms"] = {
            "n": ours["n"],
            "rooms": ours["rooms"],
            "cpu_us_per_delivery": ours["server_cpu_us_per_delivery"],
            "ngircd_cpu_us_per_delivery": ng.get("server_cpu_us_per_delivery"),
            "cpu_ratio": _ratio(
                ours["server_cpu_us_per_delivery"], ng.get("server_cpu_us_per_delivery")
            ),
            "p99_ms": ours["latency_ms_p99"],
            "ngircd_p99_ms": ng.get("latency_ms_p99"),
            "lost_dup_reordered": [ours["lost"], ours["duplicated"], ours["reordered"]],
            # each user is in one room more than the lobby-only idle run
            "kib_per_joined_room": round((ours["server_rss_idle_kib"] - lobby_only) / ours["n"], 2)
            if lobby_only else None,
        }
    for t, rows in res.get("idle", {}).items():
        ns = sorted(int(k) for k in rows)
        base = rows.get("0", {}).get("rss_kib")
        per = {}
        for n in ns:
            if n and base is not None:
                per[str(n)] = round((rows[str(n)]["rss_kib"] - base) / n, 2)
        s[f"idle_{t}"] = {
            "rss_kib": {str(n): rows[str(n)]["rss_kib"] for n in ns},
            "kib_per_client": per,
        }
    up = res.get("upload")
    if up and up.get("filesystems"):
        s["upload"] = upload_summary(up)
    con = res.get("console")
    if con and con["runs"]:
        off = [r["no_console"]["deliveries_per_s"] for r in con["runs"]]
        on = [r["console"]["deliveries_per_s"] for r in con["runs"]]
        costs = [round(100 * (1 - b / a), 1) for a, b in zip(off, on, strict=True)]
        s["console"] = {
            "runs": len(costs),
            "no_console_per_s": statistics.median(off),
            "console_per_s": statistics.median(on),
            "costs_pct": costs,
            "cost_pct": statistics.median(costs),
        }
    return s


def upload_targets(up: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The upload's targets (issue: lanchat against the blocking reference sink)."""
    out: list[tuple[str, str, bool | None]] = []
    fss = [(k, v) for k, v in up.items() if isinstance(v, dict) and "pairs" in v]
    for name, u in fss:
        n, cr = u["pairs"], u["cpu_ratio"]
        out.append((
            f"upload CPU/GiB <= 1.25x (reference + SHA-256 + CRC-32), {name} "
            f"(median of {n} rounds)",
            f"{cr}x ({u['cpu_s_per_gib']} vs {u['floor_cpu_s_per_gib']} s/GiB)",
            None if cr is None else cr <= 1.25,
        ))
    for name, u in fss:
        if name == "disk":
            r = u["mb_s_ratio"]
            out.append((
                f"upload throughput (chatting) >= 0.8x reference on the data dir's disk "
                f"(median of {u['pairs']} rounds)",
                f"{r}x ({u['mb_s']} vs {u['reference_mb_s']} MB/s)",
                None if r is None else r >= 0.8,
            ))
    for name, u in fss:
        p99 = u["chat_p99_ms"]
        out.append((
            f"chat p99 during upload <= 5 ms, {name} (median of {u['pairs']})",
            _ms(p99),
            None if p99 is None else p99 <= 5,
        ))
    if fss:
        growth = max(u["rss_growth_mib"] for _, u in fss)
        out.append(("server RSS growth during upload < 8 MiB", f"{growth} MiB", growth < 8))
    return out


def targets(s: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met?) for the issue's targets."""
    out: list[tuple[str, str, bool | None]] = []
    f = s.get("fanout_1000")
    if f:
        cr = f.get("cpu_ratio")
        out.append(
            ("N=1000 CPU/delivery <= 1.5x ngIRCd", f"{cr}x", None if cr is None else cr <= 1.5)
        )
        d = f.get("deliveries_per_s")
        out.append(("N=1000 >= 1 M deliveries/s", f"{d:,}" if d else "-", bool(d and d >= 1e6)))
    for k, v in s.items():
        if k.startswith("fanout_"):
            ldr = v["lost_dup_reordered"]
            out.append((f"{k} nothing lost/dup/reordered", str(ldr), ldr == [0, 0, 0]))
    f5 = s.get("fanout_5000")
    if f5:
        cr = f5.get("cpu_ratio")
        out.append(
            (
                "N=5000 holds (CPU/delivery <= 1.5x ngIRCd)",
                f"{cr}x",
                None if cr is None else cr <= 1.5,
            )
        )
    lp = s.get("light", {}).get("p99_ms")
    if lp is not None:
        out.append(("light-load p99 <= 2 ms", f"{lp:.2f} ms", lp <= 2))
    out.extend(upload_targets(s.get("upload") or {}))
    ro = s.get("rooms")
    if ro:
        ldr = ro["lost_dup_reordered"]
        out.append(("rooms nothing lost/dup/reordered", str(ldr), ldr == [0, 0, 0]))
    idle = s.get("idle_lanchat", {}).get("kib_per_client", {})
    if idle:
        k = max(idle, key=int)
        out.append((f"idle memory <= 5 KiB/client (N={k})", f"{idle[k]} KiB", idle[k] <= 5))
    con = s.get("console")
    if con:
        out.append(
            (
                f"console <= 5% of fan-out throughput (median of {con['runs']} pairs)",
                f"{con['cost_pct']}%",
                con["cost_pct"] <= 5,
            )
        )
    return out


def render_table(res: dict[str, Any], s: dict[str, Any]) -> str:
    """A Markdown table of the run (printed, and pasted into bench/README.md)."""
    L: list[str] = []
    m = res["meta"]
    L.append(
        f"Run: {m['date']} on {m['machine']}; Python {m['python']}; {m['ngircd'] or 'no ngIRCd'}; "
        f"mode {m['mode']}; {m['senders']} senders x {m['messages']} messages per round"
    )
    L.append("")
    L.append(
        "| fan-out | N | deliveries/s | CPU us/delivery | p50 ms | p99 ms | lost/dup/reord "
        "| peak RSS MiB |"
    )
    L.append("|---|---:|---:|---:|---:|---:|---|---:|")
    for n, row in res.get("fanout", {}).items():
        for t in ("relay", "lanchat", "ngircd"):
            r = row.get(t)
            if not r:
                continue
            name = {
                "relay": "generator ceiling (relay)",
                "lanchat": "**lanchat**",
                "ngircd": "ngIRCd",
            }[t]
            cpu = r.get("server_cpu_us_per_delivery")
            L.append(
                f"| {name} | {n} | {r['deliveries_per_s']:,} | {cpu} | "
                f"{_f(r['latency_ms_p50'])} | {_f(r['latency_ms_p99'])} | "
                f"{r['lost']}/{r['duplicated']}/{r['reordered']} | "
                f"{_f((r.get('server_peak_rss_kib') or 0) / 1024, 1)} |"
            )
    L.append("")
    L.append("| other | lanchat | ngIRCd | ratio |")
    L.append("|---|---:|---:|---:|")
    for n, v in s.items():
        if n.startswith("fanout_") and v.get("cpu_ratio") is not None:
            L.append(
                f"| fan-out N={n[7:]}: CPU/delivery, deliveries/s | "
                f"{v['cpu_us_per_delivery']} us, {v['deliveries_per_s']:,}/s | "
                f"{v['ngircd_cpu_us_per_delivery']} us, {v['ngircd_deliveries_per_s']:,}/s | "
                f"{v['cpu_ratio']}x CPU, {v['throughput_ratio']}x rate |"
            )
    li = s.get("light", {})
    if li.get("p99_ms") is not None:
        L.append(
            f"| light load 10 x 50 msg/s: p50 / p99 | {_f(li['p50_ms'])} / {_f(li['p99_ms'])} ms | "
            f"{_f(li['ngircd_p50_ms'])} / {_f(li['ngircd_p99_ms'])} ms | "
            f"{_ratio(li['p99_ms'], li['ngircd_p99_ms'])}x p99 |"
        )
    ro = s.get("rooms")
    if ro:
        L.append(
            f"| {ro['n']} users in {ro['rooms']} rooms of 10 (and the lobby): CPU/delivery, "
            f"p99 | {ro['cpu_us_per_delivery']} us, {_f(ro['p99_ms'])} ms | "
            f"{ro['ngircd_cpu_us_per_delivery']} us, {_f(ro['ngircd_p99_ms'])} ms | "
            f"{ro['cpu_ratio']}x CPU |"
        )
        L.append(f"| idle KiB per joined room | {ro['kib_per_joined_room']} | | |")
    il, ig = s.get("idle_lanchat"), s.get("idle_ngircd")
    if il:
        k = max(il["kib_per_client"], key=int) if il["kib_per_client"] else None
        if k:
            ng = ig["kib_per_client"].get(k) if ig else None
            rss = ", ".join(f"{n}: {v / 1024:.1f}" for n, v in il["rss_kib"].items())
            rssg = (
                ", ".join(f"{n}: {v / 1024:.1f}" for n, v in ig["rss_kib"].items()) if ig else "-"
            )
            L.append(f"| idle RSS MiB by clients | {rss} | {rssg} | |")
            L.append(
                f"| idle KiB per registered client (N={k}) | {il['kib_per_client'][k]} | "
                f"{_f(ng)} | {_ratio(il['kib_per_client'][k], ng)}x |"
            )
    con = s.get("console")
    if con:
        costs = ", ".join(f"{c}%" for c in con["costs_pct"])
        L.append(
            f"| fan-out N=1000 with console vs --no-console, medians | "
            f"{con['console_per_s']:,} vs {con['no_console_per_s']:,}/s "
            f"({con['cost_pct']}% cost; pairs: {costs}) | | |"
        )
    if s.get("upload"):
        L.append("")
        L.extend(upload_table(s["upload"]))
    L.append("")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")
    for name, val, ok in targets(s):
        L.append(f"| {name} | {val} | {'PASS' if ok else ('?' if ok is None else '**FAIL**')} |")
    return "\n".join(L)


def _size(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 1024**2:.0f} MiB"


def _pairs(values: list[float | None], fmt: str = "{:.2f}") -> str:
    return ", ".join("-" if v is None else fmt.format(v) for v in values)


def upload_table(up: dict[str, Any]) -> list[str]:
    """lanchat's upload next to the blocking reference sink, one column per filesystem."""
    fss = [(k, v) for k, v in up.items() if isinstance(v, dict) and "pairs" in v]
    if not fss:
        return []
    head = " | ".join(
        f"{k}: {v['fs']}, {_size(v['size'])} x {v['pairs']}" for k, v in fss
    )
    hashes = (
        f"SHA-256 {up['sha256_s_per_gib']} + CRC-32 {up['crc32_s_per_gib']} s/GiB"
        + "".join(
            f"; CRC-32 via {k[6:-10]} {up[k]}"
            for k in ("crc32_isal_s_per_gib", "crc32_zlib_ng_s_per_gib") if k in up
        )
    )
    rows = [
        ("lanchat MB/s, 10 clients chatting (until the stored answer)",
         lambda u: f"{u['mb_s']}"),
        ("lanchat MB/s, alone", lambda u: f"{u['alone_mb_s']}"),
        ("reference sink MB/s (recv_into + write + fsync)", lambda u: f"{u['reference_mb_s']}"),
        ("throughput lanchat+chat / reference (per round)",
         lambda u: f"{u['mb_s_ratio']}x ({_pairs(u['mb_s_ratios'])})"),
        ("reference sink MB/s, 10 clients chatting on an idle lanchat beside it",
         lambda u: f"{u['reference_chat_mb_s']}"),
        ("throughput, both with the chat beside: lanchat / reference (per round)",
         lambda u: f"{u['chat_mb_s_ratio']}x ({_pairs(u['chat_mb_s_ratios'])})"),
        ("throughput lanchat alone / reference (per round)",
         lambda u: f"{u['alone_mb_s_ratio']}x ({_pairs(u['alone_mb_s_ratios'])})"),
        ("lanchat server CPU s/GiB, alone", lambda u: f"{u['cpu_s_per_gib']}"),
        ("reference sink CPU s/GiB", lambda u: f"{u['reference_cpu_s_per_gib']}"),
        ("floor: reference + SHA-256 + CRC-32, s/GiB", lambda u: f"{u['floor_cpu_s_per_gib']}"),
        ("CPU lanchat alone / floor (per round)",
         lambda u: f"{u['cpu_ratio']}x ({_pairs(u['cpu_ratios'])})"),
        ("with chat: server CPU s/GiB, all / less the chat's CPU s per s",
         lambda u: f"{u['chat_server_cpu_s_per_gib']} / {u['chat_upload_cpu_s_per_gib']} "
         f"({u['chat_cpu_s_per_s']})"),
        ("chat p50 / p99 during the upload, ms (p99 per round)",
         lambda u: f"{_f(u['chat_p50_ms'])} / {_f(u['chat_p99_ms'])} "
         f"({_pairs(u['chat_p99s_ms'])}; {u['chat_samples']} samples, lost {u['chat_lost']})"),
        ("control: chat p99 during the reference's upload, ms (per round)",
         lambda u: f"{_f(u['reference_chat_p99_ms'])} ({_pairs(u['reference_chat_p99s_ms'])})"),
        ("chat p99 in the second before lanchat's upload (no upload), ms",
         lambda u: f"{_f(u['chat_p99_before_ms'])}"),
        ("server RSS before / growth, MiB",
         lambda u: f"{u['rss_before_kib'] / 1024:.1f} / +{u['rss_growth_mib']}"),
    ]
    L = [f"Upload, medians of rounds in alternating order; {hashes} (this CPU)", ""]
    L.append(f"| upload | {head} |")
    L.append("|---|" + "---:|" * len(fss))
    for label, fn in rows:
        L.append(f"| {label} | " + " | ".join(fn(u) for _, u in fss) + " |")
    return L


def _f(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


MODES: dict[str, dict[str, Any]] = {
    "full": {
        "rooms_n": 1000,
        "rooms_rounds": 12,
        "ns": [100, 1000, 5000],
        "rounds": {100: 40, 1000: 6, 5000: 2},
        "idle_ns": [0, 1000, 10000],
        "upload_size": GIB,
        "upload_runs": 3,
        "upload_baseline": 1.0,
        "console_runs": 3,
        "light_seconds": 5.0,
    },
    "quick": {
        "rooms_n": 1000,
        "rooms_rounds": 4,
        "ns": [100, 1000],
        "rounds": {100: 10, 1000: 3},
        "idle_ns": [0, 1000],
        "upload_size": 256 * 1024**2,
        "upload_runs": 1,
        "upload_baseline": 1.0,
        "console_runs": 1,
        "light_seconds": 2.0,
    },
    "smoke": {
        "rooms_n": 40,
        "rooms_rounds": 1,
        "ns": [20],
        "rounds": {20: 2},
        "idle_ns": [],
        "upload_size": 4 * 1024**2,
        "upload_runs": 1,
        "upload_baseline": 0.2,
        "console_runs": 0,
        "light_seconds": 0.5,
    },
}


SECTIONS = ("fanout", "light", "rooms", "idle", "upload", "console")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_const", dest="mode", const="quick")
    g.add_argument("--smoke", action="store_const", dest="mode", const="smoke")
    p.add_argument("--senders", type=int, default=10)
    p.add_argument("--messages", type=int, default=50)
    p.add_argument("--tmp", default=None, help="where data directories go (default: $TMPDIR)")
    p.add_argument("--json-out", help="also write the JSON result to this file")
    p.add_argument("--tmpfs", default=None,
                   help="a tmpfs directory for the upload pairs without a disk (default /dev/shm)")
    p.add_argument("--only", default=None,
                   help=f"comma-separated sections to run, of: {','.join(SECTIONS)}")
    p.add_argument("--upload-mib", type=int, default=None, help="upload size in MiB")
    p.add_argument("--upload-pairs", type=int, default=None,
                   help="upload rounds (one lanchat/reference pair per filesystem each)")
    a = p.parse_args(argv)
    a.mode = a.mode or "full"
    for k, v in MODES[a.mode].items():
        setattr(a, k, v)
    if a.upload_mib is not None:
        a.upload_size = a.upload_mib * 1024**2
    if a.upload_pairs is not None:
        a.upload_runs = a.upload_pairs
    a.sections = set(SECTIONS) if a.only is None else set(a.only.split(","))
    if a.sections - set(SECTIONS):
        p.error(f"unknown sections: {sorted(a.sections - set(SECTIONS))}")
    if a.mode == "smoke":
        a.senders, a.messages = min(a.senders, 3), min(a.messages, 20)
    return a


def run(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse(argv)
    raise_nofile()
    b = Bench(a)
    t0 = time.monotonic()
    try:
        res = b.run()
    finally:
        b.cleanup()
    res["meta"]["wall_s"] = round(time.monotonic() - t0, 1)
    res["summary"] = summary(res)
    return res


def main(argv: list[str] | None = None) -> int:
    from bench import cluster  # --only cluster: bench/cluster.py, with its own options

    own = cluster.from_bench_argv(sys.argv[1:] if argv is None else argv)
    if own is not None:
        return cluster.main(own)
    res = run(argv)
    print(render_table(res, res["summary"]))
    print()
    line = json.dumps(res, separators=(",", ":"))
    print(line)
    a = parse(argv)
    if a.json_out:
        Path(a.json_out).write_text(line + "\n")
    return 0
