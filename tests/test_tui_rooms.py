"""Rooms in the client, without a screen or sockets: one pane each, and the current room.

``Rooms`` is checked on its own (tabs, the pane each room has, unread counts
and highlights while another room is shown, the read marker on coming back);
then a ``ChatSession`` on a ``task.Clock`` with a fake connection and the
typed events a rooms server sends: where each event lands, which lines go
out (a ``/join`` before a line typed after switching rooms, never a
needless one), parts and kicks, topics, account marks from the quiet
``/names``, the uploads' wait for their room, and what a reconnect asks
for, room by room.
"""

from __future__ import annotations

from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from twisted.internet import task
from twisted.python.failure import Failure

from chat import events as ev
from client_tui.bars import people, room_bar, tab_label
from client_tui.completion import ChatCompleter
from client_tui.connection import Backoff
from client_tui.format import event_line, info_line
from client_tui.rooms import Rooms
from client_tui.session import ChatSession
from tests.tui_support import TS_POSIX, FakeConn, FakeEndpoint

LOBBY, DEV = "#lobby", "#dev"


def m(i: int, room: str, text: str = "", sender: str = "bob") -> ev.Message:
    return ev.Message(i, TS_POSIX, sender, text or f"m{i}", room)


# --- the model ---


def test_the_first_room_takes_over_the_pane_on_screen() -> None:
    rooms = Rooms(lambda: None)
    rooms.pane.add(info_line("Connecting..."))
    lobby = rooms.add(LOBBY)
    assert rooms.shown is lobby and [ln.text[9:] for ln in lobby.pane.lines] == ["Connecting..."]
    dev = rooms.add("#Dev")
    assert rooms.shown is lobby and dev.pane.hidden and not lobby.pane.hidden
    assert rooms.get("#DEV") is dev and dev.key == "#dev" and rooms.add("#dev") is dev
    assert rooms.number(dev) == 2 and rooms.at(2) is dev and rooms.at(3) is None


def test_lines_said_in_another_room_are_unread_there_until_it_is_shown() -> None:
    rooms = Rooms(lambda: None)
    rooms.add(LOBBY)
    dev = rooms.add(DEV)
    for i, text in ((1, "a"), (2, "alice: b"), (3, "c")):
        line = event_line(m(i, DEV, text), "alice")
        assert line is not None
        dev.pane.add(line)
    assert (dev.pane.unread, dev.pane.unread_highlights) == (3, 1)
    assert rooms.unseen_highlights() == 1
    assert tab_label(2, DEV, 3, 1) == "2:#dev(3!)" and tab_label(1, LOBBY, 0, 0) == "1:#lobby"
    rooms.show(dev)
    assert (dev.pane.unread, dev.pane.unread_highlights) == (0, 0)
    assert dev.pane.view.marker is dev.pane.lines[0]  # the read marker above the first
    assert rooms.at(1) is not None and rooms.at(1).pane.hidden


def test_next_and_previous_wrap_round() -> None:
    rooms = Rooms(lambda: None)
    assert rooms.step(1) is None
    a, b, c = (rooms.add(n) for n in ("#a", "#b", "#c"))
    assert rooms.step(1) is b and rooms.step(-1) is c
    rooms.show(c)
    assert rooms.step(1) is a
    rooms.remove("#c")
    assert rooms.shown is rooms.home and rooms.step(1) is a and rooms.step(-1) is b


# --- a session on a rooms server ---


def online_in_rooms(*rooms: str, current: str = LOBBY) -> tuple[ChatSession, FakeConn]:
    clock = task.Clock()
    endpoint = FakeEndpoint()
    s = ChatSession(clock, lambda: endpoint, "srv", name="alice",  # type: ignore[arg-type,return-value]
                    backoff=Backoff(rand=lambda: 0.0))
    s.start()
    conn = FakeConn()
    s.connected(conn)  # type: ignore[arg-type]
    say(s, conn, ev.Prompt("Choose a username:"),
        ev.Welcome("alice", "k", "x", None, tuple(rooms), current))
    for i, room in enumerate(rooms):
        say(s, conn, ev.Participants(("bob", "alice"), "alice", room, f"about {room}"),
            ev.History((m(i + 1, room),), 20, room=room))
    return s, conn


