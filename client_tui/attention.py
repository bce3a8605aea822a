"""What deserves the user's attention: mentions, private messages, the bell and the title.

``mentions`` and ``is_highlight`` are pure: a line highlights when someone
else's message or action names you as a word (case-insensitive, as names
are), or when it is a private message to you. ``Attention`` rings the bell
for each live one (unless ``--no-bell``) and words the terminal title with
the count of highlights not seen yet (the pane counts them).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from chat import events as ev

#: Characters a user name may hold (docs/protocol.md, "User names").
_NAME_CHAR = r"[A-Za-z0-9_.\-]"


def mentions(text: str, name: str | None) -> bool:
    """Whether ``text`` names ``name`` as a word: ``alice:``, ``@Alice``, ``thanks alice.``.

    Not inside a longer name: ``malice``, ``alice_bot`` or ``alice.smith``
    are someone else (a name may hold ``.`` and ``-``, but not end a sentence
    with them).
    """
    if not name:
        return False
    pattern = (rf"(?<!{_NAME_CHAR}){re.escape(name)}"
               rf"(?![A-Za-z0-9_]|[.\-]{_NAME_CHAR})")
    return re.search(pattern, text, re.IGNORECASE | re.ASCII) is not None


def _same(a: str, b: str | None) -> bool:
    return b is not None and a.lower() == b.lower()


def is_highlight(event: ev.Event, me: str | None) -> bool:
    """A mention of ``me`` by someone else, or a private message to ``me``."""
    match event:
        case ev.Private(sender=sender):
            return me is not None and not _same(sender, me)
        case ev.Message(sender=sender, text=text) | ev.Action(sender=sender, text=text):
            return not _same(sender, me) and mentions(text, me)
    return False


class Attention:
    """The bell for live highlights, and the terminal title."""

    def __init__(self, bell: bool = True) -> None:
        self.bell_enabled = bell
        #: rings the terminal bell (the app sets it to the output's ``bell``)
        self.ring: Callable[[], None] = lambda: None
        #: how many times it rang (for tests and the driver)
        self.bells = 0

    def highlight(self) -> None:
        """A live highlight arrived: ring, unless the bell is off."""
        if self.bell_enabled:
            self.bells += 1
            self.ring()

    @staticmethod
    def title(me: str | None, server: str, unseen: int) -> str:
        """``chat-tui: alice@host:port``, with ``(2)`` in front for unseen highlights."""
        head = f"({unseen}) " if unseen else ""
        who = f"{me}@" if me else ""
        return f"{head}chat-tui: {who}{server}"
