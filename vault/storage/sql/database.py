"""The database the SQL adapters share: the engine, transactions, retries, locks, errors.

Every statement is built by SQLAlchemy with bound parameters; the engine hides parameters from
error messages (`hide_parameters=True`), so no ciphertext or id reaches a log through them.

Concurrency, in one place:
- every write is one transaction, retried whole (a bounded number of times) when PostgreSQL
  reports a deadlock or a serialization failure;
- SQLite write transactions start with BEGIN IMMEDIATE: they take the database's single write
  lock before their first read, so a check inside them cannot be overtaken by another writer;
  before that they queue at the `WriteGate` (a lock in the process, a `flock` between processes),
  which wakes the next writer at once where SQLite's busy handler would sleep;
- on PostgreSQL every write under a subject locks the subject's row first (FOR SHARE to add or
  change values, FOR UPDATE to shred): one lock order, so shred and tokenize never deadlock,
  and a shred waits for the writes already under way and is never undone by them;
- creating a subject inserts its row and then, in the same transaction, refuses the id if it
  was shredded: an insert blocked by a shred in progress sees the shred's record once it runs;
- the group commit (`commit_jobs`) runs the writes of many requests in one transaction, each in
  a savepoint, in subject order, and appends all their audit events last: the audit head is the
  last lock every write transaction takes, batch or not, so no two wait for each other in a
  circle.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from operator import attrgetter
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, bindparam, create_engine, event, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry

from vault.crypto.bindings import BindingSeal
from vault.domain.naming import SubjectNames
from vault.domain.ports import NO_TELEMETRY, Telemetry
from vault.domain.stores import WriteOutcome
from vault.domain.types import AuditEvent, SubjectId
from vault.errors import ConfigurationError, StorageUnavailable
from vault.storage.group_commit import GroupCommit, Job, RunAlone
from vault.storage.sql import rows
from vault.storage.sql.prepared import prepared
from vault.storage.tables import subjects

__all__ = [
    "TX_ATTEMPTS",
    "Answer",
    "Database",
    "WriteGate",
    "make_engine",
    "redact_url",
    "sqlstate",
    "unavailable",
]


# Built once: every write of a subject's data runs it (issue 14's profile of a tokenize: building
# it on every call was 4% of the Python samples).
_LOCK_SUBJECT = (
    select(subjects.c.subject_id, subjects.c.state)
    .where(subjects.c.subject_id == bindparam("subject"))
    .with_for_update()
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATEs after which PostgreSQL has rolled the transaction back and a retry may succeed:
# serialization_failure and deadlock_detected.
_RETRYABLE = frozenset({"40001", "40P01"})
TX_ATTEMPTS = 8
_GATE_TIMEOUT = 30.0  # seconds, as SQLite's own busy timeout
# A job's writes in a batch: rolled back to here alone when they fail. On the driver's cursor
# (vault.storage.sql.prepared): SQLAlchemy's nested transactions cost more than the statement.
_SAVEPOINT = text("SAVEPOINT pdvault_job")
_RELEASE = text("RELEASE SAVEPOINT pdvault_job")
_ROLLBACK_TO = text("ROLLBACK TO SAVEPOINT pdvault_job")
# Errors of the batch, not of a job: the transaction is retried whole, or every job fails.
_BATCH_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
# PostgreSQL: how long a job of a batch waits for a row lock held outside the batch before it
# is set aside to run alone (`RunAlone`). Longer than another process's batch holds its locks
# (a few ms), short enough that a held lock (a shred, a twin request's transaction) never
# holds up a whole process's writes. The audit head is waited for as long as it takes.
_JOB_LOCK_WAIT = text("SET LOCAL lock_timeout = '50ms'")
_ANY_LOCK_WAIT = text("SET LOCAL lock_timeout TO DEFAULT")
_LOCK_NOT_AVAILABLE = "55P03"


def make_engine(url: str, pool_size: int = 16) -> Engine:
    """An engine configured for pdvault: hidden parameters, SQLite pragmas, pre-ping."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            hide_parameters=True,
            connect_args={"check_same_thread": False, "timeout": 30},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            # pdvault says when a transaction begins (below), not the driver.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed audit record survives a power loss, not only a crash.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # Deleted and overwritten content is zeroed in the file: a corrected or shredded
            # ciphertext does not linger in free pages (the write-ahead log is checkpointed and
            # truncated after a shred: see SqlSubjectStore.scrub).
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                # The write lock first: no other writer can commit between our checks and
                # our writes (a deferred BEGIN would read an older snapshot, then fail).
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # A connection per server thread, kept: opening PostgreSQL backends under load showed in the
    # profile, and so did pre-pinging each checkout. Connections are recycled instead, and a
    # dropped one surfaces as UNAVAILABLE, which clients retry.
    return create_engine(
        url,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=4,
        pool_recycle=1800,
        pool_use_lifo=True,
    )


