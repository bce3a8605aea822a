"""Which part of a typed line is a password, so that it is never shown or kept.

A password is typed at the server's prompts (the whole line) and in the
account commands of ``chat.wire``: ``/register PASSWORD``, ``/unregister
PASSWORD``, ``/password OLD NEW``, ``/pass PASSWORD`` and ``/login NAME
PASSWORD``. ``secret_start`` says where the secret begins in such a line
(it runs to the end); the input line draws it as ``*`` (``MaskSecrets``),
and the line goes neither to the input history nor anywhere on screen.
"""

from __future__ import annotations

from collections.abc import Callable

from prompt_toolkit.formatted_text.utils import fragment_list_to_text
from prompt_toolkit.layout.processors import Processor, Transformation, TransformationInput

from chat.wire import Login, Pass, Password, Register, Unregister, split_command

#: The commands that carry a password, and how many words come before it.
SECRET_VERBS: dict[str, int] = {
    Register.verb: 0, Unregister.verb: 0, Password.verb: 0, Pass.verb: 0, Login.verb: 1,
}

MASK = "*"


def secret_start(text: str) -> int | None:
    """Where the password in ``text`` begins, or ``None`` if it holds none.

    ``//register x`` is chat text (said, not run), so it holds none.
    """
    if not text.startswith("/") or text.startswith("//"):
        return None
    verb, _ = split_command(text)
    words_before = SECRET_VERBS.get(verb)
    if words_before is None or len(text) == 1 + len(verb):
        return None  # not an account command, or nothing after its verb yet
    at = 1 + len(verb)  # the space after the verb

    def past(at: int, spaces: bool) -> int:
        while at < len(text) and (text[at] == " ") == spaces:
            at += 1
        return at

    at = past(at, spaces=True)
    for _ in range(words_before):  # /login's NAME stays visible
        at = past(past(at, spaces=False), spaces=True)
    return at if at < len(text) else None


def is_secret(text: str) -> bool:
    """Whether ``text`` carries a password (and so must not be kept)."""
    return secret_start(text) is not None


def masked(text: str, start: int | None) -> str:
    """``text`` with everything from ``start`` drawn as ``*``."""
    if start is None:
        return text
    return text[:start] + MASK * (len(text) - start)


class MaskSecrets(Processor):
    """Draws the input line's password as ``*``: all of it while ``whole()`` (a password
    prompt), else the password part of an account command."""

    def __init__(self, whole: Callable[[], bool]) -> None:
        self.whole = whole

    def apply_transformation(self, ti: TransformationInput) -> Transformation:
        text = ti.document.text
        start = 0 if self.whole() and text else secret_start(text)
        if start is None or ti.lineno != 0:
            return Transformation(ti.fragments)
        # One cell per character either way, so the cursor positions stay as they are.
        shown = fragment_list_to_text(ti.fragments)
        style = ti.fragments[0][0] if ti.fragments else ""
        return Transformation([(style, masked(shown, start))])
