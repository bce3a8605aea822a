"""Liveness: pings for silent JSON connections, and the optional idle limit.

A JSON connection silent for ``ping_interval`` gets a ``ping``; silent for
``ping_timeout`` more, it is dead and cut. A participant silent for
``idle_timeout`` (0 = never) is disconnected with an ``idle`` error. Text
connections get no pings. A connection that is busy on the server's side (an
upload streaming in, a download going out) counts as active: it could not
answer a ping mid-file.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

from chat import events as ev
from chat.config import LimitSettings
from chat.wire import State


class Watched(Protocol):
    state: State
    mode: str

    def busy(self) -> bool:
        """Bytes are moving for this connection: as good as input."""

    def reply(self, event: ev.Event) -> None: ...

    def close(self, reason: str, *, say: ev.Event | None = None, abort: bool = False) -> None: ...


class Liveness:
    """One connection's silence, measured on ``clock``."""

    __slots__ = ("_call", "_clock", "_last_input", "_limits", "_owner", "_ping_sent_at")

    def __init__(self, clock: IReactorTime, limits: LimitSettings, owner: Watched) -> None:
        self._clock = clock
        self._limits = limits
        self._owner = owner
        self._last_input = clock.seconds()
        self._ping_sent_at: float | None = None
        self._call: Any = None

    def input(self) -> None:
        """The client sent something."""
        self._last_input = self._clock.seconds()

    def start(self) -> None:
        """Watch for silence where it matters (again after a mode change)."""
        if self._call is None and self._watching():
            self._schedule(self._limits.ping_interval)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _watching(self) -> bool:
        return self._pinged() or bool(self._limits.idle_timeout)

    def _pinged(self) -> bool:
        return self._owner.mode == "json" and self._owner.state is not State.CLOSED

    def _idle_applies(self) -> bool:
        return self._owner.state is State.CHAT  # people, not transfer connections

    def _schedule(self, delay: float) -> None:
        if delay > 0:
            self._call = self._clock.callLater(delay, self._check)

    def _check(self) -> None:
        self._call = None
        if not self._watching():
            return
        owner, limits = self._owner, self._limits
        now = self._clock.seconds()
        if owner.busy():
            self._last_input = now
        silent = now - self._last_input
        idle_limit = limits.idle_timeout
        if idle_limit and self._idle_applies() and silent >= idle_limit:
            owner.close("idle timeout", say=ev.error("idle", limit=idle_limit))
            return
        grace = limits.ping_timeout
        if self._ping_sent_at is not None and self._last_input < self._ping_sent_at:
            if now - self._ping_sent_at >= grace:
                owner.close("ping timeout", abort=True)
                return
            self._schedule(self._ping_sent_at + grace - now)
            return
        self._ping_sent_at = None
        if self._pinged() and silent >= limits.ping_interval:
            self._ping_sent_at = now
            owner.reply(ev.Ping(str(int(now))))
            self._schedule(grace)
            return
        wait = limits.ping_interval - silent
        if idle_limit and self._idle_applies():
            wait = min(wait, idle_limit - silent)
        self._schedule(max(wait, 0.01))
