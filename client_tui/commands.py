"""What the user types, and the one list of commands the client offers.

A line is a name (while the server asks for one), a chat line, or a command.
The client runs some commands itself (``/send`` and ``/get`` move files on
transfer connections; ``/help``, ``/cancel``, ``/clear``, ``/quit``): each is
defined once, by the ``local`` decorator on its handler, with its usage and
summary. Any other command goes to the server as typed. ``command_table()``
merges the server's commands (``chat.wire.COMMANDS``, those allowed in
``State.CHAT``) with the local ones, the client's usage winning where it runs
a command itself; ``/help`` and Tab completion both read it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chat.wire import COMMANDS, ESCAPE_HELP, State, split_command
from client_tui.transfer import Download, Upload

if TYPE_CHECKING:
    from client_tui.session import ChatSession

#: Shown by ``/help`` after the commands: keys are not commands, so Tab does not offer them.
KEYS_HELP = ("PageUp/PageDown", "scroll the messages; Tab completes commands and names")


@dataclass(frozen=True, slots=True)
class LocalCommand:
    """A command the client runs itself; ``listed=False`` keeps it out of help and Tab."""

    usage: str
    summary: str
    run: Callable[[CommandLine, str], None]
    listed: bool = True

    @property
    def verb(self) -> str:
        return self.usage.split()[0].removeprefix("/")


#: The client's own commands by verb, filled by ``local`` as the handlers are defined.
LOCAL: dict[str, LocalCommand] = {}


def local(
    usage: str, summary: str, listed: bool = True
) -> Callable[[Callable[[CommandLine, str], None]], Callable[[CommandLine, str], None]]:
    """Register the decorated ``CommandLine`` method as the client's own command."""

    def register(run: Callable[[CommandLine, str], None]) -> Callable[[CommandLine, str], None]:
        command = LocalCommand(usage, summary, run, listed)
        LOCAL[command.verb] = command
        return run

    return register


def command_table() -> dict[str, tuple[str, str]]:
    """``verb -> (usage, summary)`` for every command offered, in ``/help`` order.

    The server's commands a participant may type, in the server's order (the
    client's usage for those it runs itself), then the client's own.
    """
    verbs = [c.verb for c in COMMANDS.values() if State.CHAT in c.states and c.listed]
    verbs += [verb for verb in LOCAL if verb not in verbs]
    table: dict[str, tuple[str, str]] = {}
    for verb in verbs:
        if verb in LOCAL:
            if LOCAL[verb].listed:
                table[verb] = (LOCAL[verb].usage, LOCAL[verb].summary)
        else:
            table[verb] = (COMMANDS[verb].usage, COMMANDS[verb].summary)
    return table


class CommandLine:
    """Interprets each line the user enters, for one ``ChatSession``."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session

    def submit(self, text: str) -> None:
        session = self.session
        text = text.replace("\r", " ").replace("\n", " ")
        if not text.strip():
            return
        if session.state == "naming":
            if text.strip().lower().startswith("/quit"):
                session.quit()
            else:
                session.choose_name(text.strip())
            return
        if text.startswith("/") and not text.startswith("//"):
            verb, args = split_command(text)
            if verb in LOCAL:
                LOCAL[verb].run(self, args.strip())
                return
        session.send(text)

    def _words(self, verb: str, args: str) -> list[str] | None:
        """``args`` split as a shell would (quotes for spaces); ``None`` after an error line."""
        try:
            return shlex.split(args)
        except ValueError as e:
            self.session.pane.error(f"/{verb}: {e}")
            return None

    @local("/help", "this list")
    def help(self, args: str) -> None:
        pane = self.session.pane
        pane.info("Commands:")
        for usage, summary in (*command_table().values(), ESCAPE_HELP, KEYS_HELP):
            pane.info(f"  {usage:<24} {summary}")

    @local("/send PATH [PATH...]", "upload files, one after another, on a transfer connection")
    def send(self, args: str) -> None:
        session = self.session
        paths = self._words("send", args)
        if paths is None:
            return
        if not paths:
            session.pane.error(f"Usage: {LOCAL['send'].usage}")
            return
        if session.session_key is None:
            session.pane.error("Not connected: cannot send files.")
            return
        for p in paths:
            session.transfers.add(Upload(Path(p).expanduser(), session.reactor))

    @local("/get [-f] ID [DEST]",
           "download a shared file into DEST or the download directory; -f overwrites")
    def get(self, args: str) -> None:
        session = self.session
        words = self._words("get", args)
        if words is None:
            return
        force = any(w in ("-f", "--force") for w in words)
        words = [w for w in words if w not in ("-f", "--force")]
        if not 1 <= len(words) <= 2:
            session.pane.error(f"Usage: {LOCAL['get'].usage}")
            return
        if session.session_key is None:
            session.pane.error("Not connected: cannot fetch files.")
            return
        dest = Path(words[1]).expanduser() if len(words) == 2 else session.download_dir
        session.transfers.add(Download(words[0], dest, force))

    @local("/cancel", "abort the running transfer")
    def cancel(self, args: str) -> None:
        if not self.session.transfers.cancel():
            self.session.pane.error("No transfer is running.")

    @local("/clear", "clear the message pane")
    def clear(self, args: str) -> None:
        self.session.pane.clear()

    @local("/quit [REASON]", "leave")
    def quit(self, args: str) -> None:
        self.session.quit(args or None)

    @local("/proto", "switch modes (refused: this client always speaks JSON)", listed=False)
    def proto(self, args: str) -> None:
        self.session.pane.error("This client always speaks JSON with the server.")
