"""What the screen draws around the messages: the room bar, the people list, the status bar.

Each is a function of the session, returning plain-text fragments (the
names in them came from other users: they go through ``screen_text``).
The room bar numbers the rooms as Alt-1…9 reach them, the one shown in
reverse video; another room reads ``3:#ops(4)`` with 4 lines said there
since you last looked, and ``3:#ops(4!)`` (bold yellow) when a highlight
is among them. The people list is the room shown's, accounts marked ``✓``.
The status bar's topic is cut to leave room for the clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from client_tui.format import nick_style, screen_text
from client_tui.listings import marked
from client_tui.status import status_parts, topic
from client_tui.wrap import Fragments, cells

if TYPE_CHECKING:
    from client_tui.session import ChatSession

#: The list's width bounds, in columns.
PEOPLE_WIDTH = (10, 20)
#: The clock's cells, with its padding.
CLOCK_CELLS = 7


def tab_label(number: int, name: str, unread: int, highlights: int) -> str:
    """``2:#dev``, ``2:#dev(3)``, ``2:#dev(3!)``."""
    count = f"({unread}{'!' if highlights else ''})" if unread else ""
    return f"{number}:{screen_text(name)}{count}"


def room_bar(session: ChatSession, width: int = 1000) -> Fragments:
    """The tabs, ``width`` cells at most: when they do not all fit, the ones round the
    room shown, with ``<``/``>`` where more are hidden."""
    tabs: list[tuple[str, str]] = []
    shown = 0
    for number, room in enumerate(session.rooms, 1):
        pane = room.pane
        if room is session.rooms.shown:
            style, shown = "class:tab.shown", number - 1
        elif pane.unread_highlights:
            style = "class:tab.highlight"
        elif pane.unread:
            style = "class:tab.unread"
        else:
            style = "class:tab"
        tabs.append((style, tab_label(number, room.name, pane.unread, pane.unread_highlights)))
    first, last = shown, shown + 1  # the window of tabs drawn: [first, last)

    def fits(a: int, b: int) -> bool:
        return sum(cells(t) + 1 for _, t in tabs[a:b]) + 4 <= width  # room for < and >

    grew = True
    while grew:  # one more on each side in turn, while they fit
        grew = False
        if last < len(tabs) and fits(first, last + 1):
            last, grew = last + 1, True
        if first > 0 and fits(first - 1, last):
            first, grew = first - 1, True
    frags: Fragments = [("class:tabs", "<" if first else " ")]
    for style, label in tabs[first:last]:
        frags += [(style, label), ("class:tabs", " ")]
    if last < len(tabs):
        frags.append(("class:tabs", ">"))
    return frags


def person(session: ChatSession, name: str) -> str:
    me = session.me is not None and name.lower() == session.me.lower()
    return marked(screen_text(name), name.lower() in session.accounts, me and session.operator)


def people_width(session: ChatSession, columns: int) -> int:
    """The list's width: its longest entry, within bounds and a quarter of the screen."""
    longest = max([cells(f"Here ({len(session.participants)})"),
                   *(cells(person(session, n)) for n in session.participants)])
    low, high = PEOPLE_WIDTH
    return max(low, min(high, longest + 1, columns // 4))


def people(session: ChatSession) -> Fragments:
    frags: Fragments = [("class:panel-title", f"Here ({len(session.participants)})"), ("", "\n")]
    for name in session.participants:
        me = session.me is not None and name.lower() == session.me.lower()
        style = nick_style(name, session.me) + (" class:me" if me else "")
        text = screen_text(name)
        marks = person(session, name)[len(text):]  # " ✓", " ✓★" or nothing
        frags += [(style, text), ("class:account", marks), ("", "\n")]
    return frags


def status_words(session: ChatSession, columns: int, narrow: bool, people_shown: bool) -> str:
    """The status bar's text for a screen ``columns`` wide (narrow: without the server)."""
    parts = status_parts(session, server=not narrow)
    if not people_shown:
        parts.append(f"{len(session.participants)} here")
    text = " " + screen_text(" | ".join(parts)) + " "
    room = session.rooms.shown.name
    if cells(text) > columns and room in parts and len(session.rooms) == 1:
        # A long state (an outage's countdown): the one room's name gives way.
        parts.remove(room)
        text = " " + screen_text(" | ".join(parts)) + " "
    if about := screen_text(topic(session)):
        room = columns - CLOCK_CELLS - cells(text) - 3  # "| " before it, " " after
        if room >= 8:  # a few words of it, or none
            if cells(about) > room:
                about = _cut(about, room - 1) + "\u2026"
            text += "| " + about + " "
    return text


def _cut(text: str, width: int) -> str:
    out, used = [], 0
    for ch in text:
        used += cells(ch)
        if used > width:
            break
        out.append(ch)
    return "".join(out)
