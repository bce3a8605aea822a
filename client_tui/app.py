"""The screen: layout, key bindings and terminal cues around a ``ChatSession``.

Message pane (left), people of the room shown (right, hidden on narrow
screens or with F2), the room bar (in two rooms or more), the status bar
(server, connection and lag, name, room, highlights, transfers, topic; the
clock on the right), input line. The pane is a small ``UIControl`` that
draws exactly the rows ``Pane.screen`` lays out for the room shown —
wrapped by display width, the pane always full, and while reading back a
bar at the bottom counting what arrived below — so prompt_toolkit never
wraps or scrolls it. Alt-1…9 show a room, Ctrl-N/Ctrl-P the next or
previous. A password is typed masked, and a line that carries one (at a
prompt, or ``/register`` and friends) never enters the input history. A
paste of several lines turns the input line into a question. The terminal
bell rings for highlights and the title counts those not yet seen; where
the terminal reports focus, leaving it counts as not looking. All text is
handed over as plain fragments.
"""

from __future__ import annotations

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.key_binding.bindings.completion import generate_completions
from prompt_toolkit.keys import Keys
from prompt_toolkit.layout import (
    ConditionalContainer,
    Float,
    FloatContainer,
    FormattedTextControl,
    HSplit,
    Layout,
    VSplit,
    Window,
)
from prompt_toolkit.layout.controls import BufferControl, UIContent, UIControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.output import Output

from client_tui import bars
from client_tui.completion import ChatCompleter
from client_tui.format import screen_text
from client_tui.masking import MaskSecrets, is_secret
from client_tui.session import ChatSession
from client_tui.status import clock_text
from client_tui.style import build_style
from client_tui.wrap import Fragments, cells

#: Below this many columns the list of people is hidden (unless F2 or /people asks for it).
PEOPLE_MIN_WIDTH = 60

# Terminal focus reports (xterm's mode 1004): what the terminal sends, and how to ask.
FOCUS_ON, FOCUS_OFF = "\x1b[?1004h", "\x1b[?1004l"


