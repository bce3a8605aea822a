"""The way in, from the client's side: a name, and the passwords the server asks for.

The server's ``prompt`` says what the next line is (``expects``): a name, or
a password — the server's (``server``), an account's (``account``: the
name chosen is one), or one to make the name an account with (``new``).
A password is asked on screen with the input masked (state ``password``);
what was in the input line is set aside and put back after.
The answer goes to the server — the server's password as ``/pass
PASSWORD``, since at that prompt a line beginning with ``/`` is a command —
and is kept in memory only, for this run, so that a reconnect logs in again
without asking (never on disk, in the history, the pane or the log).
``/login NAME PASSWORD`` typed at the name prompt is the one-line form. A
wrong account password asks again; a remembered password the server no
longer takes is forgotten. ``/register``, ``/password`` and ``/unregister``
change what the password is, so after them a reconnect asks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chat import events as ev
from chat import wire
from chat.wire import split_command

if TYPE_CHECKING:
    from client_tui.session import ChatSession

#: What the pane says while each kind of password is asked (``new``: the server's words,
#: which name the shortest length it takes).
ASKING = {
    "server": "The server asks for its password: type it below (it is not shown).",
    "account": "{name} is an account: type its password below (it is not shown).",
    "new": "{text} Type it below (it is not shown).",
}
#: Errors that the prompt following them repeats (so the pane says them once).
PROMPT_REASONS = frozenset({"invalid_name", "name_taken", "bad_password", "weak_password"})


class Login:
    """Answers the server's prompts for one ``ChatSession``."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session
        #: the account's password given this run (memory only), for a reconnect
        self.password: str | None = None
        #: the server's password given this run
        self.server_password: str | None = None
        #: which password is being asked on screen (``None``: none)
        self.asking: str | None = None
        #: what the input line held when a password was asked
        self.set_aside = ""
        #: the code of the last error before registering (why a prompt came back)
        self.refused: str | None = None

    def prompt(self, event: ev.Prompt) -> None:
        s = self.session
        if event.expects == "name":
            self._name(event.reason)
        elif event.expects == "server" and self.server_password is not None and not event.reason:
            s.proto_send(f"/pass {self.server_password}")
        elif event.expects == "account" and self.password is not None:
            s.proto_send(self.password)
        else:
            if event.expects == "server":
                self.server_password = None
            if event.reason:
                s.pane.error(event.reason)
            self._ask(event.expects, event.text)
        s.changed()

    def _name(self, reason: str | None) -> None:
        s = self.session
        refused, self.refused = self.refused, None
        if refused == "bad_password" and s.name:
            # A wrong password: forget it, and ask again (the name brings the prompt back).
            s.pane.error(f"Wrong password for {s.name}.")
            self.password = None
            reason = None
        elif reason:
            s.pane.error(f"Name refused: {reason}")
            s.name = None
        if s.name and s.proto is not None:
            s.proto_send(s.name)
            s.state = "registering"
        else:
            s.state = "naming"
            s.pane.info("Choose a username (type it below and press Enter):")

    def _ask(self, kind: str, text: str) -> None:
        s = self.session
        words = ASKING.get(kind, ASKING["account"])
        s.pane.info(words.format(text=text, name=s.name or "The name"))
        if self.asking is None:
            self.set_aside = s.input_text()
            s.set_input("")
        self.asking = kind
        s.state = "password"

    def answer(self, text: str) -> None:
        """The line typed at a password prompt (all of it, spaces included)."""
        s = self.session
        kind, self.asking = self.asking, None
        if kind == "server":
            self.server_password = text
            s.proto_send(f"/pass {text}")
        else:
            self.password = text
            s.proto_send(text)
        s.state = "registering"
        s.changed()

    def take_set_aside(self) -> str:
        """What the input line held before the password was asked, to put back (once the
        screen has wiped the password from the line and its undo stack)."""
        text, self.set_aside = self.set_aside, ""
        return text

    def named(self, text: str) -> None:
        """The line typed at the name prompt: a name, or ``/login NAME PASSWORD``."""
        s = self.session
        if text.startswith("/"):
            verb, args = split_command(text)
            if verb == wire.Login.verb:
                try:
                    login = wire.Login.parse(args)
                except wire.CommandError:
                    s.pane.error(f"Usage: {wire.Login.usage}")
                    return
                s.name, self.password = login.name, login.password
                if s.proto is not None:
                    s.state = "registering"
                    s.proto_send(text)
                s.changed()
                return
        s.choose_name(text.strip())

    def error(self, event: ev.Error) -> bool:
        """An error while not yet in; ``True`` if the prompt after it will say it."""
        self.refused = event.code
        if event.code == "too_many_attempts":
            self.password = None
        return event.code in PROMPT_REASONS

    def lost(self) -> None:
        """The connection went while a password was asked: the question is void."""
        if self.asking is not None:
            self.asking = None
            self.session.set_input(self.set_aside)
            self.set_aside = ""

    def welcomed(self, account: bool) -> None:
        self.refused = None
        if not account:
            self.password = None  # a guest's name: nothing to remember

    def changed_password(self) -> None:
        """``/register``, ``/password`` or ``/unregister`` went out: the next login asks."""
        self.password = None
