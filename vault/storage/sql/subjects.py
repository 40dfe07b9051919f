"""`SubjectStore` over SQL: subjects, their state and consents, and what is kept of shredded
ones. A shred publishes a notice, in its transaction, that tells every pdvault process to drop
the subject's cached key (`vault.storage.sql.notices`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from vault.domain.ports import NoticeKind
from vault.domain.stores import ShreddedRecord, ShredResult, WriteOutcome
from vault.domain.types import AuditEvent, Purpose, SubjectId, SubjectRecord, SubjectState
from vault.storage.sql import rows
from vault.storage.sql.database import Answer, Database
from vault.storage.sql.documents import KEYED
from vault.storage.sql.notices import publish
from vault.storage.tables import (
    consents,
    data_keys,
    document_blobs,
    document_holds,
    document_tombstones,
    document_variants,
    documents,
    idempotency_keys,
    shredded_subjects,
    shredded_tokens,
    subjects,
    token_values,
)

__all__ = ["SqlSubjectStore"]


class SqlSubjectStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"SqlSubjectStore({self._db.dialect})"

    # -- reads ----------------------------------------------------------------------------------

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
        with self._db.read() as conn:
            found = conn.execute(stmt).all()
        if not found:
            return None
        return SubjectRecord(
            subject,
            SubjectState(found[0].state),
            {Purpose(r.purpose): bool(r.granted) for r in found if r.purpose is not None},
            found[0].state_changed_at,
        )

    def subjects_with_digests(self, digests: Collection[str]) -> list[SubjectId]:
        stmt = select(subjects.c.subject_id).where(
            subjects.c.subject_digest.in_(bindparam("digests", expanding=True))
        )
        with self._db.read() as conn:
            return [SubjectId(s) for s in conn.execute(stmt, {"digests": list(digests)}).scalars()]

    def shred_receipt_of(self, subject: SubjectId) -> ShreddedRecord | None:
        return self.shred_receipt(self._db.names.digest(subject))

    def shred_receipt(self, digest: str) -> ShreddedRecord | None:
        stmt = select(shredded_subjects).where(shredded_subjects.c.subject_digest == digest)
        with self._db.read() as conn:
            r = conn.execute(stmt).first()
        return None if r is None else rows.receipt(r)

    # -- writes ---------------------------------------------------------------------------------

    def set_state(
        self, subject: SubjectId, state: SubjectState, now: datetime, audit: Sequence[AuditEvent]
    ) -> bool:
        def body(conn: Connection) -> None:
            if self._db.lock_subject(conn, subject) is None:
                raise Answer(WriteOutcome.GONE)
            conn.execute(
                update(subjects)
                .where(subjects.c.subject_id == subject)
                .values(state=state.value, state_changed_at=now)
            )
            rows.insert_audit(conn, audit)

        return self._db.outcome(body) is WriteOutcome.DONE

    def set_consent(
        self,
        subject: SubjectId,
        purpose: Purpose,
        granted: bool,
        now: datetime,
        audit: Sequence[AuditEvent],
    ) -> bool:
        def body(conn: Connection) -> None:
            if self._db.lock_subject(conn, subject) is None:
                raise Answer(WriteOutcome.GONE)
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
            rows.insert_audit(conn, audit)

        return self._db.outcome(body) is WriteOutcome.DONE

    def shred(
        self,
        subject: SubjectId,
        receipt: ShreddedRecord,
        audit: Sequence[AuditEvent],
        examined: Collection[str] | None = None,
    ) -> ShredResult:
        digest = receipt.subject_digest

        def body(conn: Connection) -> ShredResult:
            exists = self._db.lock_subject(conn, subject)
            earlier_row = conn.execute(
                select(shredded_subjects).where(shredded_subjects.c.subject_digest == digest)
            ).first()
            earlier = None if earlier_row is None else rows.receipt(earlier_row)
            if exists is None:
                return ShredResult(earlier, None)
            held = conn.execute(
                select(token_values.c.token, token_values.c.category).where(
                    token_values.c.subject_id == subject
                )
            ).all()
            if held:
                conn.execute(
                    self._db.insert_ignore(shredded_tokens),
                    [
                        {"token": t, "category": c, "receipt_id": receipt.receipt_id}
                        for t, c in held
                    ],
                )
            # Documents: those kept under a legal duty or hold were moved under a retention key
            # before this transaction (their subject link is cut); a hold placed since then
            # refuses the shred, to be retried (it will keep that document too).
            docs = conn.execute(
                select(documents.c.document_id, documents.c.document_type)
                .where(documents.c.subject_id == subject)
                .with_for_update()
            ).all()
            doc_ids = [d.document_id for d in docs]
            if examined is not None and not set(doc_ids) <= set(examined):
                # Uploaded since the keep step looked: it may be a document a law obliges us
                # to keep. Nothing changes; the keep step runs again.
                return ShredResult(None, None)
            if (
                doc_ids
                and conn.execute(
                    select(document_holds.c.hold_id)
                    .where(document_holds.c.document_id.in_(doc_ids))
                    .limit(1)
                ).first()
            ):
                return ShredResult(None, None)
            blobs: list[str] = []
            if doc_ids:
                blobs = [
                    str(b)
                    for b in conn.execute(
                        select(document_variants.c.blob_id).where(
                            document_variants.c.document_id.in_(doc_ids)
                        )
                    ).scalars()
                ]
                conn.execute(delete(documents).where(documents.c.document_id.in_(doc_ids)))
                conn.execute(
                    self._db.insert_ignore(document_tombstones),
                    [
                        {
                            "document_id": d.document_id,
                            "document_type": d.document_type,
                            "subject_digest": digest,
                            "destroyed_at": receipt.shredded_at,
                            "cause": "shred",
                            "naming": KEYED,  # the receipt's digest
                        }
                        for d in docs
                    ],
                )
                if blobs:
                    conn.execute(
                        self._db.insert_ignore(document_blobs),
                        [
                            {"blob_id": b, "state": "doomed", "since": receipt.shredded_at}
                            for b in blobs
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
                len(held),
                earlier.receipt_id if earlier is not None else receipt.previous_receipt_id,
                len(docs),
                receipt.retained,
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
                    documents_destroyed=done.documents_destroyed,
                    retained=rows.retained_json(done.retained),
                )
            )
            rows.insert_audit(conn, audit)
            # Every process drops the subject's key from its cache (on commit, or its next poll).
            publish(conn, NoticeKind.SUBJECT_KEY, digest, receipt.shredded_at)
            return ShredResult(done, (keys.rowcount, len(held)), tuple(blobs))

        return self._db.write(body)

    def scrub(self) -> bool:
        """SQLite: `secure_delete` zeroes deleted content in the database file, but the
        write-ahead log keeps earlier images of those pages until a checkpoint copies them back
        and the log is truncated. TRUNCATE waits (busy timeout) for readers of older snapshots
        to finish. PostgreSQL: nothing to do here (its heap and WAL keep old row versions until
        vacuum and segment recycling; see README)."""
        if self._db.dialect != "sqlite":
            return True
        with self._db.read() as conn:
            busy, _log_frames, _done = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        return int(busy) == 0
