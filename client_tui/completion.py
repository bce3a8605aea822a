"""Tab completion for the input line: commands, nicknames, file ids and paths.

The completer asks callables for the current participants and the file ids
seen so far, so it never holds stale copies. The first word completes to a
command from ``commands.command_table()``, the list ``/help`` shows; after
``/send`` words complete as paths; after ``/get`` to a file id;
anywhere else to a nickname (with ``: `` appended when it opens a message, as
IRC clients do).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from client_tui.commands import command_table


def complete_word(word: str, candidates: Iterable[str]) -> list[str]:
    """Candidates starting with ``word`` (case-insensitive), sorted, no duplicates."""
    low = word.lower()
    seen: dict[str, None] = {}
    for c in candidates:
        if c.lower().startswith(low):
            seen.setdefault(c, None)
    return sorted(seen, key=str.lower)


class ChatCompleter(Completer):
    def __init__(
        self,
        names: Callable[[], Iterable[str]],
        file_ids: Callable[[], Iterable[str]] = lambda: (),
    ) -> None:
        self.names = names
        self.file_ids = file_ids
        self._paths = PathCompleter(expanduser=True)

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        before = document.text_before_cursor
        words = before.split(" ")
        word = words[-1]
        if len(words) == 1:
            if word.startswith("/"):
                for cmd in complete_word(word, ("/" + verb for verb in command_table())):
                    yield Completion(cmd + " ", -len(word), display=cmd)
                return
            for name in complete_word(word, self.names()):
                yield Completion(name + ": ", -len(word), display=name)
            return
        cmd = words[0].lower()
        if cmd == "/send":
            yield from self._paths.get_completions(Document(word, len(word)), complete_event)
            return
        if cmd == "/get" and len(words) == 2:
            for fid in complete_word(word, self.file_ids()):
                yield Completion(fid + " ", -len(word), display=fid)
            return
        for name in complete_word(word, self.names()):
            yield Completion(name + " ", -len(word), display=name)
