"""The transfer queue: one job at a time, and the interrupted ones resumed.

``TransferQueue`` runs jobs (``transfer.Upload``, ``download.Download``)
one after another, each on a fresh ``/attach`` connection made with the
session key of the moment. A job that the network cut short is not a
failure: the queue puts its continuation (``Job.again()``) first in line,
says so once, and starts it after a back-off while the chat connection is
up, or as soon as it is back (``resume``, on ``welcome``: a new session key)
after an outage. So an upload or download goes on from where it stopped
without the user typing anything. Attempts that move no byte are counted,
and after ``MAX_TRIES`` in a row the job fails, so a server that refuses
the transfer for good is not hammered forever. ``/cancel`` ends the running
job, or the one waiting to resume.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Factory

from client_tui.transfer import Job, TransferFailed, TransferProtocol

#: Attempts in a row that move no byte before a job is given up.
MAX_TRIES = 6
#: The first back-off before trying an interrupted job again (doubled each time).
FIRST_DELAY = 0.5
MAX_DELAY = 15.0


def percent(done: int, total: int) -> int:
    return 100 if total <= 0 else min(100, done * 100 // total)


class TransferQueue:
    """Runs jobs one at a time; each gets its own attach connection."""

    def __init__(
        self,
        endpoint: Callable[[], IStreamClientEndpoint],
        session_key: Callable[[], str | None],
        report: Callable[[str | None, str], None],
        changed: Callable[[], None] = lambda: None,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.endpoint = endpoint
        self.session_key = session_key
        self.report = report
        self.changed = changed
        self.current: Job | None = None
        self.pending: deque[Job] = deque()
        #: given each job: waits for the server's current room to be the one given
        self.gate: Callable[[str | None], defer.Deferred[None]] = lambda room: defer.succeed(None)
        #: the back-off before the first pending job (an interrupted one) is tried again
        self.retry: IDelayedCall | None = None

    def add(self, job: Job) -> None:
        self.pending.append(job)
        self._next()

    def _waiting(self) -> bool:
        return self.retry is not None and self.retry.active()

    def _next(self) -> None:
        if self.current is not None or not self.pending or self._waiting():
            self.changed()
            return
        key = self.session_key()
        if key is None:
            self.changed()  # offline: the jobs wait for ``resume``
            return
        job = self.current = self.pending.popleft()
        job.on_end = self._ended
        job.gate = self.gate
        job.notify = lambda text: self.report(None, text)
        try:
            prepared = job.prepare()
        except (OSError, TransferFailed) as e:
            msg = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else str(e)
            job.fail(msg)
            return
        d = defer.succeed(None) if prepared is None else prepared
        d.addCallback(lambda _: self._connect(job, key))
        d.addErrback(lambda f: job.fail(f.getErrorMessage()) if not job.finished else None)
        self.changed()

    def _connect(self, job: Job, key: str) -> Any:
        if job.finished:
            return None
        factory = Factory.forProtocol(lambda: TransferProtocol(job, key))
        d = self.endpoint().connect(factory)
        d.addErrback(lambda f: job.interrupt(f"cannot connect: {f.getErrorMessage()}"))
        return d

    def _ended(self, job: Job, error: str | None, message: str) -> None:
        if job is self.current:
            self.current = None
        if job.interrupted:
            self._interrupted(job, error or "interrupted")
        elif error is not None:
            self.report(error, f"{job.verb} {job.label} failed: {error}")
        else:
            self.report(None, message)
        self._next()

    def _interrupted(self, job: Job, why: str) -> None:
        """Put the job's continuation first in line, to start after a back-off."""
        follow = job.again()
        tries = 0 if job.moved() else job.attempt + 1
        if follow is None or tries >= MAX_TRIES:
            gave_up = f" (gave up after {tries} tries)" if follow is not None else ""
            self.report(why, f"{job.verb} {job.label} failed: {why}{gave_up}")
            return
        follow.attempt = tries
        self.pending.appendleft(follow)
        if job.again_now:
            return  # the job knows where to go on from: straight away
        if job.moved() or job.attempt == 0:  # once per interruption, not per retry
            where = f" at {percent(job.done, job.total)}%" if job.moving else ""
            self.report(
                why,
                f"{job.verb} {job.label} interrupted{where} ({why}); "
                "it will go on from there by itself.",
            )
        if self.session_key() is not None:
            delay = min(MAX_DELAY, FIRST_DELAY * 2**tries)
            self.retry = self.reactor.callLater(delay, self._retry)

    def _retry(self) -> None:
        self.retry = None
        self._next()

    def resume(self) -> None:
        """The chat connection is back (a new session key): go on with the jobs."""
        self._stop_waiting()
        self._next()

    def interrupt_all(self, why: str) -> None:
        """The chat connection is gone: the running job stops, to resume with the rest."""
        self._stop_waiting()
        if self.current is not None:
            self.current.interrupt(why)
        self.changed()

    def _stop_waiting(self) -> None:
        if self._waiting():
            assert self.retry is not None
            self.retry.cancel()
        self.retry = None

    def cancel(self) -> bool:
        """Abort the running job (or the one waiting to resume); False if there is none."""
        if self.current is not None:
            self.current.cancel()
            return True
        if self.pending and (self._waiting() or self.session_key() is None):
            job = self.pending.popleft()
            self._stop_waiting()
            self.report("cancelled", f"{job.verb} {job.label} cancelled")
            self._next()
            return True
        return False

    def abort_all(self, reason: str) -> None:
        self._stop_waiting()
        pending, self.pending = list(self.pending), deque()
        for job in pending:
            job.on_end = lambda *a: None
            job.finished = True
        if self.current is not None:
            self.current.cancelled = True
            self.current.fail(reason)

    def status(self) -> str | None:
        if self.current is not None:
            more = f" (+{len(self.pending)} queued)" if self.pending else ""
            return self.current.status() + more
        if not self.pending or not (self._waiting() or self.session_key() is None):
            return None
        job, more = self.pending[0], ""
        if len(self.pending) > 1:
            more = f" (+{len(self.pending) - 1} queued)"
        if self.retry is not None and self._waiting():
            when = f"in {max(0, math.ceil(self.retry.getTime() - self.reactor.seconds()))}s"
        else:
            when = "once reconnected"
        return f"{job.verb} {job.label} resumes {when}{more}"
