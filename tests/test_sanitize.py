"""What may reach another user's terminal, the log or the console."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from chat.sanitize import clean, decode_line, for_log, strip_telnet

FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def test_whole_sequences_are_removed() -> None:
    assert clean("a\x1b[31;1mb\x1b[0m") == "ab"
    assert clean("x\x1b]0;title\x07y") == "xy"
    assert clean("x\x1b]8;;http://e\x1b\\link\x1b]8;;\x1b\\y") == "xlinky"
    assert clean("x\x1bP1;2|data\x1b\\y") == "xy"
    assert clean("x\x9b2Jy") == "xy"
    assert clean("x\x1b(By") == "xy"
    assert clean("x\x1b7y") == "xy"


def test_tab_and_printable_unicode_survive() -> None:
    assert clean("tab\there é 漢字 🙂") == "tab\there é 漢字 🙂"


def test_telnet_commands_are_stripped() -> None:
    assert strip_telnet(b"\xff\xfd\x01hi\xff\xfa\x1f\x00\x50\xff\xf0!") == b"hi!"
    assert strip_telnet(b"no iac") == b"no iac"


def test_decode_line_replaces_invalid_utf8() -> None:
    assert decode_line(b"ok \xc3\x28 fine") == "ok \ufffd( fine"


def test_log_values_cannot_forge_lines() -> None:
    out = for_log("user\n2026-01-01 [admin] fake\r\x1b[2K")
    assert "\n" not in out and "\r" not in out and "\x1b" not in out


@given(st.text())
def test_clean_never_leaves_control_characters(text: str) -> None:
    assert not FORBIDDEN.search(clean(text))


@given(st.binary())
def test_decode_line_never_fails_and_is_safe(data: bytes) -> None:
    text = decode_line(data)
    assert not FORBIDDEN.search(text)
    text.encode("utf-8")  # no lone surrogates
