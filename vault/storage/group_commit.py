"""Group commit of audit events: one writer thread commits the events of every waiting request
in one transaction, so a burst of requests pays for one fsync, not one each.

No artificial delay: while one commit is under way the next requests queue, and the next commit
takes them all. A commit that fails for a reason other than an unavailable database (an event a
column refuses, say) is retried request by request, so only the request that brought the bad
event fails: one caller's bad request never fails another's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from vault.domain.types import AuditEvent
from vault.errors import StorageUnavailable

__all__ = ["GroupCommit"]


Commit = Callable[[Sequence[AuditEvent]], None]


class GroupCommit:
    MAX_EVENTS = 5000

    def __init__(self, commit: Commit) -> None:
        self._commit = commit
        self._cv = threading.Condition()
        self._queue: list[tuple[Sequence[AuditEvent], Future[None]]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"GroupCommit(queued={len(self._queue)})"

    def append(self, events: Sequence[AuditEvent]) -> None:
        """Durable when it returns; raises StorageUnavailable if it could not be made so."""
        self.submit(events).result()

    def submit(self, events: Sequence[AuditEvent]) -> Future[None]:
        done: Future[None] = Future()
        with self._cv:
            if self._stopping:
                raise StorageUnavailable("the server is shutting down; retry")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit", daemon=True)
                self._thread.start()
            self._queue.append((events, done))
            self._cv.notify()
        return done

    def stop(self) -> None:
        """Commit what is queued, then stop the writer."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if not self._queue:
                    return
                batch: list[tuple[Sequence[AuditEvent], Future[None]]] = []
                size = 0
                while self._queue and size < self.MAX_EVENTS:
                    item = self._queue.pop(0)
                    batch.append(item)
                    size += len(item[0])
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[tuple[Sequence[AuditEvent], Future[None]]]) -> None:
        try:
            self._commit([e for events, _ in batch for e in events])
        except StorageUnavailable as exc:
            for _, done in batch:
                done.set_exception(exc)
            return
        except Exception as exc:  # noqa: BLE001  (isolated below, request by request)
            if len(batch) == 1:
                # Not the database's fault: this request's events. It fails alone, as an
                # internal error (the transport logs it with an id; its text is never sent).
                batch[0][1].set_exception(exc)
                return
            for item in batch:
                self._commit_batch([item])
            return
        for _, done in batch:
            done.set_result(None)