def say(s: ChatSession, conn: FakeConn, *events: ev.Event) -> None:
    for event in events:
        s.event(conn, event)  # type: ignore[arg-type]


def texts(s: ChatSession, room: str) -> list[str]:
    r = s.rooms.get(room)
    assert r is not None
    return [ln.text[9:] for ln in r.pane.lines if ln.id is not None]


def test_each_room_has_its_scrollback_people_and_topic() -> None:
    s, conn = online_in_rooms(LOBBY, DEV)
    assert conn.sent == ["alice", "/history 0", "/names #lobby", "/names #dev"]
    assert [r.name for r in s.rooms] == [LOBBY, DEV] and s.rooms.shown.name == LOBBY
    say(s, conn, m(10, DEV, "in dev"), m(11, LOBBY, "in lobby"),
        ev.Join(12, TS_POSIX, "carol", DEV), ev.Private(13, TS_POSIX, "carol", "alice", "psst"))
    assert texts(s, DEV) == ["<bob> m2", "<bob> in dev", "--> carol has joined #dev"]
    # A private message belongs to no room: it shows where you are looking.
    assert texts(s, LOBBY) == ["<bob> m1", "<bob> in lobby", "*carol* psst"]
    assert s.participants == ["bob", "alice"] and "| #lobby | about #lobby" in s.status_text()
    assert [t for _, t in room_bar(s) if t.strip()] == ["1:#lobby", "2:#dev(1)"]
    s.roomflow.switch(s.rooms.at(2))
    assert s.participants == ["bob", "alice", "carol"]
    assert "| #dev | about #dev" in s.status_text()
    assert [t for _, t in room_bar(s) if t.strip()] == ["1:#lobby", "2:#dev"]


def test_a_switch_makes_the_room_current_before_any_line() -> None:
    s, conn = online_in_rooms(LOBBY, DEV)
    s.reactor.advance(10)  # flood control's bucket full again
    del conn.sent[:]
    s.commands.submit("still in the lobby")
    assert conn.sent == ["still in the lobby"]  # no needless /join
    s.roomflow.switch(s.rooms.step(1))
    s.commands.submit("hello dev")
    s.commands.submit("/me waves")
    assert conn.sent[1:] == ["/join #dev", "hello dev", "/me waves"]
    say(s, conn, ev.Current(DEV))
    s.roomflow.switch(s.rooms.step(-1))
    s.commands.submit("/history 5")  # tracked by the client: it follows the room too
    s.reactor.advance(1)
    assert conn.sent[4:] == ["/join #lobby", "/history 5"]


def test_joins_held_by_flood_control_are_retargeted_not_piled_up() -> None:
    s, conn = online_in_rooms(LOBBY, DEV, "#ops")
    s.reactor.advance(10)
    for i in range(5):
        s.commands.submit(f"line {i}")  # spend the burst
    before = len(conn.sent)
    for _ in range(7):
        s.roomflow.switch(s.rooms.step(1))  # Ctrl-N, quickly
    s.commands.submit("where am I")
    s.reactor.advance(10)
    assert conn.sent[before:] == ["/join #dev", "where am I"], conn.sent


def test_a_typed_join_shows_the_new_room_once_the_server_made_it_current() -> None:
    s, conn = online_in_rooms(LOBBY)
    del conn.sent[:]
    s.commands.submit("/join #new")
    assert conn.sent == ["/join #new"] and s.rooms.shown.name == LOBBY
    say(s, conn, ev.Participants(("alice",), "alice", "#new", ""),
        ev.History((), 20, room="#new"), ev.Join(20, TS_POSIX, "alice", "#new"),
        ev.Current("#new"))
    assert s.rooms.shown.name == "#new" and conn.sent[-1] == "/names #new"
    s.commands.submit("/join #lobby")  # a room you are in: shown at once
    assert s.rooms.shown.name == LOBBY and conn.sent[-1] == "/join #lobby"
    say(s, conn, ev.Error("invite_only", "join", {}, "#x is private."))
    assert s.rooms.shown.name == LOBBY


