"""The real server process over real sockets, with real telnet and nc."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import DEADLINE, LineClient, RealServer, kill_quietly, readable


def read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float = DEADLINE) -> bytes:
    """Read a child's stdout until ``needle`` appears (or fail at the deadline)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    end = time.monotonic() + timeout
    while needle not in data:
        left = end - time.monotonic()
        if not readable(fd, left):
            raise AssertionError(f"{needle!r} not seen; got {data!r}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"EOF before {needle!r}; got {data!r}")
        data += chunk
    return data


def test_several_clients_chat(real: RealServer) -> None:
    alice = real.client("alice")
    bob = real.client("bob")
    alice.expect("bob has joined the chat")
    carol = real.client("carol")
    for c in (alice, bob):
        c.expect("carol has joined the chat")
    alice.send_line("hello everyone")
    for c in (bob, carol):
        c.expect(r"^\(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\) <alice> hello everyone$")
    bob.send_line("/quit")
    bob.expect("Goodbye")
    assert bob.closed()
    for c in (alice, carol):
        c.expect("bob has left the chat \\(quit\\)")
    carol.close()
    alice.expect("carol has left the chat \\(connection lost\\)")
    alice.send_line("/who")
    alice.expect("-- 1 here:")
    assert alice.read_line().startswith("--   alice")


def test_json_client_alongside_text_clients(real: RealServer) -> None:
    prog = real.client("prog", json_mode=True)
    human = real.client("human")
    prog.expect_event("join", name="human")
    human.send_line("hi prog")
    ev = prog.expect_event("message", sender="human")
    assert ev["text"] == "hi prog" and ev["ts"].endswith("Z")
    prog.send_line("hi human")
    mine = prog.expect_event("message", sender="prog")
    assert mine["text"] == "hi human" and mine["id"] > ev["id"]
    human.expect("<prog> hi human")


def test_real_telnet_client(real: RealServer) -> None:
    observer = real.client("observer")
    telnet = subprocess.Popen(
        ["telnet", "127.0.0.1", str(real.port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        assert telnet.stdin is not None
        read_until(telnet, b"Choose a username:")
        telnet.stdin.write(b"tina\n")  # telnet turns LF into CRLF
        telnet.stdin.flush()
        read_until(telnet, b"Welcome to the chat, tina.")
        observer.expect("tina has joined")
        telnet.stdin.write(b"hello from telnet\n")
        telnet.stdin.flush()
        observer.expect("<tina> hello from telnet$")
        observer.send_line("hello tina")
        read_until(telnet, b"<observer> hello tina")
        telnet.stdin.write(b"/quit\n")
        telnet.stdin.flush()
        observer.expect("tina has left the chat \\(quit\\)")
        assert telnet.wait(DEADLINE) is not None
    finally:
        telnet.kill()
        telnet.wait()


def test_real_nc_client_with_bare_lf(real: RealServer) -> None:
    observer = real.client("observer")
    nc = subprocess.Popen(
        ["nc", "-N", "127.0.0.1", str(real.port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        assert nc.stdin is not None
        read_until(nc, b"Choose a username:")
        nc.stdin.write(b"nico\nhello from nc\n")
        nc.stdin.flush()
        observer.expect("<nico> hello from nc$")
        observer.send_line("/msg nico psst")
        read_until(nc, b"*observer* psst\r\n")
        nc.stdin.close()  # EOF: the server answers and closes
        observer.expect("nico has left the chat")
        assert nc.wait(DEADLINE) == 0
    finally:
        nc.kill()
        nc.wait()


def test_piped_nc_session_gets_all_answers(real: RealServer) -> None:
    out = subprocess.run(
        ["nc", "-N", "127.0.0.1", str(real.port)],
        input=b"pipe\n/help\n/who\n", capture_output=True, timeout=DEADLINE, check=True,
    ).stdout
    assert b"Welcome to the chat, pipe." in out
    assert b"-- Commands:" in out
    assert b"--   pipe  (idle" in out


def test_sigterm_notifies_users_writes_history_and_exits_zero(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = RealServer(data)
    try:
        alice = server.client("alice")
        bob = server.client("bob")
        for i in range(50):
            alice.send_line(f"message {i}")
        bob.expect("<alice> message 49$")  # every one reached another user
        assert server.stop(signal.SIGTERM) == 0
        bob.expect("Server notice: The server is going down.")
        assert bob.closed()
    finally:
        kill_quietly(server)
    again = RealServer(data)
    try:
        carol = again.client("carol")
        carol.send_line("/history 50")
        carol.expect("-- Last 50 messages:")
        said = [carol.read_line().split("> ", 1)[1] for _ in range(50)]
        assert said == [f"message {i}" for i in range(50)]
    finally:
        kill_quietly(again)


def test_sigint_stops_cleanly(tmp_path: Path) -> None:
    server = RealServer(tmp_path / "data")
    try:
        c = server.client("x", json_mode=True)
        c.send_line("persist this")
        c.expect_event("message", text="persist this")
        assert server.stop(signal.SIGINT) == 0
        c.expect_event("notice")
        c.expect_event("bye")
    finally:
        kill_quietly(server)
    again = RealServer(tmp_path / "data")
    try:
        c = again.client("y")
        c.expect("persist this")
    finally:
        kill_quietly(again)


def run_server(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chat", "--no-console", *args],
        capture_output=True, text=True, timeout=DEADLINE, cwd=cwd,
    )


@pytest.mark.parametrize(
    ("toml", "setting"),
    [
        ("[limits]\nmax_line_bytes = 'big'\n", "limits.max_line_bytes"),
        ("[limits]\nmax_lines = 3\n", "limits.max_lines"),
        ("[nope]\nx = 1\n", "[nope]"),
        ("[history]\nreplay = -1\n", "history.replay"),
        ("[server]\nlisten = 'bogus:1'\n", "server.listen"),
        ("[server]\nhttp = 'tcp:notaport'\n", "server.http"),
        ("[server\n", "config file"),
    ],
)
def test_bad_config_stops_startup_with_one_line(tmp_path: Path, toml: str, setting: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    result = run_server("--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and setting in lines[0], result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_server("--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert "absent.toml" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_listen_option_names_the_setting(tmp_path: Path) -> None:
    result = run_server("--listen", "nonsense", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2 and "server.listen" in result.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run_server(
            "--listen", f"tcp:{port}:interface=127.0.0.1", "--no-http",
            "--data-dir", str(tmp_path / "d"),
        )
    assert result.returncode == 1
    assert "cannot start" in result.stderr and str(port) in result.stderr


def test_config_file_values_and_options_override(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nbanner = "Hello lab!"\nlisten = "tcp:1:interface=127.0.0.1"\n')
    server = RealServer(tmp_path / "data", "--config", str(cfg), "--listen",
                        "tcp:0:interface=127.0.0.1")
    try:
        c = LineClient(server.port)
        assert c.read_line() == "-- Hello lab!"
    finally:
        kill_quietly(server)


def test_unix_socket_endpoint_by_configuration(tmp_path: Path) -> None:
    sock_path = tmp_path / "chat.sock"
    cfg = tmp_path / "unix.toml"
    cfg.write_text(f'[server]\nlisten = "unix:{sock_path}"\nhttp_enabled = false\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat", "--no-console", "--config", str(cfg),
         "--data-dir", str(tmp_path / "d")],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
    )
    try:
        assert proc.stderr is not None
        line = b""
        while b"chat listening on" not in line:
            line = proc.stderr.readline()
            assert line, "server exited"
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(DEADLINE)
            s.connect(str(sock_path))
            s.sendall(b"unixuser\n")
            data = b""
            while b"Welcome to the chat, unixuser." not in data:
                chunk = s.recv(4096)
                assert chunk
                data += chunk
            # A file over the UNIX socket (read by an upload pump, as over TCP).
            blob = os.urandom(2 * 1024 * 1024)
            s.sendall(f"/send unix.bin {len(blob)}\n".encode())
            s.sendall(blob + b"/who\n")  # a line right after the last byte
            while b"-- Stored unix.bin" not in data or b"-- 1 here:" not in data:
                chunk = s.recv(4096)
                assert chunk
                data += chunk
            (stored,) = (tmp_path / "d" / "files").iterdir()
            assert stored.read_bytes() == blob
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
    finally:
        proc.kill()
        proc.wait()


def test_chat_server_console_script(tmp_path: Path) -> None:
    exe = shutil.which("chat-server")
    assert exe, "the package is not installed (pip install -e '.[test]')"
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 0 and "chat-server" in result.stdout


def test_twistd_plugin(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    exe = shutil.which("twistd")
    assert exe, "twistd is installed with Twisted"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    twistd = subprocess.Popen(
        [exe, "-n", "chat", "--listen", f"tcp:{port}:interface=127.0.0.1",
         "--no-http", "--data-dir", str(tmp_path / "d")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )
    try:
        read_until(twistd, b"chat listening on")
        c = LineClient(port)
        c.send_line("viatwistd")
        c.expect("Welcome to the chat, viatwistd.")
        twistd.send_signal(signal.SIGTERM)
        # twistd re-raises the signal after a clean stop so supervisors see it.
        read_until(twistd, b"Server stopped; history written.")
        assert twistd.wait(DEADLINE) in (0, -signal.SIGTERM)
    finally:
        twistd.kill()
        twistd.wait()


_TUNING_PROBE = """
import gc, json, os, sys
from twisted.internet import reactor
from chat import cli

def report():
    print(json.dumps({"switch": sys.getswitchinterval(), "frozen": gc.get_freeze_count()}))
    sys.stdout.flush()
    os._exit(0)  # the server's thread pools would keep the process alive

args = ["--listen", "tcp:0:interface=127.0.0.1", "--no-http", "--data-dir", sys.argv[2]]
if sys.argv[1] == "cli":
    reactor.run = report  # main() has built and started everything by now
    cli.main(args + ["--no-console"])
else:
    from twisted.plugins.chat_plugin import serviceMaker
    options = serviceMaker.options()
    options.parseOptions(args)
    serviceMaker.makeService(options).startService()
    reactor.callWhenRunning(report)  # after the plugin's own start-up call
    reactor.run()
"""


@pytest.mark.parametrize("entry", ["cli", "twistd"])
def test_server_process_is_tuned_for_latency(tmp_path: Path, entry: str) -> None:
    """Both entry points shorten the GIL switch interval and freeze the start-up heap."""
    from chat.cli import GIL_SWITCH_INTERVAL

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", _TUNING_PROBE, entry, str(tmp_path / "d")],
        capture_output=True, text=True, timeout=DEADLINE, cwd=root,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["switch"] == pytest.approx(GIL_SWITCH_INTERVAL)
    # Everything imported and built at start-up is frozen: tens of thousands of objects.
    assert seen["frozen"] > 10_000
