"""TLS is a matter of configuration: an ``ssl:`` endpoint, a certificate, done."""

from __future__ import annotations

import datetime
import hashlib
import json
import random
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import DEADLINE, LineClient, RealServer, kill_quietly


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def tls_server(tmp_path: Path) -> tuple[RealServer, int, Path]:
    key, cert = self_signed(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    server = RealServer(tmp_path / "data", "--listen", endpoint)
    server.wait_for_log(rf"chat listening on 127\.0\.0\.1:{port}")
    return server, port, cert


def test_chat_over_tls_by_configuration(tmp_path: Path) -> None:
    server, port, cert = tls_server(tmp_path)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"secure\n")
            data = b""
            while b"Welcome to the chat, secure." not in data:
                chunk = tls.recv(4096)
                assert chunk, data
                data += chunk
    finally:
        kill_quietly(server)


def test_upload_over_tls(tmp_path: Path) -> None:
    """TLS decrypts on the reactor thread: the upload takes the reactor path, not a pump."""
    server, port, cert = tls_server(tmp_path)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        c = LineClient(port, sock=context.wrap_socket(raw, server_hostname="localhost"))
        c.send(b"/proto json\nsealed\n")
        c.expect(r"\"welcome\"")  # after the text banner, JSON from here on
        data = random.Random(5).randbytes(5 * 1024 * 1024 + 3)
        c.send(f"/send sealed.bin {len(data)}\n".encode() + data + b"after the file\n")
        # Storing runs on a thread: "uploaded" may come after the next line's echo.
        seen: dict[str, dict] = {}
        while len(seen) < 2:
            event = json.loads(c.read_line())
            if event["type"] in ("uploaded", "message"):
                seen[event["type"]] = event
        info = seen["uploaded"]["file"]
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
        assert (server.data_dir / "files" / info["file_id"]).read_bytes() == data
        assert seen["message"]["text"] == "after the file"
        c.sock.close()
    finally:
        kill_quietly(server)
