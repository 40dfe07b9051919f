"""The `Store` port over SQLAlchemy Core: SQLite (embedded default) and PostgreSQL (production).

Every statement is built by SQLAlchemy with bound parameters; the engine hides parameters from
error messages (`hide_parameters=True`), so no ciphertext or id reaches a log through them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator, Sequence
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
    SubjectKeyRaceError,
    TokenCollisionError,
)
from vault.domain.types import (
    AuditEvent,
    CallerName,
    Category,
    IdempotencyRecord,
    StoredDataKey,
    StoredValue,
    SubjectId,
    Token,
    TokenFormat,
    WrappedKey,
)
from vault.errors import StorageUnavailable
from vault.storage.tables import (
    api_keys,
    audit_events,
    data_keys,
    idempotency_keys,
    subjects,
    token_values,
)

__all__ = ["Engine", "SqlStore", "make_engine", "redact_url"]

log = logging.getLogger(__name__)


def make_engine(url: str) -> Engine:
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
            cur.close()

        return engine
    return create_engine(url, hide_parameters=True, pool_pre_ping=True, pool_size=10)


def redact_url(url: str) -> str:
    """The database URL with its password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)


class SqlStore:
    """The `Store` port. Safe to share between threads (one connection per operation)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name

    def __repr__(self) -> str:
        return f"SqlStore({self._dialect})"

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self._engine.begin() as conn:
                yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            # The driver's text may name hosts or files; log only the class.
            log.warning("database unavailable: %s", type(exc.orig or exc).__name__)
            raise StorageUnavailable("the database is unavailable; retry later") from None

    def _insert_ignore(self, table: Any) -> Any:
        if self._dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        if self._dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing()
        raise NotImplementedError(self._dialect)

    # -- reads ----------------------------------------------------------------------------------

    def data_keys(self, subject_ids: Collection[SubjectId]) -> dict[SubjectId, StoredDataKey]:
        stmt = select(data_keys).where(data_keys.c.subject_id.in_(bindparam("ids", expanding=True)))
        with self._tx() as conn:
            rows = conn.execute(stmt, {"ids": list(subject_ids)}).all()
        return {SubjectId(r.subject_id): _data_key(r) for r in rows}

    def values_and_keys(
        self, tokens: Collection[Token]
    ) -> tuple[dict[Token, StoredValue], dict[SubjectId, StoredDataKey]]:
        stmt = (
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
            )
            .join(data_keys, data_keys.c.subject_id == token_values.c.subject_id)
            .where(token_values.c.token.in_(bindparam("tokens", expanding=True)))
        )
        with self._tx() as conn:
            rows = conn.execute(stmt, {"tokens": list(tokens)}).all()
        values: dict[Token, StoredValue] = {}
        keys: dict[SubjectId, StoredDataKey] = {}
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
        return values, keys

    def idempotency(self, caller: CallerName, request_id: str) -> IdempotencyRecord | None:
        stmt = select(idempotency_keys).where(
            idempotency_keys.c.caller == caller, idempotency_keys.c.request_id == request_id
        )
        with self._tx() as conn:
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
        with self._tx() as conn:
            r = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
        if r is None:
            return None
        return ApiKeyRecord(
            r.key_id, CallerName(r.caller), bytes(r.key_hash), r.revoked_at is not None
        )

    def callers_with_keys(self) -> set[CallerName]:
        stmt = select(api_keys.c.caller).where(api_keys.c.revoked_at.is_(None)).distinct()
        with self._tx() as conn:
            return {CallerName(c) for c in conn.execute(stmt).scalars()}

    def kek_version_counts(self) -> dict[tuple[str, int], int]:
        stmt = select(data_keys.c.provider, data_keys.c.kek_version, func.count()).group_by(
            data_keys.c.provider, data_keys.c.kek_version
        )
        with self._tx() as conn:
            return {(p, v): n for p, v, n in conn.execute(stmt)}

    def data_keys_to_rewrap(
        self, provider: str, below_version: int, limit: int
    ) -> list[StoredDataKey]:
        stmt = (
            select(data_keys)
            .where(data_keys.c.provider == provider, data_keys.c.kek_version < below_version)
            .order_by(data_keys.c.subject_id)
            .limit(limit)
        )
        with self._tx() as conn:
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
                    .values(subject_id=subject, state="active", created_at=now)
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
                    update(data_keys)
                    .where(
                        data_keys.c.subject_id == subject,
                        data_keys.c.encryptions + len(values) <= encryption_limit,
                    )
                    .values(encryptions=data_keys.c.encryptions + len(values))
                )
                if counted.rowcount != 1:
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
                conn.execute(insert(token_values), rows)
            except sa_exc.IntegrityError:
                # The primary key of token_values: a token drawn twice. The transaction rolls
                # back as the error leaves this block.
                raise TokenCollisionError() from None
            _insert_audit(conn, audit)

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

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
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


def _data_key(r: Any) -> StoredDataKey:
    return StoredDataKey(
        SubjectId(r.subject_id),
        WrappedKey(r.provider, r.kek_version, bytes(r.wrapped_key)),
        r.encryptions,
    )


def _insert_audit(conn: Connection, events: Sequence[AuditEvent]) -> None:
    if not events:
        return
    conn.execute(
        insert(audit_events),
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
            }
            for e in events
        ],
    )
