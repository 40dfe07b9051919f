"""The `Store` port over SQLAlchemy Core: SQLite (embedded default) and PostgreSQL (production).

Every statement is built by SQLAlchemy with bound parameters; the engine hides parameters from
error messages (`hide_parameters=True`), so no ciphertext or id reaches a log through them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry

from vault.domain.ports import (
    ApiKeyRecord,
    DuplicateRequestError,
    KeyUsageExhaustedError,
    ShreddedRecord,
    SubjectKeyRaceError,
    SubjectStoppedError,
    TokenCollisionError,
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
from vault.storage.tables import (
    api_keys,
    audit_events,
    consents,
    data_keys,
    idempotency_keys,
    shredded_subjects,
    shredded_tokens,
    subjects,
    token_values,
)

__all__ = ["Engine", "SqlStore", "make_engine", "redact_url"]

log = logging.getLogger(__name__)

# PostgreSQL channel on which a shred tells every pdvault process to drop the subject's key.
SHRED_CHANNEL = "pdvault_shred"


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
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed audit record survives a power loss, not only a crash.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # Deleted and overwritten content is zeroed in the file: a corrected or shredded
            # ciphertext does not linger in free pages.
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

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


class SqlStore:
    """The `Store` port. Safe to share between threads (one connection per operation)."""

    def __init__(self, engine: Engine, group_commit: bool = True) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._audit = _GroupCommit(self) if group_commit else None
        # Single-statement reads need no transaction: on PostgreSQL, autocommit saves the
        # BEGIN and ROLLBACK round trips; SQLite's driver opens none for a SELECT anyway.
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")

    def __repr__(self) -> str:
        return f"SqlStore({self._dialect})"

    def close(self) -> None:
        if self._audit is not None:
            self._audit.stop()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with _unavailable(), self._engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with _unavailable(), self._reader.connect() as conn:
            yield conn

    def _insert_ignore(self, table: Any) -> Any:
        if self._dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        if self._dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing()
        raise NotImplementedError(self._dialect)

    # -- reads ----------------------------------------------------------------------------------

    def data_keys(self, subject_ids: Collection[SubjectId]) -> dict[SubjectId, StoredDataKey]:
        with self._read() as conn:
            rows = conn.execute(_DATA_KEYS, {"ids": list(subject_ids)}).all()
        return {SubjectId(r.subject_id): _data_key(r) for r in rows}

    def values_and_keys(
        self, tokens: Collection[Token], purpose: Purpose | None = None
    ) -> tuple[
        dict[Token, StoredValue], dict[SubjectId, StoredDataKey], dict[SubjectId, bool | None]
    ]:
        with self._read() as conn:
            rows = conn.execute(
                _VALUES_AND_KEYS, {"tokens": list(tokens), "purpose": purpose or ""}
            ).all()
        values: dict[Token, StoredValue] = {}
        keys: dict[SubjectId, StoredDataKey] = {}
        consent_of: dict[SubjectId, bool | None] = {}
        for r in rows:
            subject = SubjectId(r.subject_id)
            values[Token(r.token)] = StoredValue(
                Token(r.token),
                subject,
                Category(r.category),
                TokenFormat(r.token_format),
                bytes(r.ciphertext),
            )
            keys[subject] = _data_key(r)
            consent_of[subject] = None if r.granted is None else bool(r.granted)
        return values, keys, consent_of

    def shredded_tokens(self, tokens: Collection[Token]) -> dict[Token, Category]:
        stmt = select(shredded_tokens.c.token, shredded_tokens.c.category).where(
            shredded_tokens.c.token.in_(bindparam("tokens", expanding=True))
        )
        with self._read() as conn:
            rows = conn.execute(stmt, {"tokens": list(tokens)}).all()
        return {Token(t): Category(c) for t, c in rows}

    def shred_receipt(self, digest: str) -> ShreddedRecord | None:
        stmt = select(shredded_subjects).where(shredded_subjects.c.subject_digest == digest)
        with self._read() as conn:
            r = conn.execute(stmt).first()
        if r is None:
            return None
        return ShreddedRecord(
            r.subject_digest,
            r.receipt_id,
            r.shredded_at,
            CallerName(r.shredded_by),
            r.values_destroyed,
        )

    def subject_record(self, subject: SubjectId) -> SubjectRecord | None:
        with self._tx() as conn:
            row = conn.execute(
                select(subjects.c.state, subjects.c.state_changed_at).where(
                    subjects.c.subject_id == subject
                )
            ).first()
            if row is None:
                return None
            granted = conn.execute(
                select(consents.c.purpose, consents.c.granted).where(
                    consents.c.subject_id == subject
                )
            ).all()
        return SubjectRecord(
            subject,
            SubjectState(row.state),
            {Purpose(p): bool(g) for p, g in granted},
            row.state_changed_at,
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
        stmt = (
            select(audit_events)
            .where(audit_events.c.subject_id == subject)
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
        if r is None:
            return None
        return ApiKeyRecord(
            r.key_id, CallerName(r.caller), bytes(r.key_hash), r.revoked_at is not None
        )

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

    def replace_wrapped_keys(
        self, updates: Sequence[tuple[StoredDataKey, WrappedKey]], audit: Sequence[AuditEvent]
    ) -> int:
        replaced = 0
        with self._tx() as conn:
            for old, new in updates:
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
    ) -> None:
        with self._tx() as conn:
            if idempotency is not None:
                self._remember(conn, idempotency)
            if new_key is not None:
                created = conn.execute(
                    self._insert_ignore(subjects)
                    .values(
                        subject_id=subject,
                        subject_digest=subject_digest(subject),
                        state="active",
                        created_at=now,
                    )
                    .returning(subjects.c.subject_id)
                ).first()
                if created is None:
                    raise SubjectKeyRaceError()
                if len(values) > encryption_limit:
                    raise KeyUsageExhaustedError()
                conn.execute(
                    insert(data_keys).values(
                        subject_id=subject,
                        provider=new_key.provider,
                        kek_version=new_key.kek_version,
                        wrapped_key=new_key.blob,
                        encryptions=len(values),
                        created_at=now,
                    )
                )
            else:
                counted = conn.execute(
                    _COUNT_ENCRYPTIONS, {"s": subject, "n": len(values), "limit": encryption_limit}
                )
                if counted.rowcount != 1:
                    state = conn.execute(
                        select(subjects.c.state).where(subjects.c.subject_id == subject)
                    ).scalar()
                    if state is None:
                        raise SubjectKeyRaceError()  # shredded meanwhile: start over
                    if state != "active":
                        raise SubjectStoppedError()
                    raise KeyUsageExhaustedError()
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
            try:
                conn.execute(_INSERT_VALUES, rows)
            except sa_exc.IntegrityError:
                # The primary key of token_values: a token drawn twice. The transaction rolls
                # back as the error leaves this block.
                raise TokenCollisionError() from None
            _insert_audit(conn, audit)

    def set_state(
        self, subject: SubjectId, state: SubjectState, now: datetime, audit: Sequence[AuditEvent]
    ) -> bool:
        """Set a subject's state; False if it has no row (unknown or shredded)."""
        with self._tx() as conn:
            done = conn.execute(
                update(subjects)
                .where(subjects.c.subject_id == subject)
                .values(state=state.value, state_changed_at=now)
            )
            if done.rowcount != 1:
                return False
            _insert_audit(conn, audit)
        return True

    def set_consent(
        self,
        subject: SubjectId,
        purpose: Purpose,
        granted: bool,
        now: datetime,
        audit: Sequence[AuditEvent],
    ) -> bool:
        with self._tx() as conn:
            exists = conn.execute(
                select(subjects.c.subject_id).where(subjects.c.subject_id == subject)
            ).first()
            if exists is None:
                return False
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
        return True

    def replace_value(
        self, value: StoredValue, encryption_limit: int, audit: Sequence[AuditEvent]
    ) -> bool:
        """Overwrite a token's ciphertext in place (the token stays); False if it is gone."""
        try:
            self._replace_value(value, encryption_limit, audit)
        except _GoneError:
            return False
        return True

    def _replace_value(
        self, value: StoredValue, encryption_limit: int, audit: Sequence[AuditEvent]
    ) -> None:
        with self._tx() as conn:
            counted = conn.execute(
                update(data_keys)
                .where(
                    data_keys.c.subject_id == value.subject,
                    data_keys.c.encryptions + 1 <= encryption_limit,
                )
                .values(encryptions=data_keys.c.encryptions + 1)
            )
            if counted.rowcount != 1:
                raise KeyUsageExhaustedError()
            done = conn.execute(
                update(token_values)
                .where(
                    token_values.c.token == value.token,
                    token_values.c.subject_id == value.subject,
                )
                .values(ciphertext=value.ciphertext)
            )
            if done.rowcount != 1:
                raise _GoneError()  # rolls the count back with the transaction
            _insert_audit(conn, audit)

    def shred(
        self,
        subject: SubjectId,
        digest: str,
        receipt_id: str,
        caller: CallerName,
        now: datetime,
        audit: Sequence[AuditEvent],
    ) -> tuple[int, int] | None:
        """Crypto-shred in one transaction: the data key, the values (their tokens kept as
        tombstones naming only the category), consents, idempotency fingerprints; audit rows
        keep the digest instead of the id. None if the subject has no row. Returns (data keys,
        values) destroyed; every value's token is retired. On PostgreSQL every pdvault process
        is told, on commit, to drop its cached key."""
        with self._tx() as conn:
            exists = conn.execute(
                select(subjects.c.subject_id)
                .where(subjects.c.subject_id == subject)
                .with_for_update()
            ).first()
            if exists is None:
                return None
            rows = conn.execute(
                select(token_values.c.token, token_values.c.category).where(
                    token_values.c.subject_id == subject
                )
            ).all()
            if rows:
                conn.execute(
                    self._insert_ignore(shredded_tokens),
                    [{"token": t, "category": c, "receipt_id": receipt_id} for t, c in rows],
                )
            conn.execute(token_values.delete().where(token_values.c.subject_id == subject))
            keys = conn.execute(data_keys.delete().where(data_keys.c.subject_id == subject))
            conn.execute(idempotency_keys.delete().where(idempotency_keys.c.subject_id == subject))
            conn.execute(consents.delete().where(consents.c.subject_id == subject))
            conn.execute(subjects.delete().where(subjects.c.subject_id == subject))
            conn.execute(
                update(audit_events)
                .where(audit_events.c.subject_id == subject)
                .values(subject_id=anonymized_subject(digest))
            )
            conn.execute(
                self._insert_ignore(shredded_subjects).values(
                    subject_digest=digest,
                    receipt_id=receipt_id,
                    shredded_at=now,
                    shredded_by=caller,
                    values_destroyed=len(rows),
                )
            )
            _insert_audit(conn, audit)
            if self._dialect == "postgresql":
                conn.execute(select(func.pg_notify(SHRED_CHANNEL, subject)))
        return keys.rowcount, len(rows)

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
            raise DuplicateRequestError()

    def forget_idempotency(self, caller: CallerName, request_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.caller == caller,
                    idempotency_keys.c.request_id == request_id,
                )
            )

    def purge_idempotency(self, before: datetime) -> int:
        with self._tx() as conn:
            done = conn.execute(
                idempotency_keys.delete().where(idempotency_keys.c.created_at < before)
            )
        return done.rowcount

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
        with self._tx() as conn:
            _insert_audit(conn, events)

    def add_api_key(self, record: ApiKeyRecord) -> None:
        with self._tx() as conn:
            conn.execute(
                insert(api_keys).values(
                    key_id=record.key_id,
                    caller=record.caller,
                    key_hash=record.key_hash,
                    created_at=datetime.now(UTC),
                )
            )


