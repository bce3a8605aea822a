"""The message pane without a screen: wrapping, lines in server order, rows on screen.

``wrap`` is checked by display width (wide and combining characters
included) and by property: no row too wide, nothing lost. ``Scrollback``
places lines by event id; ``View`` and ``Pane`` are driven with the keys'
methods at a fixed size, and the assertions read the rows a screen would
draw.
"""

from __future__ import annotations

from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from chat import events as ev
from client_tui.format import Line, event_line, info_line, separator_line
from client_tui.pane import Pane
from client_tui.scrollback import Scrollback
from client_tui.view import View
from client_tui.wrap import Fragments, cells, rule, wrap

WIDTH, HEIGHT = 40, 10
NOW = datetime(2026, 11, 24, 16, 0, 0).timestamp()


def text(row: Fragments) -> str:
    return "".join(t for _, t in row)


def said(i: int, words: str = "", sender: str = "bob", ts: float = NOW) -> Line:
    line = event_line(ev.Message(i, ts, sender, words or f"m{i}"), "alice")
    assert line is not None
    return line


def long_line(i: int, rows_wanted: int) -> Line:
    """A message that wraps to about ``rows_wanted`` rows at ``WIDTH``."""
    words = " ".join(f"w{n:03d}" for n in range(rows_wanted * 5))
    return said(i, words)


def screen(pane: Pane) -> list[str]:
    return [text(r) for r in pane.screen(WIDTH, HEIGHT)]


def filled(n: int) -> Pane:
    pane = Pane(lambda: None)
    for i in range(1, n + 1):
        pane.add(said(i))
    pane.screen(WIDTH, HEIGHT)  # the size pages are counted in
    return pane


# --- wrap ---


def test_wrap_breaks_at_spaces_and_indents_under_the_text() -> None:
    head = [("time", "16:00:00 "), ("nick", "<bob> ")]
    rows = wrap([*head, ("text", "the quick brown fox jumps over the lazy dog")], 30, 15)
    assert [text(r) for r in rows] == [
        "16:00:00 <bob> the quick brown",
        "               fox jumps over",
        "               the lazy dog",
    ]
    assert rows[0][0] == ("time", "16:00:00 ")  # styles survive the split


def test_wrap_splits_a_word_longer_than_a_row_and_drops_an_indent_too_wide() -> None:
    assert [text(r) for r in wrap([("", "x" * 25)], 10, 3)] == [
        "x" * 10, "   " + "x" * 7, "   " + "x" * 7, "   x"]
    # An indent wider than half the row would leave too little: rows start at the edge.
    assert [text(r) for r in wrap([("", "abcd " * 4)], 8, 5)][1] == "abcd"


def test_wrap_counts_display_width() -> None:
    rows = [text(r) for r in wrap([("", "界" * 7)], 6)]
    assert rows == ["界界界", "界界界", "界"]
    # A combining accent takes no cell: "é" is one.
    assert [text(r) for r in wrap([("", "e\u0301" * 4)], 4)] == ["e\u0301" * 4]
    # A wide character never straddles the edge.
    assert [cells(text(r)) for r in wrap([("", "a界界")], 4)] == [3, 2]


@given(st.text(alphabet=st.sampled_from("ab 界e\u0301😀-"), max_size=200),
       st.integers(min_value=2, max_value=50), st.integers(min_value=0, max_value=30))
def test_wrap_never_overflows_and_loses_nothing(s: str, width: int, indent: int) -> None:
    rows = wrap([("x", s)], width, indent)
    assert all(cells(text(r)) <= width for r in rows)
    assert "".join(text(r) for r in rows).replace(" ", "") == s.replace(" ", "")


def test_rule_spans_the_width() -> None:
    for width in (1, 5, 20, 80):
        assert cells(text(rule("Tuesday 24 November 2026", width, "s"))) == width
    assert "Tuesday 24 November 2026" in text(rule("Tuesday 24 November 2026", 40, "s"))


# --- lines in server order ---


def test_lines_are_placed_by_id_without_duplicates() -> None:
    sb = Scrollback()
    for i in (1, 2, 5):
        assert sb.add(said(i))
    sb.add(info_line("a local line"))
    assert not sb.add(said(2))  # already here
    assert sb.add(said(4))  # before 5: the first line with a higher id
    assert sb.add(said(7))  # after everything, the local line included
    assert [ln.id for ln in sb.lines] == [1, 2, 4, 5, None, 7]


def test_a_history_block_merges_in_one_pass_under_its_separator() -> None:
    sb = Scrollback()
    lost, back = info_line("lost the connection"), info_line("back")
    for line in (said(1), lost, back, said(9)):
        sb.add(line)
    placed = sb.merge([said(i) for i in (1, 4, 3, 6)],
                      lambda fresh: separator_line(f"{len(fresh)} missed", fresh[0].ts))
    assert [ln.text if ln.id is None else ln.id for ln in placed] == ["3 missed", 3, 4, 6]
    assert [ln.text if ln.id is None else ln.id for ln in sb.lines] == [
        1, lost.text, back.text, "3 missed", 3, 4, 6, 9]
    assert sb.merge([said(3)], lambda f: separator_line("x", 0)) == []  # nothing new


def test_the_oldest_lines_go_past_the_limit() -> None:
    sb = Scrollback(limit=3)
    for i in range(1, 6):
        sb.add(said(i))
    assert [ln.id for ln in sb.lines] == [3, 4, 5] and sb.ids == {3, 4, 5}


# --- rows on screen ---


