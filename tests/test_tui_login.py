"""Passwords in the client: asked masked, sent once, kept only in memory, never shown.

``masking`` says which part of a line is a password and draws it as stars;
``Login`` answers the server's prompts (``expects``: ``name``, ``server``,
``account``, ``new``) on a ``ChatSession`` with a fake connection: what
goes out, what the pane says (never the password), what a reconnect sends
by itself, and what a wrong password does.
"""

from __future__ import annotations

import pytest
from prompt_toolkit.document import Document
from prompt_toolkit.layout.processors import TransformationInput
from twisted.internet import task
from twisted.python.failure import Failure

from chat import events as ev
from client_tui.connection import Backoff
from client_tui.masking import MaskSecrets, is_secret, masked, secret_start
from client_tui.session import ChatSession
from tests.tui_support import FakeConn, FakeEndpoint

SECRET = "correct horse"


@pytest.mark.parametrize(("line", "shown"), [
    ("/register correct horse", "/register *************"),
    ("/REGISTER  x y", "/REGISTER  ***"),
    ("/unregister pw", "/unregister **"),
    ("/password old one new one", "/password ***************"),
    ("/pass s3cret", "/pass ******"),
    ("/login alice correct horse", "/login alice *************"),
    ("/login  alice   pw", "/login  alice   **"),
])
def test_the_password_part_of_a_line_is_masked(line: str, shown: str) -> None:
    assert masked(line, secret_start(line)) == shown and is_secret(line)


@pytest.mark.parametrize("line", ["/register", "/register ", "/login alice", "/registered x",
                                  "//register x", "register x", "/msg bob /register x"])
def test_lines_without_a_password(line: str) -> None:
    assert secret_start(line) is None and masked(line, None) == line


def test_the_input_line_draws_stars() -> None:
    def drawn(text: str, whole: bool) -> str:
        ti = TransformationInput(None, Document(text), 0, lambda i: i,  # type: ignore[arg-type]
                                 [("", text)], 80, 1)
        return "".join(t for _, t in MaskSecrets(lambda: whole).apply_transformation(ti).fragments)

    assert drawn(SECRET, True) == "*" * len(SECRET)
    assert drawn("/password a b", False) == "/password ***"
    assert drawn("hello", False) == "hello"


def connect(name: str | None = "alice") -> tuple[ChatSession, FakeConn, list[str]]:
    s = ChatSession(task.Clock(), FakeEndpoint, "srv", name=name,  # type: ignore[arg-type]
                    backoff=Backoff(rand=lambda: 0.0))
    typed = ["a line typed before"]
    s.input_text = lambda: typed[0]
    s.set_input = lambda text: typed.__setitem__(0, text)
    conn = FakeConn()
    s.connected(conn)  # type: ignore[arg-type]
    return s, conn, typed


def say(s: ChatSession, conn: FakeConn, *events: ev.Event) -> None:
    for event in events:
        s.event(conn, event)  # type: ignore[arg-type]


def pane(s: ChatSession) -> str:
    return "\n".join(ln.text for ln in s.pane.lines)


ACCOUNT_PROMPT = ev.Prompt("The name alice is registered. Password:", None, "account")


def test_an_accounts_password_is_asked_masked_and_sent_as_typed() -> None:
    s, conn, typed = connect()
    say(s, conn, ev.Prompt("Choose a username:"), ACCOUNT_PROMPT)
    assert conn.sent == ["alice"] and s.state == "password"
    assert "alice is an account: type its password below (it is not shown)" in pane(s)
    assert typed == [""]  # what was in the input line is set aside meanwhile
    s.commands.submit(SECRET)
    assert conn.sent == ["alice", SECRET] and s.state == "registering"
    assert s.login.take_set_aside() == "a line typed before"  # the screen puts it back
    say(s, conn, ev.Welcome("alice", "k", "x", None, account=True))
    assert s.state == "online" and "alice \u2713" in s.status_text()
    assert SECRET not in pane(s)


def test_a_wrong_password_asks_again() -> None:
    s, conn, _ = connect()
    say(s, conn, ev.Prompt("Choose a username:"), ACCOUNT_PROMPT)
    s.commands.submit("wrong")
    say(s, conn, ev.Error("bad_password", None, {}, "Wrong password."),
        ev.Prompt("Choose a username:", "Wrong password."))
    assert conn.sent == ["alice", "wrong", "alice"]  # the name again: its prompt comes back
    assert pane(s).count("Wrong password for alice.") == 1 and "wrong\n" not in pane(s)
    say(s, conn, ACCOUNT_PROMPT)
    assert s.state == "password"


def test_a_reconnect_logs_in_with_the_password_given_this_run() -> None:
    s, conn, _ = connect()
    say(s, conn, ev.Prompt("Choose a username:"), ACCOUNT_PROMPT)
    s.commands.submit(SECRET)
    say(s, conn, ev.Welcome("alice", "k", "x", None, account=True))
    s.lost(conn, Failure(ConnectionError("gone")))  # type: ignore[arg-type]
    again = FakeConn()
    s.connected(again)  # type: ignore[arg-type]
    say(s, again, ev.Prompt("Choose a username:"), ACCOUNT_PROMPT)
    assert again.sent == ["alice", SECRET] and s.state == "registering"
    # /register, /password, /unregister change it: the next login asks on screen.
    say(s, again, ev.Welcome("alice", "k", "x", None, account=True))
    s.commands.submit("/password correct horse battery staple")
    s.lost(again, Failure(ConnectionError("gone")))  # type: ignore[arg-type]
    third = FakeConn()
    s.connected(third)  # type: ignore[arg-type]
    say(s, third, ev.Prompt("Choose a username:"), ACCOUNT_PROMPT)
    assert third.sent == ["alice"] and s.state == "password"


def test_the_servers_password_goes_as_pass() -> None:
    s, conn, _ = connect()
    say(s, conn, ev.Prompt("Server password:", None, "server"))
    assert s.state == "password" and "The server asks for its password" in pane(s)
    s.commands.submit("/not a command")  # at a password prompt, the whole line is the password
    assert conn.sent == ["/pass /not a command"]
    say(s, conn, ev.Error("bad_password", None, {}, "Wrong password."),
        ev.Prompt("Server password:", "Wrong password.", "server"))
    assert s.state == "password" and conn.sent == ["/pass /not a command"]
    s.commands.submit("lab")
    say(s, conn, ev.Prompt("Choose a username:"))
    assert conn.sent[-2:] == ["/pass lab", "alice"]


def test_a_new_account_and_login_in_one_line() -> None:
    s, conn, _ = connect(None)
    say(s, conn, ev.Prompt("Choose a username:"))
    assert s.state == "naming"
    s.commands.submit("/login bob hunter two")
    assert conn.sent == ["/login bob hunter two"] and s.name == "bob"
    say(s, conn, ev.Error("bad_password", None, {}, "Wrong password."),
        ev.Prompt("Choose a username:", "Wrong password."))
    assert conn.sent[-1] == "bob"  # ask again, on screen this time
    need = "bob is not an account yet: choose a password (at least 8 characters):"
    say(s, conn, ev.Prompt(need, "The password is too short.", "new"))
    assert s.state == "password" and "The password is too short." in pane(s)
    assert "hunter" not in pane(s)
