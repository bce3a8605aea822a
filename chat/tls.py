"""Encryption made one option: the certificate, its fingerprint, TLS endpoints.

With ``server.tls`` (``chat-server --tls``) the chat and HTTP listeners speak
TLS. The certificate and key are the configured files, or a self-signed pair
made in ``DATA/tls/`` on the first start and kept (so clients that trusted it
on first use keep trusting it). Its SHA-256 fingerprint, written the way
``openssl x509 -fingerprint -sha256`` writes it, is what users compare: the
server prints it in its log, its console and its banner. ``exposed`` tells a
plaintext listener that others on the network can reach (passwords would
cross it in clear).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chat.config import Config, ConfigError

#: Where a made certificate and its key are kept, under the data directory.
CERT_NAME = "tls/server.crt"
KEY_NAME = "tls/server.key"
#: A made certificate's life: clients pin it, so it should outlive the install.
VALID_DAYS = 3650


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    fingerprint: str


def fingerprint(pem: bytes) -> str:
    """``AB:CD:…``: the SHA-256 of the certificate's DER bytes."""
    digest = x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


def make_self_signed(cert: Path, key: Path, host: str | None = None) -> None:
    """A new P-256 key and a self-signed certificate for ``host`` and localhost."""
    host = host or socket.gethostname() or "localhost"
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    alt: list[x509.GeneralName] = [x509.DNSName(host), x509.DNSName("localhost"),
                                   x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    if host == "localhost":
        alt = alt[1:]
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    key.parent.mkdir(parents=True, exist_ok=True)
    # The key is written where only its owner can read it, then renamed into place.
    tmp = key.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
    tmp.replace(key)
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def prepare(config: Config) -> Certificate:
    """The certificate to listen with: the configured one, or the made one (made if new)."""
    server = config.server
    if bool(server.tls_cert) != bool(server.tls_key):
        raise ConfigError("server.tls_cert and server.tls_key go together: set both or neither")
    if server.tls_cert:
        cert, key = Path(server.tls_cert).expanduser(), Path(server.tls_key).expanduser()
    else:
        cert, key = config.data_path / CERT_NAME, config.data_path / KEY_NAME
        if not (cert.exists() and key.exists()):
            try:
                make_self_signed(cert, key)
            except OSError as e:
                raise ConfigError(f"server.tls: cannot write {key.parent}: {e.strerror}") from None
    try:
        pem = cert.read_bytes()
        if not key.is_file():
            raise FileNotFoundError(key)
        return Certificate(cert, key, fingerprint(pem))
    except OSError as e:
        raise ConfigError(f"server.tls_cert: cannot read {e.filename}: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"server.tls_cert: {cert} is not a PEM certificate ({e})") from None


def _escape(path: Path) -> str:
    return str(path).replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def secured(description: str, cert: Certificate, setting: str) -> str:
    """A ``tcp:`` endpoint string made ``ssl:`` with ``cert`` (``ssl:`` ones are kept)."""
    kind, _, rest = description.partition(":")
    if kind == "ssl":
        return description
    if kind != "tcp":
        raise ConfigError(f"{setting}: TLS needs a tcp: endpoint, not {description!r}")
    return f"ssl:{rest}:privateKey={_escape(cert.key)}:certKey={_escape(cert.cert)}"


def exposed(description: str, host: str) -> bool:
    """Whether a listener bound to ``host`` is plaintext and reachable from elsewhere."""
    if description.startswith("ssl:") or description.startswith("unix:"):
        return False
    try:
        return not ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return True
