"""Trust on first use, as ssh does it: ``$XDG_CONFIG_HOME/lanchat/known_hosts``.

One line per server, ``HOST:PORT FINGERPRINT``, the fingerprint written as
``openssl x509 -fingerprint -sha256`` writes it (32 upper-case hex pairs
joined by colons: the SHA-256 of the DER certificate), as the server's
console and banner print it; ``#`` starts a comment. ``KnownHosts.load``
reads the file and refuses a malformed one (``KnownHostsError`` names the
line), so a damaged file is reported and never written over. ``pin`` writes
the whole file again — read afresh, so another client's new line is kept —
to a temporary file beside it, synced, then renamed into place: a crash
leaves the old file or the new one, never half of either.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: The option that trusts a given fingerprint, replacing a pinned one (named in warnings).
ACCEPT_OPTION = "--accept-new-fingerprint"

HEADER = ("# chat-tui known hosts: HOST:PORT and the SHA-256 fingerprint of its TLS certificate\n"
          "# (docs/tui.md, \"TLS\"). Delete a server's line to trust its next certificate.\n")

_FINGERPRINT = re.compile(r"(?:[0-9A-F]{2}:){31}[0-9A-F]{2}")
_HEX = re.compile(r"[0-9A-Fa-f]{64}")
# A host as chat-tui is given one: a name or IPv4 address, or an IPv6 one in brackets.
_KEY = re.compile(r"(?:\[[0-9A-Fa-f:.%\w]+\]|[A-Za-z0-9._\-]+):[0-9]{1,5}")


class KnownHostsError(ValueError):
    """The known_hosts file cannot be used; the message names the file and the line."""


def host_key(host: str, port: int) -> str:
    """``host:port`` as the file keys it: names in lower case, IPv6 in brackets."""
    host = host.lower()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normal_fingerprint(text: str) -> str | None:
    """``text`` as ``AB:CD:…`` (upper case, colons), or ``None`` if it is no SHA-256.

    Takes what people paste: lower case, or the 64 hex digits without colons.
    """
    text = text.strip()
    if _HEX.fullmatch(text):
        text = ":".join(text[i:i + 2] for i in range(0, 64, 2))
    text = text.upper()
    return text if _FINGERPRINT.fullmatch(text) else None


@dataclass(frozen=True)
class Entry:
    key: str
    fingerprint: str
    #: the line's number in the file (1-based), for "delete line N"
    line: int


class KnownHosts:
    """The pinned fingerprints in ``path`` (an absent file pins nothing)."""

    def __init__(self, path: Path, lines: list[str] | None = None) -> None:
        self.path = path
        #: the file's lines as they were read (comments kept when it is rewritten)
        self.lines = lines or []
        self.entries: dict[str, Entry] = {}
        for number, line in enumerate(self.lines, 1):
            entry = _parse(path, number, line)
            if entry is None:
                continue
            if entry.key in self.entries:
                first = self.entries[entry.key].line
                raise KnownHostsError(f"{path}, line {number}: {entry.key} is already on "
                                      f"line {first}; keep one of them")
            self.entries[entry.key] = entry

    @classmethod
    def load(cls, path: Path) -> KnownHosts:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path)
        except (OSError, UnicodeDecodeError) as e:
            raise KnownHostsError(f"{path}: {e}") from None
        return cls(path, text.splitlines())

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def pin(self, key: str, fingerprint: str) -> None:
        """Trust ``fingerprint`` for ``key`` from now on (replacing what was pinned)."""
        fresh = KnownHosts.load(self.path)  # another client may have written meanwhile
        line = f"{key} {fingerprint}"
        old = fresh.get(key)
        lines = list(fresh.lines) or HEADER.splitlines()
        if old is not None:
            lines[old.line - 1] = line
        else:
            lines.append(line)
        _write_atomically(self.path, "".join(f"{ln}\n" for ln in lines))
        self.lines = lines
        self.entries = KnownHosts(self.path, lines).entries


def _parse(path: Path, number: int, line: str) -> Entry | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    words = text.split()
    where = f"{path}, line {number}"
    if len(words) != 2:
        raise KnownHostsError(f"{where}: expected HOST:PORT and a fingerprint, got {text[:80]!r}")
    key, fingerprint = words
    if not _KEY.fullmatch(key):
        raise KnownHostsError(f"{where}: {key[:80]!r} is not HOST:PORT")
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise KnownHostsError(f"{where}: {fingerprint[:100]!r} is not a SHA-256 fingerprint "
                              "(32 upper-case hex pairs joined by colons)")
    return Entry(key.lower(), fingerprint, number)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".known_hosts.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
