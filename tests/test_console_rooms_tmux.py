"""The server console's rooms, in a real terminal: ``python -m chat`` under tmux.

The server runs with its console on (stdout is tmux's pty) on a free loopback
port, with real socket clients in ``#lobby`` and ``#dev``. The test reads the
console's "Rooms" section and chat panel with capture-pane, types
``/say #dev …`` and ``/say …`` with send-keys, and checks with the sockets who
got the notice. Screens are polled against a deadline; sockets are read up to
a private message to oneself (``sync``), so "got nothing" is a checked fact.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.support import RELAXED_TOML, LineClient
from tests.test_console_tmux import Tmux, free_port

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

TS = r"\(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\)"


class User(LineClient):
    """A registered participant (text or JSON) that can read up to "now"."""

    def __init__(self, port: int, name: str, json_mode: bool = False) -> None:
        super().__init__(port)
        self.name, self.json = name, json_mode
        if json_mode:
            self.send_line("/proto json")
        self.send_line(name)
        self.expect('"type":"welcome"' if json_mode else "^Welcome to the chat")
        self.sync()

    def sync(self) -> list[str]:
        """The lines the server sent before now (a private message to oneself ends them)."""
        token = f"sync-{len(self.seen)}"
        self.send_line(f"/msg {self.name} {token}")
        got: list[str] = []
        while token not in (line := self.read_line()):
            got.append(line)
        return got

    def ok(self, line: str) -> list[str]:
        self.send_line(line)
        got = self.sync()
        assert not [ln for ln in got if ln.startswith("!! ") or '"type":"error"' in ln], got
        return got


def notices(lines: list[str]) -> list[str]:
    return [ln for ln in lines if "Server notice" in ln or '"type":"notice"' in ln]


def room_row(screen: str, room: str, members: int) -> bool:
    """The Rooms table has ``room`` with ``members`` members."""
    return any(re.match(rf"{re.escape(room)} +{members} +\d+(  |$)", row)
               for row in screen.splitlines())


def test_console_shows_rooms_and_says_to_one_room(tmux: Tmux, tmp_path: Path) -> None:
    """Rooms section with member counts; `[#dev]` in the chat panel; `/say #dev` reaches
    #dev's members only (tagged in text where they are in two rooms); `/say` everyone."""
    config = tmp_path / "relaxed.toml"
    config.write_text(RELAXED_TOML)
    port = free_port()
    pane = tmux.start([
        sys.executable, "-m", "chat",
        "--listen", f"tcp:{port}:interface=127.0.0.1", "--http", "tcp:0:interface=127.0.0.1",
        "--data-dir", str(tmp_path / "data"), "--config", str(config),
    ])
    tmux.wait_text(pane, f"chat 127.0.0.1:{port}")

    alice, bob = User(port, "alice"), User(port, "bob")
    carol = User(port, "carol")
    carol.ok("/join #dev")
    carol.ok("/part #lobby")
    screen = tmux.wait(
        pane, lambda s: "Rooms (2)" in s and room_row(s, "#lobby", 2) and room_row(s, "#dev", 1),
        "#lobby with 2 members and #dev with 1")
    assert "Users (3)" in screen

    carol.ok("anyone here?")
    tmux.wait_text(pane, "[#dev] <carol> anyone here?")

    tmux.type(pane, "/say #dev hello room")
    tmux.wait_text(pane, "Notice sent to #dev.", "[#dev] notice: hello room")
    assert [re.sub(TS, "T", ln) for ln in notices(carol.sync())] == [
        "T -- Server notice: hello room"], "one room: no tag"
    for user in (alice, bob):
        assert notices(user.sync()) == [], f"{user.name} is not in #dev"

    dave = User(port, "dave", json_mode=True)  # in #lobby and #dev
    dave.ok("/join #dev")
    bob.ok("/join #dev")  # bob too: text, in two rooms
    tmux.wait(pane, lambda s: room_row(s, "#lobby", 3) and room_row(s, "#dev", 3),
              "#lobby with 3 members and #dev with 3")
    tmux.type(pane, "/say #dev hello again")
    tmux.wait_text(pane, "[#dev] notice: hello again")  # shown once delivered
    assert [re.sub(TS, "T", ln) for ln in notices(bob.sync())] == [
        "T [#dev] -- Server notice: hello again"], "two rooms: tagged"
    assert [re.sub(TS, "T", ln) for ln in notices(carol.sync())] == [
        "T -- Server notice: hello again"]
    got = [json.loads(ln) for ln in notices(dave.sync())]
    assert [(e["text"], e["room"]) for e in got] == [("hello again", "#dev")], got
    assert notices(alice.sync()) == []

    tmux.type(pane, "/say everyone")
    tmux.wait_text(pane, "Notice sent to everyone.", " notice: everyone")
    for user in (alice, bob, carol):
        assert [re.sub(TS, "T", ln) for ln in notices(user.sync())] == [
            "T -- Server notice: everyone"], user.name
    got = [json.loads(ln) for ln in notices(dave.sync())]
    assert [(e["text"], e["room"]) for e in got] == [("everyone", None)], got

    tmux.type(pane, "/quit")
    assert tmux.wait_exit(pane, timeout=10) == 0
