"""Limits against the real server process over loopback sockets."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import DEADLINE, LineClient, RealServer, kill_quietly, readable


def limited_server(tmp_path: Path, toml: str, **kw: object) -> RealServer:
    cfg = tmp_path / "limits.toml"
    cfg.write_text("[limits]\n" + toml)
    return RealServer(tmp_path / "data", "--config", str(cfg), relaxed=False, **kw)  # type: ignore[arg-type]


def test_a_pasted_block_arrives_late_in_order_and_whole(tmp_path: Path) -> None:
    server = limited_server(tmp_path, "flood_rate = 20.0\n")
    try:
        a, b = server.client("alice"), server.client("bob")
        a.send(b"".join(f"paste {i:02d}\n".encode() for i in range(30)))
        start = time.monotonic()
        got = [b.expect(r"<alice> paste").split("> ")[1] for _ in range(30)]
        assert got == [f"paste {i:02d}" for i in range(30)]
        assert time.monotonic() - start >= 25 / 20 * 0.9  # slowed to the steady rate
        a.send_line("/who")
        a.expect("-- 2 here:")
    finally:
        kill_quietly(server)


def test_a_blast_is_cut_for_excess_flood_with_one_leave_notice(tmp_path: Path) -> None:
    server = limited_server(tmp_path, "")
    try:
        a, b = server.client("alice"), server.client("bob")
        b.expect("alice|bob")
        blast = (b"x" * 99 + b"\n") * 10_000  # 1 MB
        try:
            a.send(blast)
        except (BrokenPipeError, ConnectionResetError):
            pass
        b.expect(r"alice has left the chat \(excess flood\)\.$")
        b.send_line("/who")
        b.expect("-- 1 here:")
        assert not any("has left" in ln for ln in b.seen[:-3] if "excess" not in ln)
        server.wait_for_log(r"alice left \(excess flood\)")
    finally:
        kill_quietly(server)


def test_a_reader_that_never_reads_is_cut_and_others_are_unaffected(tmp_path: Path) -> None:
    server = limited_server(tmp_path, "flood_burst = 1000000\n")
    try:
        sleeper = socket.socket()
        sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sleeper.connect(("127.0.0.1", server.port))
        sleeper.sendall(b"sleeper\n")
        talker, listener = server.client("talker"), server.client("listener")
        line = b"z" * 1000 + b"\n"
        received = 0
        sent = 0
        # 20 MB of chat, read by the listener as it goes
        for _ in range(200):
            talker.send(line * 100)
            sent += 100
            while received < sent - 200:
                listener.expect("<talker> z")
                received += 1

        while received < sent:
            listener.expect("<talker> z")
            received += 1
        leaves = [ln for ln in listener.seen if "has left" in ln]
        assert len(leaves) == 1
        assert leaves[0].endswith("sleeper has left the chat (send queue exceeded).")
        # Cut once about 1 MiB was queued for it (plus what the kernel's
        # socket buffers took), long before the 20 MB were through.
        at = listener.seen.index(leaves[0])
        assert sum("<talker>" in ln for ln in listener.seen[:at]) < 6000
        sleeper.close()
    finally:
        kill_quietly(server)


def test_connections_from_one_address(tmp_path: Path) -> None:
    server = limited_server(
        tmp_path, "max_connections_per_address = 8\nexempt_addresses = []\n"
    )
    try:
        clients = [server.client(f"c{i}") for i in range(8)]
        for _ in range(42):  # 50 in all
            c = LineClient(server.port)
            assert c.read_line() == "!! Too many connections from your address (at most 8)."
            assert c.closed()
        server.wait_for_log("Refused a connection from 127.0.0.1: Too many connections")
        for c in clients[1:]:
            c.close()
        for _ in range(7):  # the server has seen them go: its counters are back down
            clients[0].expect(r"has left the chat \(connection lost\)")
        again = server.client("again")
        again.send_line("/who")
        again.expect("-- 2 here:")
    finally:
        kill_quietly(server)


class BlackHole:
    """A loopback proxy that can stop forwarding while keeping both sockets open."""

    def __init__(self, port: int) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.target = port
        self.forwarding = True
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        client, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.target))
        peers = {client: upstream, upstream: client}
        deadline = time.monotonic() + 60
        while not self.stop and time.monotonic() < deadline:
            ready = [s for s in peers if readable(s.fileno(), 0.05)]
            if not self.forwarding:
                continue  # hold everything; neither end hears a thing
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                peers[s].sendall(data)


def test_a_black_holed_json_client_is_detected(tmp_path: Path) -> None:
    server = limited_server(tmp_path, "ping_interval = 1.0\nping_timeout = 1.0\n")
    hole = BlackHole(server.port)
    try:
        watcher = server.client("watcher")
        ghost = LineClient(hole.port)
        ghost.send_line("/proto json")
        ghost.send_line("ghost")
        ghost.expect('"welcome"')
        watcher.expect("ghost has joined")
        ghost.expect('"ping"', timeout=5)
        ghost.send_line("/pong")
        hole.forwarding = False
        watcher.expect(r"ghost has left the chat \(ping timeout\)\.$", timeout=10)
    finally:
        hole.stop = True
        kill_quietly(server)


def test_a_stalled_upload_is_discarded(tmp_path: Path) -> None:
    server = limited_server(tmp_path, "upload_stall_timeout = 1.0\n")
    try:
        c = server.client("uploader")
        c.send(b"/send stalled.bin 100000\n" + b"a" * 5000)
        c.expect(r"!! No upload data for 1 seconds \(95000 bytes missing\)")
        assert c.closed()
        server.wait_for_log(r"discarded .*5000 of 100000 bytes")
        assert list((server.data_dir / "files").iterdir()) == []
        assert list((server.data_dir / "tmp").iterdir()) == []
    finally:
        kill_quietly(server)


def test_http_on_the_chat_port(real: RealServer) -> None:
    c = LineClient(real.port)
    c.expect("Choose a username")
    c.send(b"GET /files/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    line = c.expect("^!! ")
    assert "not HTTP" in line and f"127.0.0.1:{real.http_port}/files/" in line
    assert c.closed()


@pytest.mark.parametrize("size", [3 * 1024 * 1024])
def test_disk_full_mid_upload(tmp_path: Path, size: int) -> None:
    limit = 2 * 1024 * 1024

    def cap_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat", "--no-console", "--no-http",
         "--listen", "tcp:0:interface=127.0.0.1", "--data-dir", str(data_dir)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, preexec_fn=cap_file_size,
    )
    try:
        assert proc.stderr is not None
        port = 0
        while not port:
            line = proc.stderr.readline().decode()
            assert line, "server exited"
            if "chat listening on" in line:
                port = int(line.rsplit(":", 1)[1])
        a, b = LineClient(port), LineClient(port)
        for c, name in ((a, "alice"), (b, "bob")):
            c.send_line(name)
            c.expect("Welcome")
        a.send(b"/send big.bin %d\n" % size + b"b" * size)
        err = a.expect("^!! ")
        assert "could not store" in err
        a.send_line("after the failure")
        b.expect("<alice> after the failure$")
        assert list((data_dir / "files").iterdir()) == []
        assert list((data_dir / "tmp").iterdir()) == []
    finally:
        proc.kill()
        proc.wait(DEADLINE)
