"""What every write under a subject does first, whichever aggregate it writes (values,
documents): create the subject with its data key, or lock the existing one and count the
encryptions its data key is about to make. Raise `Answer` with the outcome that stops it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert, select

from vault.domain.stores import WriteOutcome
from vault.domain.types import SubjectId, SubjectState, WrappedKey
from vault.storage.sql import rows
from vault.storage.sql.database import Answer, Database
from vault.storage.sql.prepared import prepared
from vault.storage.tables import data_keys, shredded_subjects, subjects

__all__ = ["count_under_lock", "create_subject"]


def create_subject(
    db: Database,
    conn: Connection,
    subject: SubjectId,
    key: WrappedKey,
    encryptions: int,
    limit: int,
    now: datetime,
) -> None:
    digest = db.names.digest(subject)  # keyed: `shredded_subjects` holds keyed digests
    created = conn.execute(
        db.insert_ignore(subjects)
        .values(subject_id=subject, subject_digest=digest, state="active", created_at=now)
        .returning(subjects.c.subject_id)
    ).first()
    if created is None:
        raise Answer(WriteOutcome.SUBJECT_RACE)  # created meanwhile: use its key
    # After the insert, in its transaction: a shred that held the id's old row made the
    # insert wait, and its record is visible to this statement. (SQLite: the write lock.)
    shredded = conn.execute(
        select(shredded_subjects.c.subject_digest).where(
            shredded_subjects.c.subject_digest == digest
        )
    ).first()
    if shredded is not None:
        raise Answer(WriteOutcome.SUBJECT_SHREDDED)
    if encryptions > limit:
        raise Answer(WriteOutcome.KEY_EXHAUSTED)
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


def count_under_lock(
    db: Database, conn: Connection, subject: SubjectId, encryptions: int, limit: int
) -> None:
    row = db.lock_subject(conn, subject)
    if row is None:
        raise Answer(WriteOutcome.SUBJECT_RACE)  # shredded meanwhile: start over
    if row.state != SubjectState.ACTIVE.value:
        raise Answer(WriteOutcome.SUBJECT_STOPPED)
    counted = prepared(conn.dialect, rows.COUNT_ENCRYPTIONS).run(
        conn, {"s": subject, "n": encryptions, "limit": limit}
    )
    if counted != 1:
        raise Answer(WriteOutcome.KEY_EXHAUSTED)