class MessageControl(UIControl):
    """The message pane: the rows the room shown's ``Pane.screen`` lays out."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session

    def is_focusable(self) -> bool:
        return False

    def create_content(self, width: int, height: int | None) -> UIContent:
        pane = self.session.pane
        rows = pane.screen(width, height or pane.view.height)

        def get_line(i: int) -> Fragments:
            return rows[i] if 0 <= i < len(rows) else []

        return UIContent(get_line=get_line, line_count=max(1, len(rows)), show_cursor=False)


def build_app(
    session: ChatSession,
    input: Input | None = None,
    output: Output | None = None,
) -> Application[None]:
    completer = ChatCompleter(lambda: session.participants, lambda: session.file_ids,
                              lambda: [r.name for r in session.rooms])

    def accept(buf: Buffer) -> bool:
        text = buf.text
        # Names are not worth recalling, and passwords must not be (nor a line holding one).
        asked = session.state == "password"
        keep = bool(text.strip()) and session.state != "naming" and not asked \
            and not is_secret(text)
        if not session.commands.submit(text):
            return True  # not sent (offline): the text stays where it is
        buf.reset(append_to_history=keep)  # (also forgets the undo states of a password)
        if asked:
            buf.insert_text(session.login.take_set_aside())
        # reset() drops the loaded history until the next repaint reloads it;
        # reload now, so an Up typed right after Enter still finds this line.
        buf.load_history_if_not_yet_loaded()
        return True  # we reset the buffer ourselves

    input_buffer = Buffer(
        multiline=False,
        history=InMemoryHistory(),
        completer=completer,
        complete_while_typing=False,
        accept_handler=accept,
        name="input",
    )
    columns = [80]  # the screen's width at the last layout

    def status_words() -> str:
        # Narrow, the server's name gives way to what changes.
        return bars.status_words(session, columns[0], columns[0] < PEOPLE_MIN_WIDTH,
                                 session.people_visible)

    def status() -> Fragments:
        style = "class:status.down" if session.state == "disconnected" else "class:status"
        return [(style, status_words())]

    def clock() -> Fragments:
        return [("class:status.clock", f" {clock_text()} ")]

    # The clock only where the status leaves room for it.
    clock_fits = Condition(lambda: cells(status_words()) + 7 <= columns[0])

    def prompt() -> Fragments:
        if session.commands.paste is not None:
            return [("class:question", session.commands.paste.question() + " ")]
        if session.state == "naming":
            return [("class:prompt", "name> ")]
        if session.state == "password":
            return [("class:prompt", "password> ")]
        return [("class:prompt", f"[{screen_text(session.me or session.name or '?')}] ")]

    def show_people() -> bool:
        visible = session.show_people
        if visible is None:
            visible = columns[0] >= PEOPLE_MIN_WIDTH
        session.people_visible = visible
        return visible

    asking = Condition(lambda: session.commands.paste is not None)
    body = VSplit(
        [
            Window(MessageControl(session), wrap_lines=False, always_hide_cursor=True),
            ConditionalContainer(
                VSplit([
                    Window(width=1, char="\u2502", style="class:separator"),
                    Window(FormattedTextControl(lambda: bars.people(session)),
                           width=lambda: bars.people_width(session, columns[0])),
                ]),
                filter=Condition(show_people),
            ),
        ]
    )
    # A password is drawn as stars: all of it at a prompt, the password of /register & co.
    masking = MaskSecrets(lambda: session.state == "password")
    input_row = VSplit(
        [
            Window(FormattedTextControl(prompt), dont_extend_width=True, wrap_lines=True,
                   dont_extend_height=True),
            ConditionalContainer(
                Window(BufferControl(input_buffer, input_processors=[masking]),
                       wrap_lines=True, height=Dimension(min=1, max=5),
                       dont_extend_height=True),
                filter=~asking,
            ),
        ]
    )
    room_bar = ConditionalContainer(
        Window(FormattedTextControl(lambda: bars.room_bar(session, columns[0])), height=1,
               style="class:tabs"),
        filter=Condition(lambda: len(session.rooms) > 1),
    )
    status_row = VSplit([
        Window(FormattedTextControl(status), height=1, style="class:status"),
        ConditionalContainer(Window(FormattedTextControl(clock), height=1,
                                    dont_extend_width=True, style="class:status"),
                             filter=clock_fits),
    ])
    root = FloatContainer(
        HSplit([body, room_bar, status_row, input_row]),
        floats=[Float(xcursor=True, ycursor=True,
                      content=CompletionsMenu(max_height=8, scroll_offset=1))],
    )

    app: Application[None] = Application(
        layout=Layout(root, focused_element=input_buffer),
        key_bindings=key_bindings(session, asking),
        full_screen=True,
        mouse_support=False,
        input=input,
        output=output,
        # Progress updates arrive per 64 KiB chunk; redraw at most 20 times a second.
        min_redraw_interval=0.05,
        # The retry countdown, the lag, the transfer rate and the clock change on their own.
        refresh_interval=1.0,
    )
    app.style = build_style(app.color_depth)
    title = [""]

    def changed() -> None:
        app.invalidate()
        new = session.title()
        if new != title[0] and app.is_running:
            title[0] = new
            app.output.set_title(new)

    def before_render(app: Application[None]) -> None:
        columns[0] = app.output.get_size().columns
        changed()  # the title, once the app runs

    def started() -> None:
        app.output.write_raw(FOCUS_ON)
        app.output.flush()

    def ring() -> None:
        app.output.bell()

    app.before_render += before_render
    app.pre_run_callables.append(started)
    session.on_change = changed
    session.attention.ring = ring
    session.input_text = lambda: input_buffer.text
    session.set_input = lambda text: input_buffer.set_document(Document(text), True)
    return app


def restore_terminal(app: Application[None]) -> None:
    """Focus reports off and the title cleared, as the shell gets the terminal back
    (however the application ended)."""
    app.output.write_raw(FOCUS_OFF)
    app.output.clear_title()
    app.output.flush()


def key_bindings(session: ChatSession, asking: Condition) -> KeyBindings:
    kb = KeyBindings()
    empty = Condition(lambda: not session.input_text())

    # Scrolling the room shown: by pages, by rows, to either end (Home/End move
    # the cursor in a line being typed, and scroll when there is none).
    kb.add("pageup")(lambda e: session.pane.page_up())
    kb.add("pagedown")(lambda e: session.pane.page_down())
    for key in ("c-up", "s-up"):
        kb.add(key)(lambda e: session.pane.row_up())
    for key in ("c-down", "s-down"):
        kb.add(key)(lambda e: session.pane.row_down())
    kb.add("c-home")(lambda e: session.pane.home())
    kb.add("c-end")(lambda e: session.pane.end())
    kb.add("home", filter=empty)(lambda e: session.pane.home())
    kb.add("end", filter=empty)(lambda e: session.pane.end())
    kb.add("f2")(lambda e: session.toggle_people())

    # At a password prompt the input history is no use (and Enter would send a line of it).
    password = Condition(lambda: session.state == "password")
    for key in ("up", "down"):
        kb.add(key, filter=password)(lambda e: None)

    # Rooms: Alt-1…9 by number, Ctrl-N/Ctrl-P round the bar (not the input history:
    # Up/Down recall lines).
    for n in range(1, 10):
        kb.add("escape", str(n))(lambda e, n=n: session.roomflow.switch(session.rooms.at(n)))
    kb.add("c-n")(lambda e: session.roomflow.switch(session.rooms.step(1)))
    kb.add("c-p")(lambda e: session.roomflow.switch(session.rooms.step(-1)))

    # Focus reports: the terminal's own sequences, read as the keys they parse into.
    kb.add("escape", "[", "I")(lambda e: session.rooms.set_away(False))
    kb.add("escape", "[", "O")(lambda e: session.rooms.set_away(True))

    @kb.add(Keys.BracketedPaste)
    def _(event: KeyPressEvent) -> None:
        text = session.commands.pasted(event.data)
        if text:
            event.current_buffer.insert_text(text)

    # While a paste waits for an answer, keys answer it.
    kb.add("enter", filter=asking, eager=True)(lambda e: session.commands.answer("default"))
    kb.add("l", filter=asking, eager=True)(lambda e: session.commands.answer("lines"))
    kb.add("f", filter=asking, eager=True)(lambda e: session.commands.answer("file"))
    for key in ("escape", "c-c", "n"):
        kb.add(key, filter=asking, eager=True)(lambda e: session.commands.answer("cancel"))
    kb.add(Keys.Any, filter=asking, eager=True)(lambda e: None)

    @kb.add("c-c", filter=~asking)
    def _(event: KeyPressEvent) -> None:
        session.quit()

    @kb.add("c-d", filter=~asking)
    def _(event: KeyPressEvent) -> None:
        # Emacs delete-char while there is text; on an empty line, leave (like a shell).
        buf = event.current_buffer
        if buf.text:
            buf.delete()
        else:
            session.quit()

    @kb.add("tab", filter=~asking)
    def _(event: KeyPressEvent) -> None:
        generate_completions(event)

    return kb