def redact_url(url: str) -> str:
    """The database URL with its password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)


class Answer(Exception):
    """Not an error: rolls the transaction back and carries an outcome out of it."""

    def __init__(self, outcome: WriteOutcome) -> None:
        super().__init__(outcome.name)
        self.outcome = outcome


class WriteGate:
    """SQLite's writers, in line: this process's threads at a lock, the processes sharing the
    file at an exclusive `flock` of `<database>.write-lock` beside it (issue 14).

    Without it they met at SQLite's write lock, where a writer that finds it taken sleeps in
    SQLite's busy handler (1 to 100 ms a retry) however soon the lock is free: the p99 swings
    of the soaks. Here the next writer is woken the moment the last one ends, in this process
    and in the others. Reentrant: a write inside a write of the same thread behaves as before
    (the file lock is taken by the outermost only). A thread that waits `_GATE_TIMEOUT` s for
    the others of its process gets UNAVAILABLE; the file lock is held only by a process in a
    write transaction, and a process that dies lets it go with its file descriptors."""

    def __init__(self, lock_file: str | None) -> None:
        self._lock = threading.RLock()
        self._lock_file = lock_file
        self._fd: int | None = None
        self._depth = 0  # changed only by the thread holding `_lock`

    def __repr__(self) -> str:
        return f"WriteGate(depth={self._depth})"

    @classmethod
    def of(cls, engine: Engine) -> WriteGate | None:
        """The gate of an SQLite engine (with no file lock for an in-memory database), or None."""
        if engine.dialect.name != "sqlite":
            return None
        path = engine.url.database
        in_memory = not path or path == ":memory:" or path.startswith("file::memory:")
        return cls(None if in_memory else f"{path}.write-lock")

    def acquire(self) -> None:
        if not self._lock.acquire(timeout=_GATE_TIMEOUT):
            raise StorageUnavailable("the database is busy; retry later")
        if self._depth == 0 and self._lock_file is not None:
            try:
                if self._fd is None:
                    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                    self._fd = os.open(self._lock_file, flags, 0o600)
                    weakref.finalize(self, os.close, self._fd)
                fcntl.flock(self._fd, fcntl.LOCK_EX)  # the GIL is released while it waits
            except OSError as exc:
                self._lock.release()
                log.warning("the write lock file cannot be locked: %s", type(exc).__name__)
                raise StorageUnavailable("the database is unavailable; retry later") from None
        self._depth += 1

    def release(self) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()


class Database:
    """One engine, shared by the adapters of every port. Safe to share between threads."""

    def __init__(
        self,
        engine: Engine,
        telemetry: Telemetry = NO_TELEMETRY,
        names: SubjectNames | None = None,
    ) -> None:
        self.engine = engine
        self._names = names
        self._bindings = BindingSeal(names) if names is not None else None
        # A span per transaction and per read, inside a call (the adapters share it).
        self.telemetry = telemetry
        self.dialect = engine.dialect.name
        # Single-statement reads need no transaction: on PostgreSQL, autocommit saves the
        # BEGIN and ROLLBACK round trips; SQLite's driver opens none for a SELECT anyway.
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._write_gate = WriteGate.of(engine)
        self._group: GroupCommit | None = None

    def __repr__(self) -> str:
        return f"Database({self.dialect})"

    @property
    def names(self) -> SubjectNames:
        """The keyed digest of subject ids (`subjects.subject_digest`, `shredded_subjects`)."""
        if self._names is None:
            raise ConfigurationError("subject names are not configured (no naming secret)")
        return self._names

    @property
    def bindings(self) -> BindingSeal:
        """The sealed subject binding of documents stored before keyed digests (under a key
        derived from the naming secret)."""
        if self._bindings is None:
            raise ConfigurationError("subject names are not configured (no naming secret)")
        return self._bindings

    def use_names(self, names: SubjectNames) -> None:
        """Set at wiring, once the key provider gave the naming secret, before any write."""
        self._names = names
        self._bindings = BindingSeal(names)

    def use_group_commit(self) -> None:
        """Commit concurrent requests' writes and audit events together (a serving process;
        not the one-shot commands). Set at wiring, before any write."""
        self._group = GroupCommit(self.commit_jobs)

    @property
    def group(self) -> GroupCommit | None:
        return self._group

    def write(
        self,
        body: Callable[[Connection], T],
        *,
        events: Sequence[AuditEvent] = (),
        order: str | None = None,
    ) -> T:
        """Run `body` in one transaction, then append `events` to the audit log in it; retried
        whole after a deadlock or serialization failure. `body` may raise `Answer` to roll back
        and return an outcome. With an `order` (the subject whose lock `body` takes) it joins
        the group commit, where there is one: its transaction is shared with other requests'
        (each `body` in a savepoint of its own) and so are the commit and the audit head."""
        with self.telemetry.span("db.write"):  # in the call's trace: its wait and its commit
            if order is not None and self._group is not None:
                return cast(T, self._group.run(Job(events, body, order)))
            if not events:
                return self._write(body)

            def with_audit(conn: Connection) -> T:
                result = body(conn)
                rows.insert_audit(conn, events)
                return result

            return self._write(with_audit)

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Durable when it returns: in the group commit where there is one."""
        if self._group is not None:
            self._group.append(events)
        else:
            self.write(lambda conn: rows.insert_audit(conn, events))

    def commit_jobs(self, jobs: Sequence[Job]) -> None:
        """One transaction for a batch of the group commit: each job's writes in a savepoint,
        in the jobs' order; a job whose writes raise is rolled back alone and gets the error;
        then every remaining job's events, appended at once; then the commit. An error of the
        database itself fails (or retries) the whole batch."""
        ordered = sorted(jobs, key=attrgetter("order"))
        single = len(ordered) == 1
        appended = 0
        # A leader's batch waits for a lock held outside it only so long (PostgreSQL).
        bounded = (
            self.dialect == "postgresql"
            and not (single and ordered[0].alone)
            and any(j.write is not None for j in ordered)
        )

        def batch(conn: Connection) -> None:
            nonlocal appended
            events: list[AuditEvent] = []
            if bounded:
                prepared(conn.dialect, _JOB_LOCK_WAIT).run(conn, {})
            for job in ordered:
                job.result, job.error = None, None
                if job.write is not None:
                    if single:  # nothing to keep apart: its error fails the transaction
                        job.result = self._run_write(conn, job.write, bounded)
                    elif not self._in_savepoint(conn, job, job.write, bounded):
                        continue
                events.extend(job.events)
            if bounded:
                prepared(conn.dialect, _ANY_LOCK_WAIT).run(conn, {})
            rows.insert_audit(conn, events)
            appended = len(events)

        started = time.perf_counter()
        self._write(batch)  # (on the leader, in no call's trace: the batch serves many)
        if appended:
            # One batch of the group commit, however many requests it serves.
            self.telemetry.audit_commit(time.perf_counter() - started, appended)

    @staticmethod
    def _run_write(
        conn: Connection, write: Callable[[Connection], object], bounded: bool
    ) -> object:
        """A job's writes; `RunAlone` if a bounded wait for a row lock ran out."""
        try:
            return write(conn)
        except sa_exc.OperationalError as exc:
            if bounded and sqlstate(exc) == _LOCK_NOT_AVAILABLE:
                raise RunAlone from None  # rolled back: its request commits it, waiting
            raise

    @classmethod
    def _in_savepoint(
        cls, conn: Connection, job: Job, write: Callable[[Connection], object], bounded: bool
    ) -> bool:
        """Run the job's writes in a savepoint; False (rolled back, its error kept: `RunAlone`
        for a lock held outside the batch) if they raised. The database's own errors are the
        batch's: raised on."""
        prepared(conn.dialect, _SAVEPOINT).run(conn, {})
        try:
            job.result = cls._run_write(conn, write, bounded)
        except _BATCH_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001  (this job's alone: Answer, a refused row)
            prepared(conn.dialect, _ROLLBACK_TO).run(conn, {})
            prepared(conn.dialect, _RELEASE).run(conn, {})
            job.result, job.error = None, exc
            return False
        prepared(conn.dialect, _RELEASE).run(conn, {})
        return True

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Held around each write transaction on SQLite (`WriteGate`). Nothing on PostgreSQL,
        whose writers wait on row locks."""
        gate = self._write_gate
        if gate is None:
            yield
            return
        gate.acquire()
        try:
            yield
        finally:
            gate.release()

    def _write(self, body: Callable[[Connection], T]) -> T:
        pause = 0.002
        for attempt in range(1, TX_ATTEMPTS + 1):
            try:
                with self.writing(), self.engine.begin() as conn:
                    return body(conn)
            except sa_exc.OperationalError as exc:
                if sqlstate(exc) not in _RETRYABLE or attempt == TX_ATTEMPTS:
                    raise unavailable(exc) from None
                log.info("transaction retried after %s", sqlstate(exc))
            except (sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
                raise unavailable(exc) from None
            time.sleep(random.uniform(0, pause))  # noqa: S311  (jitter, not a secret)
            pause = min(pause * 2, 0.2)
        raise AssertionError("unreachable")

    def outcome(
        self,
        body: Callable[[Connection], None],
        *,
        events: Sequence[AuditEvent] = (),
        order: str | None = None,
    ) -> WriteOutcome:
        """`write`, for a body that either completes (DONE) or raises an `Answer`."""

        def run(conn: Connection) -> WriteOutcome:
            body(conn)
            return WriteOutcome.DONE

        try:
            return self.write(run, events=events, order=order)
        except Answer as answer:
            return answer.outcome

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in autocommit: each statement is its own transaction. For reads, and
        for a write that is one atomic statement (an item quota's conditional upsert)."""
        try:
            with self.telemetry.span("db.read"), self._reader.connect() as conn:
                yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
            raise unavailable(exc) from None

    def insert_ignore(self, table: Any) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        if self.dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing()
        raise NotImplementedError(self.dialect)

    def lock_subject(self, conn: Connection, subject: SubjectId) -> Any:
        """The subject's row, locked exclusively (on SQLite the transaction holds the write lock).

        Always exclusive, never FOR SHARE: every write transaction ends by locking the audit
        log's head, so it holds its subject lock for as long as the queue of writers ahead of it
        takes; overlapping FOR SHARE holders then keep a row share-locked without a break, and
        PostgreSQL lets a new share locker in past a waiting FOR UPDATE, so a shred starved for
        longer than its deadline under steady tokenize traffic (tests/integration/
        test_attack_replicas.py). Exclusive lockers queue fairly; writers of one subject already
        serialized on its data key's counter, so nothing runs less in parallel."""
        found = prepared(conn.dialect, _LOCK_SUBJECT).all(conn, {"subject": subject})
        return found[0] if found else None

    def ping(self) -> None:
        """One trivial round trip; raises StorageUnavailable if the database does not answer."""
        with self.read() as conn:
            conn.execute(select(1)).scalar()


def sqlstate(exc: sa_exc.DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def unavailable(exc: Exception) -> StorageUnavailable:
    """A lost or unreachable database is StorageUnavailable (retryable), whatever the call."""
    orig = getattr(exc, "orig", None) or exc
    # The driver's text may name hosts or files; log only the class.
    log.warning("database unavailable: %s", type(orig).__name__)
    return StorageUnavailable("the database is unavailable; retry later")
