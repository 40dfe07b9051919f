"""The smaller SQL adapters: `IdempotencyStore`, `CredentialStore` and `KeyInventory`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, func, insert, select, update

from vault.domain.ports import NoticeKind
from vault.domain.stores import ApiKeyRecord, KeyInfo
from vault.domain.types import (
    AuditEvent,
    CallerName,
    Category,
    IdempotencyRecord,
    StoredDataKey,
    SubjectId,
    Token,
    WrappedKey,
)
from vault.storage.sql import rows
from vault.storage.sql.database import Database
from vault.storage.sql.notices import publish
from vault.storage.tables import api_keys, data_keys, idempotency_keys, kek_checks

__all__ = ["SqlCredentialStore", "SqlIdempotencyStore", "SqlKeyInventory"]


class SqlIdempotencyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"SqlIdempotencyStore({self._db.dialect})"

    def idempotency(self, caller: CallerName, request_id: str) -> IdempotencyRecord | None:
        stmt = select(idempotency_keys).where(
            idempotency_keys.c.caller == caller, idempotency_keys.c.request_id == request_id
        )
        with self._db.read() as conn:
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

    def forget_idempotency(self, caller: CallerName, request_id: str) -> None:
        def body(conn: Connection) -> None:
            conn.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.caller == caller,
                    idempotency_keys.c.request_id == request_id,
                )
            )

        self._db.write(body)

    def purge_idempotency(self, before: datetime) -> int:
        def body(conn: Connection) -> int:
            done = conn.execute(
                idempotency_keys.delete().where(idempotency_keys.c.created_at < before)
            )
            return int(done.rowcount)

        return self._db.write(body)


class SqlCredentialStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"SqlCredentialStore({self._db.dialect})"

    def api_keys(self) -> list[ApiKeyRecord]:
        with self._db.read() as conn:
            return [rows.api_key(r) for r in conn.execute(select(api_keys))]

    def add_api_key(
        self, record: ApiKeyRecord, audit: Sequence[AuditEvent] = (), now: datetime | None = None
    ) -> None:
        at = now or datetime.now(UTC)

        def body(conn: Connection) -> None:
            conn.execute(
                insert(api_keys).values(
                    key_id=record.key_id,
                    caller=record.caller,
                    key_hash=record.key_hash,
                    created_at=at,
                    revoked_at=at if record.revoked else None,
                )
            )
            rows.insert_audit(conn, audit)
            publish(conn, NoticeKind.API_KEYS, record.key_id, at)

        self._db.write(body)

    def key_infos(self) -> list[KeyInfo]:
        stmt = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        with self._db.read() as conn:
            return [
                KeyInfo(r.key_id, CallerName(r.caller), r.created_at, r.last_used_at, r.revoked_at)
                for r in conn.execute(stmt)
            ]

    def revoke(
        self, caller: CallerName, key_id: str, now: datetime, audit: Sequence[AuditEvent]
    ) -> bool:
        def body(conn: Connection) -> bool:
            done = conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.key_id == key_id,
                    api_keys.c.caller == caller,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
            if done.rowcount != 1:
                return False
            rows.insert_audit(conn, audit)
            # Every process reads the key table again: PostgreSQL NOTIFY at once, SQLite's
            # poll within a second.
            publish(conn, NoticeKind.API_KEYS, key_id, now)
            return True

        return self._db.write(body)

    def touch(self, used: dict[str, datetime]) -> None:
        if not used:
            return

        def body(conn: Connection) -> None:
            for key_id, at in sorted(used.items()):
                conn.execute(
                    update(api_keys)
                    .where(
                        api_keys.c.key_id == key_id,
                        (api_keys.c.last_used_at.is_(None)) | (api_keys.c.last_used_at < at),
                    )
                    .values(last_used_at=at)
                )

        self._db.write(body)

    def callers_with_keys(self) -> set[CallerName]:
        stmt = select(api_keys.c.caller).where(api_keys.c.revoked_at.is_(None)).distinct()
        with self._db.read() as conn:
            return {CallerName(c) for c in conn.execute(stmt).scalars()}


class SqlKeyInventory:
    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"SqlKeyInventory({self._db.dialect})"

    def kek_version_counts(self) -> dict[tuple[str, int], int]:
        stmt = select(data_keys.c.provider, data_keys.c.kek_version, func.count()).group_by(
            data_keys.c.provider, data_keys.c.kek_version
        )
        with self._db.read() as conn:
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
        with self._db.read() as conn:
            return [rows.data_key(r) for r in conn.execute(stmt)]

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
            rows.insert_audit(conn, audit)
            return replaced

        return self._db.write(body)

    def kek_checks(self, provider: str) -> dict[int, WrappedKey]:
        stmt = select(kek_checks).where(kek_checks.c.provider == provider)
        with self._db.read() as conn:
            return {
                r.kek_version: WrappedKey(r.provider, r.kek_version, bytes(r.wrapped_check))
                for r in conn.execute(stmt)
            }

    def add_kek_check(self, check: WrappedKey, now: datetime) -> None:
        def body(conn: Connection) -> None:
            conn.execute(
                self._db.insert_ignore(kek_checks).values(
                    provider=check.provider,
                    kek_version=check.kek_version,
                    wrapped_check=check.blob,
                    created_at=now,
                )
            )

        self._db.write(body)
