"""Accounts, operators and bans, driven through the protocol in memory (task.Clock).

Each rule of the issue has a test here: Argon2id hashes, the password prompt
and telnet's echo, /login, take-over, /password and /unregister, names only
an account may use, the login throttle, operators from config and from the
console, bans by name, address and network (kept across a restart), the
server password, require_account, quotas by account and address, /rm, and
passwords kept out of every other output and of the log.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from twisted.logger import globalLogPublisher

from chat import events as ev
from chat.accounts import Accounts, Ban, ban_target
from chat.config import AccountSettings, Config
from chat.limits import LoginThrottle
from chat.quotas import uploader_key
from chat.store import Store
from chat.wire import State
from tests.support import Conn, MemoryServer, memory_server, relaxed_config

PASSWORD = "correct horse"
WILL_ECHO, WONT_ECHO = b"\xff\xfb\x01", b"\xff\xfc\x01"


def account(mem: MemoryServer, name: str, password: str = PASSWORD, mode: str = "text") -> Conn:
    """A participant whose name is now an account."""
    c = mem.user(name, mode)
    c.line(f"/register {password}")
    out = c.take()
    assert b"is an account now" in out, out
    return c


def login(mem: MemoryServer, name: str, password: str = PASSWORD, port: int = 40001) -> Conn:
    c = mem.connect(port)
    c.take()
    c.line(f"/login {name} {password}")
    return c


# --- hashes ---


def test_passwords_are_stored_as_argon2id_hashes_with_the_library_defaults(
    tmp_path: Path,
) -> None:
    """The real parameters (not the tests' cheap ones): 64 MiB, 3 passes, 4 lanes."""
    config = Config()
    store = Store(tmp_path / "db.sqlite3", None, 10)
    store.open("#lobby")
    accounts = Accounts(store, _Clock(), AccountSettings())
    accounts.load()
    accounts.create("alice", PASSWORD)
    (stored,) = sqlite3.connect(tmp_path / "db.sqlite3").execute(
        "SELECT hash FROM accounts WHERE key = 'alice'"
    ).fetchone()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PASSWORD not in stored
    assert PasswordHasher().verify(stored, PASSWORD)
    assert accounts.verify("alice", PASSWORD).result is True  # type: ignore[attr-defined]
    assert accounts.verify("ALICE", "wrong").result is False  # type: ignore[attr-defined]
    assert accounts.verify("nobody", PASSWORD).result is False  # type: ignore[attr-defined]
    assert config.accounts.min_password_length == 8
    store.close()


class _Clock:
    def seconds(self) -> float:
        return 1_700_000_000.0


# --- the prompt, telnet echo, /login ---


def test_an_account_name_at_the_prompt_asks_for_its_password_with_echo_off(
    mem: MemoryServer,
) -> None:
    account(mem, "alice").close()
    c = mem.connect(40001)
    c.take()
    c.line("alice")
    asked = c.take()
    assert asked == WILL_ECHO + b"The name alice is registered. Password:\r\n"
    c.line(PASSWORD)
    answered = c.take()
    assert answered.startswith(WONT_ECHO + b"Welcome to the chat, alice.\r\n")
    assert c.proto.state is State.CHAT and c.proto.user is not None
    assert c.proto.user.account


def test_a_wrong_password_is_an_error_and_the_name_prompt_again(mem: MemoryServer) -> None:
    account(mem, "alice").close()
    c = mem.connect(40001)
    c.take()
    c.line("alice")
    c.take()
    c.line("guess")
    assert c.take() == WONT_ECHO + b"!! Wrong password.\r\nChoose a username:\r\n"
    assert c.proto.state is State.REGISTER
    c.line("bob")  # a guest name is still fine
    assert c.proto.state is State.CHAT


def test_json_gets_a_typed_prompt_and_no_telnet_bytes(mem: MemoryServer) -> None:
    account(mem, "alice").close()
    c = mem.connect(40001)
    c.line("/proto json")
    c.take()
    c.line("alice")
    raw = c.take()
    assert b"\xff" not in raw
    (prompt,) = [json.loads(ln) for ln in raw.split(b"\r\n") if ln]
    assert prompt == {"type": "prompt", "text": "The name alice is registered. Password:",
                      "reason": None, "expects": "account"}
    c.line(PASSWORD)
    welcome = c.events()[0]
    assert welcome["type"] == "welcome" and welcome["account"] is True
    assert welcome["operator"] is False


def test_login_in_one_line_and_a_password_that_begins_with_a_slash(mem: MemoryServer) -> None:
    account(mem, "alice", "/slash and spaces").close()
    c = login(mem, "alice", "/slash and spaces")
    assert b"Welcome to the chat, alice." in c.take()
    c.close()
    d = mem.connect(40002)
    d.line("alice")
    d.line("/slash and spaces")  # at the account prompt a '/' line is the password
    assert b"Welcome to the chat, alice." in d.take()


def test_login_with_a_wrong_password_or_no_account_stays_at_the_prompt(
    mem: MemoryServer,
) -> None:
    account(mem, "alice").close()
    for name, password in (("alice", "nope nope"), ("nobody", PASSWORD)):
        c = login(mem, name, password)
        mem.clock.advance(10)
        assert b"!! Wrong password.\r\nChoose a username:" in c.take()
        assert c.proto.state is State.REGISTER


def test_logging_in_takes_over_a_stale_session(mem: MemoryServer) -> None:
    old = account(mem, "alice")
    bob = mem.user("bob")
    new = login(mem, "alice")
    assert b"Welcome to the chat, alice." in new.take()
    said = old.take().decode()
    assert "!! Your account logged in from elsewhere; this connection is closed." in said
    assert old.proto.state is State.CLOSED and old.transport.disconnecting
    seen = bob.take().decode()
    assert "alice has left the chat (logged in elsewhere)" in seen
    assert "alice has joined the chat" in seen
    assert [u.peer for u in mem.service.registry] == [bob.proto, new.proto]


# --- changing, dropping, names ---


def test_password_changes_and_old_one_no_longer_works(mem: MemoryServer) -> None:
    alice = account(mem, "alice")
    alice.line(f"/password {PASSWORD} new secret here")
    assert alice.lines() == ["-- Your password is changed."]
    alice.line("/password wrong wrong wrong")
    mem.clock.advance(5)
    assert alice.lines() == ["!! Wrong password."]
    alice.line("/password new short")
    assert alice.lines() == ["!! A password is at least 8 characters long."]
    alice.close()
    assert b"Wrong password" in _settled(mem, login(mem, "alice", PASSWORD))
    assert b"Welcome" in _settled(mem, login(mem, "alice", "new secret here", 40002))


def _settled(mem: MemoryServer, c: Conn) -> bytes:
    mem.clock.advance(10)  # a throttled answer comes later
    return c.take()


def test_unregister_frees_the_name(mem: MemoryServer) -> None:
    alice = account(mem, "alice")
    alice.line("/unregister wrong")
    mem.clock.advance(5)
    assert alice.lines() == ["!! Wrong password."]
    alice.line(f"/unregister {PASSWORD}")
    assert alice.lines()[0].startswith("-- alice is an account no more")
    assert not mem.factory.accounts.exists("alice")
    alice.close()
    c = mem.connect(40002)
    c.line("alice")
    assert c.proto.state is State.CHAT  # a guest may take it now


def test_an_accounts_name_is_its_identity(mem: MemoryServer) -> None:
    alice = account(mem, "alice")
    alice.line("/nick ally")
    assert alice.lines() == ["!! An account's name is its identity: it cannot change."]
    alice.close()
    guest = mem.user("guest")
    guest.line("/nick ALICE")
    assert guest.lines() == ["!! The name ALICE belongs to an account: log in with its password."]
    guest.line("/register short")
    assert guest.lines() == ["!! A password is at least 8 characters long."]
    guest.line("/password a b")
    assert guest.lines() == [
        "!! Your name is not an account: /register PASSWORD makes it one."
    ]


def test_register_twice_and_closed_registration(tmp_path: Path) -> None:
    config = relaxed_config()
    mem = memory_server(tmp_path, config)
    alice = account(mem, "alice")
    alice.line(f"/register {PASSWORD}")
    assert alice.lines() == ["!! Your name is an account already."]
    config.accounts.open_registration = False
    bob = mem.user("bob")
    bob.line(f"/register {PASSWORD}")
    assert bob.lines() == ["!! Accounts are made by the server's operators here."]


def test_who_welcome_and_events_say_who_is_an_account(mem: MemoryServer) -> None:
    alice = account(mem, "alice", mode="json")
    alice.line("x")
    alice.take()
    watcher = mem.user("alice2", mode="json")
    alice.line("hello")
    (message,) = [e for e in watcher.events() if e["type"] == "message"]
    assert message["sender"] == "alice" and message["account"] is True
    watcher.line("hi")
    (message,) = [e for e in alice.events() if e["type"] == "message" and e["sender"] != "alice"]
    assert message["sender"] == "alice2" and message["account"] is False
    watcher.line("/who")
    (who,) = [e for e in watcher.events() if e["type"] == "who"]
    assert {(u["name"], u["account"]) for u in who["users"]} == {
        ("alice", True), ("alice2", False)
    }
    text = mem.user("text")
    text.line("/who")
    assert "--   alice  (idle 0s, account)" in text.lines()


# --- the throttle ---


def test_throttle_delays_then_refuses_then_forgives() -> None:
    from twisted.internet import task

    clock = task.Clock()
    t = LoginThrottle(clock, failures=5, window=600, lockout=300, max_tracked=100)
    keys = t.keys("alice", "10.0.0.9")
    assert keys == ("account:alice", "address:10.0.0.9")
    delays = []
    for _ in range(4):
        delays.append(t.delay(*keys))
        t.failed(*keys)
    assert delays == [0.0, 0.0, 1.0, 2.0]
    assert t.refused_for(*keys) == 0
    t.failed(*keys)  # the fifth
    assert t.refused_for(*keys) == 300
    clock.advance(299)
    assert t.refused_for("account:alice") == 1
    clock.advance(1)
    assert t.refused_for(*keys) == 0 and t.delay(*keys) == 0


def test_the_owner_is_not_locked_out_by_guesses_from_elsewhere() -> None:
    from twisted.internet import task

    clock = task.Clock()
    t = LoginThrottle(clock, failures=3, window=600, lockout=300)
    t.succeeded("alice", "10.0.0.1")  # the owner's usual address
    attacker = t.keys("alice", "10.6.6.6")
    for _ in range(3):
        t.failed(*attacker)
    assert t.refused_for(*attacker) == 300
    assert t.refused_for(*t.keys("alice", "10.0.0.2")) == 300  # a new place: refused
    assert t.keys("alice", "10.0.0.1") == ("address:10.0.0.1",)
    assert t.refused_for(*t.keys("alice", "10.0.0.1")) == 0


def test_throttle_memory_is_bounded() -> None:
    from twisted.internet import task

    clock = task.Clock()
    t = LoginThrottle(clock, failures=2, window=600, lockout=300, max_tracked=50)
    for i in range(10_000):
        t.failed(f"account:u{i}", f"address:10.0.{i // 256}.{i % 256}")
        t.succeeded(f"u{i}", f"10.1.{i // 256}.{i % 256}")
    assert t.tracked() <= 100
    assert len(t._trusted) <= 50  # private: the table this test is about
    clock.advance(1000)
    assert t.tracked() == 0


def test_too_many_wrong_passwords_get_a_clear_error_and_a_wait(mem: MemoryServer) -> None:
    account(mem, "alice").close()
    c = mem.connect(40001)
    c.take()
    answered_at = []
    for _ in range(5):
        c.line("/login alice wrong-password")
        start = mem.clock.seconds()
        while b"Wrong password" not in c.transport.value():
            mem.clock.advance(0.5)
        answered_at.append(mem.clock.seconds() - start)
        c.take()
    assert answered_at == [0, 0, 1, 2, 3]  # each answer later than the last
    c.line(f"/login alice {PASSWORD}")  # even the right one, now
    refused = c.lines()[0]
    assert re.fullmatch(r"!! Too many wrong passwords; try again in 29\d seconds\.", refused)
    assert c.proto.state is State.REGISTER
    mem.clock.advance(300)  # forgiven (this connection's 60 s to choose a name are up)
    assert "Welcome to the chat, alice." in login(mem, "alice", port=40002).lines()


# --- operators ---


def test_operator_commands_need_an_operator(mem: MemoryServer) -> None:
    alice = account(mem, "alice")
    mem.user("bob")
    for line in ("/ban bob", "/unban bob", "/bans", "/say hi", "/kick bob"):
        alice.line(line)
        out = alice.lines()
        assert out and out[-1] in (
            "!! Only a server operator can do that.", "!! Only an operator of #lobby can do that."
        ), (line, out)
    assert "bob" in mem.service.registry


def test_operators_from_config_act_from_any_client(tmp_path: Path) -> None:
    config = relaxed_config()
    config.accounts.operators = ["Teacher"]
    mem = memory_server(tmp_path, config)
    teacher = account(mem, "teacher")
    teacher.close()
    teacher = login(mem, "teacher")
    teacher.line("/proto json")
    teacher.take()
    assert mem.service.registry.get("teacher").operator  # type: ignore[union-attr]
    student = mem.user("student")
    teacher.line("/say Exam in 5 minutes")
    assert "-- Server notice: Exam in 5 minutes" in student.lines()[-1]
    teacher.line("/kick student cheating")
    assert student.proto.state is State.CLOSED
    assert "!! You were kicked: cheating" in student.take().decode()
    teacher.line("/ban student 30m copying")
    teacher.line("/bans")
    info, bans = teacher.events()[-2:]
    assert info["type"] == "info" and info["text"].startswith("Banned student until ")
    assert bans["bans"] == [{"type": "ban", "kind": "name", "target": "student",
                             "until": mem.clock.seconds() + 1800, "reason": "copying",
                             "by": "teacher"}]
    again = mem.connect(40005)
    again.line("student")
    said = again.take().decode()
    assert "!! You are banned until " in said and said.rstrip().endswith(": copying")
    assert again.proto.state is State.CLOSED
    mem.clock.advance(1800)  # the ban runs out
    later = mem.connect(40006)
    later.line("student")
    assert later.proto.state is State.CHAT


def test_operators_made_at_the_console_are_kept(tmp_path: Path) -> None:
    mem = memory_server(tmp_path)
    alice = account(mem, "alice")
    assert mem.factory.admin.oper("console", "alice", True) is not None
    assert mem.factory.admin.oper("console", "ghost", True) is None  # no account
    alice.line("/bans")
    assert alice.lines() == ["-- Nobody is banned."]
    mem.factory.admin.oper("console", "alice", False)
    alice.line("/bans")
    assert alice.lines() == ["!! Only a server operator can do that."]
    mem.factory.admin.oper("console", "alice", True)
    mem.store.close()
    again = memory_server(tmp_path)
    assert again.factory.accounts.is_operator("alice")


# --- bans ---


@pytest.mark.parametrize(
    ("target", "name", "host", "hit"),
    [
        ("192.168.1.0/24", None, "192.168.1.77", True),
        ("192.168.1.0/24", None, "192.168.2.1", False),
        ("192.168.1.0/24", None, "::ffff:192.168.1.5", True),  # IPv4-mapped IPv6
        ("10.0.0.5", None, "10.0.0.5", True),
        ("10.0.0.5", None, "10.0.0.6", False),
        ("2001:db8::/32", None, "2001:db8:1::1", True),
        ("2001:db8::/32", None, "2001:db9::1", False),
        ("Bob", "BOB", None, True),
        ("bob", "bobby", None, False),
        ("10.0.0.0/8", "10.0.0.1", None, False),  # an address ban never matches a name
        ("10.0.0.0/8", None, "not-an-address", False),
    ],
)
def test_ban_matching(target: str, name: str | None, host: str | None, hit: bool) -> None:
    kind_target = ban_target(target)
    assert kind_target is not None
    ban = Ban(*kind_target, None, "", "op", 0.0)
    assert ban.matches(name, host) is hit


@pytest.mark.parametrize("bad", ["10.0.0.0/99", "a b", "#room", "", "x" * 40])
def test_ban_targets_that_are_neither(bad: str) -> None:
    assert ban_target(bad) is None


def test_a_banned_address_gets_one_line_and_is_closed_before_a_name(
    tmp_path: Path,
) -> None:
    mem = memory_server(tmp_path)
    op = account(mem, "op")
    mem.factory.admin.oper("console", "op", True)
    inside = mem.connect(40001, host="192.168.1.20")
    inside.line("victim")
    op.take()
    op.line("/ban 192.168.1.0/24 1h flooding")
    assert [ln for ln in op.lines() if ln.startswith("-- Banned 192.168.1.0/24 until ")]
    assert inside.proto.state is State.CLOSED  # put off at once
    c = mem.connect(40002, host="192.168.1.99")
    lines = c.lines()
    assert lines[0] == "-- Welcome to lanchat."
    assert lines[1].startswith("!! You are banned until ") and lines[1].endswith(": flooding")
    assert len(lines) == 2 and c.proto.state is State.CLOSED
    assert mem.connect(40003, host="192.168.2.1").proto.state is State.REGISTER
    op.line("/unban 192.168.1.0/24")
    assert op.lines() == ["-- 192.168.1.0/24 is no longer banned."]
    assert mem.connect(40004, host="192.168.1.99").proto.state is State.REGISTER
    op.line("/unban 192.168.1.0/24")
    assert op.lines() == ["!! 192.168.1.0/24 is not banned."]
    op.line("/ban 999.1.1.1/8")  # neither a name nor an address
    assert op.lines() == ["!! Ban a name, an address or a network (e.g. 192.168.1.0/24)."]


def test_accounts_operators_and_bans_survive_a_restart(tmp_path: Path) -> None:
    mem = memory_server(tmp_path)
    op = account(mem, "op")
    mem.factory.admin.oper("console", "op", True)
    op.line("/ban eve spam")
    op.line("/ban 10.9.0.0/16 2h")
    mem.store.close()
    again = memory_server(tmp_path)
    accounts = again.factory.accounts
    assert accounts.exists("op") and accounts.is_operator("op")
    assert [(b.kind, b.target, b.reason) for b in accounts.bans()] == [
        ("name", "eve", "spam"), ("address", "10.9.0.0/16", ""),
    ]
    eve = again.connect(40001)
    eve.line("eve")
    assert eve.proto.state is State.CLOSED
    c = again.connect(40002)
    c.line("op")  # still an account: the password is asked
    assert c.proto.state is State.PASSWORD


# --- who may enter ---


def test_server_password_comes_first(tmp_path: Path) -> None:
    config = relaxed_config()
    config.server.password = "class of 2026"
    mem = memory_server(tmp_path, config)
    c = mem.connect()
    assert c.take() == (b"-- Welcome to lanchat.\r\n" + WILL_ECHO + b"Server password:\r\n")
    assert c.proto.state is State.PASSWORD
    c.line("guess")
    assert c.take() == (WONT_ECHO + b"!! Wrong password.\r\n" + WILL_ECHO
                        + b"Server password:\r\n")
    c.line("class of 2026")
    assert c.take() == WONT_ECHO + b"Choose a username:\r\n"
    c.line("pupil")
    assert c.proto.state is State.CHAT


def test_programs_send_the_server_password_with_pass(tmp_path: Path) -> None:
    config = relaxed_config()
    config.server.password = "class of 2026"
    mem = memory_server(tmp_path, config)
    c = mem.connect()
    c.line("/proto json")
    c.take()
    c.line("/who")
    c.line("/login x y")
    assert [e["code"] for e in c.events() if e["type"] == "error"] == [
        "not_registered", "not_registered"
    ]
    c.line("/pass class of 2026")
    assert c.events() == [{"type": "prompt", "text": "Choose a username:", "reason": None,
                           "expects": "name"}]
    c.line("pupil")
    assert c.proto.state is State.CHAT
    key = c.proto.user.session  # type: ignore[union-attr]
    transfer = mem.connect(40009)
    transfer.line(f"/attach {key}")  # the session key is enough: no server password
    assert transfer.proto.state is State.ATTACHED


def test_require_account_with_open_registration_makes_one_at_the_door(
    tmp_path: Path,
) -> None:
    config = relaxed_config()
    config.accounts.require_account = True
    mem = memory_server(tmp_path, config)
    c = mem.connect()
    c.take()
    c.line("newbie")
    assert c.take() == (WILL_ECHO + b"newbie is not an account yet: choose a password "
                        b"(at least 8 characters):\r\n")
    c.line("short")
    assert c.proto.state is State.PASSWORD  # asked again
    c.line(PASSWORD)
    assert c.proto.state is State.CHAT
    assert mem.factory.accounts.exists("newbie")


def test_require_account_with_closed_registration_closes_guests(tmp_path: Path) -> None:
    config = relaxed_config()
    config.accounts.require_account = True
    config.accounts.open_registration = False
    mem = memory_server(tmp_path, config)
    c = mem.connect()
    c.take()
    c.line("stranger")
    assert c.lines() == [
        "!! This server admits accounts only, and stranger is none; ask an operator."
    ]
    assert c.proto.state is State.CLOSED


# --- quotas, files ---


def test_quotas_count_by_account_and_by_guest_address() -> None:
    shared = {"127.0.0.1"}
    assert uploader_key("10.0.0.5", "Alice", shared, account=True) == "account:alice"
    assert uploader_key("10.0.0.5", "bob", shared) == "address:10.0.0.5"
    assert uploader_key("10.0.0.5", "bobby", shared) == "address:10.0.0.5"  # /nick: same
    assert uploader_key("127.0.0.1", "bob", shared) == "user:bob"


def test_rm_by_who_shared_it_or_an_operator(mem: MemoryServer) -> None:
    alice = mem.user("alice", mode="json")
    bob = mem.user("bob", mode="json")
    alice.feed(b"/send notes.txt 5\nhello")
    (uploaded,) = [e for e in alice.events() if e["type"] == "uploaded"]
    file_id = uploaded["file"]["file_id"]
    bob.take()
    bob.line(f"/rm {file_id}")
    assert bob.events()[0]["code"] == "not_yours"
    alice.line(f"/rm {file_id}")
    (removed,) = [e for e in bob.events() if e["type"] == "removed"]
    assert (removed["by"], removed["file_id"], removed["name"]) == ("alice", file_id, "notes.txt")
    assert not (mem.factory.files.store.files_dir / file_id).exists()
    bob.line(f"/get {file_id}")
    assert bob.events()[0]["code"] == "removed"
    alice.line(f"/rm {file_id}")
    assert alice.events()[-1]["code"] == "no_such_file"


def test_an_operator_removes_any_file(mem: MemoryServer) -> None:
    bob = mem.user("bob", mode="json")
    bob.feed(b"/send x.bin 3\nabc")
    file_id = next(e for e in bob.events() if e["type"] == "uploaded")["file"]["file_id"]
    op = account(mem, "op")
    mem.factory.admin.oper("console", "op", True)
    logged: list[dict[str, object]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        op.line(f"/rm {file_id}")
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert op.lines()[-1].endswith("-- op removed x.bin.")
    assert any("Operator op: removed x.bin" in str(e.get("what", "")) or
               "removed x.bin" in str(e.get("what", "")) for e in logged)


# --- passwords stay secret ---


def test_passwords_reach_no_one_else_and_no_log(mem: MemoryServer) -> None:
    logged: list[dict[str, object]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        watcher = mem.user("watcher")
        alice = account(mem, "alice", "s3cret-horse")
        alice.line("/password s3cret-horse s3cret-pony")
        alice.close()
        c = mem.connect(40001)
        c.line("alice")
        c.line("s3cret-wrong")
        mem.clock.advance(10)
        c.line("/login alice s3cret-pony")
        mem.clock.advance(10)
        seen = watcher.take()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert b"s3cret" not in seen
    assert not [e for e in logged if "s3cret" in repr(e)]
    assert any("Failed login for alice" in str(e.get("log_format", "")) or
               e.get("name") == "alice" for e in logged)


def test_hashes_are_made_with_what_the_server_was_given(tmp_path: Path) -> None:
    """The in-memory tests use cheap Argon2 parameters; the server, the defaults."""
    mem = memory_server(tmp_path)
    account(mem, "alice")
    (stored,) = sqlite3.connect(mem.store.path).execute(
        "SELECT hash FROM accounts"
    ).fetchone()
    assert stored.startswith("$argon2id$v=19$m=1024,t=1,p=1$")


def test_events_carry_the_account_flag_through_json() -> None:
    event = ev.Join(1, 1.0, "alice", "#lobby", True, True)
    from chat.render import JsonRenderer

    data = json.loads(JsonRenderer().render(event))
    assert data["account"] is True and ev.from_json(data) == event


def test_server_operators_see_and_run_every_room(mem: MemoryServer) -> None:
    owner = mem.user("owner")
    owner.line("/join #staff")
    owner.line("/private on")
    op = account(mem, "op")
    mem.factory.admin.oper("console", "op", True)
    guest = mem.user("guest")
    for c in (op, guest):
        c.take()
        c.line("/rooms")
    assert any("#staff" in ln for ln in op.lines())
    assert not any("#staff" in ln for ln in guest.lines())
    op.line("/join #staff")  # no invitation needed
    op.line("/topic #staff for staff only")
    assert op.proto.user is not None and op.proto.user.current is not None
    assert op.proto.user.current.name == "#staff"
    assert any("for staff only" in ln for ln in owner.lines())
    lobby = mem.service.rooms.get("#lobby")
    assert lobby is not None and not lobby.operators  # the server's room: no first-comer op
