"""The storage ports over SQLAlchemy Core: SQLite (the embedded default) and PostgreSQL
(production). One `Database` (engine, transactions, retries, locks) shared by one adapter per
port; `sql_stores` wires them."""

from __future__ import annotations

from sqlalchemy import Engine

from vault.domain.stores import Stores
from vault.storage.sql.approvals import SqlApprovalStore
from vault.storage.sql.audit import SqlAuditLog
from vault.storage.sql.database import Database, make_engine, redact_url
from vault.storage.sql.documents import SqlBlobStore, SqlDocumentStore
from vault.storage.sql.notices import (
    PolledNoticeFeed,
    PostgresNoticeFeed,
    announce,
    purge_notices,
)
from vault.storage.sql.quotas import SqlQuotaStore
from vault.storage.sql.records import SqlCredentialStore, SqlIdempotencyStore, SqlKeyInventory
from vault.storage.sql.subjects import SqlSubjectStore
from vault.storage.sql.values import SqlValueStore

__all__ = [
    "Database",
    "Engine",
    "PolledNoticeFeed",
    "PostgresNoticeFeed",
    "SqlAuditLog",
    "announce",
    "make_engine",
    "purge_notices",
    "redact_url",
    "sql_stores",
]


def sql_stores(db: Database, group_commit: bool = True) -> Stores:
    """The stores of a serving process (`group_commit`: concurrent requests' writes and audit
    events share transactions), or of a one-shot command (without)."""
    if group_commit:
        db.use_group_commit()
    return Stores(
        values=SqlValueStore(db),
        subjects=SqlSubjectStore(db),
        idempotency=SqlIdempotencyStore(db),
        audit=SqlAuditLog(db),
        credentials=SqlCredentialStore(db),
        keys=SqlKeyInventory(db),
        documents=SqlDocumentStore(db),
        blobs=SqlBlobStore(db),
        approvals=SqlApprovalStore(db),
        quotas=SqlQuotaStore(db),
    )
