"""`AuditLog` over SQL. It owns the group commit: one writer thread commits the events of all
waiting requests together (`vault.storage.group_commit`)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from vault.domain.types import AuditEvent, SubjectId, anonymized_subject, subject_digest
from vault.storage.group_commit import GroupCommit
from vault.storage.sql import rows
from vault.storage.sql.database import Database
from vault.storage.tables import audit_events

__all__ = ["SqlAuditLog"]


class SqlAuditLog:
    def __init__(self, db: Database, group_commit: bool = True) -> None:
        self._db = db
        self._group = GroupCommit(self._commit) if group_commit else None

    def __repr__(self) -> str:
        return f"SqlAuditLog({self._db.dialect})"

    @property
    def group(self) -> GroupCommit | None:
        return self._group

    def append(self, events: Sequence[AuditEvent]) -> None:
        """Durable when it returns. Concurrent calls share one commit (group commit): the
        audit of every request is still committed before its answer, but a burst of requests
        pays for one fsync, not one each."""
        if not events:
            return
        if self._group is not None:
            self._group.append(events)
            return
        self._commit(events)

    def _commit(self, events: Sequence[AuditEvent]) -> None:
        self._db.write(lambda conn: rows.insert_audit(conn, events))

    def of_subject(self, subject: SubjectId) -> list[AuditEvent]:
        named = anonymized_subject(subject_digest(subject))
        stmt = (
            select(audit_events)
            .where(audit_events.c.subject_id == named)
            .order_by(audit_events.c.id)
        )
        with self._db.read() as conn:
            return [rows.audit_event(r) for r in conn.execute(stmt)]

    def close(self) -> None:
        if self._group is not None:
            self._group.stop()
