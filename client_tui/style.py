"""Colours and text attributes of every screen element, and the nick palettes.

Lines carry style classes only (``class:nick.7``, ``class:url``...); this
module decides what they look like for the terminal at hand. Nicks get one
of ``NICK_SLOTS`` slots by a hash of the name; a 256-colour terminal shows
every slot in its own colour, one with fewer colours folds the slots onto 8.
Neither palette holds red (errors), grey (notices) or the plain bold of your
own name, so nobody else ever wears your colour.
"""

from __future__ import annotations

from prompt_toolkit.output import ColorDepth
from prompt_toolkit.styles import Style

from client_tui.format import NICK_SLOTS

#: For 256-colour (and true-colour) terminals: readable on dark and light backgrounds.
PALETTE_256: tuple[str, ...] = (
    "#00afaf", "#00af5f", "#5faf00", "#afaf00", "#d78700",
    "#af5faf", "#8787ff", "#5f87d7", "#0087ff", "#00af87",
    "#87af00", "#af8700", "#d75faf", "#875fd7", "#5fafd7",
    "#00afd7", "#af87d7", "#d7af00", "#5f5fd7", "#d75f00",
)
#: For 8- and 16-colour terminals.
PALETTE_8: tuple[str, ...] = (
    "ansigreen", "ansiyellow", "ansiblue", "ansimagenta",
    "ansicyan", "ansibrightgreen", "ansibrightblue", "ansibrightmagenta",
)

BASE: dict[str, str] = {
    "time": "fg:ansibrightblack",
    "bracket": "fg:ansibrightblack",
    "text": "",
    "own": "bold",
    "nick.self": "bold",
    "action": "italic",
    "private": "fg:ansimagenta",
    "highlight": "bold fg:ansibrightyellow",
    "url": "underline fg:ansibrightcyan",
    "notice": "fg:ansibrightblack",
    "file": "fg:ansicyan",
    "file-name": "fg:ansicyan bold",
    "file-id": "fg:ansicyan underline",
    "info": "fg:ansibrightblack",
    "error": "fg:ansired bold",
    "day": "fg:ansibrightblue",
    "separator.history": "fg:ansicyan",
    "marker": "fg:ansired",
    "continued": "reverse fg:ansiyellow",
    "more": "reverse fg:ansiyellow",
    "status": "reverse",
    "status.down": "reverse fg:ansired",
    "status.clock": "reverse bold",
    "separator": "fg:ansibrightblack",
    "panel-title": "bold underline",
    "me": "reverse",
    "prompt": "bold",
    "question": "bold fg:ansiyellow",
    "account": "fg:ansigreen",
    "topic": "italic",
    "tabs": "",
    "tab": "",
    "tab.shown": "reverse bold",
    "tab.unread": "bold",
    "tab.highlight": "bold fg:ansibrightyellow",
}


def palette(depth: ColorDepth) -> tuple[str, ...]:
    """The nick colours a terminal of ``depth`` can show apart."""
    return PALETTE_256 if depth in (ColorDepth.DEPTH_8_BIT, ColorDepth.DEPTH_24_BIT) else PALETTE_8


def build_style(depth: ColorDepth) -> Style:
    colours = palette(depth)
    nicks = {f"nick.{i}": f"bold fg:{colours[i % len(colours)]}" for i in range(NICK_SLOTS)}
    return Style.from_dict({**BASE, **nicks})
