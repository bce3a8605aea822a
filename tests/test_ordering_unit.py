"""One connection, one ordered conversation — in memory, with a store that answers late.

The in-memory stack normally runs database work at once; here it is held
until the test releases it, which is when the server's thread would finish.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from chat.config import Config
from chat.wire import State
from tests.support import Conn, MemoryServer, memory_server


class LateStore:
    """Database work queued until ``release()``: a slow disk, on demand."""

    def __init__(self, mem: MemoryServer) -> None:
        self.queued: list[tuple[Callable[[], Any], defer.Deferred[Any]]] = []
        self._run = mem.store._run
        mem.store._run = self  # type: ignore[method-assign]

    def __call__(self, fn: Callable[[], Any]) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.queued.append((fn, d))
        return d

    def release(self) -> None:
        while self.queued:
            fn, d = self.queued.pop(0)
            self._run(fn).chainDeferred(d)


def said(conn: Conn) -> list[str]:
    return [ln.split("> ", 1)[1] for ln in conn.lines() if "> " in ln]


@pytest.fixture
def mem(tmp_path: Path) -> MemoryServer:
    return memory_server(tmp_path)


def test_a_get_keeps_the_meaning_it_had_when_it_was_read(mem: MemoryServer) -> None:
    alice = mem.user("alice")
    alice.feed(b"/send f.txt 3\nabc")
    file_id = alice.lines()[-1].split("id ")[1].split(",")[0]
    late = LateStore(mem)
    alice.feed(f"/get {file_id}\n/proto json\n/who\n".encode())
    assert alice.take() == b""  # the lookup has not answered: nothing after it either
    late.release()
    hint, proto, who = alice.lines()
    assert hint.startswith("-- f.txt (3 B) is at ") and "not sent to a text-mode" in hint
    assert proto == '{"type":"proto","mode":"json"}' and who.startswith('{"type":"who"')


def test_a_chat_line_waits_for_the_lookup_before_it(mem: MemoryServer) -> None:
    alice, bob = mem.user("alice"), mem.user("bob")
    bob.take()
    late = LateStore(mem)
    alice.feed(b"/files\nafter the list\n")
    assert said(bob) == []
    late.release()  # /files is answered, then the line is said (and stored)
    late.release()
    assert said(bob) == ["after the list"]


def test_too_large_closes_before_the_next_line_is_read(mem: MemoryServer) -> None:
    alice, bob = mem.user("alice"), mem.user("bob")
    bob.take()
    alice.feed(b"/send x.bin " + b"1" + b"0" * 30 + b"\n/nick hijacked\n")
    out = alice.lines()
    assert out[-1] == "!! The file is too large: the limit is 1073741824 bytes (1.0 GiB)."
    assert alice.proto.state is State.CLOSED and alice.transport.disconnecting
    assert bob.lines()[-1].endswith("alice has left the chat (connection lost).")
    assert "hijacked" not in mem.service.registry


@pytest.mark.parametrize("name", [b"b\xffb", b"b\x00b", b"b\x1bb", "bób".encode(), b" bob"])
def test_a_name_is_refused_never_altered(mem: MemoryServer, name: bytes) -> None:
    c = mem.connect()
    c.take()
    c.feed(name + b"\r\n")
    error, prompt = c.lines()
    assert error.startswith("!! A name is 1 to 32 letters") and prompt == "Choose a username:"
    assert c.proto.state is State.REGISTER and len(mem.service.registry) == 0


def test_input_before_a_name_is_counted_as_it_arrives(tmp_path: Path) -> None:
    config = Config()  # default flood control: it must not slow the count down
    mem = memory_server(tmp_path, config)
    c = mem.connect()
    c.take()
    c.feed(b"!\r\n" * 1000)
    assert c.lines()[-1] == "!! Too much input before choosing a name. Goodbye."
    assert c.transport.disconnecting and mem.clock.seconds() == 1_700_000_000


def test_junk_without_a_line_end_is_counted_too(mem: MemoryServer) -> None:
    c = mem.connect()
    c.take()
    c.feed(b"!" * 4096)
    assert not c.transport.disconnecting  # at most 4096 bytes before a name
    c.feed(b"!")
    assert c.transport.disconnecting


def test_a_last_line_without_its_end_is_said_when_the_client_stops_sending(
    mem: MemoryServer,
) -> None:
    """``printf 'alice\\nhello' | nc -N``: the unended last line is a line too."""
    bob = mem.user("bob")
    bob.take()
    c = mem.connect()
    c.feed(b"alice\nhello")
    assert said(bob) == []
    c.proto.readConnectionLost()
    assert said(bob) == ["hello"]
    assert c.transport.disconnecting  # then the server closes
