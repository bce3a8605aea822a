"""The property state machine, with accounts, logins, take-overs, operators and bans.

``AccountsMachine`` extends ``ChatMachine`` (tests/test_properties.py): the
same chat, uploads, disconnects and invariants, plus ``/register``, names
that ask for a password (right or wrong), ``/login``, ``/unregister``,
``/password``, operators made at the console, and their ``/kick``, ``/ban``,
``/unban``, ``/say`` and ``/rm``, all cut at random byte boundaries. Its own
invariants: the server's accounts are the model's, a participant's
``account`` and ``operator`` flags are right, nobody banned is in, and no
password ever reaches another connection's output or the server log.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule
from twisted.logger import globalLogPublisher

from chat.protocol import State
from tests.support import Conn, memory_server, relaxed_config
from tests.test_properties import NAMES, ChatMachine

#: Passwords the machine uses: long enough, too short, with spaces and a slash.
PASSWORDS = ["correct horse", "hunter22!", "/slashy-pass", "short"]
SECRET = re.compile(rb"correct horse|hunter22!|/slashy-pass")


class AccountsMachine(ChatMachine):
    def __init__(self) -> None:
        self.typed: set[int] = set()  # connections that just typed a password
        super().__init__()
        config = relaxed_config()
        # The clock moves to answer throttled logins: nothing else may time out.
        config.limits.registration_timeout = 1e9
        config.limits.ping_interval = 1e9
        config.limits.login_failures = 10**6
        self.mem = memory_server(self.dir, config, coalesce=self.coalesce)
        self.accounts: dict[str, str] = {}  # lower-case name -> password
        self.operators: set[str] = set()
        self.banned: set[str] = set()
        self.logged: list[str] = []
        self._observer = lambda event: self.logged.append(repr(event))
        globalLogPublisher.addObserver(self._observer)

    def teardown(self) -> None:
        globalLogPublisher.removeObserver(self._observer)
        super().teardown()

    def collect(self) -> None:
        for conn in self.live:
            out = conn.transport.value()
            # The connection that typed a password may hear of it; nobody else.
            assert not SECRET.search(out) or id(conn) in self.typed, out
        self.typed = set()
        super().collect()

    def _answer(self, conn: Conn, line: bytes, cuts: list[int]) -> None:
        """Feed a line whose answer a growing throttle may delay; let the clock run."""
        self.typed = {id(conn)}
        for piece in self._pieces(line, cuts):
            conn.feed(piece)
        self.mem.clock.advance(self.mem.factory.door.throttle.delay("address:127.0.0.1") + 1)
        self.collect()

    @staticmethod
    def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
        from tests.test_properties import chunks

        return chunks(data, cuts)

    def _in(self, state: State) -> list[Conn]:
        return [c for c in self.live if c.proto.state is state]

    def _holder(self, name: str) -> Conn | None:
        return next((c for c in self.live if self.names.get(id(c), "").lower() == name), None)

    def _entered(self, conn: Conn, name: str) -> None:
        """``conn`` came in as the account ``name``: a live holder was taken over."""
        old = self._holder(name)
        if old is not None:
            assert old.proto.state is State.CLOSED
            self.names.pop(id(old))
        assert conn.proto.state is State.CHAT
        self.names[id(conn)] = name

    # --- coming in ---

    def register(self, conn: Conn, name: str, cuts: list[int]) -> None:
        """Not a rule here: ``enter`` knows that a name may be an account's."""
        raise NotImplementedError

    @precondition(lambda self: bool(self._in(State.REGISTER)))
    @rule(data=st.data(), name=st.sampled_from(NAMES),
          password=st.sampled_from(PASSWORDS), cuts=st.lists(st.integers(0, 30)))
    def enter(self, data: st.DataObject, name: str, password: str, cuts: list[int]) -> None:
        """A name typed at the prompt; an account's asks for its password."""
        conn = data.draw(st.sampled_from(self._in(State.REGISTER)))
        taken = self._holder(name) is not None
        self._answer(conn, name.encode() + b"\r\n", list(cuts))
        if name in self.banned:
            assert conn.proto.state is State.CLOSED
        elif name in self.accounts:
            assert conn.proto.state is State.PASSWORD
            self._answer(conn, password.encode() + b"\r\n", list(cuts))
            if self.accounts[name] == password:
                self._entered(conn, name)
            else:
                assert conn.proto.state is State.REGISTER
        elif taken:
            assert conn.proto.state is State.REGISTER
        else:
            assert conn.proto.state is State.CHAT
            self.names[id(conn)] = name

    @precondition(lambda self: bool(self._in(State.REGISTER)))
    @rule(data=st.data(), name=st.sampled_from(NAMES),
          password=st.sampled_from(PASSWORDS), cuts=st.lists(st.integers(0, 40)))
    def login(self, data: st.DataObject, name: str, password: str, cuts: list[int]) -> None:
        conn = data.draw(st.sampled_from(self._in(State.REGISTER)))
        self._answer(conn, f"/login {name} {password}\r\n".encode(), cuts)
        if name in self.banned and self.accounts.get(name) == password:
            assert conn.proto.state is State.CLOSED
        elif self.accounts.get(name) == password:
            self._entered(conn, name)
        else:
            assert conn.proto.state is State.REGISTER

    # --- accounts ---

    @precondition(lambda self: bool(self._in(State.CHAT)))
    @rule(data=st.data(), password=st.sampled_from(PASSWORDS),
          cuts=st.lists(st.integers(0, 30)))
    def make_account(self, data: st.DataObject, password: str, cuts: list[int]) -> None:
        conn = data.draw(st.sampled_from(self._in(State.CHAT)))
        name = self.names[id(conn)]
        self._answer(conn, f"/register {password}\n".encode(), cuts)
        if name not in self.accounts and len(password) >= 8:
            self.accounts[name] = password

    @precondition(lambda self: bool(self._in(State.CHAT)))
    @rule(data=st.data(), right=st.booleans())
    def unregister(self, data: st.DataObject, right: bool) -> None:
        conn = data.draw(st.sampled_from(self._in(State.CHAT)))
        name = self.names[id(conn)]
        password = self.accounts.get(name, "")
        self._answer(conn, f"/unregister {password if right else 'nope nope'}\n".encode(), [])
        if right and name in self.accounts:
            del self.accounts[name]
            self.operators.discard(name)

    @precondition(lambda self: bool(self._in(State.CHAT)))
    @rule(data=st.data(), new=st.sampled_from(PASSWORDS))
    def change_password(self, data: st.DataObject, new: str) -> None:
        conn = data.draw(st.sampled_from(self._in(State.CHAT)))
        name = self.names[id(conn)]
        if name not in self.accounts:
            return
        self._answer(conn, f"/password {self.accounts[name]} {new}\n".encode(), [])
        if len(new) >= 8:
            self.accounts[name] = new

    # --- operators ---

    @rule(name=st.sampled_from(NAMES))
    def oper(self, name: str) -> None:
        made = self.mem.factory.admin.oper("console", name, True) is not None
        assert made == (name in self.accounts)
        if made:
            self.operators.add(name)

    @precondition(lambda self: bool(set(self.accounts) - self.operators))
    @rule(data=st.data())
    def oper_an_account(self, data: st.DataObject) -> None:
        self.oper(data.draw(st.sampled_from(sorted(set(self.accounts) - self.operators))))

    def _operator_conns(self) -> list[Conn]:
        return [c for c in self.live if c.proto.state is State.CHAT
                and self.names.get(id(c)) in self.operators]

    @precondition(lambda self: bool(self._operator_conns()))
    @rule(data=st.data(), who=st.sampled_from(NAMES), verb=st.sampled_from(
        ["/kick {t} go", "/ban {t} 1h", "/unban {t}", "/say hi {t}", "/bans"]))
    def operator_acts(self, data: st.DataObject, who: str, verb: str) -> None:
        conn = data.draw(st.sampled_from(self._operator_conns()))
        self.operator_command(conn, who, verb)

    @rule(conn=ChatMachine.conns, who=st.sampled_from(NAMES), verb=st.sampled_from(
        ["/kick {t} go", "/ban {t} 1h", "/unban {t}", "/say hi {t}", "/bans", "/rm f-x{t}"]))
    def operator_command(self, conn: Conn, who: str, verb: str) -> None:
        if conn not in self.live or conn.proto.state is not State.CHAT:
            return
        me = self.names[id(conn)]
        line = verb.format(t=who)
        victim = self._holder(who)
        self._answer(conn, line.encode() + b"\n", [])
        if me not in self.operators:
            return
        verb = line.split()[0]
        if verb in ("/kick", "/ban") and victim is not None:
            assert victim.proto.state is State.CLOSED
            self.names.pop(id(victim))
        if verb == "/ban":
            self.banned.add(who)
        elif verb == "/unban":
            self.banned.discard(who)

    # --- what must always hold ---

    @invariant()
    def accounts_are_the_model(self) -> None:
        accounts = self.mem.factory.accounts
        assert {n for n in NAMES if accounts.exists(n)} == set(self.accounts)
        for conn in self.live:
            user = conn.proto.user
            if conn.proto.state is State.CHAT and user is not None:
                assert user.account == (user.name in self.accounts)
                assert user.operator == (user.name in self.operators)
                assert user.name not in self.banned

    @invariant()
    def no_password_in_the_log(self) -> None:
        assert not [line for line in self.logged if SECRET.search(line.encode())]


AccountsMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAccountsMachine = AccountsMachine.TestCase
