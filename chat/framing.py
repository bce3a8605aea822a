"""Framing: a byte stream cut into lines, with raw bytes handed out on request.

``LineFramer`` is a pure object (no transport, no reactor): the connection
feeds it what it reads, then takes complete lines, or, while an upload
streams in, up to N raw bytes. Lines end in LF; one CR before the LF is part
of the line ending (telnet sends CRLF, nc LF). A line over the limit is
reported once, as ``TOO_LONG``, and the rest of it skipped as it arrives, so
complete lines behind it are still read. It splits in one pass: a segment of
many lines costs one scan, not one per line.
"""

from __future__ import annotations

from typing import Final


class TooLong:
    """The marker for a line over the limit (its bytes are gone)."""

    def __repr__(self) -> str:
        return "TOO_LONG"


TOO_LONG: Final = TooLong()


class LineFramer:
    """LF-terminated lines of at most ``limit`` bytes, and raw bytes between them."""

    __slots__ = ("_buf", "_pos", "_skipping", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = b""
        self._pos = 0
        #: Inside a line already reported as too long: drop up to its LF.
        self._skipping = False

    def feed(self, data: bytes) -> None:
        if self._pos >= len(self._buf):
            self._buf, self._pos = data, 0
        elif data:
            self._buf, self._pos = self._buf[self._pos :] + data, 0

    @property
    def buffered(self) -> int:
        """Bytes read and not yet taken (a partial line, lines held back, raw bytes)."""
        return len(self._buf) - self._pos

    def pending(self) -> bytes:
        return self._buf[self._pos :]

    def next_line(self) -> bytes | TooLong | None:
        """The next complete line without its ending, ``TOO_LONG``, or None for "need more"."""
        buf, limit = self._buf, self.limit
        while True:
            end = buf.find(b"\n", self._pos)
            if end < 0:
                return self._unended()
            line, self._pos = buf[self._pos : end], end + 1
            if self._skipping:
                self._skipping = False  # the end of a line already refused
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            return TOO_LONG if len(line) > limit else line

    def _unended(self) -> TooLong | None:
        if self._skipping:
            self._buf, self._pos = b"", 0
            return None
        if self.buffered > self.limit + 1:  # + 1: room for the CR before the LF
            self._skipping = True
            self._buf, self._pos = b"", 0
            return TOO_LONG
        if self._pos:
            # Keep only the tail, never the whole read: the bytes object a
            # recv() returns can pin a page of memory for every idle client.
            self._buf, self._pos = self._buf[self._pos :], 0
        return None

    def take(self, n: int) -> bytes:
        """Up to ``n`` buffered bytes, as they are (the raw bytes of an upload)."""
        start = self._pos
        chunk = self._buf[start : start + n]
        self._pos = start + len(chunk)
        return chunk

    def rest(self) -> bytes:
        """Whatever is buffered, taken as is (a last line without its LF, at EOF)."""
        rest = b"" if self._skipping else self.pending()
        self._buf, self._pos, self._skipping = b"", 0, False
        return rest
