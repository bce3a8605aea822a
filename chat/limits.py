"""Rate and count limits: token buckets, one connection's input allowances, and
per-address connection counting.

``TokenBucket`` and ``AddressLimiter`` are pure bookkeeping over a clock's
``seconds()``. ``InputLimits`` applies them to one connection's input:
fakelag (past the burst, reading slows down; nothing is dropped), the
``/nick`` allowance, and the caps on input before a name. The protocol
decides what a verdict means for the connection.
"""

from __future__ import annotations

import re
from collections import deque
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


@dataclass
class AddressLimiter:
    """Counts connections per address: at once, and new ones per minute."""

    clock: IReactorTime
    per_address: int = 8
    per_minute: int = 30
    total: int = 10000
    exempt: frozenset[str] = frozenset()
    current: dict[str, int] = field(default_factory=dict)
    recent: dict[str, deque[float]] = field(default_factory=dict)
    connections: int = 0

    def refusal(self, host: str | None) -> str | None:
        """Why a new connection from ``host`` is turned away, or None to admit it."""
        if self.connections >= self.total:
            return "The server is full; try again later."
        if host is None or host in self.exempt:
            return None
        if self.current.get(host, 0) >= self.per_address:
            return f"Too many connections from your address (at most {self.per_address})."
        now = self.clock.seconds()
        times = self.recent.setdefault(host, deque())
        while times and times[0] <= now - 60:
            times.popleft()
        if len(times) >= self.per_minute:
            return (f"Too many new connections from your address "
                    f"(at most {self.per_minute} a minute); try again shortly.")
        return None

    def opened(self, host: str | None) -> None:
        self.connections += 1
        if host is None:
            return
        self.current[host] = self.current.get(host, 0) + 1
        if host not in self.exempt:
            self.recent.setdefault(host, deque()).append(self.clock.seconds())

    def closed(self, host: str | None) -> None:
        self.connections -= 1
        if host is None:
            return
        left = self.current.get(host, 0) - 1
        if left > 0:
            self.current[host] = left
        else:
            self.current.pop(host, None)
            times = self.recent.get(host)
            if times is not None and (
                not times or times[-1] <= self.clock.seconds() - 60
            ):
                del self.recent[host]
