"""Redis connections kept open: one ``Link`` per connection, reconnecting with back-off.

The cluster (``chat.cluster``) needs to know when Redis is there and when it
is not, to stop taking chat lines the moment it goes and to resynchronise
before taking them again. So each connection is a Twisted ``ClientService``
(retrying with exponential back-off) around a txredisapi protocol, and a
``Link`` reports ``up(protocol)`` once the connection is usable (password
and database selected) and ``down()`` when it is lost. A subscriber link
hands every pub/sub message to ``on_message``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int
    db: int
    password: str | None
    socket: str | None = None


def parse_url(url: str) -> RedisAddress:
    """``redis://[:PASSWORD@]HOST[:PORT][/DB]`` or ``unix:///PATH[?db=N]``; ValueError if not."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        db = parts.query.removeprefix("db=") or "0"
        if not parts.path or not db.isdigit():
            raise ValueError(f"bad Redis URL {url!r}")
        return RedisAddress("", 0, int(db), None, parts.path)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(f"expected redis://HOST[:PORT][/DB], got {url!r}")
    path = parts.path.strip("/") or "0"
    if not path.isdigit():
        raise ValueError(f"the database in {url!r} must be a number")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    password = unquote(parts.password) if parts.password else None
    return RedisAddress(parts.hostname, port, int(path), password)


_INCOMPLETE = object()


def _reply(buf: bytes, pos: int) -> tuple[Any, int]:
    """One RESP2 reply of ``buf`` from ``pos``: (reply, next pos), or ``_INCOMPLETE``.

    Bulk strings come as ``str`` (UTF-8), integers as ``int``, errors as
    txredisapi's ``ResponseError`` (which its callers check for), nil as None.
    """
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return _INCOMPLETE, pos
    kind, line, pos = buf[pos:pos + 1], buf[pos + 1:end], end + 2
    if kind == b"$":
        n = int(line)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            return _INCOMPLETE, pos
        return buf[pos:pos + n].decode("utf-8", "replace"), pos + n + 2
    if kind == b"*":
        n = int(line)
        if n < 0:
            return None, pos
        items = []
        for _ in range(n):
            item, pos = _reply(buf, pos)
            if item is _INCOMPLETE:
                return _INCOMPLETE, pos
            items.append(item)
        return items, pos
    if kind == b":":
        return int(line), pos
    if kind == b"-":
        return txredisapi.ResponseError(line.decode("utf-8", "replace")), pos
    return line.decode("utf-8", "replace"), pos  # "+": a status


class _AllReplies:
    """Every complete reply of a read handed over at once.

    txredisapi's parser (a LineReceiver switching to raw mode for each bulk
    string) hands over one reply per reactor turn (``setLineMode`` re-enters
    through ``callLater(0)``): a burst of 500 pub/sub messages took 500 turns
    and became 500 delivery batches of one event each (measured: ~90x the CPU
    per delivery of one node). Replies in one read now make one turn's batch.
    """

    _pending = b""

    def dataReceived(self, data: bytes) -> None:
        buf, pos = self._pending + data, 0
        while pos < len(buf):
            reply, after = _reply(buf, pos)
            if reply is _INCOMPLETE:
                break
            pos = after
            self.replyReceived(reply)  # type: ignore[attr-defined]
        self._pending = buf[pos:]


class _Commands(_AllReplies, txredisapi.RedisProtocol):
    link: Link


class _Subscriber(_AllReplies, txredisapi.SubscriberProtocol):
    link: Link

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.link.on_message(message)


class Link:
    """One Redis connection, reconnected whenever it is lost."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        name: str,
        up: Callable[[Any], object],
        down: Callable[[], object],
        on_message: Callable[[str], object] | None = None,
    ) -> None:
        self.name = name
        self.address = address
        self.protocol: Any = None
        self._up, self._down = up, down
        self._subscriber = on_message is not None
        self.on_message = on_message or (lambda message: None)
        if address.socket:
            endpoint: Any = UNIXClientEndpoint(reactor, address.socket)
        else:
            endpoint = TCP4ClientEndpoint(reactor, address.host, address.port, timeout=5)
        factory = Factory()
        factory.buildProtocol = self._build  # type: ignore[method-assign]
        self._service = ClientService(
            endpoint, factory, retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=5.0),
            clock=reactor, prepareConnection=self._prepare,
        )

    def _build(self, addr: Any) -> Any:
        cls = _Subscriber if self._subscriber else _Commands
        proto = cls(charset="utf-8", password=self.address.password,
                    dbid=self.address.db if self.address.db else None, convertNumbers=False)
        proto.factory = self  # txredisapi calls stopTrying/connectionError on a failed AUTH
        proto.link = self
        return proto

    # What txredisapi asks of its factory when AUTH or SELECT fails.
    def stopTrying(self) -> None:
        self.log.error("Redis {name}: authentication or database selection failed",
                       name=self.name)

    def connectionError(self, why: str) -> None:
        self.log.error("Redis {name}: {why}", name=self.name, why=why)

    isLazy = False

    def _prepare(self, proto: Any) -> defer.Deferred[Any]:
        # ``proto`` is ClientService's proxy; txredisapi's callbacks get the
        # protocol itself, so the proxy is what is compared.
        def ready(_: object) -> Any:
            self.protocol = proto
            proto.whenDisconnected().addCallback(lambda _: self._lost(proto))
            return self._up(proto)

        return proto.whenConnected().addCallback(ready)

    def _lost(self, proto: Any) -> None:
        if self.protocol is proto:
            self.protocol = None
            self._down()

    def start(self) -> None:
        self._service.startService()

    def stop(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = self._service.stopService()
        return d
