"""The console's terminal: drawing frames, the admin line editor, taking the tty over.

``Screen`` turns rendered lines (``chat.consoleview``) into escape sequences,
rewriting only the lines that changed (``paint`` is the only place clint is
used, with the stream passed in); ``terminal_size`` asks the terminal its
size; ``AdminProtocol`` is the line editor reading command lines from
``twisted.internet.stdio``; and ``Terminal`` takes over the process's own
terminal (cbreak input, stdio, SIGWINCH) and puts it back the way it found it.
"""

from __future__ import annotations

import codecs
import os
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from clint.textui import colored
from twisted.internet import protocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from chat.consoleview import Line, Segment
from chat.sanitize import clean

if TYPE_CHECKING:
    from chat.console import Console

# --- frames ---

_ENTER = "\x1b[?1049h\x1b[H\x1b[2J"
_LEAVE = "\x1b[0m\x1b[?25h\x1b[?1049l"
_PAINT: dict[str, Callable[..., Any]] = {
    name: getattr(colored, name)
    for name in ("red", "green", "yellow", "blue", "magenta", "cyan", "white")
}


def paint(seg: Segment) -> str:
    """A segment with its colour, as escape sequences (clint's, forced on)."""
    if seg.colour is not None:
        return str(_PAINT[seg.colour](seg.text, always=True, bold=seg.bold).color_str)
    if seg.bold:
        return f"\x1b[1m{seg.text}\x1b[22m"
    return seg.text


class Screen:
    """Draws frames on a terminal, rewriting only the lines that changed."""

    def __init__(self, write: Callable[[bytes], None], size: Callable[[], tuple[int, int]]):
        self.write = write
        self.size = size
        self._previous: list[str] = []
        self._full = True

    def enter(self) -> None:
        self.write(_ENTER.encode())
        self.invalidate()

    def invalidate(self) -> None:
        """The next frame repaints everything (after a resize)."""
        self._full = True

    def show(self, lines: Sequence[Line], cursor_col: int) -> None:
        frame = ["".join(paint(seg) for seg in line) for line in lines]
        out: list[str] = []
        previous = self._previous
        if self._full:
            out.append("\x1b[0m\x1b[H\x1b[2J")
            previous = []
            self._full = False
        for row, text in enumerate(frame):
            if row < len(previous) and previous[row] == text:
                continue
            out.append(f"\x1b[{row + 1};1H{text}\x1b[0m\x1b[K")
        if len(previous) > len(frame):
            out.append(f"\x1b[{len(frame) + 1};1H\x1b[J")
        # The cursor waits at the end of what the operator is typing.
        out.append(f"\x1b[{max(1, len(frame))};{max(1, cursor_col)}H")
        self._previous = frame
        self.write("".join(out).encode("utf-8"))

    def leave(self) -> None:
        self.write(_LEAVE.encode())


def terminal_size(fd: int = 1) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return size.columns, size.lines


# --- admin input ---

#: The longest command line the console keeps (a paste beyond it is cut).
MAX_INPUT = 4096


@implementer(IHalfCloseableProtocol)
class AdminProtocol(protocol.Protocol):
    """Edited command lines from stdin.

    The terminal is in cbreak mode (no echo, no line discipline), so this is
    the line editor: printable text appends, Backspace and Ctrl-U erase, CR or
    LF ends the line (CRLF counts once). Piped input works the same way.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.buffer = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._after_cr = False

    def dataReceived(self, data: bytes) -> None:
        for ch in self._decoder.decode(data):
            if ch in "\r\n":
                if ch == "\n" and self._after_cr:
                    self._after_cr = False
                    continue
                self._after_cr = ch == "\r"
                line, self.buffer = clean(self.buffer), ""
                self.console.command(line)
                continue
            self._after_cr = False
            if ch in "\x7f\x08":
                self.buffer = clean(self.buffer)[:-1]
            elif ch == "\x15":
                self.buffer = ""
            elif len(self.buffer) < MAX_INPUT:
                # Escape sequences (arrow keys) are kept raw and scrubbed
                # whole by clean(), so no "[A" is left behind.
                self.buffer += ch
        self.console.set_input(clean(self.buffer))

    def readConnectionLost(self) -> None:
        # stdin closed (redirected from /dev/null, say): the view stays up.
        self.console.input_closed()

    def writeConnectionLost(self) -> None:
        pass


# --- the process's terminal ---


class Terminal:
    """The process's own terminal: cbreak input, stdio, SIGWINCH, and restoring it all."""

    def __init__(self, console: Console, reactor: Any) -> None:
        self.console = console
        self.reactor = reactor
        self.stdio: Any = None
        self.screen: Screen | None = None
        self._saved: Any = None
        self._old_winch: Any = None

    def open(self) -> None:
        from twisted.internet import stdio

        if os.isatty(0):
            import termios
            import tty

            self._saved = termios.tcgetattr(0)
            tty.setcbreak(0)
            attrs = termios.tcgetattr(0)
            # No XON/XOFF: a stray Ctrl-S would otherwise freeze the view.
            attrs[0] &= ~termios.IXON
            termios.tcsetattr(0, termios.TCSANOW, attrs)
        # Writes go through the stdio transport: non-blocking, so a stalled
        # terminal delays the view, never the chat.
        self.stdio = stdio.StandardIO(AdminProtocol(self.console), reactor=self.reactor)
        self.screen = Screen(self.stdio.write, terminal_size)
        self._old_winch = signal.signal(signal.SIGWINCH, self._winch)

    def _winch(self, signum: int, frame: Any) -> None:
        # A signal handler may interrupt anything: hand over to the reactor.
        self.reactor.callFromThread(self.console.resized)

    def close(self) -> None:
        if self._old_winch is not None:
            signal.signal(signal.SIGWINCH, self._old_winch)
            self._old_winch = None
        writer = getattr(self.stdio, "_writer", None)
        reader = getattr(self.stdio, "_reader", None)
        if reader is not None:
            reader.stopReading()
        # stdio made the tty non-blocking (for stdin, stdout and stderr: they
        # share one file description); the shell after us expects blocking.
        for fd in (0, 1):
            try:
                os.set_blocking(fd, True)
            except OSError:
                pass
        # The reactor has stopped, so flush any frame still queued by hand
        # before the last sequences, which must not land inside it (private
        # _tempDataBuffer: see docs/architecture.md).
        for _ in range(100):
            if writer is None or not (writer.dataBuffer or writer._tempDataBuffer):
                break
            try:
                writer.doWrite()
            except OSError:
                break
        try:
            os.write(1, _LEAVE.encode())
        except OSError:
            pass
        if self._saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, self._saved)
            self._saved = None
