"""Turning untrusted bytes into text that is safe to relay, log or display.

Everything a client sends passes through here before it reaches another
user's terminal, the log or the console: telnet negotiation is dropped, UTF-8
is decoded with replacement (never ``surrogateescape``, whose lone surrogates
later break JSON and SQLite), and terminal control sequences are removed whole,
so an ``ESC [ 2 J`` leaves no ``[2J`` behind. Invisible characters and bidi
controls go too: they can make text lie about who said it or what a file is
(``invoice\u202efdp.exe`` shows as ``invoiceexe.pdf``).
"""

from __future__ import annotations

import re

# IAC (0xFF) commands (RFC 854): option negotiation (WILL/WONT/DO/DONT) takes
# one more byte, subnegotiation runs to IAC SE, the others (NOP ... GA) stand
# alone. A 0xFF followed by anything else is not telnet: it stays, and decodes
# to U+FFFD, so ``b\xffb`` is never read as ``b``.
_TELNET = re.compile(rb"\xff(?:\xfa.*?\xff\xf0|[\xfb-\xfe].|[\xf0-\xf9])", re.DOTALL)

#: Characters that hide or reorder what a reader sees (zero-width, joiners and
#: marks, bidi embeddings, overrides and isolates, word joiners, the BOM).
INVISIBLE = "\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"


_CONTROL = re.compile(
    rf"""
      \x1b\[ [\x30-\x3f]* [\x20-\x2f]* [\x40-\x7e]?        # CSI
    | \x1b[\]PX^_] .*? (?:\x07|\x1b\\|\x9c|$)             # OSC, DCS, SOS, PM, APC
    | \x1b [\x20-\x2f]* [\x30-\x7e]?                       # other ESC sequences
    | \x9b [\x30-\x3f]* [\x20-\x2f]* [\x40-\x7e]?          # 8-bit CSI
    | [\x90\x9d\x98\x9e\x9f] .*? (?:\x07|\x1b\\|\x9c|$)   # 8-bit string controls
    | [\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]             # C0 but tab, DEL, C1, separators
    | [{INVISIBLE}]                                          # invisible, bidi
    """,
    re.VERBOSE | re.DOTALL,
)


def strip_telnet(data: bytes) -> bytes:
    """Remove telnet IAC command sequences from one line of input."""
    if b"\xff" not in data:
        return data
    return _TELNET.sub(b"", data)


def clean(text: str) -> str:
    """Remove terminal control sequences, control characters (keeping tab) and
    invisible and bidi control characters."""
    return _CONTROL.sub("", text)


def decode_line(data: bytes) -> str:
    """Decode one received line into relayable text."""
    return clean(strip_telnet(data).decode("utf-8", "replace"))


def for_log(text: object) -> str:
    """Render a user-controlled value for a log line or the console.

    Control characters are removed and what is left is ``repr``-escaped, so a
    newline can never forge a second log line.
    """
    return clean(str(text).replace("\n", "\\n").replace("\r", "\\r"))
