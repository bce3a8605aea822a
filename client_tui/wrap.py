"""Screen rows from styled text: display widths, word wrapping, and full-width rules.

Pure functions over ``(style, text)`` fragments. Widths are terminal cells as
prompt_toolkit's renderer counts them (``get_cwidth``, i.e. ``wcwidth``), so
a row built here is never re-wrapped by the screen: CJK and emoji take two
cells, combining marks none. ``wrap`` breaks at the last space that fits and
splits a word only when it is longer than a row; rows after the first start
``indent`` cells in, under the text rather than under the timestamp, unless
that would leave less than half the row. ``rule`` draws the separator rows
(dates, history, the read marker).
"""

from __future__ import annotations

from prompt_toolkit.utils import get_cwidth

Fragments = list[tuple[str, str]]


def cells(text: str) -> int:
    """Terminal cells ``text`` takes."""
    return get_cwidth(text)


def _runs(chars: list[tuple[str, str]]) -> Fragments:
    """Characters (style, char) joined into fragments of one style each."""
    out: Fragments = []
    for style, ch in chars:
        if out and out[-1][0] == style:
            out[-1] = (style, out[-1][1] + ch)
        else:
            out.append((style, ch))
    return out


def wrap(fragments: Fragments, width: int, indent: int = 0) -> list[Fragments]:
    """``fragments`` as rows of at most ``width`` cells (at least one row)."""
    width = max(1, width)
    if sum(cells(t) for _, t in fragments) <= width:
        return [list(fragments)]  # the common case: one row, nothing to split
    if indent > width // 2:
        indent = 0
    chars = [(style, ch) for style, text in fragments for ch in text]
    rows: list[Fragments] = []
    row: list[tuple[str, str]] = []
    used = 0
    space = -1  # index in ``row`` of the last space a break may replace
    start = 0  # where this row's own text begins (after the indent)
    i = 0
    while i < len(chars):
        style, ch = chars[i]
        w = cells(ch)
        if rows and len(row) == start and ch == " ":
            i += 1  # a wrapped row does not begin with the space it broke at
            continue
        if used + w > width and len(row) == start and start:
            row, start, used = [], 0, 0  # too wide even for an indented row: use the margin
        if used + w <= width or len(row) == start:
            # (A character wider than the whole row still goes somewhere.)
            if ch == " " and len(row) > start:
                space = len(row)
            row.append((style, ch))
            used += w
            i += 1
            continue
        if ch == " ":
            i += 1  # the row is full just before a space: break there, dropping it
        elif space > start:
            # Break at the space: what followed it moves to the next row.
            rest = row[space + 1 :]
            row = row[:space]
            i -= len(rest)
        rows.append(_runs(row))
        row = [("", " " * indent)] if indent else []
        start, used, space = len(row), indent, -1
    rows.append(_runs(row))
    return rows


def rule(text: str, width: int, style: str) -> Fragments:
    """``──── text ────`` across ``width`` cells (the text cut if it does not fit)."""
    label = f" {text} "
    while label and cells(label) + 4 > width:
        label = label[:-2] + " " if len(label) > 2 else ""
    left = (width - cells(label)) // 2
    right = width - cells(label) - left
    return [(style, "\u2500" * left + label + "\u2500" * right)]
