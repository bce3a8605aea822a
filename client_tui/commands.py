"""What the user types, and the one list of commands the client offers.

A line is a name or a password (while the server asks for one: ``Login``),
a chat line, or a command; chat lines and the server's commands go to the
room shown (``RoomFlow.ensure``). A line that cannot go out (the connection
is down) stays in the input. The client runs some commands itself (``/send``
and ``/get`` move files on transfer connections; ``/history`` is tracked so
its answer lands where it belongs; ``/join`` of a room you are in just shows
it; ``/ignore``, ``/people``, ``/help``, ``/cancel``, ``/clear``,
``/quit``): each is defined once, by the ``local`` decorator on its handler,
with its usage and summary. Any other command goes to the server as typed.
``command_table()`` merges the server's commands (``chat.wire.COMMANDS``,
those allowed in ``State.CHAT``) with the local ones, the client's usage
winning where it runs a command itself; ``/help`` and Tab completion both
read it. A paste of several lines waits here for the user's answer (send
as lines, as ``paste.txt``, or not at all), unless ``--paste`` decided.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chat import wire
from chat.units import plural
from chat.wire import COMMANDS, ESCAPE_HELP, State, split_command
from client_tui.download import Download
from client_tui.masking import is_secret
from client_tui.paste import PASTE_NAME, Paste, paste_lines
from client_tui.settings import SettingsError
from client_tui.transfer import PasteUpload, Upload

if TYPE_CHECKING:
    from client_tui.session import ChatSession

#: Shown by ``/help`` after the commands: keys are not commands, so Tab does not offer them.
KEYS_HELP = (
    ("Alt-1..Alt-9", "show room 1 to 9; Ctrl-N/Ctrl-P: the next / previous room"),
    ("PageUp/PageDown", "scroll the messages a page; Ctrl-Up/Ctrl-Down a row"),
    ("Ctrl-Home/Ctrl-End", "the oldest / the newest messages (Home/End on an empty line)"),
    ("Tab", "complete commands, names, file ids and paths; F2: the list of people"),
)


@dataclass(frozen=True, slots=True)
class LocalCommand:
    """A command the client runs itself; ``listed=False`` keeps it out of help and Tab."""

    usage: str
    summary: str
    run: Callable[[CommandLine, str], bool | None]
    listed: bool = True

    @property
    def verb(self) -> str:
        return self.usage.split()[0].removeprefix("/")


#: The client's own commands by verb, filled by ``local`` as the handlers are defined.
LOCAL: dict[str, LocalCommand] = {}


Handler = Callable[["CommandLine", str], "bool | None"]


def local(usage: str, summary: str, listed: bool = True) -> Callable[[Handler], Handler]:
    """Register the decorated ``CommandLine`` method as the client's own command
    (it may return ``False``: not sent, the line stays in the input)."""

    def register(run: Handler) -> Handler:
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
    """Interprets each line the user enters (and each paste), for one ``ChatSession``."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session
        #: a paste of several lines waiting for the user's answer
        self.paste: Paste | None = None

    def submit(self, text: str) -> bool:
        """Act on an entered line; ``False`` when it could not go out and stays in the input."""
        session = self.session
        text = text.replace("\r", " ").replace("\n", " ")
        if not text.strip():
            return True
        if session.state == "password":
            session.login.answer(text)  # all of it: a password may hold spaces, or begin with /
            return True
        if session.state == "naming":
            if text.strip().lower().startswith("/quit"):
                session.quit()
            else:
                session.login.named(text)
            return True
        if text.startswith("/") and not text.startswith("//"):
            verb, args = split_command(text)
            if verb in LOCAL:
                # ``False`` from a command: it could not go out; the line stays in the input.
                return LOCAL[verb].run(self, args.strip()) is not False
            if is_secret(text):
                session.login.changed_password()
                if session.say(text):
                    # Who is an account changed: ask the room again (answered after it).
                    session.roomflow.refresh_names()
                    return True
                return False
        if session.pane.reading_back:
            session.pane.end()  # what you say, you see
        return session.say(text)

    def _words(self, verb: str, args: str) -> list[str] | None:
        """``args`` split as a shell would (quotes for spaces); ``None`` after an error line."""
        try:
            return shlex.split(args)
        except ValueError as e:
            self.session.pane.error(f"/{verb}: {e}")
            return None

    # --- pastes ---

    def pasted(self, text: str) -> str | None:
        """A bracketed paste: the text to type into the input (one line), or ``None``
        when it is several lines, now sent or waiting for the user's answer."""
        lines = paste_lines(text)
        while len(lines) > 1 and not lines[-1].strip():
            lines.pop()  # a copied line usually ends with its newline
        if len(lines) <= 1 or self.session.state in ("naming", "password"):
            return lines[0] if lines else ""
        paste = Paste("\n".join(lines))
        if not paste.lines:
            return ""
        mode = self.session.options.paste
        if mode == "ask":
            self.paste = paste
            self.session.changed()
        else:
            self.answer(mode if mode == "file" or paste.fits_lines else "file", paste)
        return None

    def answer(self, choice: str, paste: Paste | None = None) -> None:
        """Send the waiting paste as ``lines`` or as a ``file``, ``default`` or ``cancel`` it."""
        paste = paste or self.paste
        self.paste = None
        session = self.session
        if paste is None or choice == "cancel":
            session.changed()
            return
        if choice == "default":
            choice = paste.default
        if choice == "lines" and paste.fits_lines:
            if session.pane.reading_back:
                session.pane.end()
            if session.state == "online":
                session.roomflow.ensure()  # to the room shown
            for line in paste.lines:
                session.outbox.send(line)
        elif session.session_key is None:
            session.pane.error("Not connected: cannot send the paste as a file.")
        else:
            session.transfers.add(PasteUpload(paste.as_file, PASTE_NAME, session.reactor,
                                              self._room()))
        session.changed()

    def _room(self) -> str | None:
        """The room shown: where an upload is shared."""
        return self.session.rooms.shown.name or None

    # --- the client's own commands ---

    @local("/join ROOM", "join a room (made if new) and show it; of a room you are in, show it")
    def join(self, args: str) -> bool:
        return self.session.roomflow.join(args)

    @local("/help", "this list")
    def help(self, args: str) -> None:
        pane = self.session.pane
        pane.info("Commands:")
        rows = [*command_table().values(), ESCAPE_HELP, *KEYS_HELP]
        width = max(len(usage) for usage, _ in rows)
        for usage, summary in rows:
            pane.info(f"  {usage:<{width}}  {summary}")

    @local("/history [N | after ID]",
           "the last N messages, or those after message ID, merged where they belong")
    def history(self, args: str) -> None:
        session = self.session
        try:
            wire.History.parse(args)
        except wire.CommandError:
            session.pane.error(f"Usage: {LOCAL['history'].usage}")
            return
        if session.state != "online":
            session.pane.error("Not connected: no history to fetch.")
            return
        session.roomflow.ensure()  # the room shown's history
        session.history.ask(args)

    @local("/send PATH [PATH...]",
           "upload files, one after another (going on from what the server holds of one)")
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
            session.transfers.add(Upload(Path(p).expanduser(), session.reactor, self._room()))

    @local("/get [-f] ID [DEST]",
           "download a shared file into DEST or the download directory (going on from "
           "its .part); -f overwrites")
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

    @local("/cancel", "abort the running transfer, and the lines of a paste not yet sent")
    def cancel(self, args: str) -> None:
        session = self.session
        dropped = session.outbox.drop()
        if dropped:
            session.pane.info(f"Not sending the {plural(dropped, 'line')} still waiting.")
        if not session.transfers.cancel() and not dropped:
            session.pane.error("No transfer is running and no lines are waiting.")

    @local("/ignore [NAME]", "hide NAME's lines on this client (no NAME: list who is ignored)")
    def ignore(self, args: str) -> None:
        settings = self.session.settings
        pane = self.session.pane
        name = args.split()[0] if args.split() else ""
        if not name:
            ignored = ", ".join(sorted(settings.ignore, key=str.lower)) or "nobody"
            pane.info(f"Ignoring: {ignored}.")
            return
        if settings.is_ignored(name):
            pane.info(f"Already ignoring {name}.")
            return
        settings.ignore.append(name)
        self._save(f"Ignoring {name}: their lines are hidden from now on (/unignore {name}).")

    @local("/unignore NAME", "show NAME's lines again")
    def unignore(self, args: str) -> None:
        settings = self.session.settings
        name = args.split()[0] if args.split() else ""
        if not name:
            self.session.pane.error(f"Usage: {LOCAL['unignore'].usage}")
            return
        if not settings.is_ignored(name):
            self.session.pane.info(f"{name} is not ignored.")
            return
        settings.ignore = [n for n in settings.ignore if n.lower() != name.lower()]
        self._save(f"No longer ignoring {name}.")

    def _save(self, done: str) -> None:
        try:
            self.session.settings.save()
        except (OSError, SettingsError) as e:
            self.session.pane.error(f"{done} (Not saved: {e})")
            return
        where = self.session.settings.path
        self.session.pane.info(done + (f" Saved in {where}." if where else ""))

    @local("/people", "show or hide the list of people (also F2)")
    def people(self, args: str) -> None:
        self.session.toggle_people()

    @local("/clear", "clear the message pane")
    def clear(self, args: str) -> None:
        self.session.pane.clear()

    @local("/quit [REASON]", "leave")
    def quit(self, args: str) -> None:
        self.session.quit(args or None)

    @local("/proto", "switch modes (refused: this client always speaks JSON)", listed=False)
    def proto(self, args: str) -> None:
        self.session.pane.error("This client always speaks JSON with the server.")