def test_a_message_taller_than_the_pane_shows_its_last_rows_and_scrolls_by_row() -> None:
    pane = filled(3)
    tall = long_line(4, 25)
    pane.add(tall)
    rows = screen(pane)
    assert len(rows) == HEIGHT and all(r.strip() for r in rows)
    assert "more rows above" in rows[0]
    assert rows[-1] == text(tall.rows(WIDTH)[-1])
    pane.row_up()
    up = screen(pane)
    assert up[1:-1] == rows[1:-1] and "reading back" in up[-1]  # one row back, a bar below
    while "m3" not in " ".join(screen(pane)):
        before = screen(pane)
        pane.row_up()
        assert screen(pane) != before  # row by row, all the way up
    assert all(r.strip() for r in screen(pane))


def test_pages_are_rows_and_the_top_fills_the_pane() -> None:
    pane = filled(100)
    numbers: set[int] = set()
    while True:
        rows = screen(pane)
        assert len(rows) == HEIGHT and all(r.strip() for r in rows)
        numbers |= {int(r.split("> m")[1]) for r in rows if "> m" in r}
        before = rows
        pane.page_up()
        if screen(pane) == before:
            break
    assert numbers == set(range(1, 101))  # no line skipped on the way up
    assert screen(pane)[0].endswith("<bob> m1")
    # One pane less a row: each page keeps one row of the last in view.
    pane.page_down()
    assert screen(pane)[0] == before[HEIGHT - 2]
    pane.end()
    assert not pane.reading_back and screen(pane)[-1].endswith("<bob> m100")


def test_home_and_end() -> None:
    pane = filled(50)
    pane.home()
    assert screen(pane)[0].endswith("<bob> m1") and pane.reading_back
    pane.end()
    assert screen(pane)[-1].endswith("<bob> m50") and not pane.reading_back
    small = filled(3)
    small.page_up()  # everything fits: nothing to read back to
    assert not small.reading_back and len(screen(small)) == 3


def test_the_view_holds_while_lines_arrive_and_history_lands_above() -> None:
    pane = filled(50)
    pane.page_up()
    before = screen(pane)
    pane.add(said(51))
    pane.merge([said(i) for i in range(-5, 0)])
    after = screen(pane)
    assert after[:-1] == before[:-1]
    assert "1 new message below" in after[-1]


def test_the_bar_counts_what_others_said_and_the_read_marker_follows() -> None:
    pane = filled(30)
    pane.page_up()
    pane.add(info_line("a notice of the client's own"))
    pane.add(said(31, sender="alice"))  # your own words are not news
    pane.add(said(32, "alice, look"))
    pane.add(said(33))
    assert (pane.unread, pane.unread_highlights) == (2, 1)
    assert "2 new messages below, 1 highlight" in screen(pane)[-1]
    pane.end()
    rows = screen(pane)
    assert (pane.unread, pane.unread_highlights) == (0, 0)
    marker = next(i for i, r in enumerate(rows) if "new since you last looked" in r)
    assert rows[marker + 1].endswith("<bob> alice, look")


def test_losing_focus_counts_as_not_looking() -> None:
    pane = filled(3)
    pane.set_away(True)
    pane.add(said(4, "alice?"))
    assert pane.unread_highlights == 1
    pane.set_away(False)
    assert pane.unread == 0 and "new since you last looked" in " ".join(screen(pane))


def test_a_date_line_where_the_day_changes() -> None:
    yesterday = NOW - 86400
    pane = Pane(lambda: None)
    pane.add(info_line("Connected"))
    pane.merge([said(1, ts=yesterday), said(2, ts=yesterday + 60)],
               lambda fresh: separator_line("history: since yesterday", fresh[0].ts))
    pane.add(said(3, ts=NOW))
    rows = screen(pane)
    day = datetime.fromtimestamp(NOW).date()
    assert [r for r in rows if "\u2500" in r] == [
        text(rule("history: since yesterday", WIDTH, "")),
        text(rule(f"{day:%A} {day.day} {day:%B %Y}", WIDTH, "")),
    ]
    assert "2026" in rows[-2] and rows[-1].endswith("<bob> m3")


def test_a_new_width_rewraps_and_keeps_the_place() -> None:
    pane = filled(40)
    pane.add(long_line(41, 3))
    pane.page_up()
    assert pane.view.anchor is not None
    line = pane.view.anchor[0]
    narrow = [text(r) for r in pane.screen(20, HEIGHT)]
    assert all(cells(r) <= 20 for r in narrow)
    assert pane.reading_back and narrow[-2] in [text(r) for r in line.rows(20)]


def test_the_view_after_the_anchor_drops_off_the_top() -> None:
    pane = Pane(lambda: None, limit=30)
    for i in range(1, 31):
        pane.add(said(i))
    pane.screen(WIDTH, HEIGHT)
    pane.home()
    for i in range(31, 61):
        pane.add(said(i))
    rows = screen(pane)
    assert len(rows) == HEIGHT and rows[0].endswith("<bob> m31")


def test_show_brings_a_line_to_the_top() -> None:
    pane = filled(60)
    target = pane.lines[10]
    pane.show(target)
    assert screen(pane)[0] == target.text
    view = View(Scrollback())
    view.show(target)  # not in this scrollback: nothing happens
    assert view.following


def test_a_day_before_at_midnight() -> None:
    midnight = datetime(2026, 11, 24).timestamp()
    pane = Pane(lambda: None)
    pane.add(said(1, ts=midnight - 30))
    pane.add(said(2, ts=midnight + 30))
    rows = screen(pane)
    assert "Tuesday 24 November 2026" in rows[1] and rows[2].endswith("<bob> m2")
