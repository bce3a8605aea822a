"""A paste of several lines: what it would send, and how long that takes.

The terminal hands a paste over in one piece (bracketed paste). One line is
typed into the input; several are a ``Paste``, which the user sends as that
many chat lines or as a file, ``paste.txt``, rather than having them joined
into one. As lines, each is said as text (a line that starts with ``/`` is
not run as a command), tabs become spaces, blank lines are left out, and
the outbox paces them; a line the server would refuse as too long, or a
paste long enough to flood the conversation, is offered as a file first.
"""

from __future__ import annotations

from dataclasses import dataclass

from chat.units import plural
from client_tui.outbox import FLOOD_BURST, FLOOD_RATE, MAX_LINE_BYTES, line_cost

#: More lines than this are offered as a file first (they would take a while at 2 a second).
MANY_LINES = 10
#: The name a paste sent as a file gets.
PASTE_NAME = "paste.txt"
#: What ``--paste`` (and ``paste =`` in tui.toml) may say.
PASTE_MODES = ("ask", "lines", "file")


def paste_lines(text: str) -> list[str]:
    """The lines of a pasted text, as the terminal sent them (CR, LF or CRLF)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


@dataclass(frozen=True)
class Paste:
    text: str

    @property
    def lines(self) -> list[str]:
        """The chat lines it makes: blank lines left out, tabs as spaces, ``/`` escaped."""
        said = [ln.expandtabs(8).rstrip() for ln in paste_lines(self.text)]
        return ["/" + ln if ln.startswith("/") else ln for ln in said if ln.strip()]

    @property
    def as_file(self) -> bytes:
        text = self.text.replace("\r\n", "\n").replace("\r", "\n")
        return (text if text.endswith("\n") else text + "\n").encode("utf-8")

    @property
    def fits_lines(self) -> bool:
        """Whether every line is short enough for the server to take."""
        return all(len(ln.encode("utf-8")) <= MAX_LINE_BYTES for ln in self.lines)

    @property
    def default(self) -> str:
        """``lines`` for a few short lines, else ``file``."""
        return "lines" if self.fits_lines and len(self.lines) <= MANY_LINES else "file"

    def seconds(self) -> float:
        """How long sending it as lines takes at the server's pace (after a full burst)."""
        tokens = sum(line_cost(ln) for ln in self.lines)
        return max(0.0, (tokens - FLOOD_BURST) / FLOOD_RATE)

    def question(self) -> str:
        """What the input line asks while the paste waits for an answer."""
        n = len(self.lines)
        took = self.seconds()
        as_lines = f"send as {plural(n, 'line')}" + (f" (~{took:.0f}s)" if took >= 1 else "")
        as_file = f"send as {PASTE_NAME}"
        if self.default == "lines":
            choices = [f"Enter: {as_lines}", f"f: {as_file}"]
        else:
            choices = [f"Enter: {as_file}"] + ([f"l: {as_lines}"] if self.fits_lines else [])
        return f"Paste of {plural(n, 'line')} \u2014 " + " \u00b7 ".join([*choices, "Esc: cancel"])
