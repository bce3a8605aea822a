"""Rate and count limits: token buckets, one connection's input allowances, and
per-address connection counting.

``TokenBucket`` and ``AddressLimiter`` are pure bookkeeping over a clock's
``seconds()``. ``InputLimits`` applies them to one connection's input:
fakelag (past the burst, reading slows down; nothing is dropped), the
``/nick`` allowance, and the caps on input before a name. The protocol
decides what a verdict means for the connection.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

from chat.config import LimitSettings


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second.

    ``take`` may drive the level below zero (a long line costs more than is
    left); ``wait`` says how long until one whole token is back.
    """

    __slots__ = ("_at", "_clock", "_level", "burst", "rate")

    def __init__(self, clock: IReactorTime, burst: float, rate: float) -> None:
        self._clock = clock
        self.burst = burst
        self.rate = rate
        self._level = float(burst)
        self._at = clock.seconds()

    def level(self) -> float:
        now = self._clock.seconds()
        self._level = min(self.burst, self._level + (now - self._at) * self.rate)
        self._at = now
        return self._level

    def take(self, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens; returns the level left."""
        self._level = self.level() - cost
        return self._level

    def wait(self) -> float:
        """Seconds until at least one token is available (0 if one is)."""
        level = self.level()
        return 0.0 if level >= 1 else (1 - level) / self.rate


class Throttled(Protocol):
    def hold(self, reason: str) -> None: ...

    def release(self, reason: str) -> None: ...


#: A /send header in held-back input: the upload's bytes behind it are not chat.
_SEND_HEADER = re.compile(rb"(?:^|\n)/send [^\n]*\n?", re.IGNORECASE)


class InputLimits:
    """What one connection may send: flood control, ``/nick``, input before a name."""

    __slots__ = (
        "_clock", "_flood", "_flood_call", "_limits", "_nicks", "_owner", "_prereg_bytes",
        "_prereg_lines",
    )

    def __init__(self, clock: IReactorTime, limits: LimitSettings, owner: Throttled) -> None:
        self._clock = clock
        self._limits = limits
        self._owner = owner
        self._flood = TokenBucket(clock, limits.flood_burst, limits.flood_rate)
        self._nicks = TokenBucket(clock, limits.nick_burst, 1 / limits.nick_interval)
        self._flood_call: Any = None
        self._prereg_lines = 0
        self._prereg_bytes = 0

    # --- fakelag ---

    def charge(self, size: int) -> None:
        """A line of ``size`` bytes was read: one token, more if it is long (empty ones too)."""
        self._flood.take(1 + size // self._limits.flood_line_bytes)

    def throttle(self) -> None:
        """Past the burst: hold reading until a token is back."""
        wait = self._flood.wait()
        if wait > 0 and self._flood_call is None:
            self._owner.hold("flood")
            self._flood_call = self._clock.callLater(wait, self._flood_over)

    def _flood_over(self) -> None:
        self._flood_call = None
        wait = self._flood.wait()
        if wait > 0:
            self._flood_call = self._clock.callLater(wait, self._flood_over)
        else:
            self._owner.release("flood")

    def excess(self, held: bytes) -> bool:
        """Whether input held back by flood control is past ``flood_max_pending_bytes``.

        An upload's bytes behind a held ``/send`` header do not count.
        """
        header = _SEND_HEADER.search(held)
        size = header.end() if header else len(held)
        return size > self._limits.flood_max_pending_bytes

    def stop(self) -> None:
        if self._flood_call is not None and self._flood_call.active():
            self._flood_call.cancel()
        self._flood_call = None

    # --- /nick ---

    def nick_wait(self) -> float:
        """0 and one change spent, or the seconds until a change is allowed."""
        wait = self._nicks.wait()
        if wait <= 0:
            self._nicks.take()
        return wait

    # --- before a name ---

    def before_name(self, size: int, unended: int = 0) -> bool:
        """Count a line read before registration; True once there was too much.

        ``unended`` is what has arrived of the next line so far: input counts
        as it arrives, so junk without a line end is caught too.
        """
        self._prereg_lines += 1
        self._prereg_bytes += size + 1
        return self.too_much_before_name(unended)

    def too_much_before_name(self, unended: int = 0) -> bool:
        limits = self._limits
        return (
            self._prereg_lines > limits.prereg_max_lines
            or self._prereg_bytes + unended > limits.prereg_max_bytes
        )


class Exempt:
    """Addresses and networks (``"127.0.0.0/8"``, ``"::1"``) that per-address limits skip."""

    __slots__ = ("_networks",)

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._networks = tuple(ipaddress.ip_network(e, strict=False) for e in entries)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str) or not self._networks:
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])  # no IPv6 zone
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)


#: The window of the per-address count of new connections, in seconds.
WINDOW = 60.0


@dataclass
class AddressLimiter:
    """Counts connections per address: at once, and new ones per minute.

    Both tables forget an address as soon as it no longer counts: ``current``
    holds only addresses with connections open, ``recent`` only those whose
    minute has not passed (oldest first, pruned on every use, and never more
    than ``max_tracked`` of them), so a sweep over many addresses leaves
    nothing behind.
    """

    clock: IReactorTime
    per_address: int = 8
    per_minute: int = 30
    total: int = 10000
    exempt: Iterable[str] = ()
    max_tracked: int = 65536
    current: dict[str, int] = field(default_factory=dict)
    #: Address -> (start of its minute, connections in it), oldest minute first.
    recent: OrderedDict[str, tuple[float, int]] = field(default_factory=OrderedDict)
    connections: int = 0
    _exempt: Exempt = field(init=False)

    def __post_init__(self) -> None:
        self._exempt = Exempt(self.exempt)

    def refusal(self, host: str | None) -> str | None:
        """Why a new connection from ``host`` is turned away, or None to admit it."""
        if self.connections >= self.total:
            return "The server is full; try again later."
        if host is None or host in self._exempt:
            return None
        if self.current.get(host, 0) >= self.per_address:
            return f"Too many connections from your address (at most {self.per_address})."
        self._prune()
        if self.recent.get(host, (0.0, 0))[1] >= self.per_minute:
            return (f"Too many new connections from your address "
                    f"(at most {self.per_minute} a minute); try again shortly.")
        return None

    def opened(self, host: str | None) -> None:
        self.connections += 1
        if host is None:
            return
        self.current[host] = self.current.get(host, 0) + 1
        if host not in self._exempt:
            self._prune()
            start, count = self.recent.get(host, (self.clock.seconds(), 0))
            self.recent[host] = (start, count + 1)  # an update keeps its place: start order
            while len(self.recent) > self.max_tracked:
                self.recent.popitem(last=False)

    def closed(self, host: str | None) -> None:
        self.connections -= 1
        if host is None:
            return
        left = self.current.get(host, 0) - 1
        if left > 0:
            self.current[host] = left
        else:
            self.current.pop(host, None)
        self._prune()

    def _prune(self) -> None:
        """Forget every address whose minute has passed."""
        expired = self.clock.seconds() - WINDOW
        recent = self.recent
        while recent:
            host, (start, _) = next(iter(recent.items()))
            if start > expired:
                break
            del recent[host]


class LoginThrottle:
    """Failed logins (and server passwords) per account and per address.

    Up to ``failures`` failures in ``window`` seconds are answered, each a
    little later than the last (a second per failure past the first); past
    them the account or address is refused for ``lockout`` seconds, then
    forgiven. An address an account has logged in from before is not
    refused for the account's failures (only for its own), so someone
    guessing from elsewhere cannot keep the owner out. The tables forget
    what is older than the window and never hold more than ``max_tracked``
    keys.
    """

    def __init__(
        self,
        clock: IReactorTime,
        failures: int = 5,
        window: float = 600.0,
        lockout: float = 300.0,
        max_tracked: int = 65536,
    ) -> None:
        self._clock = clock
        self.failures, self.window, self.lockout = failures, window, lockout
        self.max_tracked = max_tracked
        #: key -> times of recent failures, oldest key first.
        self._recent: OrderedDict[str, list[float]] = OrderedDict()
        #: key -> when it may try again.
        self._locked: OrderedDict[str, float] = OrderedDict()
        #: (account key, address key) pairs that logged in, most recent last.
        self._trusted: OrderedDict[tuple[str, str], None] = OrderedDict()

    def keys(self, account: str, host: str | None) -> tuple[str, ...]:
        """What an attempt on ``account`` from ``host`` is counted and refused by."""
        pair = (f"account:{account.lower()}", f"address:{host}")
        return pair[1:] if pair in self._trusted else pair

    def refused_for(self, *keys: str) -> float:
        """Seconds until any of ``keys`` may try again (0: now)."""
        self._prune()
        now = self._clock.seconds()
        return max((self._locked.get(k, now) - now for k in keys), default=0.0)

    def delay(self, *keys: str) -> float:
        """How long to wait before answering an attempt (grows with failures)."""
        self._prune()
        most = max((len(self._recent.get(k, ())) for k in keys), default=0)
        return float(max(0, most - 1))

    def failed(self, *keys: str) -> None:
        now = self._clock.seconds()
        for key in keys:
            times = self._recent.pop(key, [])
            times.append(now)
            self._recent[key] = times  # most recent last
            if len(times) >= self.failures:
                self._locked.pop(key, None)
                self._locked[key] = now + self.lockout
                del self._recent[key]
        while len(self._recent) > self.max_tracked:
            self._recent.popitem(last=False)
        while len(self._locked) > self.max_tracked:
            self._locked.popitem(last=False)

    def succeeded(self, account: str, host: str | None) -> None:
        pair = (f"account:{account.lower()}", f"address:{host}")
        self._recent.pop(pair[0], None)
        self._trusted.pop(pair, None)
        self._trusted[pair] = None
        while len(self._trusted) > self.max_tracked:
            self._trusted.popitem(last=False)

    def _prune(self) -> None:
        now = self._clock.seconds()
        while self._recent:  # the key that failed longest ago comes first
            key, times = next(iter(self._recent.items()))
            if times[-1] > now - self.window:
                break
            del self._recent[key]
        while self._locked:
            key, until = next(iter(self._locked.items()))
            if until > now:
                break
            del self._locked[key]

    def tracked(self) -> int:
        self._prune()
        return len(self._recent) + len(self._locked)
