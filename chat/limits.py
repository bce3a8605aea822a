"""Rate and count limits: token buckets and per-address connection counting.

These are pure bookkeeping over a clock's ``seconds()``; the protocol decides
what to do when a limit is reached (slow a connection down, refuse a nick
change, turn a connection away).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime


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