# The statements of the hot path, built once: constructing a statement costs more than
# SQLAlchemy's compiled-statement cache saves when it is rebuilt on every call.
_DATA_KEYS = (
    select(data_keys, subjects.c.state)
    .join(subjects, subjects.c.subject_id == data_keys.c.subject_id)
    .where(data_keys.c.subject_id.in_(bindparam("ids", expanding=True)))
)
_consent = consents.alias("consent")
_VALUES_AND_KEYS = (
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
    )
    .join(data_keys, data_keys.c.subject_id == token_values.c.subject_id)
    .join(subjects, subjects.c.subject_id == token_values.c.subject_id)
    .outerjoin(
        _consent,
        (_consent.c.subject_id == token_values.c.subject_id)
        & (_consent.c.purpose == bindparam("purpose")),
    )
    .where(token_values.c.token.in_(bindparam("tokens", expanding=True)))
)
_COUNT_ENCRYPTIONS = (
    update(data_keys)
    .where(
        data_keys.c.subject_id == bindparam("s"),
        data_keys.c.encryptions + bindparam("n") <= bindparam("limit"),
        select(subjects.c.subject_id)
        .where(subjects.c.subject_id == bindparam("s"), subjects.c.state == "active")
        .exists(),
    )
    .values(encryptions=data_keys.c.encryptions + bindparam("n"))
)
_INSERT_VALUES = insert(token_values)
_INSERT_AUDIT = insert(audit_events)


