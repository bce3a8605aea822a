"""Accounts, operators, bans and TLS against the real server, with real clients.

telnet runs under tmux, so the echo negotiation is the one a person sees:
the password is typed but never on the screen. nc logs in from a pipe;
``openssl s_client`` talks to ``chat-server --tls`` and sees the fingerprint
the certificate file has; curl fetches over HTTPS. Accounts, operators and
bans are checked across an orderly restart and across ``kill -9``; and the
server warns when accounts exist and a plaintext listener faces the network.
The console (under tmux) shows the fingerprint and operator actions.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import DEADLINE, LineClient, RealServer, kill_quietly
from tests.test_console_tmux import Tmux, free_port

PASSWORD = "correct horse"
needs = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("tmux", "telnet", "nc", "openssl", "curl")),
    reason="needs tmux, telnet, nc, openssl and curl (.ci/run installs them)",
)
pytestmark = needs


def make_account(server: RealServer, name: str, password: str = PASSWORD) -> None:
    c = server.client(name)
    c.send_line(f"/register {password}")
    c.expect("is an account now")  # answered once it is on disk
    c.send_line("/quit")
    assert c.closed()


def operators_config(tmp_path: Path, *names: str) -> Path:
    config = tmp_path / "ops.toml"
    listed = ", ".join(f'"{n}"' for n in names)
    config.write_text(
        "[limits]\nflood_burst = 100000\nmax_connections_per_address = 1000\n"
        f"max_new_connections_per_minute = 1000\n\n[accounts]\noperators = [{listed}]\n"
    )
    return config


def login(server: RealServer, name: str, password: str = PASSWORD) -> LineClient:
    c = LineClient(server.port)
    c.send_line(f"/login {name} {password}")
    c.expect(r"^Welcome to the chat")
    return c


# --- telnet and nc ---


def test_telnet_hides_the_password_as_it_is_typed(tmp_path: Path, tmux: Tmux) -> None:
    server = RealServer(tmp_path / "data")
    try:
        make_account(server, "alice", "tiger-tiger-burning")
        pane = tmux.start(["telnet", "127.0.0.1", str(server.port)])
        tmux.wait_text(pane, "Choose a username:")
        tmux.type(pane, "alice")
        tmux.wait_text(pane, "The name alice is registered. Password:")
        tmux.type(pane, "tiger-tiger-burning")
        screen = tmux.wait_text(pane, "Welcome to the chat, alice.")
        assert "tiger" not in screen  # telnet did not echo it: the server said WILL ECHO
        tmux.type(pane, "echo is back")
        screen = tmux.wait_text(pane, "echo is back")  # WONT ECHO: typing shows again
        assert "tiger" not in screen
    finally:
        kill_quietly(server)


def test_nc_logs_in_with_the_password_on_the_next_line(tmp_path: Path) -> None:
    server = RealServer(tmp_path / "data")
    try:
        make_account(server, "alice")
        watcher = server.client("watcher")
        script = f"alice\n{PASSWORD}\nhello from nc\n/quit\n"
        done = subprocess.run(["nc", "-N", "127.0.0.1", str(server.port)], input=script.encode(),
                              capture_output=True, timeout=DEADLINE)
        out = done.stdout
        assert b"\xff\xfb\x01The name alice is registered. Password:\r\n\xff\xfc\x01" in out
        assert b"Welcome to the chat, alice." in out
        assert PASSWORD.encode() not in out
        watcher.expect(r"<alice> hello from nc")
        wrong = subprocess.run(["nc", "-N", "127.0.0.1", str(server.port)],
                               input=b"alice\nnot it at all\n", capture_output=True,
                               timeout=DEADLINE)
        assert b"!! Wrong password.\r\nChoose a username:" in wrong.stdout
    finally:
        kill_quietly(server)


# --- persistence ---


def test_accounts_operators_and_bans_survive_a_restart(tmp_path: Path) -> None:
    config = operators_config(tmp_path, "teacher")
    data = tmp_path / "data"
    server = RealServer(data, "--config", str(config))
    try:
        make_account(server, "teacher")
        teacher = login(server, "teacher")
        eve = server.client("eve")
        teacher.send_line("/ban eve 1h spamming")
        teacher.expect(r"^-- Banned eve until ")
        assert "You were kicked: banned: spamming" in eve.expect("kicked")
        teacher.send_line("/ban 10.77.0.0/16")
        teacher.expect(r"^-- Banned 10\.77\.0\.0/16 for good\.")
        assert server.stop() == 0
        server = RealServer(data, "--config", str(config))
        teacher = login(server, "teacher")
        teacher.send_line("/bans")
        teacher.expect(r"^-- 2 bans:$")
        teacher.expect(r"^--   eve  until \(.*\), by teacher: spamming$")
        teacher.expect(r"^--   10\.77\.0\.0/16  for good, by teacher$")
        c = LineClient(server.port)
        c.send_line("eve")
        c.expect(r"^!! You are banned until .*: spamming$")
        assert c.closed()
        guest = LineClient(server.port)
        guest.send_line("teacher")
        guest.expect("The name teacher is registered. Password:")
    finally:
        kill_quietly(server)


def test_what_was_answered_survives_kill_9(tmp_path: Path) -> None:
    """An account, a ban and an operator, each answered, then SIGKILL: all still there."""
    config = operators_config(tmp_path, "op")
    data = tmp_path / "data"
    server = RealServer(data, "--config", str(config))
    try:
        make_account(server, "op")
        op = login(server, "op")
        alice = server.client("alice")
        alice.send_line(f"/register {PASSWORD}")
        alice.expect("is an account now")
        op.send_line("/ban mallory")
        op.expect(r"^-- Banned mallory for good\.")
        server.stop(signal.SIGKILL)
        server = RealServer(data, "--config", str(config))
        login(server, "alice")
        c = LineClient(server.port)
        c.send_line("mallory")
        c.expect(r"^!! You are banned for good\.")
    finally:
        kill_quietly(server)


def test_plaintext_on_the_network_with_accounts_is_warned_about(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = RealServer(data)
    try:
        assert not [ln for ln in server.log if "in clear" in ln]  # no accounts yet
        make_account(server, "alice")
    finally:
        kill_quietly(server)
    server = RealServer(data, "--listen", "tcp:0:interface=0.0.0.0")
    try:
        line = server.wait_for_log(r"Warning: chat on 0\.0\.0\.0:\d+ is not encrypted")
        assert "account passwords cross it in clear (use --tls)" in line
    finally:
        kill_quietly(server)
    server = RealServer(data)  # loopback only: nothing to warn about
    try:
        assert not [ln for ln in server.log if "in clear" in ln]
    finally:
        kill_quietly(server)


# --- TLS ---


def openssl_fingerprint(cert: Path) -> str:
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint",
                          "-sha256"], capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1]


def test_tls_with_a_made_certificate_for_openssl_s_client_and_curl(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = RealServer(data, "--tls")
    try:
        cert = data / "tls" / "server.crt"
        fingerprint = openssl_fingerprint(cert)
        assert (data / "tls" / "server.key").stat().st_mode & 0o077 == 0
        logged = server.wait_for_log(r"TLS certificate .*SHA-256 fingerprint")
        assert fingerprint in logged
        s_client = subprocess.run(
            ["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{server.port}"],
            input=b"tls-user\nsecret words\n/quit\n", capture_output=True, timeout=DEADLINE,
        )
        out = s_client.stdout.decode()
        assert f"-- Welcome to lanchat. (TLS certificate SHA-256 {fingerprint})" in out
        assert "Welcome to the chat, tls-user." in out
        # Plain bytes at the TLS port get no chat at all.
        plain = LineClient(server.port)
        plain.send(b"plain\r\n")
        assert plain.closed() and b"Welcome" not in plain.buf
        # HTTPS on the file port, with the announced URL.
        c = LineClient(server.port, sock=_tls_socket(server.port, cert))
        c.send(b"/proto json\nuploader\n")
        c.expect(r'"welcome".*"http":"https://127\.0\.0\.1:\d+"')
        c.send(b"/send hello.txt 5\nhello")
        url = re.search(r'"url":"([^"]+)"', c.expect(r'"uploaded"'))[1]  # type: ignore[index]
        fetched = subprocess.run(["curl", "-sS", "--cacert", str(cert), url.replace(
            "127.0.0.1", "localhost")], capture_output=True, timeout=DEADLINE)
        assert fetched.stdout == b"hello", fetched.stderr
    finally:
        kill_quietly(server)
    # A restart keeps the certificate (clients pinned it).
    server = RealServer(data, "--tls")
    try:
        assert fingerprint in server.wait_for_log(r"SHA-256 fingerprint")
    finally:
        kill_quietly(server)


def _tls_socket(port: int, cert: Path):  # type: ignore[no-untyped-def]
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(cert))
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    return context.wrap_socket(raw, server_hostname="localhost")


def test_console_shows_the_fingerprint_and_operator_actions(
    tmp_path: Path, tmux: Tmux
) -> None:
    data, port = tmp_path / "data", free_port()
    pane = tmux.start([sys.executable, "-m", "chat", "--tls", "--data-dir", str(data),
                       "--listen", f"tcp:{port}:interface=127.0.0.1", "--no-http",
                       "--config", str(operators_config(tmp_path))], width=160, height=45)
    screen = tmux.wait_text(pane, "TLS certificate SHA-256")
    fingerprint = openssl_fingerprint(data / "tls" / "server.crt")
    assert f"TLS certificate SHA-256 {fingerprint}" in screen
    alice = LineClient(port, sock=_tls_socket(port, data / "tls" / "server.crt"))
    alice.send_line("alice")
    alice.expect("Welcome to the chat")
    alice.send_line(f"/register {PASSWORD}")
    alice.expect("is an account now")
    tmux.type(pane, "/oper alice")
    tmux.wait_text(pane, "alice is now a server operator.")
    alice.send_line("/say hello from an operator")
    alice.expect("Server notice: hello from an operator")
    tmux.wait_text(pane, "Operator alice: said to everyone: hello from an operator")
    tmux.type(pane, "/bans")
    tmux.wait_text(pane, "Nobody is banned.")
    tmux.type(pane, "/quit")
    assert tmux.wait_exit(pane) == 0
