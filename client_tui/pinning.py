"""``chat-tui --tls`` without ``--ca``: the server's certificate pinned, checked in the handshake.

Twisted's ``optionsForClientTLS`` checks a certificate against CAs and a
host name; a lanchat server's certificate is self-signed, so it would fail,
and checking nothing would let anyone in the middle read the passwords.
``PinnedTLS`` makes the TLS connection with OpenSSL's verify callback set
to ``Trust.check``: the server's certificate (the chain does not matter)
is compared with the fingerprint ``known_hosts`` holds for ``HOST:PORT``.
First use pins it and says so; the same fingerprint passes in silence; a
different one fails the handshake itself, so the chat connection never
sends a byte (``connection.JsonLines`` also writes nothing until the
handshake is done), and ``Trust.refusal`` holds the warning: both
fingerprints and how to accept the new one. ``accept`` (from
``--accept-new-fingerprint``) trusts exactly that fingerprint, replacing a
pinned one.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions
from zope.interface import implementer

from client_tui.known_hosts import ACCEPT_OPTION, KnownHosts, KnownHostsError, host_key


def der_fingerprint(der: bytes) -> str:
    """``AB:CD:…``: the SHA-256 of a DER certificate, as openssl and the server write it."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


class Trust:
    """What ``known_hosts`` says about one server, and what the last check decided."""

    def __init__(self, path: Path, host: str, port: int, accept: str | None = None) -> None:
        self.path = path
        self.key = host_key(host, port)
        self.accept = accept
        #: where a first use (or an accepted change) is announced (the session sets it)
        self.notice: Callable[[str], None] = lambda text: None
        #: the warning of the last refusal (``None``: not refused)
        self.refusal: str | None = None

    def check(self, presented: str) -> bool:
        """Whether a server presenting ``presented`` may be talked to (pinning it if new)."""
        self.refusal = None
        try:
            store = KnownHosts.load(self.path)
            known = store.get(self.key)
            if known is not None and known.fingerprint == presented:
                return True
            if self.accept is not None and self.accept != presented:
                self.refusal = (f"The certificate of {self.key} is not the one you said to "
                                f"accept. Not connecting: nothing was sent.\n"
                                f"  you said:  SHA-256 {self.accept}\n"
                                f"  presented: SHA-256 {presented}")
                return False
            if known is not None and self.accept is None:
                self.refusal = self._changed(known.fingerprint, presented, known.line)
                return False
            store.pin(self.key, presented)
        except (KnownHostsError, OSError) as e:
            self.refusal = f"Cannot check the server's certificate: {e}. Not connecting."
            return False
        if known is None:
            self.notice(f"First connection to {self.key}: certificate SHA-256 {presented}, "
                        f"trusted from now on (kept in {self.path}). Compare it with the "
                        "fingerprint the server's console shows.")
        else:
            self.notice(f"Accepted the new certificate of {self.key}: SHA-256 {presented} "
                        f"(was {known.fingerprint}).")
        return True

    def _changed(self, known: str, presented: str, line: int) -> str:
        return (
            f"THE TLS CERTIFICATE OF {self.key} HAS CHANGED. Not connecting: nothing was sent.\n"
            f"  trusted:   SHA-256 {known}\n"
            f"  presented: SHA-256 {presented}\n"
            "Someone may be intercepting the connection, or the server has a new certificate. "
            "Compare with the fingerprint its console or log shows. If it is the new one, "
            f"accept it by starting chat-tui with {ACCEPT_OPTION} {presented} "
            f"(or delete line {line} of {self.path})."
        )


@implementer(IOpenSSLClientConnectionCreator)
class PinnedTLS:
    """TLS connections to ``host`` that only complete if ``trust`` passes the certificate."""

    def __init__(self, host: str, trust: Trust) -> None:
        self.host = host
        self.trust = trust
        # Twisted's defaults (TLS 1.2 or later, its cipher list); verification is ours.
        self.options = CertificateOptions()

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = self.options.clientConnectionForTLS(tlsProtocol)  # type: ignore[arg-type]
        if not _is_address(self.host):
            connection.set_tlsext_host_name(self.host.encode("idna"))
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify)
        return connection

    def _verify(self, connection: SSL.Connection, cert: crypto.X509, errno: int, depth: int,
                ok: int) -> bool:
        if depth != 0:
            return True  # the chain is not what is trusted: the server's own certificate is
        try:
            der = cert.to_cryptography().public_bytes(Encoding.DER)
            return self.trust.check(der_fingerprint(der))
        except Exception as e:  # raised in OpenSSL's callback, it would escape the reactor
            self.trust.refusal = f"Cannot check the server's certificate: {e}. Not connecting."
            return False


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
