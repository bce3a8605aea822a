"""The screen: layout, styles and key bindings around a ``ChatSession``.

Message pane (left), participants (right), status bar, input line. The pane
is a small ``UIControl`` that hands prompt_toolkit one line of fragments at a
time and puts the (invisible) cursor at the end of the last visible line, so
the window's own scrolling keeps that line in view, wrapped lines included.
Scrolling back truncates what the control shows at the pane's anchor line,
which is why new messages do not move the view; a marker line under the pane
says how many are waiting. All text is handed over as plain fragments.
"""

from __future__ import annotations

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.data_structures import Point
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.key_binding.bindings.completion import generate_completions
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
from prompt_toolkit.styles import Style

from client_tui.completion import ChatCompleter
from client_tui.format import Fragments, nick_style, screen_text
from client_tui.pane import Pane
from client_tui.session import ChatSession

STYLE = Style.from_dict(
    {
        "time": "fg:ansibrightblack",
        "bracket": "fg:ansibrightblack",
        "text": "",
        "own": "fg:ansiwhite bold",
        "own-nick": "underline",
        "action": "italic",
        "private": "fg:ansimagenta",
        "notice": "fg:ansibrightblack",
        "file": "fg:ansicyan",
        "file-name": "fg:ansicyan bold",
        "file-id": "fg:ansicyan",
        "info": "fg:ansibrightblack",
        "error": "fg:ansired bold",
        "more": "reverse fg:ansiyellow",
        "status": "reverse",
        "status.down": "reverse fg:ansired",
        "separator": "fg:ansibrightblack",
        "panel-title": "bold underline",
        "me": "reverse",
        "prompt": "bold",
    }
)


class MessageControl(UIControl):
    """The message pane: one line of fragments per pane line."""

    def __init__(self, pane: Pane) -> None:
        self.pane = pane

    def is_focusable(self) -> bool:
        return False

    def create_content(self, width: int, height: int | None) -> UIContent:
        lines = self.pane.visible_lines()
        count = len(lines)

        def get_line(i: int) -> Fragments:
            return lines[i].fragments if 0 <= i < count else []

        # Cursor at the end of the last line: the window scrolls to show it,
        # including every row the line wraps to.
        end = Point(x=len(lines[-1].text), y=count - 1) if count else Point(0, 0)
        return UIContent(get_line=get_line, line_count=max(1, count), cursor_position=end,
                         show_cursor=False)


def participants_fragments(session: ChatSession) -> Fragments:
    frags: Fragments = [("class:panel-title", f"Here ({len(session.participants)})"), ("", "\n")]
    for name in session.participants:
        me = session.me is not None and name.lower() == session.me.lower()
        frags.append((nick_style(name) + (" class:me" if me else ""), screen_text(name)))
        frags.append(("", "\n"))
    return frags


def build_app(
    session: ChatSession,
    input: Input | None = None,
    output: Output | None = None,
) -> Application[None]:
    history = InMemoryHistory()
    completer = ChatCompleter(lambda: session.participants, lambda: session.file_ids)

    def accept(buf: Buffer) -> bool:
        text = buf.text
        # Names typed at the prompt are not worth recalling; chat lines are.
        buf.reset(append_to_history=bool(text.strip()) and session.state != "naming")
        # reset() drops the loaded history until the next repaint reloads it;
        # reload now, so an Up typed right after Enter still finds this line.
        buf.load_history_if_not_yet_loaded()
        session.commands.submit(text)
        return True  # we reset the buffer ourselves

    input_buffer = Buffer(
        multiline=False,
        history=history,
        completer=completer,
        complete_while_typing=False,
        accept_handler=accept,
        name="input",
    )

    def status() -> Fragments:
        style = "class:status.down" if session.state == "disconnected" else "class:status"
        return [(style, " " + screen_text(session.status_text()) + " ")]

    def more() -> Fragments:
        return [("class:more", f" -- {session.pane.unread} new line(s) below: PageDown -- ")]

    def prompt() -> Fragments:
        if session.state == "naming":
            return [("class:prompt", "name> ")]
        return [("class:prompt", f"[{screen_text(session.me or '?')}] ")]

    scrolled = Condition(lambda: session.pane.anchor is not None)
    pane = Window(MessageControl(session.pane), wrap_lines=True)
    body = VSplit(
        [
            HSplit([pane, ConditionalContainer(Window(FormattedTextControl(more), height=1),
                                               filter=scrolled)]),
            Window(width=1, char="\u2502", style="class:separator"),
            Window(FormattedTextControl(lambda: participants_fragments(session)),
                   width=Dimension.exact(20)),
        ]
    )
    input_row = VSplit(
        [
            Window(FormattedTextControl(prompt), dont_extend_width=True),
            Window(BufferControl(input_buffer), wrap_lines=True,
                   height=Dimension(min=1, max=5), dont_extend_height=True),
        ]
    )
    root = FloatContainer(
        HSplit([body, Window(FormattedTextControl(status), height=1, style="class:status"),
                input_row]),
        floats=[Float(xcursor=True, ycursor=True,
                      content=CompletionsMenu(max_height=8, scroll_offset=1))],
    )

    kb = KeyBindings()

    def page(event: KeyPressEvent) -> int:
        info = pane.render_info
        return max(1, (info.window_height if info else 10) - 1)

    @kb.add("pageup")
    def _(event: KeyPressEvent) -> None:
        session.pane.scroll(-page(event))

    @kb.add("pagedown")
    def _(event: KeyPressEvent) -> None:
        session.pane.scroll(page(event))

    @kb.add("c-end")
    def _(event: KeyPressEvent) -> None:
        session.pane.scroll(len(session.pane.lines))

    @kb.add("c-c")
    def _(event: KeyPressEvent) -> None:
        session.quit()

    @kb.add("c-d")
    def _(event: KeyPressEvent) -> None:
        # Emacs delete-char while there is text; on an empty line, leave (like a shell).
        buf = event.current_buffer
        if buf.text:
            buf.delete()
        else:
            session.quit()

    @kb.add("tab")
    def _(event: KeyPressEvent) -> None:
        generate_completions(event)

    app: Application[None] = Application(
        layout=Layout(root, focused_element=input_buffer),
        key_bindings=kb,
        style=STYLE,
        full_screen=True,
        mouse_support=False,
        input=input,
        output=output,
        # Progress updates arrive per 64 KiB chunk; redraw at most 20 times a second.
        min_redraw_interval=0.05,
        # The retry countdown and transfer rate change without any event.
        refresh_interval=1.0,
    )
    session.changed = app.invalidate
    session.input_text = lambda: input_buffer.text
    return app
