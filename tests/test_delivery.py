"""Output coalesced per reactor turn, in memory.

On the real reactor a turn's output is one batch, stored and then delivered
together at its end. Here the stack is built with ``coalesce=True``, so
nothing is delivered until ``clock.advance(0)`` ends the turn, and every
write is counted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from twisted.internet import defer, task

from chat import events as ev
from chat.delivery import ID_BLOCK, Delivery
from chat.render import JsonRenderer, TextRenderer
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


# --- Delivery on its own: stored, then sent ---


class Peer:
    def __init__(self, mode: str = "text") -> None:
        self.mode = mode
        self.writes: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.writes.append(data)

    def text(self) -> str:
        return b"".join(self.writes).decode()


class ManualStore:
    """A store whose commits finish when the test says so."""

    def __init__(self) -> None:
        self.commits: list[tuple[list[int], int, defer.Deferred[None]]] = []
        self.ids = 0

    def commit(self, events: list[ev.Event], reserved: int | None) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self.commits.append(([e.id for e in events], reserved, d))  # type: ignore[attr-defined]
        return d

    def message(self, text: str, sender: str = "ann") -> ev.Message:
        self.ids += 1
        return ev.Message(self.ids, 0.0, sender, text)


def delivery(coalesce: bool = True) -> tuple[task.Clock, ManualStore, Delivery]:
    clock, store = task.Clock(), ManualStore()
    renderers = {"text": TextRenderer(), "json": JsonRenderer()}
    return clock, store, Delivery(
        clock, renderers, store.commit, lambda: store.ids, coalesce=coalesce
    )


def test_nothing_is_sent_before_its_batch_is_stored() -> None:
    clock, store, d = delivery()
    bob = Peer()
    d.add_member(bob, "bob")
    d.broadcast(store.message("one"))
    clock.advance(0)
    ((ids, reserved, committed),) = store.commits
    assert (ids, reserved) == ([1], 1 + ID_BLOCK) and bob.writes == []
    committed.callback(None)
    assert "<ann> one" in bob.text()


def test_a_turn_that_arrives_while_one_commits_is_the_next_batch_whole() -> None:
    clock, store, d = delivery()
    bob = Peer()
    d.add_member(bob, "bob")
    d.broadcast(store.message("one"))
    clock.advance(0)
    for text in ("two", "three"):
        d.broadcast(store.message(text))
        clock.advance(0)
    assert len(store.commits) == 1  # group commit: the others wait for the first
    store.commits[0][2].callback(None)
    assert len(store.commits) == 2 and store.commits[1][:2] == ([2, 3], None)  # within the block
    store.commits[1][2].callback(None)
    assert said(bob.text().splitlines()) == ["one", "two", "three"] and len(bob.writes) == 2


def test_ids_are_recorded_a_block_ahead_before_anyone_sees_them() -> None:
    clock, store, d = delivery()
    bob = Peer()
    d.add_member(bob, "bob")
    store.ids = 41
    d.broadcast(ev.Join(42, 0.0, "cy"))
    clock.advance(0)
    assert store.commits[0][:2] == ([], 42 + ID_BLOCK) and bob.writes == []
    store.commits[0][2].callback(None)
    d.broadcast(ev.Join(43, 0.0, "dee"))  # within the block: no transaction needed
    clock.advance(0)
    assert len(store.commits) == 1 and "dee has joined" in bob.text()


def test_a_reply_waits_behind_what_is_queued_and_goes_at_once_when_nothing_is() -> None:
    clock, store, d = delivery()
    bob, newcomer = Peer(), Peer()
    d.add_member(bob, "bob")
    d.reply(newcomer, ev.Info("nothing queued: at once"))
    assert newcomer.writes
    d.broadcast(store.message("one"))
    d.reply(bob, ev.Info("for bob"))
    assert bob.writes == []
    clock.advance(0)
    store.commits[0][2].callback(None)
    assert bob.text().index("one") < bob.text().index("for bob")


def test_a_mode_switch_mid_batch_keeps_earlier_events_in_the_old_mode() -> None:
    clock, store, d = delivery()
    bob = Peer("text")
    d.add_member(bob, "bob")
    d.broadcast(store.message("before"))
    bob.mode = "json"
    d.mode_changed(bob, "text")
    d.broadcast(store.message("after"))
    clock.advance(0)
    store.commits[0][2].callback(None)
    first, second = bob.text().splitlines()
    assert first.endswith("<ann> before") and json.loads(second)["text"] == "after"


def test_members_hear_only_their_window_of_a_batch() -> None:
    clock, store, d = delivery()
    old, new = Peer(), Peer()
    d.add_member(old, "old")
    d.broadcast(store.message("one"))
    d.add_member(new, "new")
    d.broadcast(store.message("two"))
    d.remove_member(old)
    d.broadcast(store.message("three"))
    clock.advance(0)
    store.commits[0][2].callback(None)
    assert said(old.text().splitlines()) == ["one", "two"]
    assert said(new.text().splitlines()) == ["two", "three"]


def test_delivered_fires_once_what_was_queued_is_written() -> None:
    clock, store, d = delivery()
    bob = Peer()
    d.add_member(bob, "bob")
    d.broadcast(store.message("one"))
    done = d.delivered(bob)
    clock.advance(0)
    assert not done.called
    store.commits[0][2].callback(None)
    assert done.called and bob.writes
