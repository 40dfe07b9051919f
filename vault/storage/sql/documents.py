"""`DocumentStore` and the database `BlobStore` over SQL.

Locks: a new document takes its subject's lock as a tokenize does (FOR SHARE, or creates the
subject), so a shred (FOR UPDATE) waits for it or refuses it. Changes to an existing document
lock the document's row (FOR UPDATE): a hold and a destroy of the same document are ordered.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from vault.domain.documents import (
    DocumentId,
    DocumentType,
    MediaType,
    ScanResult,
    ScanState,
    Variant,
)
from vault.domain.retention import RETENTION_SUBJECT_PREFIX
from vault.domain.stores import (
    DocumentRecord,
    DocumentTombstone,
    Hold,
    NewDocument,
    RetentionKey,
    VariantRecord,
    WriteOutcome,
)
from vault.domain.types import AuditEvent, CallerName, SubjectId, WrappedKey
from vault.errors import IntegrityError
from vault.storage.sql import rows
from vault.storage.sql.database import Answer, Database
from vault.storage.sql.ownership import count_under_lock, create_subject
from vault.storage.tables import (
    data_keys,
    document_blobs,
    document_holds,
    document_segments,
    document_tombstones,
    document_variants,
    documents,
    shredded_tokens,
    subjects,
    token_values,
)

__all__ = ["KEYED", "LEGACY_BINDING", "SqlBlobStore", "SqlDocumentStore"]

WRITING = "writing"
DOOMED = "doomed"
KEYED = "hmac"  # documents.binding, document_tombstones.naming: the keyed digest
LEGACY_BINDING = "sha256"  # documents.binding: bound to the unkeyed digest, kept sealed
# Never a digest: a binding that no content authenticates under.
UNOPENABLE = "unopenable"


class SqlDocumentStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"SqlDocumentStore({self._db.dialect})"

    # -- reads ----------------------------------------------------------------------------------

    def document(self, document_id: DocumentId) -> DocumentRecord | None:
        with self._db.read() as conn:
            found = self._load(conn, [document_id])
        return found[0] if found else None

    def tombstone(self, document_id: DocumentId) -> DocumentTombstone | None:
        stmt = select(document_tombstones).where(document_tombstones.c.document_id == document_id)
        with self._db.read() as conn:
            r = conn.execute(stmt).first()
        if r is None:
            return None
        return DocumentTombstone(
            DocumentId(r.document_id),
            DocumentType(r.document_type),
            r.subject_digest,
            r.destroyed_at,
            r.cause,
        )

    def documents_of(self, subject: SubjectId) -> list[DocumentRecord]:
        stmt = (
            select(documents.c.document_id)
            .where(documents.c.subject_id == subject)
            .order_by(documents.c.created_at, documents.c.document_id)
        )
        with self._db.read() as conn:
            ids = [DocumentId(d) for d in conn.execute(stmt).scalars()]
            return self._load(conn, ids)

    def due(self, now: datetime, limit: int) -> list[DocumentRecord]:
        stmt = (
            select(documents.c.document_id)
            .where(documents.c.due_at.is_not(None), documents.c.due_at <= now)
            .order_by(documents.c.due_at, documents.c.document_id)
            .limit(limit)
        )
        with self._db.read() as conn:
            ids = [DocumentId(d) for d in conn.execute(stmt).scalars()]
            return self._load(conn, ids)

    def _load(self, conn: Connection, ids: Sequence[DocumentId]) -> list[DocumentRecord]:
        if not ids:
            return []
        heads = conn.execute(select(documents).where(documents.c.document_id.in_(ids))).all()
        variants: dict[str, list[VariantRecord]] = {}
        for v in conn.execute(
            select(document_variants)
            .where(document_variants.c.document_id.in_(ids))
            .order_by(document_variants.c.variant)
        ):
            variants.setdefault(v.document_id, []).append(_variant(v))
        holds: dict[str, list[Hold]] = {}
        for h in conn.execute(
            select(document_holds)
            .where(document_holds.c.document_id.in_(ids))
            .order_by(document_holds.c.placed_at, document_holds.c.hold_id)
        ):
            holds.setdefault(h.document_id, []).append(
                Hold(h.hold_id, h.reason, CallerName(h.placed_by), h.placed_at)
            )
        by_id = {
            h.document_id: _record(
                h,
                variants.get(h.document_id, []),
                holds.get(h.document_id, []),
                self._bound_digest(h),
            )
            for h in heads
        }
        return [by_id[i] for i in ids if i in by_id]

    def _bound_digest(self, head: Any) -> str | None:
        """The unkeyed digest a document stored before keyed digests is bound to, opened from
        its sealed copy; None when the content is bound to `subject_digest`."""
        if head.binding != LEGACY_BINDING:
            return None
        try:
            return self._db.bindings.open(head.document_id, bytes(head.sealed_binding or b""))
        except IntegrityError:
            # Tampered, or sealed under another naming secret: the record still lists, and
            # opening the content fails authentication (DATA_LOSS), as a tampered segment does.
            return UNOPENABLE

    # -- writes ---------------------------------------------------------------------------------

    def begin_upload(self, blobs: Sequence[str], now: datetime) -> None:
        def body(conn: Connection) -> None:
            conn.execute(
                insert(document_blobs),
                [{"blob_id": b, "state": WRITING, "since": now} for b in blobs],
            )

        self._db.write(body)

    def add(self, new: NewDocument, audit: Sequence[AuditEvent]) -> WriteOutcome:
        record = new.record
        subject = record.subject
        if subject is None:
            raise ValueError("a new document belongs to a subject")

        def body(conn: Connection) -> None:
            encryptions = len(record.variants)  # each variant's key, wrapped under the data key
            if new.new_key is not None:
                create_subject(
                    self._db,
                    conn,
                    subject,
                    new.new_key,
                    encryptions,
                    new.encryption_limit,
                    record.created_at,
                )
            elif new.replaces is not None:
                self._move_value(conn, subject, new, encryptions)
            else:
                count_under_lock(self._db, conn, subject, encryptions, new.encryption_limit)
            conn.execute(insert(documents).values(**_head(record)))
            conn.execute(
                insert(document_variants),
                [_variant_row(record.document_id, v) for v in record.variants],
            )
            conn.execute(
                delete(document_blobs).where(
                    document_blobs.c.blob_id.in_([v.blob for v in record.variants])
                )
            )
            rows.insert_audit(conn, audit)

        return self._db.outcome(body)

    def _move_value(self, conn: Connection, subject: SubjectId, new: NewDocument, n: int) -> None:
        """The retired field's value becomes this document: its row goes, its token stays as
        a tombstone that names the document. Allowed on a stopped subject (nothing new)."""
        if self._db.lock_subject(conn, subject) is None:
            raise Answer(WriteOutcome.SUBJECT_RACE)
        counted = conn.execute(
            rows.COUNT_ENCRYPTIONS, {"s": subject, "n": n, "limit": new.encryption_limit}
        )
        if counted.rowcount != 1:
            raise Answer(WriteOutcome.KEY_EXHAUSTED)
        value = conn.execute(
            select(token_values.c.category).where(
                token_values.c.token == new.replaces, token_values.c.subject_id == subject
            )
        ).first()
        if value is None:
            raise Answer(WriteOutcome.GONE)
        conn.execute(
            insert(shredded_tokens).values(
                token=new.replaces,
                category=value.category,
                receipt_id=new.record.document_id,
                cause="moved",
            )
        )
        conn.execute(delete(token_values).where(token_values.c.token == new.replaces))

    def set_verified(
        self,
        document_id: DocumentId,
        at: datetime,
        due_at: datetime | None,
        audit: Sequence[AuditEvent],
    ) -> bool:
        def body(conn: Connection) -> None:
            head = self._lock(conn, document_id)
            if head is None or head.subject_id is None:
                raise Answer(WriteOutcome.GONE)
            if head.verified_at is None:
                conn.execute(
                    update(documents)
                    .where(documents.c.document_id == document_id)
                    .values(verified_at=at, due_at=due_at)
                )
            rows.insert_audit(conn, audit)

        return self._db.outcome(body) is WriteOutcome.DONE

    def set_scan(
        self, document_id: DocumentId, scan: ScanResult, audit: Sequence[AuditEvent]
    ) -> bool:
        def body(conn: Connection) -> None:
            if self._lock(conn, document_id) is None:
                raise Answer(WriteOutcome.GONE)
            conn.execute(
                update(documents)
                .where(documents.c.document_id == document_id)
                .values(
                    scan_state=scan.state.value,
                    scan_engine=scan.engine[:128],
                    scan_signature=scan.signature[:128] if scan.signature else None,
                )
            )
            rows.insert_audit(conn, audit)

        return self._db.outcome(body) is WriteOutcome.DONE

    def add_hold(self, document_id: DocumentId, hold: Hold, audit: Sequence[AuditEvent]) -> bool:
        def body(conn: Connection) -> None:
            if self._lock(conn, document_id) is None:
                raise Answer(WriteOutcome.GONE)
            conn.execute(
                insert(document_holds).values(
                    hold_id=hold.hold_id,
                    document_id=document_id,
                    reason=hold.reason,
                    placed_by=hold.placed_by,
                    placed_at=hold.placed_at,
                )
            )
            rows.insert_audit(conn, audit)

        return self._db.outcome(body) is WriteOutcome.DONE

    def release_hold(
        self, document_id: DocumentId, hold_id: str | None, audit: Sequence[AuditEvent]
    ) -> int:
        def body(conn: Connection) -> int:
            if self._lock(conn, document_id) is None:
                return 0
            stmt = delete(document_holds).where(document_holds.c.document_id == document_id)
            if hold_id is not None:
                stmt = stmt.where(document_holds.c.hold_id == hold_id)
            released = conn.execute(stmt).rowcount
            if released:
                rows.insert_audit(conn, audit)
            return int(released)

        return self._db.write(body)

    def set_due_dates(self, dates: Sequence[tuple[DocumentId, datetime | None]]) -> None:
        if not dates:
            return

        def body(conn: Connection) -> None:
            for document_id, due_at in sorted(dates, key=lambda d: d[0]):  # one lock order
                conn.execute(
                    update(documents)
                    .where(documents.c.document_id == document_id)
                    .values(due_at=due_at)
                )

        self._db.write(body)

    def destroy(
        self,
        document_id: DocumentId,
        variants: Collection[Variant] | None,
        tombstone: DocumentTombstone,
        audit: Sequence[AuditEvent],
        due_at: datetime | None = None,
        unless_held: bool = True,
    ) -> list[str] | None:
        def body(conn: Connection) -> list[str] | None:
            head = self._lock(conn, document_id)
            if head is None:
                return None
            if (
                unless_held
                and conn.execute(
                    select(document_holds.c.hold_id)
                    .where(document_holds.c.document_id == document_id)
                    .limit(1)
                ).first()
            ):
                return None
            held = conn.execute(
                select(document_variants.c.variant, document_variants.c.blob_id).where(
                    document_variants.c.document_id == document_id
                )
            ).all()
            doomed = [(v, b) for v, b in held if variants is None or Variant(v) in set(variants)]
            whole = len(doomed) == len(held)
            blobs = [b for _v, b in doomed]
            if whole:
                # The keys go with the rows (cascade); the tombstone answers for the id. Its
                # digest is the locked row's: a row of an older version (during a rollout) is
                # still unkeyed, and its tombstone is converted with the rest at start-up.
                conn.execute(delete(documents).where(documents.c.document_id == document_id))
                conn.execute(
                    self._db.insert_ignore(document_tombstones).values(
                        document_id=tombstone.document_id,
                        document_type=tombstone.document_type.value,
                        subject_digest=head.subject_digest,
                        destroyed_at=tombstone.destroyed_at,
                        cause=tombstone.cause,
                        naming=KEYED if head.binding is not None else None,
                    )
                )
            else:
                conn.execute(
                    delete(document_variants).where(
                        document_variants.c.document_id == document_id,
                        document_variants.c.variant.in_([v for v, _b in doomed]),
                    )
                )
                conn.execute(
                    update(documents)
                    .where(documents.c.document_id == document_id)
                    .values(due_at=due_at)
                )
            if blobs:
                conn.execute(
                    self._db.insert_ignore(document_blobs),
                    [
                        {"blob_id": b, "state": DOOMED, "since": tombstone.destroyed_at}
                        for b in blobs
                    ],
                )
            rows.insert_audit(conn, audit)
            return blobs

        return self._db.write(body)

    def retain(
        self,
        document_id: DocumentId,
        owner: RetentionKey,
        rewrapped: Sequence[tuple[Variant, bytes]],
        due_at: datetime,
        expected_owner: str,
    ) -> bool:
        def body(conn: Connection) -> None:
            head = self._lock(conn, document_id)
            if head is None or head.key_owner != expected_owner:
                raise Answer(WriteOutcome.GONE)
            for variant, wrapped in rewrapped:
                conn.execute(
                    update(document_variants)
                    .where(
                        document_variants.c.document_id == document_id,
                        document_variants.c.variant == variant.value,
                    )
                    .values(wrapped_key=wrapped)
                )
            conn.execute(
                update(documents)
                .where(documents.c.document_id == document_id)
                .values(subject_id=None, key_owner=owner.owner, due_at=due_at)
            )

        return self._db.outcome(body) is WriteOutcome.DONE

    # -- retention keys -------------------------------------------------------------------------

    def retention_key(self, owner: str) -> RetentionKey | None:
        stmt = select(data_keys).where(data_keys.c.subject_id == owner)
        with self._db.read() as conn:
            r = conn.execute(stmt).first()
        return None if r is None else _retention_key(r)

    def add_retention_key(self, key: RetentionKey, now: datetime) -> RetentionKey:
        if not key.owner.startswith(RETENTION_SUBJECT_PREFIX):
            raise ValueError("a retention key's owner is reserved")

        def body(conn: Connection) -> RetentionKey:
            # The owner is a row of `subjects` in state `retention`: so key rotation, rewrap,
            # trim and the start-up key check treat retention keys as every data key.
            created = conn.execute(
                self._db.insert_ignore(subjects)
                .values(
                    subject_id=key.owner,
                    subject_digest=self._db.names.digest(key.owner),
                    state="retention",
                    created_at=now,
                )
                .returning(subjects.c.subject_id)
            ).first()
            if created is None:
                r = conn.execute(select(data_keys).where(data_keys.c.subject_id == key.owner)).one()
                return _retention_key(r)
            conn.execute(
                insert(data_keys).values(
                    subject_id=key.owner,
                    provider=key.wrapped.provider,
                    kek_version=key.wrapped.kek_version,
                    wrapped_key=key.wrapped.blob,
                    encryptions=0,
                    created_at=now,
                )
            )
            return key

        return self._db.write(body)

    def drop_unused_retention_keys(self) -> list[str]:
        def body(conn: Connection) -> list[str]:
            used = select(documents.c.key_owner).distinct()
            unused = [
                str(o)
                for o in conn.execute(
                    select(subjects.c.subject_id).where(
                        subjects.c.state == "retention",
                        subjects.c.subject_id.not_in(used),
                    )
                ).scalars()
            ]
            if unused:
                conn.execute(delete(data_keys).where(data_keys.c.subject_id.in_(unused)))
                conn.execute(delete(subjects).where(subjects.c.subject_id.in_(unused)))
            return unused

        return self._db.write(body)

    # -- blob marks -----------------------------------------------------------------------------

    def stale_blobs(self, before: datetime) -> list[str]:
        stmt = select(document_blobs.c.blob_id).where(
            (document_blobs.c.state == DOOMED) | (document_blobs.c.since < before)
        )
        with self._db.read() as conn:
            return [str(b) for b in conn.execute(stmt).scalars()]

    def forget_blobs(self, blobs: Collection[str]) -> None:
        if not blobs:
            return

        def body(conn: Connection) -> None:
            conn.execute(delete(document_blobs).where(document_blobs.c.blob_id.in_(list(blobs))))

        self._db.write(body)

    def _lock(self, conn: Connection, document_id: DocumentId) -> Any:
        return conn.execute(
            select(
                documents.c.document_id,
                documents.c.subject_id,
                documents.c.key_owner,
                documents.c.verified_at,
                documents.c.subject_digest,
                documents.c.binding,
            )
            .where(documents.c.document_id == document_id)
            .with_for_update()
        ).first()


# Built once: a download reads its segments 16 at a time, and building the statement on each
# read cost SQLite downloads more than the query did (bench.documents: 0.5 of 1 ms per MiB).
_SEGMENTS = (
    select(document_segments.c.ciphertext)
    .where(
        document_segments.c.blob_id == bindparam("blob"),
        document_segments.c.seq >= bindparam("first"),
        document_segments.c.seq < bindparam("end"),
    )
    .order_by(document_segments.c.seq)
)


class SqlBlobStore:
    """Segments in the `document_segments` table: in the database's backups and under its
    crypto-shredding, like every field."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"SqlBlobStore({self._db.dialect})"

    def write(self, blob: str, first: int, segments: Sequence[bytes]) -> None:
        if not segments:
            return

        def body(conn: Connection) -> None:
            conn.execute(
                insert(document_segments),
                [
                    {"blob_id": blob, "seq": first + i, "ciphertext": s}
                    for i, s in enumerate(segments)
                ],
            )

        self._db.write(body)

    def read(self, blob: str, first: int, count: int) -> list[bytes]:
        with self._db.read() as conn:
            found = conn.execute(_SEGMENTS, {"blob": blob, "first": first, "end": first + count})
            return [bytes(c) for c in found.scalars()]

    def delete(self, blobs: Collection[str]) -> None:
        if not blobs:
            return

        def body(conn: Connection) -> None:
            conn.execute(
                delete(document_segments).where(document_segments.c.blob_id.in_(list(blobs)))
            )

        self._db.write(body)


