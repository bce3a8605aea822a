"""The local log (``--log DIR``): one plain-text file per day, as irssi's autolog keeps.

``DIR/YYYY-MM-DD.log`` (the local date of each line) gets every line said in
the conversation as the pane shows it — messages, actions, private messages,
joins, leaves, renames, notices, files, and what a reconnect fetched — but
not the client's own notices or the history shown at start or by
``/history``. While you are in more than one room, each line names its room
after its time (``13:03:18 [#dev] <bob> hi``). Opening a file for the day
writes a ``--- Log opened`` line naming the server. Lines are written as
they come (a small write each, no buffering to lose on a crash). Passwords
never reach it: they are typed, never said.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import IO

from client_tui.format import Line, local_day


class ChatLog:
    """Appends conversation lines to the day's file under ``directory``."""

    def __init__(self, directory: Path, server: str) -> None:
        self.directory = directory
        self.server = server
        self._day = ""
        self._file: IO[str] | None = None

    def write(self, line: Line, room: str | None = None) -> None:
        """Append ``line``; ``room`` (while you are in several) is named after its time."""
        day = local_day(line.ts)
        name = day.isoformat() if day is not None else "undated"
        if name != self._day or self._file is None:
            self._open(name)
        assert self._file is not None
        text = line.text
        if room:
            head = text.split(" ", 1)
            text = f"{head[0]} [{room}] {head[1]}" if len(head) == 2 else f"[{room}] {text}"
        self._file.write(text + "\n")
        self._file.flush()

    def _open(self, day: str) -> None:
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._file = open(self.directory / f"{day}.log", "a", encoding="utf-8")
        self._day = day
        opened = datetime.fromtimestamp(time.time()).strftime("%a %d %b %Y %H:%M:%S")
        self._file.write(f"--- Log opened {opened} ({self.server})\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
