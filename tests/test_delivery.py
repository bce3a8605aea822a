"""Broadcasts coalesced per reactor turn, in memory.

On the real reactor ``ChatService`` delivers a turn's broadcasts together at
its end. Here the ``task.Clock`` is declared a reactor, so nothing is
delivered until ``clock.advance(0)`` ends the turn, and every write is
counted.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from twisted.internet.interfaces import IReactorCore
from zope.interface import directlyProvides

from tests.support import Conn, MemoryServer, memory_server


@pytest.fixture
def turns(tmp_path: Path) -> MemoryServer:
    mem = memory_server(tmp_path)
    directlyProvides(mem.clock, IReactorCore)
    return mem


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
    lines = bob.lines()
    assert said(lines) == ["one"] and lines[-1].startswith("--   ")  # then the /who reply
    turns.clock.advance(0)
    assert said(bob.lines()) == ["two"]
    assert said(cy.lines()) == ["one", "two"] and len(cy_writes) == 1


def test_a_leaver_gets_what_came_before_its_leave(turns: MemoryServer) -> None:
    ann, bob, cy = (turns.user(n) for n in ("ann", "bob", "cy"))
    turns.clock.advance(0)
    for c in (ann, bob, cy):
        c.take()
    ann.line("one")
    cy.line("/quit")
    ann.line("two")
    assert said(cy.lines()) == ["one"]
    turns.clock.advance(0)
    assert cy.take() == b""
    lines = bob.lines()
    assert said(lines) == ["one", "two"]
    left_at = next(i for i, ln in enumerate(lines) if "has left" in ln)
    assert lines[left_at].endswith("cy has left the chat (quit).")
    assert said(lines[:left_at]) == ["one"] and said(lines[left_at:]) == ["two"]
