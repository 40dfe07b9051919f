"""Group commit: the writes and audit events of every waiting request are committed in one
transaction, so a burst of requests pays for one fsync and one turn of the audit log's head
lock, not one each.

A request brings a `Job`: audit events to append (a detokenize, a refusal), and/or writes to run
in the shared transaction (a tokenize's value rows, its subject's counter, its request id). The
committer (`Database.commit_jobs`) runs each job's writes in a savepoint of its own, in the
jobs' `order` (the lock order every batch shares, so two batches never wait for each other in a
circle), then appends every job's audit events to the log at once, then commits.

Leader and followers, no writer thread: a request whose job is queued while no commit is under
way commits the queue itself (it leads); requests that arrive meanwhile queue and wait, and when
the commit ends the next one still waiting leads the next commit, which takes them all. No
artificial delay. A lone request commits on its own thread without waking any other: issue 14's
budget counted the hand-offs to and from a writer thread among the context switches that cost a
single call as much as its own work.

One caller's bad request never fails another's: a job whose writes fail is rolled back to its
savepoint and fails alone (the others commit); a commit that fails for a reason other than an
unavailable database (an event a column refuses, say) is retried job by job, so only the request
that brought the bad event fails.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vault.domain.types import AuditEvent
from vault.errors import StorageUnavailable

__all__ = ["GroupCommit", "Job", "RunAlone"]


class RunAlone(Exception):
    """Set as a job's error by the committer when its writes met a lock held outside the batch
    (another process's transaction, a shred): it was rolled back to its savepoint, the batch
    went on without it, and its own request commits it in a transaction of its own, waiting for
    that lock without holding up anyone else's."""


@dataclass(eq=False, slots=True)
class Job:
    """One request's share of a group commit."""

    events: Sequence[AuditEvent] = field(default=(), repr=False)
    # Run in the batch's transaction with its connection; what it returns is the request's.
    write: Callable[[Any], object] | None = field(default=None, repr=False)
    # Jobs run in this order within a batch (a subject id: the order its lock is taken in).
    order: str = field(default="", repr=False)
    result: object = field(default=None, repr=False)
    error: BaseException | None = None
    # Committed by its own request, outside the queue: it may wait for any lock (`RunAlone`).
    alone: bool = False
    done: bool = False
    # Set when this job is committed (or failed), or when its request is to lead the next
    # commit: each waiting request is woken for itself alone, never all at once.
    wake: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def size(self) -> int:
        return len(self.events) + (0 if self.write is None else 1)


# Commits a batch in one transaction. Sets `result` of each job, or `error` of a job that failed
# alone; raises for the whole batch: StorageUnavailable fails every job, anything else has the
# jobs committed again one by one.
Commit = Callable[[Sequence[Job]], None]


class GroupCommit:
    MAX_EVENTS = 5000
    # Jobs with writes per batch, each a savepoint: PostgreSQL keeps a transaction's first 64
    # subtransactions in shared memory, and past that every snapshot taken on the server reads
    # them from pg_subtrans (the "subtransaction overflow" that slows every session).
    MAX_WRITES = 48

    def __init__(self, commit: Commit) -> None:
        self._commit = commit
        self._lock = threading.Lock()
        self._queue: list[Job] = []
        self._leading = False  # a commit is under way
        self._stopping = False

    def __repr__(self) -> str:
        return f"GroupCommit(queued={len(self._queue)}, leading={self._leading})"

    def append(self, events: Sequence[AuditEvent]) -> None:
        """Durable when it returns; raises StorageUnavailable if it could not be made so (or
        the error that made this request's own events fail)."""
        self.run(Job(events))

    def run(self, mine: Job) -> object:
        """Commit `mine` (with whatever else is waiting); its write's result, or its error."""
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
                if isinstance(mine.error, RunAlone):
                    # On this request's own thread, not as a leader: the queue moves on.
                    mine.done, mine.alone = False, True
                    self._commit_batch([mine])
                if mine.error is not None:
                    raise mine.error
                return mine.result
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

    def _take(self) -> list[Job]:
        """The queue's head, up to MAX_EVENTS events and MAX_WRITES writes (at least one job).
        Under the lock."""
        batch: list[Job] = []
        size = writes = 0
        while self._queue:
            item = self._queue[0]
            writing = item.write is not None
            if batch and (size + item.size > self.MAX_EVENTS or writes + writing > self.MAX_WRITES):
                break
            batch.append(self._queue.pop(0))
            size += item.size
            writes += writing
        return batch

    def stop(self) -> None:
        """Refuse new jobs; those already queued are committed by their own requests."""
        with self._lock:
            self._stopping = True

    def _commit_batch(self, batch: list[Job]) -> None:
        for job in batch:
            job.result, job.error = None, None
        try:
            self._commit(batch)
        except StorageUnavailable as exc:
            self._finish(batch, exc)
            return
        except Exception as exc:  # noqa: BLE001  (isolated below, job by job)
            if len(batch) == 1:
                # Not the database's fault: this request's. It fails alone, as an internal
                # error (the transport logs it with an id; its text is never sent) or as what
                # its write raised.
                self._finish(batch, exc)
                return
            for item in batch:
                self._commit_batch([item])
            return
        self._finish(batch, None)

    def _finish(self, batch: list[Job], error: BaseException | None) -> None:
        with self._lock:
            for r in batch:
                r.done = True
                if error is not None:
                    r.result, r.error = None, error