def _head(r: DocumentRecord) -> dict[str, Any]:
    return {
        "document_id": r.document_id,
        "subject_id": r.subject,
        "subject_digest": r.subject_digest,
        "document_type": r.document_type.value,
        "uploaded_by": r.uploaded_by,
        "created_at": r.created_at,
        "scan_state": r.scan.state.value,
        "scan_engine": r.scan.engine[:128],
        "scan_signature": r.scan.signature[:128] if r.scan.signature else None,
        "key_owner": r.key_owner,
        "retention_rule": r.retention_rule,
        "due_at": r.due_at,
        "verified_at": r.verified_at,
        "masked_statement": r.masked_statement,
        "pages": r.pages,
        # A new document is bound to its keyed digest (a record read back from before keeps
        # its own binding, and is never inserted again).
        "binding": KEYED,
    }


def _variant_row(document_id: DocumentId, v: VariantRecord) -> dict[str, Any]:
    return {
        "document_id": document_id,
        "variant": v.variant.value,
        "media_type": v.media_type.value,
        "size": v.size,
        "segments": v.segments,
        "blob_id": v.blob,
        "format": v.format,
        "header": v.header,
        "wrapped_key": v.wrapped_key,
    }


def _variant(v: Any) -> VariantRecord:
    return VariantRecord(
        Variant(v.variant),
        MediaType(v.media_type),
        int(v.size),
        int(v.segments),
        v.blob_id,
        bytes(v.header),
        bytes(v.wrapped_key),
        v.format,
    )


def _record(
    h: Any, variants: list[VariantRecord], holds: list[Hold], bound_digest: str | None
) -> DocumentRecord:
    return DocumentRecord(
        document_id=DocumentId(h.document_id),
        subject=SubjectId(h.subject_id) if h.subject_id is not None else None,
        subject_digest=h.subject_digest,
        document_type=DocumentType(h.document_type),
        uploaded_by=CallerName(h.uploaded_by),
        created_at=h.created_at,
        scan=ScanResult(ScanState(h.scan_state), h.scan_signature, h.scan_engine),
        key_owner=h.key_owner,
        retention_rule=h.retention_rule,
        due_at=h.due_at,
        verified_at=h.verified_at,
        masked_statement=bool(h.masked_statement),
        holds=tuple(holds),
        variants=tuple(variants),
        pages=h.pages,
        bound_digest=bound_digest,
    )


def _retention_key(r: Any) -> RetentionKey:
    return RetentionKey(r.subject_id, WrappedKey(r.provider, r.kek_version, bytes(r.wrapped_key)))
