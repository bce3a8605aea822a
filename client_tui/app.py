"""The screen: layout, key bindings and terminal cues around a ``ChatSession``.

Message pane (left), people (right, hidden on narrow screens or with F2),
status bar (server, connection and lag, name, highlights, transfers; the
clock on the right), input line. The pane is a small ``UIControl`` that
draws exactly the rows ``Pane.screen`` lays out — wrapped by display width,
the pane always full, and while reading back a bar at the bottom counting
what arrived below — so prompt_toolkit never wraps or scrolls it. A paste
of several lines turns the input line into a question. The terminal bell
rings for highlights and the title counts those not yet seen; where the
terminal reports focus, leaving it counts as not looking. All text is
handed over as plain fragments.
"""

from __future__ import annotations

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
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

from client_tui.completion import ChatCompleter
from client_tui.format import nick_style, screen_text
from client_tui.pane import Pane
from client_tui.session import ChatSession
from client_tui.style import build_style
from client_tui.wrap import Fragments, cells

#: Below this many columns the list of people is hidden (unless F2 or /people asks for it).
PEOPLE_MIN_WIDTH = 60
#: The list's width bounds, in columns.
PEOPLE_WIDTH = (10, 20)

# Terminal focus reports (xterm's mode 1004): what the terminal sends, and how to ask.
FOCUS_ON, FOCUS_OFF = "\x1b[?1004h", "\x1b[?1004l"


class MessageControl(UIControl):
    """The message pane: the rows ``Pane.screen`` lays out for the window's size."""

    def __init__(self, pane: Pane) -> None:
        self.pane = pane

    def is_focusable(self) -> bool:
        return False

    def create_content(self, width: int, height: int | None) -> UIContent:
        rows = self.pane.screen(width, height or self.pane.view.height)

        def get_line(i: int) -> Fragments:
            return rows[i] if 0 <= i < len(rows) else []

        return UIContent(get_line=get_line, line_count=max(1, len(rows)), show_cursor=False)


def people_width(session: ChatSession, columns: int) -> int:
    """The list's width: its longest entry, within bounds and a quarter of the screen."""
    longest = max([cells(f"Here ({len(session.participants)})"),
                   *(cells(screen_text(n)) for n in session.participants)])
    low, high = PEOPLE_WIDTH
    return max(low, min(high, longest + 1, columns // 4))


def people_fragments(session: ChatSession) -> Fragments:
    frags: Fragments = [("class:panel-title", f"Here ({len(session.participants)})"), ("", "\n")]
    for name in session.participants:
        me = session.me is not None and name.lower() == session.me.lower()
        frags.append((nick_style(name, session.me) + (" class:me" if me else ""),
                      screen_text(name)))
        frags.append(("", "\n"))
    return frags


def build_app(
    session: ChatSession,
    input: Input | None = None,
    output: Output | None = None,
) -> Application[None]:
    completer = ChatCompleter(lambda: session.participants, lambda: session.file_ids)

    def accept(buf: Buffer) -> bool:
        text = buf.text
        if not session.commands.submit(text):
            return True  # not sent (offline): the text stays where it is
        # Names typed at the prompt are not worth recalling; chat lines are.
        buf.reset(append_to_history=bool(text.strip()) and session.state != "naming")
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
    pane = session.pane
    columns = [80]  # the screen's width at the last layout

    def status_words() -> str:
        # Narrow, the server's name gives way to what changes.
        text = session.status_text(server=columns[0] >= PEOPLE_MIN_WIDTH)
        if not session.people_visible:
            text += f" | {len(session.participants)} here"
        return " " + screen_text(text) + " "

    def status() -> Fragments:
        style = "class:status.down" if session.state == "disconnected" else "class:status"
        return [(style, status_words())]

    def clock() -> Fragments:
        return [("class:status.clock", f" {session.clock_text()} ")]

    # The clock only where the status leaves room for it.
    clock_fits = Condition(lambda: cells(status_words()) + 7 <= columns[0])

    def prompt() -> Fragments:
        if session.commands.paste is not None:
            return [("class:question", session.commands.paste.question() + " ")]
        if session.state == "naming":
            return [("class:prompt", "name> ")]
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
            Window(MessageControl(pane), wrap_lines=False, always_hide_cursor=True),
            ConditionalContainer(
                VSplit([
                    Window(width=1, char="\u2502", style="class:separator"),
                    Window(FormattedTextControl(lambda: people_fragments(session)),
                           width=lambda: people_width(session, columns[0])),
                ]),
                filter=Condition(show_people),
            ),
        ]
    )
    input_row = VSplit(
        [
            Window(FormattedTextControl(prompt), dont_extend_width=True, wrap_lines=True,
                   dont_extend_height=True),
            ConditionalContainer(
                Window(BufferControl(input_buffer), wrap_lines=True,
                       height=Dimension(min=1, max=5), dont_extend_height=True),
                filter=~asking,
            ),
        ]
    )
    status_row = VSplit([
        Window(FormattedTextControl(status), height=1, style="class:status"),
        ConditionalContainer(Window(FormattedTextControl(clock), height=1,
                                    dont_extend_width=True, style="class:status"),
                             filter=clock_fits),
    ])
    root = FloatContainer(
        HSplit([body, status_row, input_row]),
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
    return app


def restore_terminal(app: Application[None]) -> None:
    """Focus reports off and the title cleared, as the shell gets the terminal back
    (however the application ended)."""
    app.output.write_raw(FOCUS_OFF)
    app.output.clear_title()
    app.output.flush()


def key_bindings(session: ChatSession, asking: Condition) -> KeyBindings:
    kb = KeyBindings()
    pane = session.pane
    empty = Condition(lambda: not session.input_text())

    # Scrolling: by pages, by rows, to either end (Home/End move the cursor
    # in a line being typed, and scroll when there is none).
    kb.add("pageup")(lambda e: pane.page_up())
    kb.add("pagedown")(lambda e: pane.page_down())
    for key in ("c-up", "s-up"):
        kb.add(key)(lambda e: pane.row_up())
    for key in ("c-down", "s-down"):
        kb.add(key)(lambda e: pane.row_down())
    kb.add("c-home")(lambda e: pane.home())
    kb.add("c-end")(lambda e: pane.end())
    kb.add("home", filter=empty)(lambda e: pane.home())
    kb.add("end", filter=empty)(lambda e: pane.end())
    kb.add("f2")(lambda e: session.toggle_people())

    # Focus reports: the terminal's own sequences, read as the keys they parse into.
    kb.add("escape", "[", "I")(lambda e: pane.set_away(False))
    kb.add("escape", "[", "O")(lambda e: pane.set_away(True))

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