def test_the_quiet_names_mark_accounts_and_are_not_shown() -> None:
    s, conn = online_in_rooms(LOBBY)
    users = (ev.Participant("bob", 1, True), ev.Participant("alice", 0, False))
    say(s, conn, ev.Names(LOBBY, users))
    assert "bob" in s.accounts and not any("In #lobby" in ln.text for ln in s.pane.lines)
    listed = "".join(t for _, t in people(s))
    assert "bob \u2713" in listed and "alice \u2713" not in listed
    say(s, conn, ev.Names(LOBBY, users))  # asked by the user: shown
    assert s.pane.lines[-1].text.endswith("In #lobby (2): bob \u2713 (idle 1s), alice (idle 0s)")
    say(s, conn, ev.Join(30, TS_POSIX, "bob2", LOBBY, account=False))
    assert "bob2" not in s.accounts  # a guest never gets the mark


def test_parting_and_being_kicked_close_the_tab() -> None:
    s, conn = online_in_rooms(LOBBY, DEV)
    s.roomflow.switch(s.rooms.at(2))
    say(s, conn, ev.Current(DEV), ev.Part(20, TS_POSIX, "bob", DEV, "lunch"))
    assert s.participants == ["alice"] and texts(s, DEV)[-1] == "<-- bob has left #dev (lunch)"
    say(s, conn, ev.Part(21, TS_POSIX, "alice", DEV, "kicked by carol: noisy"),
        ev.Current(LOBBY))
    assert [r.name for r in s.rooms] == [LOBBY] and s.rooms.shown.name == LOBBY
    assert texts(s, LOBBY)[-1] == "<-- You have left #dev (kicked by carol: noisy)"
    s.commands.submit("back in the lobby")
    assert conn.sent[-1] == "back in the lobby"  # the server's current: no /join needed


def test_topics_files_and_leaves_land_in_their_rooms() -> None:
    s, conn = online_in_rooms(LOBBY, DEV)
    fid = "ab" * 16
    say(s, conn, ev.Topic(20, TS_POSIX, DEV, "release on Friday", "bob"),
        ev.FileShared(21, TS_POSIX, "bob", fid, "notes.txt", 5, "0" * 8, "0" * 64, None, DEV),
        ev.Removed(22, TS_POSIX, "bob", fid, "notes.txt", DEV),
        ev.Leave(23, TS_POSIX, "bob", "quit"))
    assert texts(s, DEV)[-4:] == [
        "-- bob set the topic: release on Friday", f"-- bob shared notes.txt (5 B): /get {fid}",
        f"-- bob removed notes.txt (/get {fid} no longer works)", "<-- bob has left (quit)"]
    assert texts(s, LOBBY)[-1] == "<-- bob has left (quit)"  # in each room he was in
    assert s.rooms.get(DEV).topic == "release on Friday" and fid not in s.file_ids  # type: ignore[union-attr]


def test_an_upload_waits_until_its_room_is_current() -> None:
    s, conn = online_in_rooms(LOBBY, DEV)
    fired: list[object] = []
    s.roomflow.when_current(DEV).addBoth(fired.append)
    assert conn.sent[-1] == "/join #dev" and fired == []
    say(s, conn, ev.Current(DEV))
    assert fired == [None]
    gone: list[Failure] = []
    s.roomflow.when_current("#left").addErrback(gone.append)
    assert gone and "no longer in" in gone[0].getErrorMessage()
    # Back in the lobby, a line is typed while an upload for #dev waits for its room.
    s.roomflow.switch(s.rooms.at(1))
    say(s, conn, ev.Current(LOBBY))
    s.reactor.advance(10)
    del conn.sent[:]
    later: list[object] = []
    s.roomflow.when_current(DEV).addBoth(later.append)
    s.commands.submit("in the lobby")
    assert conn.sent == ["/join #dev", "/join #lobby", "in the lobby"]
    say(s, conn, ev.Current(DEV))
    assert later == []  # the current room is about to change again
    say(s, conn, ev.Current(LOBBY))
    assert conn.sent[-1] == "/join #dev" and later == []  # asked again
    say(s, conn, ev.Current(DEV))
    assert later == [None]


