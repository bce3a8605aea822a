"""Rooms on the real server over real sockets, in text and JSON mode (docs/protocol.md, "Rooms").

One server serves the module's tests that do not disturb each other: every
test makes its own users and rooms with unique names (``uid``) and quits its
users before the next begins, so ``#lobby`` is shared but never noisy. Tests
that need exact transcripts, a config, a restart or an old data directory
start a server of their own.

No test sleeps: ``User.sync`` sends a private message to oneself and reads up
to it, so everything the server had already sent that connection is in hand
(docs/protocol.md, "Order"); every read has a deadline.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import time
import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import RELAXED_TOML, LineClient, RealServer, running

TS = r"\(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\)"
_ids = itertools.count(1)
_SYNC = re.compile(r"\* sync-\d+$")


def uid(prefix: str) -> str:
    """A name no other test uses (user names and, with ``#``, room names)."""
    return f"{prefix}{next(_ids)}"


class User(LineClient):
    """A registered participant that knows its name and mode."""

    def __init__(self, server: RealServer, name: str, json_mode: bool) -> None:
        super().__init__(server.port)
        self.name, self.json = name, json_mode
        if json_mode:
            self.send_line("/proto json")
        self.send_line(name)
        line = self.expect('"type":"welcome"' if json_mode else "^Welcome to the chat")
        self.welcome: dict[str, Any] | None = json.loads(line) if json_mode else None
        self.mark = len(self.seen) - 1  # where this user's transcript starts
        #: What came right after the welcome: the default room's people and history.
        self.arrival = self.sync()

    def sync(self) -> list[Any]:
        """Everything the server sent before now: lines, or events in JSON mode."""
        token = uid("sync-")
        self.send_line(f"/msg {self.name} {token}")
        mark = re.compile(rf"\b{token}\b")
        got: list[Any] = []
        end = time.monotonic() + 10
        while True:
            line = self.read_line(max(0.0, end - time.monotonic()))
            if mark.search(line):
                return got
            got.append(json.loads(line) if self.json else line)

    def upto(self, type_: str, **fields: Any) -> list[dict[str, Any]]:
        """JSON events up to and including the first ``type_`` event with ``fields``."""
        got: list[dict[str, Any]] = []
        end = time.monotonic() + 10
        while not of(got[-1:], type_, **fields):
            got.append(json.loads(self.read_line(max(0.0, end - time.monotonic()))))
        return got

    def ask(self, line: str) -> list[Any]:
        """Send ``line``; all that arrived until the server had acted on it."""
        self.send_line(line)
        return self.sync()

    def error(self, line: str) -> dict[str, Any]:
        """Send ``line`` (JSON mode) and return the one error it must get."""
        got = self.ask(line)
        errors = of(got, "error")
        assert len(errors) == 1, f"sent {line!r}, got {got}"
        return errors[0]

    def ok(self, line: str) -> list[Any]:
        """Send ``line`` and check that no error came back."""
        got = self.ask(line)
        bad = of(got, "error") if self.json else [x for x in got if x.startswith("!! ")]
        assert not bad, f"sent {line!r}, got {got}"
        return got

    def transcript(self) -> list[str]:
        """Every line since (and including) ``Welcome to the chat``, but the syncs."""
        return [ln for ln in self.seen[self.mark:] if not _SYNC.search(ln)]


def of(events: list[dict[str, Any]], type_: str, **fields: Any) -> list[dict[str, Any]]:
    return [e for e in events
            if e["type"] == type_ and all(e.get(k) == v for k, v in fields.items())]


class People:
    """Makes users with unique names on a server, and closes them at the end."""

    def __init__(self, server: RealServer) -> None:
        self.server = server
        self.made: list[User] = []

    def text(self, prefix: str) -> User:
        return self._make(prefix, False)

    def json(self, prefix: str) -> User:
        return self._make(prefix, True)

    def _make(self, prefix: str, json_mode: bool) -> User:
        user = User(self.server, uid(prefix), json_mode)
        self.made.append(user)
        return user

    def close(self) -> None:
        """Quit everyone and wait until the server has closed them, so that their
        leaves are never delivered to the next test's users."""
        for user in self.made:
            try:
                user.send_line("/quit")
            except OSError:
                pass
        for user in self.made:
            try:
                user.closed()
            except OSError:
                pass
            user.close()
        self.made.clear()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    with running(tmp_path_factory.mktemp("rooms") / "data") as srv:
        yield srv


@pytest.fixture
def people(server: RealServer) -> Iterator[People]:
    p = People(server)
    yield p
    p.close()


@contextmanager
def serving(data: Path, *extra: str, **options: Any) -> Iterator[People]:
    """A server of the test's own, and the people on it."""
    with running(data, *extra, **options) as srv:
        people = People(srv)
        try:
            yield people
        finally:
            people.close()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[People]:
    """A server of the test's own (defaults, relaxed flood limits)."""
    with serving(tmp_path / "data") as people:
        yield people


def configured(tmp_path: Path, rooms: str) -> AbstractContextManager[People]:
    """A server with ``[rooms]`` settings (and the relaxed flood limits)."""
    path = tmp_path / "server.toml"
    path.write_text(RELAXED_TOML + "\n[rooms]\n" + rooms)
    return serving(tmp_path / "data", "--config", str(path), relaxed=False)


def said(lines: list[str], pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [ln for ln in lines if rx.fullmatch(ln)]


# --- names ---


def test_room_names_are_case_insensitive_and_shown_as_created(people: People) -> None:
    """`#Dev` is `#dev`: one room, always named as its creator spelled it."""
    alice, bob = people.json("alice"), people.json("bob")
    spelled = uid("#Dev")
    got = alice.ok(f"/join {spelled}")
    assert of(got, "current", room=spelled), got
    got = bob.ok(f"/join {spelled.lower()}")
    assert of(got, "participants", room=spelled)[0]["names"] == [alice.name, bob.name], got
    assert of(got, "current", room=spelled), got
    assert of(alice.sync(), "join", name=bob.name, room=spelled)
    rooms = of(bob.ask("/rooms"), "rooms")[0]["rooms"]
    assert [r["name"] for r in rooms if r["name"].lower() == spelled.lower()] == [spelled]
    bob.ok(f"/msg {spelled.upper()} same room")
    assert of(alice.sync(), "message", sender=bob.name, text="same room", room=spelled)


@pytest.mark.parametrize("bad", ["dev", "#", "#" + "a" * 33, "#a b", "#ü"])
def test_bad_room_names_are_refused(people: People, bad: str) -> None:
    """Not `#` and 1-32 letters, digits, `_`, `-`, `.`: `bad_room_name`, in both modes."""
    alice, bob = people.json("alice"), people.text("bob")
    err = alice.error(f"/join {bad}")
    assert err["code"] == "bad_room_name", f"sent '/join {bad}', got {err}"
    assert bob.ask(f"/join {bad}") == [
        "!! A room name is '#' and 1 to 32 letters, digits, '_', '-' or '.'."
    ]
    assert [r["name"] for r in of(alice.ask("/rooms"), "rooms")[0]["rooms"]
            if r["name"] in (bad, bad.split()[0])] == []


# --- the default room ---


def test_without_room_commands_text_reads_as_before_rooms(fresh: People) -> None:
    """Everyone is in `#lobby`; who never types a room command sees exactly today's lines."""
    alice = fresh.text("alice")
    bob = fresh.text("bob")
    a, b = alice.name, bob.name
    alice.expect(f"-- {b} has joined the chat")
    alice.send_line("hi")
    alice.send_line("/me waves")
    bob.expect(f"\\* {a} waves$")
    bob.send_line("hello")
    alice.expect(f"<{b}> hello$")
    alice.send_line("/quit")
    assert alice.closed()
    alice.seen += [ln for ln in alice.buf.decode().split("\r\n") if ln]
    bob.expect(f"-- {a} has left the chat")
    bob.sync()
    assert [re.sub(TS, "T", ln) for ln in alice.transcript()] == [
        f"Welcome to the chat, {a}.", "-- You are the only one here.", "-- No messages yet.",
        f"T -- {b} has joined the chat.", f"T <{b}> hello", "-- Goodbye (quit).",
    ]
    assert [re.sub(TS, "T", ln) for ln in bob.transcript()] == [
        f"Welcome to the chat, {b}.", f"-- Here with you (1): {a}", "-- No messages yet.",
        f"T <{a}> hi", f"T * {a} waves", f"T -- {a} has left the chat (quit).",
    ]


def test_json_arrival_names_the_default_room(people: People) -> None:
    """welcome lists `rooms` and `room`; participants, history, join, message carry `room`."""
    bob = people.json("bob")
    assert bob.welcome is not None
    assert bob.welcome["rooms"] == ["#lobby"] and bob.welcome["room"] == "#lobby", bob.welcome
    got = bob.arrival
    part = of(got, "participants")
    assert len(part) == 1 and part[0]["room"] == "#lobby" and part[0]["you"] == bob.name, got
    assert bob.name in part[0]["names"]
    hist = of(got, "history")
    assert len(hist) == 1 and hist[0]["room"] == "#lobby", got
    assert all(m["room"] == "#lobby" for m in hist[0]["messages"]), hist
    assert of(got, "join", name=bob.name, room="#lobby", arrival=True), got
    alice = people.text("alice")
    alice.send_line("hi bob")
    alice.send_line("/quit")
    assert alice.closed()
    got = [e for e in bob.upto("leave", name=alice.name)
           if alice.name in (e.get("name"), e.get("sender"))]
    assert [(e["type"], e.get("room")) for e in got] == [
        ("join", "#lobby"), ("message", "#lobby"), ("leave", None)], got
    assert got[0]["arrival"] is True and got[1]["text"] == "hi bob" and "room" not in got[2]


# --- joining, parting, the current room ---


def test_join_makes_current_and_part_falls_back_to_the_latest_joined(people: People) -> None:
    """`/join` creates and makes current; `/part` falls back to the latest joined; none left:
    `not_in_room`."""
    alice, bob = people.json("alice"), people.json("bob")
    r1, r2 = uid("#one"), uid("#two")
    got = alice.ok(f"/join {r1}")
    assert of(got, "participants", room=r1, names=[alice.name]), got
    assert of(got, "history", room=r1, messages=[]), got
    assert of(got, "join", name=alice.name, room=r1, arrival=False), got
    assert of(got, "current", room=r1), got
    bob.ok(f"/join {r1}")
    alice.ok(f"/join {r2}")
    mine = alice.ok("plain line") + alice.ok("/me nods")
    got = alice.ok(f"/join {r1}")
    assert [e["type"] for e in got] == ["current"] and got[0]["room"] == r1, got
    mine += alice.ok("back in one")
    said_ = [(e["type"], e["text"], e["room"]) for e in mine if e.get("sender") == alice.name]
    assert said_ == [("message", "plain line", r2), ("action", "nods", r2),
                     ("message", "back in one", r1)], mine
    got = [e for e in bob.sync() if e.get("sender") == alice.name]
    assert [(e["text"], e["room"]) for e in got] == [("back in one", r1)], got

    alice.ok("/join #lobby")
    got = alice.ok("/part #lobby")
    assert of(got, "part", name=alice.name, room="#lobby", reason=""), got
    assert of(got, "current", room=r2), got
    got = alice.ok("/part")
    assert of(got, "current", room=r1), got
    got = alice.ok("/part")
    assert of(got, "current", room=None), got
    assert of(bob.sync(), "part", name=alice.name, room=r1), "bob is in r1"
    for line in ("nobody hears this", "/me shrugs"):
        err = alice.error(line)
        assert err["code"] == "not_in_room" and "/join" in err["text"], err
    text = people.text("carol")
    text.ok("/part")
    assert text.ask("hello?") == [
        "!! You are in no room: /join one (e.g. /join #lobby) to talk."
    ]


def test_plain_lines_and_actions_go_to_the_current_room(people: People) -> None:
    """What is said in a room reaches its members only; JSON events carry `room`."""
    alice, bob, carol = people.json("alice"), people.json("bob"), people.json("carol")
    dev = uid("#dev")
    alice.ok(f"/join {dev}")
    bob.ok(f"/join {dev}")
    mine = alice.ok("in dev") + alice.ok("/me types")  # a JSON client hears its own
    want = [("message", "in dev", dev), ("action", "types", dev)]
    for user, got in ((alice, mine), (bob, bob.sync())):
        said_ = [(e["type"], e["text"], e["room"]) for e in got if e.get("sender") == alice.name]
        assert said_ == want, f"{user.name}: {got}"
    assert not [e for e in carol.sync() if e.get("sender") == alice.name]


def test_parts_are_seen_by_the_room_with_their_reason(people: People) -> None:
    """`/part ROOM REASON`: a `part` to the members, the leaver included."""
    alice, bob = people.json("alice"), people.json("bob")
    dev = uid("#dev")
    alice.ok(f"/join {dev}")
    bob.ok(f"/join {dev}")
    got = bob.ok(f"/part {dev} gone for lunch")
    assert of(got, "part", name=bob.name, room=dev, reason="gone for lunch"), got
    assert of(got, "current", room="#lobby"), got
    assert of(alice.sync(), "part", name=bob.name, room=dev, reason="gone for lunch")


# --- text mode: tags only in more than one room ---


def test_text_tags_only_in_more_than_one_room(people: People) -> None:
    """`[#dev]` on lines while in several rooms; none in one; joins and parts name the room."""
    alice, bob, carol = people.json("alice"), people.text("bob"), people.json("carol")
    a, c = alice.name, carol.name
    dev = uid("#dev")
    alice.ok(f"/join {dev}")
    bob.ok(f"/join {dev}")
    alice.ok("the build is green")
    alice.ok("/msg #lobby lobby chatter")
    alice.ok("/me deploys")
    carol.ok(f"/join {dev}")
    carol.ok(f"/part {dev} lunch")
    got = bob.sync()
    for pattern in (f"{TS} \\[{dev}\\] <{a}> the build is green",
                    f"{TS} \\[#lobby\\] <{a}> lobby chatter",
                    f"{TS} \\[{dev}\\] \\* {a} deploys",
                    f"{TS} -- {c} has joined {dev}\\.",
                    f"{TS} -- {c} has left {dev} \\(lunch\\)\\."):
        assert len(said(got, pattern)) == 1, f"want {pattern!r} in:\n" + "\n".join(got)
    bob.ok("/part #lobby")
    alice.ok("only one room now")
    got = bob.sync()
    assert said(got, f"{TS} <{a}> only one room now"), got
    assert not [ln for ln in got if "[#" in ln], got


# --- /msg ---


def test_msg_to_a_room_and_to_a_person(people: People) -> None:
    """`/msg #room TEXT` says it there without switching; a room you are not in:
    `not_in_room`; `/msg bob` stays private and roomless."""
    alice, bob = people.json("alice"), people.json("bob")
    dev, other = uid("#dev"), uid("#other")
    alice.ok(f"/join {dev}")
    bob.ok(f"/join {other}")
    got = alice.ok("/msg #lobby aside")
    assert of(got, "message", sender=alice.name, text="aside", room="#lobby"), got
    assert not of(got, "current"), "no switch"
    got = alice.ok("still in dev")
    assert of(got, "message", text="still in dev", room=dev), got
    err = alice.error(f"/msg {other} let me in")
    assert err["code"] == "not_in_room", err
    assert not [e for e in bob.sync() if e.get("text") == "let me in"]
    for got in (alice.ok(f"/msg {bob.name} psst"), bob.sync()):
        priv = of(got, "private", sender=alice.name, recipient=bob.name, text="psst")
        assert len(priv) == 1 and "room" not in priv[0], got


# --- leaving the server ---


def test_one_leave_per_user_who_shared_a_room(people: People) -> None:
    """A user in three rooms disconnects: each sharer sees ONE leave, others none."""
    alice, bob, dave = people.json("alice"), people.json("bob"), people.text("dave")
    carol = people.json("carol")
    ra, rb, rc = uid("#a"), uid("#b"), uid("#c")
    for user in (alice, bob, dave):
        user.ok(f"/join {ra}")
        user.ok(f"/join {rb}")
    carol.ok(f"/join {rc}")
    carol.ok("/part #lobby")
    for user in (bob, dave, carol):
        user.sync()
    alice.close()
    got = bob.upto("leave", name=alice.name) + bob.sync()
    assert [e["reason"] for e in of(got, "leave", name=alice.name)] == ["connection lost"], got
    assert of(got, "part", name=alice.name) == [], "leaving the server is not a part"
    left = f"{TS} -- {alice.name} has left the chat \\(connection lost\\)\\."
    dave.expect(left)
    assert said(dave.sync(), left) == [], "one leave line"
    assert not [ln for ln in dave.seen if f"-- {alice.name} has left #" in ln], "no parts"
    assert [e for e in carol.sync() if alice.name in (e.get("name"), e.get("sender"))] == []


# --- /rooms, /names, /who ---


def test_rooms_listing(people: People) -> None:
    """`/rooms`: name, members, topic, joined; rooms with members first; private rooms
    only to members."""
    alice, bob, carol = people.json("alice"), people.json("bob"), people.text("carol")
    pub, hide, quiet = uid("#pub"), uid("#hide"), uid("#quiet")
    alice.ok(f"/join {quiet}")
    alice.ok("something to keep")
    alice.ok(f"/part {quiet}")
    alice.ok(f"/join {hide}")
    alice.ok("/private on")
    alice.ok(f"/join {pub}")
    alice.ok(f"/topic {pub} all welcome")
    carol.ok(f"/join {pub}")

    def listing(user: User) -> dict[str, dict[str, Any]]:
        rooms = of(user.ask("/rooms"), "rooms")[0]["rooms"]
        assert all(r["type"] == "roominfo" for r in rooms), rooms
        counts = [r["members"] > 0 for r in rooms]
        assert counts == sorted(counts, reverse=True), f"members first: {rooms}"
        return {r["name"]: r for r in rooms}

    mine, bobs = listing(alice), listing(bob)
    assert (mine[pub]["members"], mine[pub]["topic"], mine[pub]["joined"]) == (
        2, "all welcome", True)
    assert (bobs[pub]["joined"], bobs["#lobby"]["joined"]) == (False, True)
    assert mine[hide]["private"] is True and mine[hide]["joined"] is True
    assert hide not in bobs, "a private room is invisible to non-members"
    assert mine[quiet]["members"] == 0 and quiet in bobs, "kept while it has history"
    got = carol.ask("/rooms")
    assert said(got, f"--   {re.escape(pub)}  \\(2 members, you are in it\\)  all welcome"), got
    assert not [ln for ln in got if hide in ln], got


def test_names_and_who(people: People) -> None:
    """`/names [ROOM]` and `/who ROOM`: a room's members; `/who`: everyone on the server."""
    alice, bob, carol = people.json("alice"), people.json("bob"), people.text("carol")
    dev, far = uid("#dev"), uid("#far")
    alice.ok(f"/join {dev}")
    bob.ok(f"/join {dev}")
    carol.ok(f"/join {far}")
    carol.ok("/part #lobby")
    for line in ("/names", f"/names {dev}", f"/who {dev}"):
        names = of(alice.ask(line), "names")
        assert len(names) == 1 and names[0]["room"] == dev, (line, names)
        users = names[0]["users"]
        assert [u["name"] for u in users] == [alice.name, bob.name], (line, users)
        assert all(u["type"] == "participant" and u["idle"] >= 0 for u in users), users
    lobby = [u["name"] for u in of(alice.ask("/names #lobby"), "names")[0]["users"]]
    assert alice.name in lobby and carol.name not in lobby
    everyone = [u["name"] for u in of(alice.ask("/who"), "who")[0]["users"]]
    assert {alice.name, bob.name, carol.name} <= set(everyone)
    got = carol.ask(f"/names {far}")
    assert got[0] == f"-- {far} (1):" and re.fullmatch(
        f"--   {carol.name}  \\(idle .+\\)", got[1]), got


# --- topics ---


def test_topic_is_seen_by_the_room_and_limited(people: People) -> None:
    """`/topic`: members see `topic` (text: `-- alice set the topic of #dev: …`); over 300
    bytes: `topic_too_long`; `/topic` alone shows it."""
    alice, bob, carol = people.json("alice"), people.text("bob"), people.json("carol")
    dev = uid("#dev")
    alice.ok(f"/join {dev}")
    bob.ok(f"/join {dev}")
    topic = of(alice.ok(f"/topic {dev} release on Friday"), "topic", room=dev)
    assert len(topic) == 1 and (topic[0]["topic"], topic[0]["by"]) == (
        "release on Friday", alice.name), topic
    assert said(bob.sync(), f"{TS} -- {alice.name} set the topic of {dev}: release on Friday")
    assert not of(carol.sync(), "topic", room=dev), "carol is not in the room"
    info = of(alice.ask("/topic"), "roominfo")
    assert len(info) == 1 and (info[0]["name"], info[0]["topic"]) == (
        dev, "release on Friday"), info
    err = alice.error(f"/topic {dev} " + "é" * 151)  # 151 characters, 302 bytes
    assert err["code"] == "topic_too_long" and err["limit"] == 300, err
    assert of(alice.ok(f"/topic {dev} " + "é" * 150), "topic", topic="é" * 150)


def test_locked_topic_needs_an_operator_and_op_makes_one(people: People) -> None:
    """`/lock on`: non-operators get `not_room_operator`; after `/op bob`, bob sets it."""
    alice, bob = people.json("alice"), people.json("bob")
    dev = uid("#dev")
    alice.ok(f"/join {dev}")
    bob.ok(f"/join {dev}")
    bob.ok(f"/topic {dev} anyone may")  # not locked yet
    assert of(alice.sync(), "topic", room=dev, topic="anyone may", by=bob.name)
    alice.ok("/lock on")
    err = bob.error(f"/topic {dev} mine now")
    assert err["code"] == "not_room_operator", err
    alice.ok(f"/op {bob.name}")
    for got in (bob.ok(f"/topic {dev} mine now"), alice.sync()):
        assert of(got, "topic", room=dev, topic="mine now", by=bob.name), got


# --- private rooms, invitations, operators ---


def test_private_room_needs_an_invitation(people: People) -> None:
    """`/private on`: `/join` gets `invite_only`; `/invite bob`: bob gets `invited` and
    enters; non-operators' `/private`, `/kick`, `/op`, `/lock` get `not_room_operator`."""
    alice, bob, carol = people.json("alice"), people.json("bob"), people.json("carol")
    room = uid("#priv")
    alice.ok(f"/join {room}")
    alice.ok("/private on")
    err = bob.error(f"/join {room}")
    assert err["code"] == "invite_only", err
    alice.ok(f"/invite {bob.name}")
    inv = of(bob.sync(), "invited")
    assert len(inv) == 1 and (inv[0]["room"], inv[0]["by"]) == (room, alice.name), inv
    got = bob.ok(f"/join {room}")
    assert of(got, "participants", room=room) and of(got, "current", room=room), got
    assert carol.error(f"/join {room}")["code"] == "invite_only"
    for line in (f"/private {room} off", f"/kick {alice.name} {room}",
                 f"/op {bob.name} {room}", f"/lock {room} on", f"/deop {alice.name} {room}"):
        err = bob.error(line)
        assert err["code"] == "not_room_operator", f"sent {line!r}, got {err}"
    assert bob.error(f"/invite {carol.name}")["code"] == "not_room_operator"
    assert carol.error(f"/join {room}")["code"] == "invite_only", "still private"


def test_kick_puts_out_of_the_room_not_off_the_server(people: People) -> None:
    """`/kick bob #room REASON`: a `part` (reason `kicked by alice: REASON`) to the members,
    bob included; bob gets `current` and still chats in #lobby."""
    alice, bob, carol = people.json("alice"), people.json("bob"), people.text("carol")
    room = uid("#k")
    for user in (alice, bob, carol):
        user.ok(f"/join {room}")
    kicking = alice.ok(f"/kick {bob.name} {room} too noisy")
    why = f"kicked by {alice.name}: too noisy"
    got = bob.sync()
    assert of(got, "part", name=bob.name, room=room, reason=why), got
    assert of(got, "current", room="#lobby"), got
    assert not of(got, "leave") and not of(got, "error"), got
    assert of(kicking, "part", name=bob.name, room=room, reason=why), kicking
    assert said(carol.sync(), f"{TS} -- {bob.name} has left {room} \\({why}\\)\\.")
    assert bob.error(f"/msg {room} let me back")["code"] == "not_in_room"
    bob.ok("still here")
    assert of(alice.sync(), "message", sender=bob.name, text="still here", room="#lobby")
    assert said(carol.sync(), f"{TS} \\[#lobby\\] <{bob.name}> still here")
    assert carol.ask(f"/kick {alice.name} {room}") == [
        f"!! Only an operator of {room} can do that."]


# --- limits ---


def test_too_many_rooms_per_user_and_on_the_server(tmp_path: Path) -> None:
    """`max_per_user = 3` (the default room counts): the 4th is `too_many_rooms` naming 3;
    `max_rooms = 5`: a 6th room on the server is refused (`reason` `server`)."""
    with configured(tmp_path, "max_per_user = 3\nmax_rooms = 5\n") as people:
        alice, bob, carol = people.json("alice"), people.json("bob"), people.text("carol")
        alice.ok("/join #a1")
        alice.ok("/join #a2")
        err = alice.error("/join #a3")
        assert err["code"] == "too_many_rooms" and err["limit"] == 3, err
        assert err.get("reason") != "server" and "3" in err["text"], err
        carol.ok("/join #a1")
        carol.ok("/join #a2")
        assert carol.ask("/join #a3") == [
            "!! You are in too many rooms (at most 3); /part one first."]
        alice.ok("/part #a2")
        alice.ok("/join #a1")  # already in it: just current, no new room counted
        bob.ok("/join #b1")
        bob.ok("/join #b2")  # #lobby #a1 #a2 #b1 #b2: five rooms on the server
        err = alice.error("/join #a3")
        assert (err["code"], err["limit"], err.get("reason")) == (
            "too_many_rooms", 5, "server"), err
        alice.ok("/join #b1")  # an existing room is no new one


# --- history per room, across restarts and from before rooms ---


def test_history_is_per_room_and_survives_a_restart(tmp_path: Path) -> None:
    """Each room replays its own history after a restart; `/history` is the current room's."""
    data = tmp_path / "data"
    with serving(data) as people:
        alice = people.json("alice")
        alice.ok("/join #Dev")
        alice.ok("/topic release on Friday")
        alice.ok("dev one")
        alice.ok("/me dev two")
        alice.ok("/msg #lobby lobby one")
        people.close()
        assert people.server.stop() == 0  # SIGTERM: a clean stop
    with serving(data) as people:
        bob, carol = people.json("bob"), people.text("carol")
        hist = of(bob.arrival, "history")
        assert len(hist) == 1 and hist[0]["room"] == "#lobby", hist
        assert [m["text"] for m in hist[0]["messages"]] == ["lobby one"], hist
        got = bob.ok("/join #dev")
        assert of(got, "participants", room="#Dev", topic="release on Friday"), got
        dev = of(got, "history", room="#Dev")
        assert [(m["type"], m["text"], m["room"]) for m in dev[0]["messages"]] == [
            ("message", "dev one", "#Dev"), ("action", "dev two", "#Dev")], dev
        got = bob.ok("/history")
        assert [m["text"] for m in of(got, "history", room="#Dev")[0]["messages"]] == [
            "dev one", "dev two"], got
        bob.ok("/join #lobby")
        got = of(bob.ask("/history 50"), "history")
        assert [(m["text"], m["room"]) for m in got[0]["messages"]] == [
            ("lobby one", "#lobby")], got
        got = carol.ask("/history")
        assert got[0] == "-- Last 1 message:" and said(got, f"{TS} <{alice.name}> lobby one"), got


#: The first round's schema (git show 2b03a0f:chat/store.py): no rooms anywhere.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    crc32 TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    uploader TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_time ON files (ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def test_history_from_before_rooms_is_the_default_rooms(tmp_path: Path) -> None:
    """A data directory of the old schema: its messages are `#lobby`'s history."""
    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "chat.sqlite3")
    db.executescript(OLD_SCHEMA)
    now = time.time()
    db.executemany("INSERT INTO history VALUES (?, ?, ?, ?, ?)", [
        (1, now - 60, "message", "olduser", "from before rooms"),
        (2, now - 30, "action", "olduser", "waves from the past"),
    ])
    db.commit()
    db.close()
    with serving(data) as people:
        bob, carol = people.json("bob"), people.text("carol")
        hist = of(bob.arrival, "history")
        assert len(hist) == 1 and hist[0]["room"] == "#lobby", hist
        assert [(m["id"], m["type"], m["sender"], m["text"], m["room"])
                for m in hist[0]["messages"]] == [
            (1, "message", "olduser", "from before rooms", "#lobby"),
            (2, "action", "olduser", "waves from the past", "#lobby")], hist
        got = carol.ask("/history")
        assert [re.sub(TS, "T", ln) for ln in got] == [
            "-- Last 2 messages:", "T <olduser> from before rooms",
            "T * olduser waves from the past", "-- End of history."], got
        got = bob.ok("/join #new")
        assert of(got, "history", room="#new", messages=[]), got
        assert of(bob.ok("first in new"), "message", text="first in new")[0]["id"] > 2


# --- files ---


def upload(user: User, name: str, data: bytes) -> dict[str, Any]:
    user.send(f"/send {name} {len(data)} {zlib.crc32(data):08x}\r\n".encode() + data)
    got = user.sync()
    stored = of(got, "uploaded")
    assert len(stored) == 1, f"uploaded {name}: {got}"
    return stored[0]["file"]


def test_files_are_shared_into_the_current_room(people: People) -> None:
    """`/send` shares into the current room (its members only); `/files [ROOM]`; the id
    still works with `/get` from anyone."""
    alice, bob, carol = people.json("alice"), people.json("bob"), people.json("carol")
    dave = people.text("dave")
    dev = uid("#dev")
    alice.ok(f"/join {dev}")
    bob.ok(f"/join {dev}")
    dave.ok(f"/join {dev}")
    info = upload(alice, "notes.txt", b"hello")
    assert info["room"] == dev, info
    fid = info["file_id"]
    note = of(bob.sync(), "file", file_id=fid)
    assert len(note) == 1 and note[0]["room"] == dev and note[0]["sender"] == alice.name, note
    assert said(dave.sync(), f"{TS} \\[{dev}\\] -- {alice.name} shared notes.txt .*"), "tag"
    assert not [e for e in carol.sync() if fid in json.dumps(e)], "carol is not in the room"

    listed = of(alice.ask("/files"), "files")
    assert listed[0]["room"] == dev and [f["file_id"] for f in listed[0]["files"]] == [fid]
    listed = of(bob.ask(f"/files {dev}"), "files")
    assert [f["file_id"] for f in listed[0]["files"]] == [fid] and listed[0]["room"] == dev
    lobby = of(alice.ask("/files #lobby"), "files")[0]
    assert lobby["room"] == "#lobby" and fid not in [f["file_id"] for f in lobby["files"]]
    assert carol.error(f"/files {dev}")["code"] == "not_in_room"

    carol.send_line(f"/get {fid}")
    header = carol.expect_event("download")
    assert header["file"]["file_id"] == fid and header["length"] == 5
    assert carol.read_exact(5) == b"hello"
    got = carol.sync()
    assert not of(got, "error"), got