class _GroupCommit:
    """One writer thread commits the audit events of all waiting requests together.

    No artificial delay: while one commit is under way the next requests queue, and the next
    commit takes them all. A failed commit fails every request in it (they return no value).
    """

    MAX_EVENTS = 5000

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._cv = threading.Condition()
        self._queue: list[tuple[Sequence[AuditEvent], Future[None]]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None

    def append(self, events: Sequence[AuditEvent]) -> None:
        done: Future[None] = Future()
        with self._cv:
            if self._stopping:
                raise StorageUnavailable("the server is shutting down; retry")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit", daemon=True)
                self._thread.start()
            self._queue.append((events, done))
            self._cv.notify()
        done.result()

    def stop(self) -> None:
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
                batch, size = [], 0
                while self._queue and size < self.MAX_EVENTS:
                    item = self._queue.pop(0)
                    batch.append(item)
                    size += len(item[0])
            try:
                self._store._commit_audit([e for events, _ in batch for e in events])
            except Exception as exc:  # noqa: BLE001  (handed to every waiting request)
                failure = (
                    exc
                    if isinstance(exc, StorageUnavailable)
                    else StorageUnavailable(
                        "the audit log could not be written; no value was returned"
                    )
                )
                if not isinstance(exc, StorageUnavailable):
                    log.error("audit commit failed: %s", type(exc).__name__)
                for _, done in batch:
                    done.set_exception(failure)
                continue
            for _, done in batch:
                done.set_result(None)


@contextmanager
def _unavailable() -> Iterator[None]:
    """A lost or unreachable database is StorageUnavailable (retryable), whatever the call."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        # The driver's text may name hosts or files; log only the class.
        log.warning("database unavailable: %s", type(exc.orig or exc).__name__)
        raise StorageUnavailable("the database is unavailable; retry later") from None


class _GoneError(Exception):
    pass


def _data_key(r: Any) -> StoredDataKey:
    state = getattr(r, "state", None)
    return StoredDataKey(
        SubjectId(r.subject_id),
        WrappedKey(r.provider, r.kek_version, bytes(r.wrapped_key)),
        r.encryptions,
        SubjectState(state) if state else SubjectState.ACTIVE,
    )


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
                "subject_id": e.subject,
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
