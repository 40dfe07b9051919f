"""`AuditLog` over SQL: the Merkle log's appends (`rows.insert_audit`, also called inside other
stores' transactions), reads for exports, verification and proofs, and checkpoints. Appends go
through the database's group commit where it has one: the events and writes of all waiting
requests are committed together, by the first of them (`vault.storage.group_commit`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import Connection, or_, select, update

from vault.domain.audit_log import entry_bytes
from vault.domain.merkle import MerkleTree, leaf_hash
from vault.domain.stores import AuditHead, StoredCheckpoint, StoredEntry
from vault.domain.types import AuditEvent
from vault.errors import IntegrityError
from vault.storage.group_commit import GroupCommit
from vault.storage.sql import rows
from vault.storage.sql.database import Database
from vault.storage.tables import audit_checkpoints, audit_events, audit_head

__all__ = ["SqlAuditLog"]

_SEAL_BATCH = 1000


class SqlAuditLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"SqlAuditLog({self._db.dialect})"

    @property
    def group(self) -> GroupCommit | None:
        return self._db.group

    def append(self, events: Sequence[AuditEvent]) -> None:
        """Durable when it returns. Concurrent calls share one commit (group commit): the
        audit of every request is still committed before its answer, but a burst of requests
        pays for one fsync and one turn of the log's head lock, not one each."""
        if not events:
            return
        with self._db.telemetry.span("audit.commit"):
            self._db.append_audit(events)

    def of_subject(self, names: Collection[str], items: Collection[str]) -> list[AuditEvent]:
        clauses = []
        if names:
            clauses.append(audit_events.c.subject_id.in_(list(names)))
        if items:
            clauses.append(audit_events.c.token.in_(list(items)))
        if not clauses:
            return []
        stmt = select(audit_events).where(or_(*clauses)).order_by(audit_events.c.id)
        with self._db.read() as conn:
            return [rows.audit_event(r) for r in conn.execute(stmt)]

    def close(self) -> None:
        if self._db.group is not None:
            self._db.group.stop()

    # -- the Merkle log -------------------------------------------------------------------------

    def head(self) -> AuditHead:
        with self._db.read() as conn:
            r = conn.execute(select(audit_head).where(audit_head.c.id == 1)).one()
        tree = MerkleTree.from_bytes(bytes(r.frontier)) if r.frontier else MerkleTree()
        return AuditHead(int(r.size), tree.root())

    def entries(self, first: int, limit: int) -> list[StoredEntry]:
        stmt = (
            select(audit_events)
            .where(or_(audit_events.c.seq >= first, audit_events.c.seq.is_(None)))
            .order_by(audit_events.c.seq.is_(None), audit_events.c.seq, audit_events.c.id)
            .limit(limit)
        )
        with self._db.read() as conn:
            return [
                StoredEntry(
                    rows.audit_event(r),
                    r.subject_id,
                    bytes(r.leaf_hash) if r.leaf_hash is not None else None,
                )
                for r in conn.execute(stmt)
            ]

    def leaf_hashes(self, first: int, end: int) -> list[bytes]:
        stmt = (
            select(audit_events.c.leaf_hash)
            .where(audit_events.c.seq >= first, audit_events.c.seq < end)
            .order_by(audit_events.c.seq)
        )
        with self._db.read() as conn:
            found = [bytes(h) for h in conn.execute(stmt).scalars() if h is not None]
        if len(found) != end - first:
            raise IntegrityError("audit entries are missing")
        return found

    def checkpoints(self) -> list[StoredCheckpoint]:
        stmt = select(audit_checkpoints).order_by(audit_checkpoints.c.size)
        with self._db.read() as conn:
            return [
                StoredCheckpoint(int(r.size), bytes(r.root), r.note, r.created_at)
                for r in conn.execute(stmt)
            ]

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> bool:
        def body(conn: Connection) -> bool:
            done = conn.execute(
                self._db.insert_ignore(audit_checkpoints)
                .values(
                    size=checkpoint.size,
                    root=checkpoint.root,
                    note=checkpoint.note,
                    created_at=checkpoint.created_at,
                )
                .returning(audit_checkpoints.c.size)
            ).first()
            return done is not None

        return self._db.write(body)

    def seal_legacy(self) -> int:
        sealed = 0
        while True:
            done = self._db.write(self._seal_batch)
            sealed += done
            if done < _SEAL_BATCH:
                return sealed

    def _seal_batch(self, conn: Connection) -> int:
        head = conn.execute(
            select(audit_head.c.size, audit_head.c.frontier)
            .where(audit_head.c.id == 1)
            .with_for_update()
        ).one()
        tree = MerkleTree.from_bytes(bytes(head.frontier)) if head.frontier else MerkleTree()
        legacy = conn.execute(
            select(audit_events)
            .where(audit_events.c.seq.is_(None))
            .order_by(audit_events.c.id)
            .limit(_SEAL_BATCH)
        ).all()
        for r in legacy:
            seq = tree.size
            leaf = leaf_hash(entry_bytes(rows.audit_event(r), seq, r.subject_id))
            tree.append(leaf)
            conn.execute(
                update(audit_events)
                .where(audit_events.c.id == r.id)
                .values(seq=seq, leaf_hash=leaf)
            )
        if legacy:
            conn.execute(
                update(audit_head)
                .where(audit_head.c.id == 1)
                .values(size=tree.size, frontier=tree.to_bytes(), root=tree.root())
            )
        return len(legacy)