def test_a_reconnect_rejoins_each_room_and_catches_up_room_by_room() -> None:
    s, conn = online_in_rooms(LOBBY, DEV, "#ops")
    say(s, conn, m(10, DEV), m(11, LOBBY), m(12, "#ops"))
    s.roomflow.switch(s.rooms.at(2))
    say(s, conn, ev.Current(DEV))
    s.lost(conn, Failure(ConnectionError("gone")))  # type: ignore[arg-type]
    s.reactor.advance(1)
    again = FakeConn()
    s.connected(again)  # type: ignore[arg-type]
    # The server puts alice in #lobby only; #dev and #ops must be joined again.
    say(s, again, ev.Prompt("Choose a username:"),
        ev.Welcome("alice", "k2", "x", None, (LOBBY,), LOBBY),
        ev.Participants(("alice",), "alice", LOBBY, ""),
        ev.History((m(11, LOBBY), m(14, LOBBY)), 20, room=LOBBY))  # the replay: skipped
    s.reactor.advance(10)  # past flood control's pace
    assert again.sent == ["alice", "/join #lobby", "/history after 11", "/join #dev",
                          "/history after 10", "/join #ops", "/history after 12", "/join #dev",
                          "/names #lobby"]
    say(s, again, ev.Current(LOBBY), ev.History((m(14, LOBBY),), 1, 11, LOBBY),
        ev.Participants(("bob", "alice"), "alice", DEV, ""),
        ev.History((m(10, DEV), m(13, DEV)), 20, room=DEV),  # the replay: skipped
        ev.Join(15, TS_POSIX, "alice", DEV), ev.Current(DEV),
        ev.History((m(13, DEV),), 1, 10, DEV),
        ev.Error("invite_only", "join", {}, "#ops is private."),  # cannot go back in
        ev.History((m(16, LOBBY),), 1, 12, LOBBY),  # so that catch-up was the lobby's
        ev.Current(DEV))
    assert texts(s, LOBBY) == ["<bob> m1", "<bob> m11", "<bob> m14", "<bob> m16"]
    assert texts(s, DEV)[:3] == ["<bob> m2", "<bob> m10", "<bob> m13"]
    missed = [ln.text for ln in s.rooms.get(DEV).pane.lines if "missed while away" in ln.text]  # type: ignore[union-attr]
    assert len(missed) == 1 and "1 message" in missed[0]
    assert [r.name for r in s.rooms] == [LOBBY, DEV] and s.rooms.shown.name == DEV
    assert any("Could not join #ops again" in ln.text for ln in s.pane.lines)
    del again.sent[:]
    s.commands.submit("back")
    assert again.sent == ["back"]  # #dev is current again


def test_tab_completes_room_names() -> None:
    c = ChatCompleter(lambda: ["bob", "dave"], rooms=lambda: [LOBBY, DEV])
    assert [x.text for x in c.get_completions(Document("/part #d"), CompleteEvent())] == ["#dev "]
    assert [x.text for x in c.get_completions(Document("/msg d"), CompleteEvent())] == ["dave "]


def test_a_room_bar_too_wide_keeps_the_room_shown_in_view() -> None:
    s = ChatSession(task.Clock(), FakeEndpoint, "srv", name="alice")  # type: ignore[arg-type]
    for i in range(12):
        s.rooms.add(f"#room{i}")
    s.rooms.show(s.rooms.at(8))  # type: ignore[arg-type]
    bar = "".join(t for _, t in room_bar(s, 40))
    assert bar == "<6:#room5 7:#room6 8:#room7 9:#room8 >" and len(bar) <= 40
    assert "".join(t for _, t in room_bar(s, 200)).endswith("12:#room11 ")
