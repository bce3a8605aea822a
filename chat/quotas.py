"""Upload quotas: what each uploader has stored, all told and in the last 24 hours.

A quota belongs to an *uploader key*: the account, for an account; for a
guest, the address the bytes come from or, where an address is shared by
everyone (loopback and the other exempt addresses: on a lab machine every
``telnet localhost`` is 127.0.0.1), the user name. So ``/nick`` or
reconnecting never resets it. Three limits apply to every upload, counting
the uploads still streaming in: the bytes in flight from one uploader at
once (``reservation``: disk space held before a byte is written), the bytes
stored in any 24 hours (``guest_daily`` or ``account_daily``) and in all
(``total``); 0 switches a limit off. Refusals come back as the ``reason`` and
values of a ``refused`` error.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Iterable
from typing import Any

from twisted.internet.interfaces import IReactorTime

#: The window of the daily quota, in seconds.
DAY = 24 * 3600.0


def uploader_key(
    host: str | None, name: str, shared: Container[str], account: bool = False
) -> str:
    """Whose quota an upload counts against: the account; for a guest, its address,
    or its name where addresses are shared."""
    if account:
        return f"account:{name.lower()}"
    if host is None or host in shared:
        return f"user:{name.lower()}"
    return f"address:{host}"


class Quotas:
    """Bytes stored per uploader key: in all, and in the last 24 hours."""

    def __init__(
        self,
        clock: IReactorTime,
        *,
        total: int = 0,
        guest_daily: int = 0,
        account_daily: int = 0,
        reservation: int = 0,
    ) -> None:
        self._clock = clock
        self.total, self.reservation = total, reservation
        self.guest_daily, self.account_daily = guest_daily, account_daily
        self._totals: dict[str, int] = {}
        #: key -> [(when, size)] of the last 24 hours, oldest first, and their sum.
        self._recent: dict[str, deque[tuple[float, int]]] = {}
        self._recent_sums: dict[str, int] = {}
        self._next_sweep = 0.0

    def load(self, rows: Iterable[tuple[str, float, int]]) -> None:
        """What the store holds: ``(key, when, size)`` per file (at start-up)."""
        for key, when, size in sorted(rows, key=lambda row: row[1]):
            self.stored(key, size, when)

    def stored(self, key: str, size: int, when: float | None = None) -> None:
        when = self._clock.seconds() if when is None else when
        self._totals[key] = self._totals.get(key, 0) + size
        if when > self._clock.seconds() - DAY:
            self._recent.setdefault(key, deque()).append((when, size))
            self._recent_sums[key] = self._recent_sums.get(key, 0) + size

    def today(self, key: str) -> int:
        """Bytes stored by ``key`` in the last 24 hours."""
        self._sweep()
        self._expire(key)
        return self._recent_sums.get(key, 0)

    def refusal(self, key: str, size: int, in_flight: int) -> dict[str, Any] | None:
        """The ``reason`` (and values) a ``size``-byte upload by ``key`` is refused for, if any.

        ``in_flight``: the declared sizes of ``key``'s uploads still streaming in.
        """
        if self.reservation and in_flight + size > self.reservation:
            return {"reason": "reservation", "quota": self.reservation, "used": in_flight}
        used = self._totals.get(key, 0) + in_flight
        if self.total and used + size > self.total:
            return {"reason": "quota", "quota": self.total, "used": used}
        daily = self.account_daily if key.startswith("account:") else self.guest_daily
        used = self.today(key) + in_flight
        if daily and used + size > daily:
            return {"reason": "daily_quota", "quota": daily, "used": used}
        return None

    def _expire(self, key: str) -> None:
        entries = self._recent.get(key)
        if entries is None:
            return
        cutoff = self._clock.seconds() - DAY
        while entries and entries[0][0] <= cutoff:
            self._recent_sums[key] -= entries.popleft()[1]
        if not entries:
            del self._recent[key], self._recent_sums[key]

    def _sweep(self) -> None:
        """Forget the uploaders whose last upload is a day old (at most once an hour)."""
        now = self._clock.seconds()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 3600
        for key in list(self._recent):
            self._expire(key)
