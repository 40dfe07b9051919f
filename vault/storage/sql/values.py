"""`ValueStore` over SQL: each subject's data key and its values."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import Connection, select, update
from sqlalchemy import exc as sa_exc

from vault.domain.stores import Lookup, WriteOutcome
from vault.domain.types import (
    AuditEvent,
    Category,
    IdempotencyRecord,
    Purpose,
    StoredDataKey,
    StoredValue,
    SubjectId,
    SubjectState,
    Token,
    TokenFormat,
    WrappedKey,
)
from vault.storage.sql import rows
from vault.storage.sql.database import Answer, Database
from vault.storage.sql.ownership import count_under_lock, create_subject
from vault.storage.sql.prepared import Prepared, PreparedIn, prepared
from vault.storage.tables import (
    idempotency_keys,
    shredded_tokens,
    subjects,
    token_values,
)

__all__ = ["LOOKUP_PREPARED", "SqlValueStore"]

LOOKUP_PREPARED = 16  # how many lengths of token lists the lookup keeps a prepared statement for

_REQUEST_COLUMNS = ("caller", "request_id", "subject_id", "fingerprint", "response", "created_at")
_EXPIRED = "retention"  # a tombstone's cause: the value's retention period ended
_MOVED = "moved"  # a tombstone's cause: the value became a document (its receipt: the id)


class SqlValueStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # The detokenize's read, on the driver's cursor, per number of tokens (issue 14: for one
        # token SQLAlchemy's execution cost ten times the statement). Lists of other lengths
        # than the first few seen go through SQLAlchemy.
        self._lookup = PreparedIn(rows.LOOKUP, db.engine.dialect, "tokens", LOOKUP_PREPARED)
        # A tokenize's request id, kept unless it is there already (then: a retry).
        self._remember_request = Prepared(
            db.insert_ignore(idempotency_keys).returning(idempotency_keys.c.request_id),
            db.engine.dialect,
            column_keys=_REQUEST_COLUMNS,
        )

    def __repr__(self) -> str:
        return f"SqlValueStore({self._db.dialect})"

    # -- reads ----------------------------------------------------------------------------------

    def data_keys(self, subject_ids: Collection[SubjectId]) -> dict[SubjectId, StoredDataKey]:
        with self._db.read() as conn:
            found = conn.execute(rows.DATA_KEYS, {"ids": list(subject_ids)}).all()
        return {SubjectId(r.subject_id): rows.data_key(r) for r in found}

    def lookup(self, tokens: Collection[Token], purpose: Purpose | None = None) -> Lookup:
        wanted = list(tokens)
        params = {"tokens": wanted, "purpose": purpose or ""}
        statement = self._lookup.get(len(wanted))
        with self._db.read() as conn:
            found = (
                statement.all(conn, params)
                if statement is not None
                else conn.execute(rows.LOOKUP, params).all()
            )
        out = Lookup({}, {}, {}, {})
        for r in found:
            if r.shredded:
                out.shredded[Token(r.token)] = Category(r.category)
                if r.token_format == _EXPIRED:
                    out.expired.add(Token(r.token))
                elif r.token_format == _MOVED:
                    out.moved[Token(r.token)] = r.provider
                continue
            subject = SubjectId(r.subject_id)
            out.values[Token(r.token)] = StoredValue(
                Token(r.token),
                subject,
                Category(r.category),
                TokenFormat(r.token_format),
                bytes(r.ciphertext),
            )
            out.keys[subject] = rows.data_key(r)
            out.consent[subject] = None if r.granted is None else bool(r.granted)
        return out

    def subject_values(self, subject: SubjectId) -> list[tuple[StoredValue, datetime]]:
        stmt = (
            select(token_values)
            .where(token_values.c.subject_id == subject)
            .order_by(token_values.c.created_at, token_values.c.token)
        )
        with self._db.read() as conn:
            found = conn.execute(stmt).all()
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
            for r in found
        ]

    # -- writes ---------------------------------------------------------------------------------

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
        new_rows = [
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
                create_subject(self._db, conn, subject, new_key, len(values), encryption_limit, now)
            else:
                count_under_lock(self._db, conn, subject, len(values), encryption_limit)
            try:
                if new_rows:  # the INSERT names the columns the rows carry
                    prepared(conn.dialect, rows.INSERT_VALUES, tuple(new_rows[0])).run_many(
                        conn, new_rows
                    )
            except sa_exc.IntegrityError:
                raise Answer(WriteOutcome.TOKEN_COLLISION) from None  # a token drawn twice

        # In the group commit: its transaction, commit and audit append shared with other
        # requests', its writes in a savepoint of their own, in subject order (issue 14:
        # each tokenize queued on the audit head's lock for a transaction of its own).
        return self._db.outcome(body, events=audit, order=subject)

    def _remember(self, conn: Connection, record: IdempotencyRecord) -> None:
        done = self._remember_request.all(
            conn,
            {
                "caller": record.caller,
                "request_id": record.request_id,
                "subject_id": record.subject,
                "fingerprint": record.fingerprint,
                "response": json.dumps([[t, c] for t, c in record.tokens]),
                "created_at": record.created_at,
            },
        )
        if not done:
            raise Answer(WriteOutcome.DUPLICATE_REQUEST)

    def replace_value(
        self,
        value: StoredValue,
        encryption_limit: int,
        audit: Sequence[AuditEvent],
        allow_stopped: bool = False,
    ) -> WriteOutcome:
        def body(conn: Connection) -> None:
            row = self._db.lock_subject(conn, value.subject)
            if row is None:
                raise Answer(WriteOutcome.GONE)
            if row.state != SubjectState.ACTIVE.value and not allow_stopped:
                raise Answer(WriteOutcome.SUBJECT_STOPPED)
            counted = conn.execute(
                rows.COUNT_ENCRYPTIONS, {"s": value.subject, "n": 1, "limit": encryption_limit}
            )
            if counted.rowcount != 1:
                raise Answer(WriteOutcome.KEY_EXHAUSTED)
            done = conn.execute(
                update(token_values)
                .where(
                    token_values.c.token == value.token,
                    token_values.c.subject_id == value.subject,
                )
                .values(ciphertext=value.ciphertext)
            )
            if done.rowcount != 1:
                raise Answer(WriteOutcome.GONE)  # rolls the count back with the transaction
            rows.insert_audit(conn, audit)

        return self._db.outcome(body)

    # -- retention ------------------------------------------------------------------------------

    def values_stored_before(
        self, category: Category, before: datetime, limit: int
    ) -> list[tuple[Token, SubjectId]]:
        stmt = (
            select(token_values.c.token, token_values.c.subject_id)
            .where(token_values.c.category == category, token_values.c.created_at < before)
            .order_by(token_values.c.created_at, token_values.c.token)
            .limit(limit)
        )
        with self._db.read() as conn:
            return [(Token(t), SubjectId(s)) for t, s in conn.execute(stmt).all()]

    def values_of_ended_relationships(
        self, category: Category, ended_before: datetime, limit: int
    ) -> list[tuple[Token, SubjectId]]:
        # The relationship ends with Account Stop (state_changed_at of a stopped subject).
        stmt = (
            select(token_values.c.token, token_values.c.subject_id)
            .join(subjects, subjects.c.subject_id == token_values.c.subject_id)
            .where(
                token_values.c.category == category,
                subjects.c.state == SubjectState.STOPPED.value,
                subjects.c.state_changed_at < ended_before,
            )
            .order_by(token_values.c.token)
            .limit(limit)
        )
        with self._db.read() as conn:
            return [(Token(t), SubjectId(s)) for t, s in conn.execute(stmt).all()]

    def erase_values(
        self, tokens: Sequence[Token], receipt_id: str, audit: Sequence[AuditEvent]
    ) -> int:
        if not tokens:
            return 0

        def body(conn: Connection) -> int:
            found = conn.execute(
                select(token_values.c.token, token_values.c.category, token_values.c.subject_id)
                .where(token_values.c.token.in_(list(tokens)))
                .order_by(token_values.c.subject_id)
            ).all()
            for subject in sorted({r.subject_id for r in found}):  # the subjects' locks first
                self._db.lock_subject(conn, SubjectId(subject))
            if not found:
                return 0
            conn.execute(
                self._db.insert_ignore(shredded_tokens),
                [
                    {
                        "token": r.token,
                        "category": r.category,
                        "receipt_id": receipt_id,
                        "cause": "retention",
                    }
                    for r in found
                ],
            )
            conn.execute(
                token_values.delete().where(token_values.c.token.in_([r.token for r in found]))
            )
            rows.insert_audit(conn, audit)
            return len(found)

        return self._db.write(body)
