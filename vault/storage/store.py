"""The `Store` port over SQLAlchemy Core: SQLite (embedded default) and PostgreSQL (production).

Every statement is built by SQLAlchemy with bound parameters; the engine hides parameters from
error messages (`hide_parameters=True`), so no ciphertext or id reaches a log through them.

Concurrency, in one place:
- every write is one transaction, retried whole (a bounded number of times) when PostgreSQL
  reports a deadlock or a serialization failure;
- SQLite write transactions start with BEGIN IMMEDIATE: they take the database's single write
  lock before their first read, so a check inside them cannot be overtaken by another writer;
- on PostgreSQL every write under a subject locks the subject's row first (FOR SHARE to add or
  change values, FOR UPDATE to shred): one lock order, so shred and tokenize never deadlock,
  and a shred waits for the writes already under way and is never undone by them;
- creating a subject inserts its row and then, in the same transaction, refuses the id if it
  was shredded: an insert blocked by a shred in progress sees the shred's record once it runs.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    LargeBinary,
    String,
    bindparam,
    cast,
    create_engine,
    event,
    false,
    func,
    insert,
    null,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry

from vault.domain.ports import (
    ApiKeyRecord,
    Lookup,
    ShreddedRecord,
    ShredResult,
    WriteOutcome,
)
from vault.domain.types import (
    Action,
    AuditEvent,
    CallerName,
    Category,
    IdempotencyRecord,
    LegalBasis,
    Outcome,
    Purpose,
    StoredDataKey,
    StoredValue,
    SubjectId,
    SubjectRecord,
    SubjectState,
    Token,
    TokenFormat,
    View,
    WrappedKey,
    anonymized_subject,
    subject_digest,
)
from vault.errors import StorageUnavailable
from vault.storage.group_commit import GroupCommit
from vault.storage.tables import (
    api_keys,
    audit_events,
    consents,
    data_keys,
    idempotency_keys,
    kek_checks,
    shredded_subjects,
    shredded_tokens,
    subjects,
    token_values,
)

__all__ = ["Engine", "SqlStore", "make_engine", "redact_url"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# PostgreSQL channel on which a shred tells every pdvault process to drop the subject's key.
SHRED_CHANNEL = "pdvault_shred"

# SQLSTATEs after which PostgreSQL has rolled the transaction back and a retry may succeed:
# serialization_failure and deadlock_detected.
_RETRYABLE = frozenset({"40001", "40P01"})
TX_ATTEMPTS = 8


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
            # truncated after a shred: see SqlStore.scrub).
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


class _Answer(Exception):
    """Not an error: rolls the transaction back and carries an outcome out of it."""

    def __init__(self, outcome: WriteOutcome) -> None:
        super().__init__(outcome.name)
        self.outcome = outcome


class SqlStore:
    """The `Store` port. Safe to share between threads (one connection per operation)."""

    def __init__(self, engine: Engine, group_commit: bool = True) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._audit = GroupCommit(self._commit_audit) if group_commit else None
        # Single-statement reads need no transaction: on PostgreSQL, autocommit saves the
        # BEGIN and ROLLBACK round trips; SQLite's driver opens none for a SELECT anyway.
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")

    def __repr__(self) -> str:
        return f"SqlStore({self._dialect})"

    @property
    def dialect(self) -> str:
        return self._dialect

    def close(self) -> None:
        if self._audit is not None:
            self._audit.stop()

    # -- transactions ---------------------------------------------------------------------------

    def _write(self, body: Callable[[Connection], T]) -> T:
        """Run `body` in one transaction; retried whole after a deadlock or serialization
        failure. `body` may raise `_Answer` to roll back and return an outcome."""
        pause = 0.002
        for attempt in range(1, TX_ATTEMPTS + 1):
            try:
                with self._engine.begin() as conn:
                    return body(conn)
            except sa_exc.OperationalError as exc:
                if _sqlstate(exc) not in _RETRYABLE or attempt == TX_ATTEMPTS:
                    raise _unavailable_error(exc) from None
                log.info("transaction retried after %s", _sqlstate(exc))
            except (sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
                raise _unavailable_error(exc) from None
            time.sleep(random.uniform(0, pause))  # noqa: S311  (jitter, not a secret)
            pause = min(pause * 2, 0.2)
        raise AssertionError("unreachable")

    def _outcome(self, body: Callable[[Connection], None]) -> WriteOutcome:
        def run(conn: Connection) -> WriteOutcome:
            body(conn)
            return WriteOutcome.DONE

        try:
            return self._write(run)
        except _Answer as answer:
            return answer.outcome

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._reader.connect() as conn:
                yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
            raise _unavailable_error(exc) from None

    def _insert_ignore(self, table: Any) -> Any:
        if self._dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        if self._dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing()
        raise NotImplementedError(self._dialect)

    def _lock_subject(self, conn: Connection, subject: SubjectId, exclusive: bool) -> Any:
        """The subject's row, locked (on SQLite the transaction holds the write lock)."""
        stmt = select(subjects.c.subject_id, subjects.c.state).where(
            subjects.c.subject_id == subject
        )
        return conn.execute(stmt.with_for_update(read=not exclusive)).first()

    def ping(self) -> None:
        """One trivial round trip; raises StorageUnavailable if the database does not answer."""
        with self._read() as conn:
            conn.execute(select(1)).scalar()

    # -- reads ----------------------------------------------------------------------------------

    def data_keys(self, subject_ids: Collection[SubjectId]) -> dict[SubjectId, StoredDataKey]:
        with self._read() as conn:
            rows = conn.execute(_DATA_KEYS, {"ids": list(subject_ids)}).all()
        return {SubjectId(r.subject_id): _data_key(r) for r in rows}

    def lookup(self, tokens: Collection[Token], purpose: Purpose | None = None) -> Lookup:
        with self._read() as conn:
            rows = conn.execute(_LOOKUP, {"tokens": list(tokens), "purpose": purpose or ""}).all()
        found = Lookup({}, {}, {}, {})
        for r in rows:
            if r.shredded:
                found.shredded[Token(r.token)] = Category(r.category)
                continue
            subject = SubjectId(r.subject_id)
            found.values[Token(r.token)] = StoredValue(
                Token(r.token),
                subject,
                Category(r.category),
                TokenFormat(r.token_format),
                bytes(r.ciphertext),
            )
            found.keys[subject] = _data_key(r)
            found.consent[subject] = None if r.granted is None else bool(r.granted)
        return found

    def shred_receipt(self, digest: str) -> ShreddedRecord | None:
        stmt = select(shredded_subjects).where(shredded_subjects.c.subject_digest == digest)
        with self._read() as conn:
            r = conn.execute(stmt).first()
        return None if r is None else _receipt(r)

    def subject_record(self, subject: SubjectId) -> SubjectRecord | None:
        stmt = (
            select(
                subjects.c.state,
                subjects.c.state_changed_at,
                consents.c.purpose,
                consents.c.granted,
            )
            .outerjoin(consents, consents.c.subject_id == subjects.c.subject_id)
            .where(subjects.c.subject_id == subject)
        )
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        if not rows:
            return None
        return SubjectRecord(
            subject,
            SubjectState(rows[0].state),
            {Purpose(r.purpose): bool(r.granted) for r in rows if r.purpose is not None},
            rows[0].state_changed_at,
        )

    def subject_values(self, subject: SubjectId) -> list[tuple[StoredValue, datetime]]:
        stmt = (
            select(token_values)
            .where(token_values.c.subject_id == subject)
            .order_by(token_values.c.created_at, token_values.c.token)
        )
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [
            (
                StoredValue(
                    Token(r.token),
                    subject,
                    Category(r.category),
                    TokenFormat(r.token_format),
                    bytes(r.ciphertext),
                ),
                r.created_at,
            )
            for r in rows
        ]

    def subject_audit(self, subject: SubjectId) -> list[AuditEvent]:
        named = anonymized_subject(subject_digest(subject))
        stmt = (
            select(audit_events)
            .where(audit_events.c.subject_id == named)
            .order_by(audit_events.c.id)
        )
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [_audit_event(r) for r in rows]

    def subjects_with_digests(self, digests: Collection[str]) -> list[SubjectId]:
        stmt = select(subjects.c.subject_id).where(
            subjects.c.subject_digest.in_(bindparam("digests", expanding=True))
        )
        with self._read() as conn:
            return [SubjectId(s) for s in conn.execute(stmt, {"digests": list(digests)}).scalars()]

    def idempotency(self, caller: CallerName, request_id: str) -> IdempotencyRecord | None:
        stmt = select(idempotency_keys).where(
            idempotency_keys.c.caller == caller, idempotency_keys.c.request_id == request_id
        )
        with self._read() as conn:
            r = conn.execute(stmt).first()
        if r is None:
            return None
        pairs = json.loads(r.response)
        return IdempotencyRecord(
            caller=CallerName(r.caller),
            request_id=r.request_id,
            subject=SubjectId(r.subject_id),
            fingerprint=bytes(r.fingerprint),
            tokens=tuple((Token(t), Category(c)) for t, c in pairs),
            created_at=r.created_at,
        )

    def api_key(self, key_id: str) -> ApiKeyRecord | None:
        with self._read() as conn:
            r = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
        return None if r is None else _api_key(r)

    def api_keys(self) -> list[ApiKeyRecord]:
        with self._read() as conn:
            return [_api_key(r) for r in conn.execute(select(api_keys))]

    def callers_with_keys(self) -> set[CallerName]:
        stmt = select(api_keys.c.caller).where(api_keys.c.revoked_at.is_(None)).distinct()
        with self._read() as conn:
            return {CallerName(c) for c in conn.execute(stmt).scalars()}

    def kek_version_counts(self) -> dict[tuple[str, int], int]:
        stmt = select(data_keys.c.provider, data_keys.c.kek_version, func.count()).group_by(
            data_keys.c.provider, data_keys.c.kek_version
        )
        with self._read() as conn:
            return {(p, v): n for p, v, n in conn.execute(stmt)}

    def kek_checks(self, provider: str) -> dict[int, WrappedKey]:
        stmt = select(kek_checks).where(kek_checks.c.provider == provider)
        with self._read() as conn:
            return {
                r.kek_version: WrappedKey(r.provider, r.kek_version, bytes(r.wrapped_check))
                for r in conn.execute(stmt)
            }

    def data_keys_to_rewrap(
        self, provider: str, below_version: int, limit: int, after: SubjectId | None = None
    ) -> list[StoredDataKey]:
        stmt = (
            select(data_keys)
            .where(data_keys.c.provider == provider, data_keys.c.kek_version < below_version)
            .order_by(data_keys.c.subject_id)
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(data_keys.c.subject_id > after)
        with self._read() as conn:
            return [_data_key(r) for r in conn.execute(stmt)]

    # -- writes ---------------------------------------------------------------------------------

    def add_kek_check(self, check: WrappedKey, now: datetime) -> None:
        def body(conn: Connection) -> None:
            conn.execute(
                self._insert_ignore(kek_checks).values(
                    provider=check.provider,
                    kek_version=check.kek_version,
                    wrapped_check=check.blob,
                    created_at=now,
                )
            )

        self._write(body)

    def replace_wrapped_keys(
        self, updates: Sequence[tuple[StoredDataKey, WrappedKey]], audit: Sequence[AuditEvent]
    ) -> int:
        def body(conn: Connection) -> int:
            replaced = 0
            for old, new in sorted(updates, key=lambda u: u[0].subject):  # one lock order
                result = conn.execute(
                    update(data_keys)
                    .where(
                        data_keys.c.subject_id == old.subject,
                        data_keys.c.wrapped_key == old.wrapped.blob,
                    )
                    .values(
                        provider=new.provider, kek_version=new.kek_version, wrapped_key=new.blob
                    )
                )
                replaced += result.rowcount
            _insert_audit(conn, audit)
            return replaced

        return self._write(body)

    def save_tokenized(
        self,
        *,
        subject: SubjectId,
        new_key: WrappedKey | None,
        encryption_limit: int,
        values: Sequence[StoredValue],
        audit: Sequence[AuditEvent],
        idempotency: IdempotencyRecord | None,
        now: datetime,
    ) -> WriteOutcome:
        rows = [
            {
                "token": v.token,
                "subject_id": v.subject,
                "category": v.category,
                "token_format": v.token_format.value,
                "ciphertext": v.ciphertext,
                "created_at": now,
            }
            for v in values
        ]

        def body(conn: Connection) -> None:
            # The request id first: a retry is answered without touching the subject's lock.
            if idempotency is not None:
                self._remember(conn, idempotency)
            if new_key is not None:
                self._create_subject(conn, subject, new_key, len(values), encryption_limit, now)
            else:
                self._count_under_lock(conn, subject, len(values), encryption_limit)
            try:
                conn.execute(_INSERT_VALUES, rows)
            except sa_exc.IntegrityError:
                raise _Answer(WriteOutcome.TOKEN_COLLISION) from None  # a token drawn twice
            _insert_audit(conn, audit)

        return self._outcome(body)

    def _create_subject(
        self,
        conn: Connection,
        subject: SubjectId,
        key: WrappedKey,
        encryptions: int,
        limit: int,
        now: datetime,
    ) -> None:
        digest = subject_digest(subject)
        created = conn.execute(
            self._insert_ignore(subjects)
            .values(subject_id=subject, subject_digest=digest, state="active", created_at=now)
            .returning(subjects.c.subject_id)
        ).first()
        if created is None:
            raise _Answer(WriteOutcome.SUBJECT_RACE)  # created meanwhile: use its key
        # After the insert, in its transaction: a shred that held the id's old row made the
        # insert wait, and its record is visible to this statement. (SQLite: the write lock.)
        shredded = conn.execute(
            select(shredded_subjects.c.subject_digest).where(
                shredded_subjects.c.subject_digest == digest
            )
        ).first()
        if shredded is not None:
            raise _Answer(WriteOutcome.SUBJECT_SHREDDED)
        if encryptions > limit:
            raise _Answer(WriteOutcome.KEY_EXHAUSTED)
        conn.execute(
            insert(data_keys).values(
                subject_id=subject,
                provider=key.provider,
                kek_version=key.kek_version,
                wrapped_key=key.blob,
                encryptions=encryptions,
                created_at=now,
            )
        )

    def _count_under_lock(
        self, conn: Connection, subject: SubjectId, encryptions: int, limit: int
    ) -> None:
        row = self._lock_subject(conn, subject, exclusive=False)
        if row is None:
            raise _Answer(WriteOutcome.SUBJECT_RACE)  # shredded meanwhile: start over
        if row.state != SubjectState.ACTIVE.value:
            raise _Answer(WriteOutcome.SUBJECT_STOPPED)
        counted = conn.execute(_COUNT_ENCRYPTIONS, {"s": subject, "n": encryptions, "limit": limit})
        if counted.rowcount != 1:
            raise _Answer(WriteOutcome.KEY_EXHAUSTED)

    def set_state(
        self, subject: SubjectId, state: SubjectState, now: datetime, audit: Sequence[AuditEvent]
    ) -> bool:
        """Set a subject's state; False if it has no row (unknown or shredded)."""

        def body(conn: Connection) -> None:
            if self._lock_subject(conn, subject, exclusive=True) is None:
                raise _Answer(WriteOutcome.GONE)
            conn.execute(
                update(subjects)
                .where(subjects.c.subject_id == subject)
                .values(state=state.value, state_changed_at=now)
            )
            _insert_audit(conn, audit)

        return self._outcome(body) is WriteOutcome.DONE

    def set_consent(
        self,
        subject: SubjectId,
        purpose: Purpose,
        granted: bool,
        now: datetime,
        audit: Sequence[AuditEvent],
    ) -> bool:
        def body(conn: Connection) -> None:
            if self._lock_subject(conn, subject, exclusive=False) is None:
                raise _Answer(WriteOutcome.GONE)
            conn.execute(
                consents.delete().where(
                    consents.c.subject_id == subject, consents.c.purpose == purpose
                )
            )
            conn.execute(
                insert(consents).values(
                    subject_id=subject, purpose=purpose, granted=granted, updated_at=now
                )
            )
            _insert_audit(conn, audit)

        return self._outcome(body) is WriteOutcome.DONE

    def replace_value(
        self,
        value: StoredValue,
        encryption_limit: int,
        audit: Sequence[AuditEvent],
        allow_stopped: bool = False,
    ) -> WriteOutcome:
        def body(conn: Connection) -> None:
            row = self._lock_subject(conn, value.subject, exclusive=False)
            if row is None:
                raise _Answer(WriteOutcome.GONE)
            if row.state != SubjectState.ACTIVE.value and not allow_stopped:
                raise _Answer(WriteOutcome.SUBJECT_STOPPED)
            counted = conn.execute(
                update(data_keys)
                .where(
                    data_keys.c.subject_id == value.subject,
                    data_keys.c.encryptions + 1 <= encryption_limit,
                )
                .values(encryptions=data_keys.c.encryptions + 1)
            )
            if counted.rowcount != 1:
                raise _Answer(WriteOutcome.KEY_EXHAUSTED)
            done = conn.execute(
                update(token_values)
                .where(
                    token_values.c.token == value.token,
                    token_values.c.subject_id == value.subject,
                )
                .values(ciphertext=value.ciphertext)
            )
            if done.rowcount != 1:
                raise _Answer(WriteOutcome.GONE)  # rolls the count back with the transaction
            _insert_audit(conn, audit)

        return self._outcome(body)

    def shred(
        self,
        subject: SubjectId,
        receipt: ShreddedRecord,
        audit: Sequence[AuditEvent],
    ) -> ShredResult:
        """Crypto-shred in one transaction: the data key, the values (their tokens kept as
        tombstones naming only the category), consents, idempotency fingerprints, the subject
        row; the receipt is kept by digest. On PostgreSQL every pdvault process is told, on
        commit, to drop its cached key."""
        digest = receipt.subject_digest

        def body(conn: Connection) -> ShredResult:
            exists = self._lock_subject(conn, subject, exclusive=True)
            earlier_row = conn.execute(
                select(shredded_subjects).where(shredded_subjects.c.subject_digest == digest)
            ).first()
            earlier = None if earlier_row is None else _receipt(earlier_row)
            if exists is None:
                return ShredResult(earlier, None)
            rows = conn.execute(
                select(token_values.c.token, token_values.c.category).where(
                    token_values.c.subject_id == subject
                )
            ).all()
            if rows:
                conn.execute(
                    self._insert_ignore(shredded_tokens),
                    [
                        {"token": t, "category": c, "receipt_id": receipt.receipt_id}
                        for t, c in rows
                    ],
                )
            conn.execute(token_values.delete().where(token_values.c.subject_id == subject))
            keys = conn.execute(data_keys.delete().where(data_keys.c.subject_id == subject))
            conn.execute(idempotency_keys.delete().where(idempotency_keys.c.subject_id == subject))
            conn.execute(consents.delete().where(consents.c.subject_id == subject))
            conn.execute(subjects.delete().where(subjects.c.subject_id == subject))
            done = ShreddedRecord(
                digest,
                receipt.receipt_id,
                receipt.shredded_at,
                receipt.shredded_by,
                len(rows),
                earlier.receipt_id if earlier is not None else receipt.previous_receipt_id,
            )
            if earlier is not None:
                conn.execute(
                    shredded_subjects.delete().where(shredded_subjects.c.subject_digest == digest)
                )
            conn.execute(
                insert(shredded_subjects).values(
                    subject_digest=digest,
                    receipt_id=done.receipt_id,
                    shredded_at=done.shredded_at,
                    shredded_by=done.shredded_by,
                    values_destroyed=done.values_destroyed,
                    previous_receipt_id=done.previous_receipt_id,
                )
            )
            _insert_audit(conn, audit)
            if self._dialect == "postgresql":
                conn.execute(select(func.pg_notify(SHRED_CHANNEL, subject)))
            return ShredResult(done, (keys.rowcount, len(rows)))

        return self._write(body)

    def scrub(self) -> bool:
        """Remove old page images from the database's own files after a shred.

        SQLite: `secure_delete` zeroes deleted content in the database file, but the write-ahead
        log keeps earlier images of those pages until a checkpoint copies them back and the log
        is truncated. TRUNCATE waits (busy timeout) for readers of older snapshots to finish.
        Returns False if the checkpoint could not complete. PostgreSQL: nothing to do here
        (its heap and WAL keep old row versions until vacuum and segment recycling; see README).
        """
        if self._dialect != "sqlite":
            return True
        with self._read() as conn:
            busy, _log_frames, _done = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        return int(busy) == 0

    def _remember(self, conn: Connection, record: IdempotencyRecord) -> None:
        done = conn.execute(
            self._insert_ignore(idempotency_keys)
            .values(
                caller=record.caller,
                request_id=record.request_id,
                subject_id=record.subject,
                fingerprint=record.fingerprint,
                response=json.dumps([[t, c] for t, c in record.tokens]),
                created_at=record.created_at,
            )
            .returning(idempotency_keys.c.request_id)
        ).first()
        if done is None:
            raise _Answer(WriteOutcome.DUPLICATE_REQUEST)

    def forget_idempotency(self, caller: CallerName, request_id: str) -> None:
        def body(conn: Connection) -> None:
            conn.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.caller == caller,
                    idempotency_keys.c.request_id == request_id,
                )
            )

        self._write(body)

    def purge_idempotency(self, before: datetime) -> int:
        def body(conn: Connection) -> int:
            done = conn.execute(
                idempotency_keys.delete().where(idempotency_keys.c.created_at < before)
            )
            return int(done.rowcount)

        return self._write(body)

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Durable when it returns. Concurrent calls share one commit (group commit): the
        audit of every request is still committed before its answer, but a burst of requests
        pays for one fsync, not one each."""
        if not events:
            return
        if self._audit is not None:
            self._audit.append(events)
            return
        self._commit_audit(events)

    def _commit_audit(self, events: Sequence[AuditEvent]) -> None:
        self._write(lambda conn: _insert_audit(conn, events))

    def add_api_key(self, record: ApiKeyRecord) -> None:
        def body(conn: Connection) -> None:
            conn.execute(
                insert(api_keys).values(
                    key_id=record.key_id,
                    caller=record.caller,
                    key_hash=record.key_hash,
                    created_at=datetime.now(UTC),
                )
            )

        self._write(body)


# The statements of the hot path, built once: constructing a statement costs more than
# SQLAlchemy's compiled-statement cache saves when it is rebuilt on every call.
_DATA_KEYS = (
    select(data_keys, subjects.c.state)
    .join(subjects, subjects.c.subject_id == data_keys.c.subject_id)
    .where(data_keys.c.subject_id.in_(bindparam("ids", expanding=True)))
)
_consent = consents.alias("consent")
# One statement for live and shredded tokens: a token that exists, one that is refused, one
# whose subject was shredded and one that never existed all cost the same work.
_LOOKUP = union_all(
    select(
        token_values.c.token,
        token_values.c.subject_id,
        token_values.c.category,
        token_values.c.token_format,
        token_values.c.ciphertext,
        data_keys.c.provider,
        data_keys.c.kek_version,
        data_keys.c.wrapped_key,
        data_keys.c.encryptions,
        subjects.c.state,
        _consent.c.granted,
        false().label("shredded"),
    )
    .join(data_keys, data_keys.c.subject_id == token_values.c.subject_id)
    .join(subjects, subjects.c.subject_id == token_values.c.subject_id)
    .outerjoin(
        _consent,
        (_consent.c.subject_id == token_values.c.subject_id)
        & (_consent.c.purpose == bindparam("purpose")),
    )
    .where(token_values.c.token.in_(bindparam("tokens", expanding=True))),
    select(
        shredded_tokens.c.token,
        cast(null(), String),
        shredded_tokens.c.category,
        cast(null(), String),
        cast(null(), LargeBinary),
        cast(null(), String),
        null(),
        cast(null(), LargeBinary),
        null(),
        cast(null(), String),
        null(),
        true(),
    ).where(shredded_tokens.c.token.in_(bindparam("tokens", expanding=True))),
)
_COUNT_ENCRYPTIONS = (
    update(data_keys)
    .where(
        data_keys.c.subject_id == bindparam("s"),
        data_keys.c.encryptions + bindparam("n") <= bindparam("limit"),
    )
    .values(encryptions=data_keys.c.encryptions + bindparam("n"))
)
_INSERT_VALUES = insert(token_values)
_INSERT_AUDIT = insert(audit_events)


def _sqlstate(exc: sa_exc.DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def _unavailable_error(exc: Exception) -> StorageUnavailable:
    """A lost or unreachable database is StorageUnavailable (retryable), whatever the call."""
    orig = getattr(exc, "orig", None) or exc
    # The driver's text may name hosts or files; log only the class.
    log.warning("database unavailable: %s", type(orig).__name__)
    return StorageUnavailable("the database is unavailable; retry later")


def _data_key(r: Any) -> StoredDataKey:
    state = getattr(r, "state", None)
    return StoredDataKey(
        SubjectId(r.subject_id),
        WrappedKey(r.provider, r.kek_version, bytes(r.wrapped_key)),
        r.encryptions,
        SubjectState(state) if state else SubjectState.ACTIVE,
    )


def _receipt(r: Any) -> ShreddedRecord:
    return ShreddedRecord(
        r.subject_digest,
        r.receipt_id,
        r.shredded_at,
        CallerName(r.shredded_by),
        r.values_destroyed,
        r.previous_receipt_id,
    )


def _api_key(r: Any) -> ApiKeyRecord:
    return ApiKeyRecord(r.key_id, CallerName(r.caller), bytes(r.key_hash), r.revoked_at is not None)


def _audit_event(r: Any) -> AuditEvent:
    return AuditEvent(
        occurred_at=r.occurred_at,
        caller=CallerName(r.caller),
        action=Action(r.action),
        outcome=Outcome(r.outcome),
        rule=r.rule,
        token=Token(r.token) if r.token else None,
        subject=SubjectId(r.subject_id) if r.subject_id else None,
        category=Category(r.category) if r.category else None,
        purpose=Purpose(r.purpose) if r.purpose else None,
        view=View(r.view) if r.view else None,
        justification=r.justification,
        request_id=r.request_id,
        detail=r.detail,
        legal_basis=LegalBasis(r.legal_basis) if r.legal_basis else None,
    )


def _audited_subject(subject: SubjectId | None) -> str | None:
    if subject is None:
        return None
    if subject.startswith("sha256:"):
        return subject  # already a digest (a shred's own event)
    return anonymized_subject(subject_digest(subject))


def _insert_audit(conn: Connection, events: Sequence[AuditEvent]) -> None:
    if not events:
        return
    conn.execute(
        _INSERT_AUDIT,
        [
            {
                "occurred_at": e.occurred_at,
                "caller": e.caller,
                "action": e.action.value,
                "outcome": e.outcome.value,
                "rule": e.rule,
                "token": e.token,
                "subject_id": _audited_subject(e.subject),
                "category": e.category,
                "purpose": e.purpose,
                "view": e.view.value if e.view else None,
                "justification": e.justification,
                "request_id": e.request_id,
                "detail": e.detail,
                "legal_basis": e.legal_basis.value if e.legal_basis else None,
            }
            for e in events
        ],
    )
