"""Group commit of audit events: the events of every waiting request are committed in one
transaction, so a burst of requests pays for one fsync and one turn of the log's head lock, not
one each.

Leader and followers, no writer thread: a request whose events are queued while no commit is
under way commits the queue itself (it leads); requests that arrive meanwhile queue and wait,
and when the commit ends the next one still waiting leads the next commit, which takes them
all. No artificial delay. A lone request commits on its own thread without waking any other:
issue 14's budget counted the hand-offs to and from a writer thread among the context switches
that cost a single call as much as its own work.

A commit that fails for a reason other than an unavailable database (an event a column refuses,
say) is retried request by request, so only the request that brought the bad event fails: one
caller's bad request never fails another's.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vault.domain.types import AuditEvent
from vault.errors import StorageUnavailable

__all__ = ["GroupCommit"]


Commit = Callable[[Sequence[AuditEvent]], None]


@dataclass(eq=False, slots=True)
class _Request:
    events: Sequence[AuditEvent] = field(repr=False)
    done: bool = False
    error: BaseException | None = None
    # Set when this request's events are committed (or failed), or when it is to lead the
    # next commit: each waiting request is woken for itself alone, never all at once.
    wake: threading.Event = field(default_factory=threading.Event, repr=False)


class GroupCommit:
    MAX_EVENTS = 5000

    def __init__(self, commit: Commit) -> None:
        self._commit = commit
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._leading = False  # a commit is under way
        self._stopping = False

    def __repr__(self) -> str:
        return f"GroupCommit(queued={len(self._queue)}, leading={self._leading})"

    def append(self, events: Sequence[AuditEvent]) -> None:
        """Durable when it returns; raises StorageUnavailable if it could not be made so (or
        the error that made this request's own events fail)."""
        mine = _Request(events)
        with self._lock:
            if self._stopping:
                raise StorageUnavailable("the server is shutting down; retry")
            self._queue.append(mine)
        while True:
            with self._lock:
                if not mine.done and self._leading:
                    mine.wake.clear()
                    waiting = True
                else:
                    waiting = False
            if waiting:
                mine.wake.wait()
                continue
            if mine.done:
                if mine.error is not None:
                    raise mine.error
                return
            with self._lock:
                if self._leading or mine.done:  # another request led meanwhile: look again
                    continue
                self._leading = True
                batch = self._take()
            try:
                # In an empty context: the batch serves many calls, and its spans belong to
                # none of them (as they did on the writer thread this replaced).
                contextvars.Context().run(self._commit_batch, batch)
            finally:
                with self._lock:
                    for r in batch:  # only if the commit itself was interrupted
                        if not r.done:
                            r.done = True
                            r.error = StorageUnavailable("the audit commit did not complete; retry")
                    self._leading = False
                    successor = self._queue[0] if self._queue else None
                for r in batch:
                    r.wake.set()
                if successor is not None:  # the oldest still waiting leads the next commit
                    successor.wake.set()

    def _take(self) -> list[_Request]:
        """The queue's head, up to MAX_EVENTS events (at least one request). Under the lock."""
        batch: list[_Request] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].events) <= self.MAX_EVENTS):
            item = self._queue.pop(0)
            batch.append(item)
            size += len(item.events)
        return batch

    def stop(self) -> None:
        """Refuse new appends; those already queued are committed by their own requests."""
        with self._lock:
            self._stopping = True

    def _commit_batch(self, batch: list[_Request]) -> None:
        try:
            self._commit([e for r in batch for e in r.events])
        except StorageUnavailable as exc:
            self._finish(batch, exc)
            return
        except Exception as exc:  # noqa: BLE001  (isolated below, request by request)
            if len(batch) == 1:
                # Not the database's fault: this request's events. It fails alone, as an
                # internal error (the transport logs it with an id; its text is never sent).
                self._finish(batch, exc)
                return
            for item in batch:
                self._commit_batch([item])
            return
        self._finish(batch, None)

    def _finish(self, batch: list[_Request], error: BaseException | None) -> None:
        with self._lock:
            for r in batch:
                r.done = True
                r.error = error
