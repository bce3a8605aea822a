"""Rooms in memory: the rules (``chat.rooms``) and what users see, no sockets.

The in-memory stack delivers every event at once; a ``task.Clock`` makes
invitations lapse. Real sockets, text and JSON, are in
tests/test_rooms_integration.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from twisted.internet import task

from chat.config import RoomSettings
from chat.rooms import INVITE_TTL, Rooms
from chat.service import User
from tests.support import Conn, MemoryServer, memory_server, relaxed_config

STAMP = r"\(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\) "


@pytest.fixture
def mem(tmp_path: Path) -> MemoryServer:
    return memory_server(tmp_path)


def people(mem: MemoryServer, *names: str) -> list[Conn]:
    conns = [mem.user(n) for n in names]
    for c in conns:
        c.take()
    return conns


def events(conn: Conn, kind: str) -> list[dict]:
    return [e for e in conn.events() if e["type"] == kind]


# --- the rules ---


class Someone:
    def __init__(self, name: str) -> None:
        self.name = name
        self.peer = object()
        self.rooms: list = []
        self.current = None


def test_names_are_compared_without_case_and_shown_as_created() -> None:
    rooms = Rooms(RoomSettings(), task.Clock())
    alice, bob = Someone("alice"), Someone("bob")
    room, new = rooms.join(alice, "#Dev")  # type: ignore[misc]
    assert new and room.name == "#Dev" and rooms.is_operator(alice, room)
    assert rooms.join(bob, "#dEV") == (room, True)
    assert rooms.join(bob, "#dev") == (room, False)  # already in: just current
    for bad in ("dev", "#", "#" + "x" * 33, "#a b", "#ü"):
        assert rooms.join(bob, bad).code == "bad_room_name"  # type: ignore[union-attr]


def test_the_current_room_falls_back_to_the_latest_joined() -> None:
    rooms = Rooms(RoomSettings(), task.Clock())
    alice = Someone("alice")
    a, _ = rooms.join(alice, "#a")  # type: ignore[misc]
    b, _ = rooms.join(alice, "#b")  # type: ignore[misc]
    c, _ = rooms.join(alice, "#c")  # type: ignore[misc]
    rooms.join(alice, "#a")  # current again, joined first
    rooms.part(alice, a)
    assert alice.current is c  # the most recently joined of those left
    rooms.part(alice, c)
    rooms.part(alice, b)
    assert alice.current is None and rooms.rooms == {}  # empty and without history: gone


def test_invitations_lapse_after_a_day() -> None:
    clock = task.Clock()
    rooms = Rooms(RoomSettings(), clock)
    alice, bob, carol = Someone("alice"), Someone("bob"), Someone("carol")
    staff, _ = rooms.join(alice, "#staff")  # type: ignore[misc]
    assert rooms.set_flag(bob, staff, "private", True).code == "not_room_operator"  # type: ignore[union-attr]
    assert rooms.set_flag(alice, staff, "private", True) is None
    assert rooms.join(bob, "#staff").code == "invite_only"  # type: ignore[union-attr]
    rooms.invite(alice, "bob", staff)
    rooms.invite(alice, "carol", staff)
    assert rooms.join(bob, "#staff") == (staff, True)
    clock.advance(INVITE_TTL)
    assert rooms.join(carol, "#staff").code == "invite_only"  # type: ignore[union-attr]


def test_limits_per_user_and_in_all() -> None:
    rooms = Rooms(RoomSettings(max_per_user=2, max_rooms=3), task.Clock())
    alice, bob = Someone("alice"), Someone("bob")
    rooms.join(alice, "#a")
    rooms.join(alice, "#b")
    refused = rooms.join(alice, "#c")
    assert refused.code == "too_many_rooms" and refused.params["limit"] == 2  # type: ignore[union-attr]
    rooms.join(bob, "#c")
    refused = rooms.join(bob, "#d")
    assert refused.params == {"limit": 3, "reason": "server"}  # type: ignore[union-attr]


# --- what users see ---


def test_one_room_reads_as_a_server_without_rooms(mem: MemoryServer) -> None:
    alice, bob = people(mem, "alice", "bob")
    alice.line("hello")
    assert re.fullmatch(STAMP + r"<alice> hello", bob.lines()[0])
    carol = mem.user("carol")
    assert re.fullmatch(STAMP + r"-- carol has joined the chat\.", bob.lines()[0])
    carol.line("/quit")
    assert bob.lines()[0].endswith("-- carol has left the chat (quit).")


def test_lines_carry_their_room_while_you_are_in_several(mem: MemoryServer) -> None:
    alice, bob = people(mem, "alice", "bob")
    bob.line("/join #dev")
    assert "-- Now talking in #dev." in bob.lines()
    alice.line("/join #dev")
    assert bob.lines()[0].endswith("-- alice has joined #dev.")
    alice.line("the build is green")
    assert re.fullmatch(STAMP + r"\[#dev\] <alice> the build is green", bob.lines()[0])
    bob.line("/part #lobby")
    bob.take()
    alice.line("/msg #dev untagged now")
    assert re.fullmatch(STAMP + r"<alice> untagged now", bob.lines()[0])


def test_a_plain_line_in_no_room_is_refused(mem: MemoryServer) -> None:
    (alice,) = people(mem, "alice")
    alice.line("/part")
    alice.take()
    alice.line("anyone?")
    assert alice.lines() == ["!! You are in no room: /join one (e.g. /join #lobby) to talk."]


def test_leaving_the_server_is_one_line_for_each_who_shared_a_room(mem: MemoryServer) -> None:
    alice, bob, carol = people(mem, "alice", "bob", "carol")
    for c in (alice, bob):
        c.line("/join #a")
        c.line("/join #b")
    carol.line("/join #c")
    carol.line("/part #lobby")
    for c in (bob, carol):
        c.take()
    alice.close()
    (leave,) = [ln for ln in bob.lines() if "has left" in ln]  # not one per shared room
    assert leave.endswith("-- alice has left the chat (connection lost).")
    assert carol.lines() == []  # shared no room with alice


def test_a_file_notice_reaches_its_room_only(mem: MemoryServer) -> None:
    alice, bob, carol = people(mem, "alice", "bob", "carol")
    alice.line("/join #dev")
    bob.line("/join #dev")
    for c in (bob, carol):
        c.take()
    alice.feed(b"/send dev.txt 3\nabc")
    assert any("alice shared dev.txt" in ln for ln in bob.lines())
    assert carol.lines() == []
    bob.line("/files")
    assert any("dev.txt" in ln for ln in bob.lines())
    carol.line("/files")
    assert carol.lines() == ["-- No files shared yet."]


def test_history_is_the_rooms_own_and_survives_a_restart(tmp_path: Path) -> None:
    mem = memory_server(tmp_path, relaxed_config())
    alice = mem.user("alice")
    alice.line("in the lobby")
    alice.line("/join #dev")
    alice.line("in dev")
    again = memory_server(tmp_path)
    bob = again.connect()
    bob.line("/proto json")
    bob.take()  # the banner and prompt came in text mode
    bob.line("bob")
    (lobby,) = events(bob, "history")
    assert [m["text"] for m in lobby["messages"]] == ["in the lobby"]
    bob.line("/join #dev")
    (dev,) = events(bob, "history")
    assert dev["room"] == "#dev" and [m["text"] for m in dev["messages"]] == ["in dev"]


def test_operators_and_invitations_follow_a_nick(mem: MemoryServer) -> None:
    (alice,) = people(mem, "alice")
    alice.line("/join #ops")
    alice.line("/nick ally")
    alice.line("/private on")
    assert alice.lines()[-1] == "-- #ops is now invite-only."
    user: User = mem.service.registry.get("ally")  # type: ignore[assignment]
    assert mem.service.rooms.is_operator(user, user.current)  # type: ignore[arg-type]


def test_an_invitation_lets_its_holder_in_again_for_a_day() -> None:
    clock = task.Clock()
    rooms = Rooms(RoomSettings(), clock)
    alice, bob = Someone("alice"), Someone("bob")
    staff, _ = rooms.join(alice, "#staff")  # type: ignore[misc]
    rooms.set_flag(alice, staff, "private", True)
    rooms.invite(alice, "bob", staff)
    rooms.join(bob, "#staff")
    rooms.part(bob, staff)
    assert rooms.join(bob, "#staff") == (staff, True)


def test_a_public_room_can_be_looked_at_from_outside_a_private_one_cannot(
    mem: MemoryServer,
) -> None:
    alice, bob = people(mem, "alice", "bob")
    alice.line("/join #pub")
    alice.line("/topic #pub open to all")
    alice.line("/join #hidden")
    alice.line("/private on")
    bob.take()
    bob.line("/names #pub")
    assert bob.lines() == ["-- #pub (1):", "--   alice  (idle 0s)"]
    bob.line("/topic #pub")
    assert bob.lines() == ["-- Topic of #pub: open to all"]
    bob.line("/names #hidden")
    assert bob.lines() == ["!! There is no room #hidden."]
    bob.line("/topic #pub mine now")
    assert bob.lines() == ["!! You are not in #pub."]
