"""`QuotaStore` over SQL: items counted per caller, purpose and fixed window."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite

from vault.domain.types import CallerName, Purpose
from vault.storage.sql.database import Database
from vault.storage.tables import quota_usage

__all__ = ["SqlQuotaStore"]


def _take(dialect: str) -> Any:
    """One statement, its own transaction: insert the window's row, or add to its count only
    if the sum stays within the limit (`WHERE` on the conflict's update). PostgreSQL locks the
    row and checks the condition against its latest committed count, SQLite holds the write
    lock for the statement: two concurrent requests can never both pass the limit. No row
    returned: over the limit, nothing added. (A first request larger than the limit never
    gets here: the domain refuses it without asking.)"""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    new = insert(quota_usage).values(
        caller=bindparam("caller"),
        purpose=bindparam("purpose"),
        window_start=bindparam("window_start"),
        used=bindparam("items"),
    )
    total = quota_usage.c.used + new.excluded.used
    return new.on_conflict_do_update(
        index_elements=[quota_usage.c.caller, quota_usage.c.purpose, quota_usage.c.window_start],
        set_={"used": total},
        where=total <= bindparam("limit"),
    ).returning(quota_usage.c.used)


class SqlQuotaStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        if db.dialect not in ("postgresql", "sqlite"):
            raise NotImplementedError(db.dialect)
        self._take = _take(db.dialect)

    def __repr__(self) -> str:
        return f"SqlQuotaStore({self._db.dialect})"

    def take_items(
        self, caller: CallerName, purpose: Purpose, window_start: int, items: int, limit: int
    ) -> int | None:
        if items > limit:  # a first insert is not conditional: never try
            return None
        params = {
            "caller": caller,
            "purpose": purpose,
            "window_start": window_start,
            "items": items,
            "limit": limit,
        }
        # Autocommit: the one statement is the transaction (one round trip on PostgreSQL).
        with self._db.read() as conn:
            used = conn.execute(self._take, params).scalar()
        return None if used is None else int(used)

    def used_items(self, caller: CallerName, purpose: Purpose, window_start: int) -> int:
        stmt = select(func.coalesce(func.sum(quota_usage.c.used), 0)).where(
            quota_usage.c.caller == caller,
            quota_usage.c.purpose == purpose,
            quota_usage.c.window_start == window_start,
        )
        with self._db.read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def purge_quotas(self, before: int) -> int:
        with self._db.read() as conn:
            done = conn.execute(quota_usage.delete().where(quota_usage.c.window_start < before))
        return int(done.rowcount)
