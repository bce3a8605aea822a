"""``chat-tui --tls`` against the real server's TLS, trusting its certificate on first use.

The server (``chat-server --tls``) makes a self-signed certificate in
``DATA/tls/``. The client, run by ``tui_driver.py`` with a config directory
of the test's own, pins its fingerprint on the first connection (and says
so), connects silently the second time, and refuses a server restarted with
a new certificate (``DATA/tls/`` deleted): the warning names both
fingerprints and how to accept the new one, the server never sees a name
(its log has no registration), and ``--accept-new-fingerprint`` with the
new fingerprint gets in. ``--ca`` checks against a CA file instead.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support import RealServer, kill_quietly
from tests.tui_support import TuiDriver


def fingerprint(cert: Path) -> str:
    """What ``openssl x509 -fingerprint -sha256`` says: the format users compare."""
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint",
                          "-sha256"], capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1]


def test_trust_on_first_use_then_a_changed_certificate_is_refused(
    tmp_path: Path, drivers: list[TuiDriver]
) -> None:
    data, config = tmp_path / "data", tmp_path / "config"
    config.mkdir()
    known_hosts = config / "lanchat" / "known_hosts"
    server = RealServer(data, "--tls")
    try:
        port = server.port
        first = fingerprint(data / "tls" / "server.crt")

        def client(*args: str) -> TuiDriver:
            d = TuiDriver(f"127.0.0.1:{port}", "--tls", "--name", "alice", *args, config=config)
            drivers.append(d)
            return d

        tui = client()
        snap = tui.wait(state="online")
        said = [ln for ln in snap["lines"] if "First connection" in ln]
        assert len(said) == 1 and f"127.0.0.1:{port}: certificate SHA-256 {first}" in said[0]
        assert f"127.0.0.1:{port} {first}" in known_hosts.read_text()
        tui.close()

        again = client()
        snap = again.wait(state="online")
        assert not any("First connection" in ln for ln in snap["lines"])  # silent
        again.close()

        kill_quietly(server)
        shutil.rmtree(data / "tls")  # a new certificate on the next start
        server = RealServer(data, "--tls", "--listen", f"tcp:{port}:interface=127.0.0.1")
        second = fingerprint(data / "tls" / "server.crt")
        assert second != first
        pinned = known_hosts.read_bytes()

        refused = client()
        snap = refused.wait(state="refused")
        text = "\n".join(snap["lines"])
        assert "HAS CHANGED" in text and "nothing was sent" in text
        assert f"trusted:   SHA-256 {first}" in text and f"presented: SHA-256 {second}" in text
        assert f"--accept-new-fingerprint {second}" in text
        assert f"delete line 3 of {known_hosts}" in text
        assert "certificate refused" in snap["status"]
        assert known_hosts.read_bytes() == pinned
        refused.close()

        accepted = client("--accept-new-fingerprint", second)
        snap = accepted.wait(state="online")
        assert any("Accepted the new certificate" in ln for ln in snap["lines"])
        assert f"127.0.0.1:{port} {second}" in known_hosts.read_text()
        # Nothing reached the server from the refused client: one registration, the last.
        server.wait_for_log(r"alice joined from")
        assert sum("alice joined from" in ln for ln in server.log) == 1, server.log
    finally:
        kill_quietly(server)


def test_a_ca_file_checks_the_certificate_instead(
    tmp_path: Path, drivers: list[TuiDriver]
) -> None:
    data, config = tmp_path / "data", tmp_path / "config"
    config.mkdir()
    server = RealServer(data, "--tls")
    try:
        ca = data / "tls" / "server.crt"  # self-signed: its own CA
        tui = TuiDriver(f"127.0.0.1:{server.port}", "--ca", str(ca), "--name", "bob",
                        config=config)
        drivers.append(tui)
        snap = tui.wait(state="online")
        assert not any("First connection" in ln for ln in snap["lines"])
        assert not (config / "lanchat" / "known_hosts").exists()  # nothing pinned
    finally:
        kill_quietly(server)
