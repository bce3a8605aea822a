"""Tab completion for the input line: commands, nicknames, file ids and paths.

The completer asks callables for the current participants and the file ids
seen so far, so it never holds stale copies. The first word completes to a
command from ``commands.command_table()``, the list ``/help`` shows; after
``/send`` (and for ``/get``'s destination) words complete as paths; after
``/get`` to a file id; a word starting with ``#`` to a room you are in;
anywhere else to a nickname (with ``: `` appended when it opens a message,
as IRC clients do). The input is read as a shell
reads it, which is how ``/send`` and ``/get`` split their arguments, and a
completed path is quoted when it needs to be (``"report 2026.txt"``), so
whatever completion produces is what the command receives.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from client_tui.commands import command_table

# What a shell (and shlex.split) leaves alone outside quotes.
_PLAIN = re.compile(r"[\w@%+=:,./~-]+", re.ASCII)


def complete_word(word: str, candidates: Iterable[str]) -> list[str]:
    """Candidates starting with ``word`` (case-insensitive), sorted, no duplicates."""
    low = word.lower()
    seen: dict[str, None] = {}
    for c in candidates:
        if c.lower().startswith(low):
            seen.setdefault(c, None)
    return sorted(seen, key=str.lower)


def shell_words(text: str) -> list[tuple[int, str]]:
    """``text`` split as ``shlex.split`` does: (where each word starts, its value).

    The last word may be unfinished (an open quote); text ending in a blank
    ends with an empty word, the one being started.
    """
    words: list[tuple[int, str]] = []
    value: list[str] = []
    start = -1
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if quote == "'":
            quote = "" if c == "'" else quote
            if quote:
                value.append(c)
        elif quote == '"':
            if c == '"':
                quote = ""
            elif c == "\\" and nxt in ('"', "\\"):
                value.append(nxt)
                i += 1
            else:
                value.append(c)
        elif c in " \t\r\n":
            if start >= 0:
                words.append((start, "".join(value)))
                start, value = -1, []
        else:
            if start < 0:
                start = i
            if c in "'\"":
                quote = c
            elif c == "\\":
                value.append(nxt)
                i += 1
            else:
                value.append(c)
        i += 1
    words.append((start, "".join(value)) if start >= 0 else (len(text), ""))
    return words


def quote_path(path: str) -> str:
    """``path`` as one shell word: as it is if that is safe, else in double quotes."""
    if _PLAIN.fullmatch(path):
        return path
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def path_candidates(partial: str) -> Iterator[tuple[str, str]]:
    """(full path, name shown) for every entry that completes ``partial``.

    ``~`` stays as typed; hidden entries only when ``partial``'s last part
    starts with a dot; directories end in ``/`` so Tab goes on into them.
    """
    head, prefix = os.path.split(partial)
    directory = os.path.expanduser(head) if head else "."
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix) or (name.startswith(".") and not prefix.startswith(".")):
            continue
        full = partial[: len(partial) - len(prefix)] + name
        if os.path.isdir(os.path.join(directory, name)):
            yield full + "/", name + "/"
        else:
            yield full, name


class ChatCompleter(Completer):
    def __init__(
        self,
        names: Callable[[], Iterable[str]],
        file_ids: Callable[[], Iterable[str]] = lambda: (),
        rooms: Callable[[], Iterable[str]] = lambda: (),
    ) -> None:
        self.names = names
        self.file_ids = file_ids
        self.rooms = rooms

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        before = document.text_before_cursor
        cmd = before.split(" ", 1)[0].lower()
        if cmd in ("/send", "/get") and " " in before:
            yield from self._file_args(cmd, before)
            return
        words = before.split(" ")
        word = words[-1]
        if len(words) == 1:
            if word.startswith("/"):
                for verb in complete_word(word, ("/" + verb for verb in command_table())):
                    yield Completion(verb + " ", -len(word), display=verb)
                return
            for name in complete_word(word, self.names()):
                yield Completion(name + ": ", -len(word), display=name)
            return
        # A word that starts with # is a room (/part #d, /msg #d, /topic #d…).
        for name in complete_word(word, self.rooms() if word.startswith("#") else self.names()):
            yield Completion(name + " ", -len(word), display=name)

    def _file_args(self, cmd: str, before: str) -> Iterator[Completion]:
        """``/send PATH...`` and ``/get [-f] ID [DEST]``, read as the commands read them."""
        words = shell_words(before)
        start, word = words[-1]
        back = -(len(before) - start)  # replace the whole word, quotes included
        args = [w for _, w in words[1:-1] if cmd != "/get" or w not in ("-f", "--force")]
        if cmd == "/get" and not args:
            for fid in complete_word(word, self.file_ids()):
                yield Completion(fid + " ", back, display=fid)
        elif cmd == "/send" or len(args) == 1:
            for full, shown in path_candidates(word):
                yield Completion(quote_path(full) + ("" if full.endswith("/") else " "), back,
                                 display=shown)
