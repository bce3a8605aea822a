"""Output coalesced per reactor turn, in memory.

On the real reactor a turn's output is one batch, stored and then delivered
together at its end. Here the stack is built with ``coalesce=True``, so
nothing is delivered until ``clock.advance(0)`` ends the turn, and every
write is counted.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import Conn, MemoryServer, memory_server


@pytest.fixture
def turns(tmp_path: Path) -> MemoryServer:
    return memory_server(tmp_path, coalesce=True)


def counting(conn: Conn) -> list[bytes]:
    """Record each write to ``conn``'s transport (one write = one send)."""
    writes: list[bytes] = []
    write = conn.transport.write

    def counted(data: bytes) -> None:
        writes.append(data)
        write(data)

    conn.transport.write = counted  # type: ignore[method-assign]
    return writes


def joined(lines: list[str]) -> list[str]:
    return [m[1] for ln in lines if (m := re.search(r"-- (\S+) has joined", ln))]


def said(lines: list[str]) -> list[str]:
    return [m[1] for ln in lines if (m := re.search(r"<\w+> (\S+)$", ln))]


def test_a_join_storm_is_one_write_per_user_per_turn(turns: MemoryServer) -> None:
    old = [turns.user(name) for name in ("ann", "bob", "cy")]
    turns.clock.advance(0)
    writes = {id(c): counting(c) for c in old}
    for c in old:
        c.take()
    newcomers = [turns.user(f"n{i}") for i in range(20)]  # take() drops their replies so far
    assert all(writes[id(c)] == [] for c in old)  # nothing until the turn ends
    turns.clock.advance(0)
    for c in old:
        assert len(writes[id(c)]) == 1
        assert joined(c.lines()) == [f"n{i}" for i in range(20)]
    for i, c in enumerate(newcomers):
        # Its own join is not echoed in text mode; earlier ones are in its replay.
        assert joined(c.lines()) == [f"n{j}" for j in range(i + 1, 20)], i


def test_a_newcomer_gets_the_turn_from_its_join_on_and_the_rest_in_its_replay(
    turns: MemoryServer,
) -> None:
    ann = turns.user("ann")
    turns.clock.advance(0)
    ann.line("before")
    dee = turns.connect()
    dee.take()
    dee.line("dee")
    ann.line("after")
    turns.clock.advance(0)
    lines = dee.lines()
    assert said(lines) == ["before", "after"]  # once each: replay, then live


def test_a_reply_comes_after_the_broadcasts_made_before_it(turns: MemoryServer) -> None:
    ann, bob, cy = (turns.user(n) for n in ("ann", "bob", "cy"))
    turns.clock.advance(0)
    for c in (ann, bob, cy):
        c.take()
    cy_writes = counting(cy)
    ann.line("one")
    bob.line("/who")
    ann.line("two")
    assert bob.lines() == []  # nothing leaves before the turn's batch is stored
    turns.clock.advance(0)
    lines = bob.lines()
    who = next(i for i, ln in enumerate(lines) if ln.startswith("-- 3 here:"))
    assert said(lines[:who]) == ["one"] and said(lines[who:]) == ["two"]
    assert said(cy.lines()) == ["one", "two"] and len(cy_writes) == 1


def test_a_leaver_gets_what_came_before_its_leave(turns: MemoryServer) -> None:
    ann, bob, cy = (turns.user(n) for n in ("ann", "bob", "cy"))
    turns.clock.advance(0)
    for c in (ann, bob, cy):
        c.take()
    ann.line("one")
    cy.line("/quit")
    ann.line("two")
    turns.clock.advance(0)
    mine = cy.lines()
    assert said(mine) == ["one"] and mine[-1] == "-- Goodbye (quit)."
    lines = bob.lines()
    assert said(lines) == ["one", "two"]
    left_at = next(i for i, ln in enumerate(lines) if "has left" in ln)
    assert lines[left_at].endswith("cy has left the chat (quit).")
    assert said(lines[:left_at]) == ["one"] and said(lines[left_at:]) == ["two"]
