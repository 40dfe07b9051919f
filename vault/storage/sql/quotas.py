"""`QuotaStore` over SQL: items counted per caller, purpose and fixed window."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, String, bindparam, func, select, true
from sqlalchemy.dialects import postgresql, sqlite

from vault.domain.types import CallerName, Purpose
from vault.storage.sql.database import Database, unavailable
from vault.storage.tables import quota_usage

__all__ = ["SqlQuotaStore"]


def _take(dialect: str) -> Any:
    """One statement, its own transaction: insert the window's row, or add to its count only
    if the sum stays within the limit (`WHERE` on the conflict's update). PostgreSQL locks the
    row and checks the condition against its latest committed count, SQLite holds the write
    lock for the statement: two concurrent requests can never both pass the limit. No row
    returned: over the limit, nothing added. (A first request larger than the limit never
    gets here: `take_items` refuses it without asking.)

    Its commit does not wait for the disk (see `SqlQuotaStore`): on PostgreSQL the statement
    itself turns `synchronous_commit` off for its own transaction (`set_config(..., true)`
    is `SET LOCAL`, read when the transaction commits, right after the statement)."""
    columns: list[Any] = [
        bindparam("caller", type_=String),
        bindparam("purpose", type_=String),
        bindparam("window_start", type_=BigInteger),
        bindparam("items", type_=BigInteger),
    ]
    row: Any = select(*columns)
    new: Any
    if dialect == "postgresql":
        row = row.where(func.set_config("synchronous_commit", "off", true()).is_not(None))
        new = postgresql.insert(quota_usage)
    else:
        new = sqlite.insert(quota_usage)
    new = new.from_select(["caller", "purpose", "window_start", "used"], row)
    total = quota_usage.c.used + new.excluded.used
    return new.on_conflict_do_update(
        index_elements=[quota_usage.c.caller, quota_usage.c.purpose, quota_usage.c.window_start],
        set_={"used": total},
        where=total <= bindparam("limit", type_=BigInteger),
    ).returning(quota_usage.c.used)


class SqlQuotaStore:
    """Counts commit without waiting for the disk, and lose nothing that mattered by it: a
    request whose items were counted returns values only after its audit entries are committed
    durably, and that commit makes the write-ahead log durable up to its own place (one log,
    PostgreSQL's WAL or SQLite's -wal file, written in order), which comes after the count's.
    A crash can lose only the counts of requests that answered nothing. This keeps the check
    to one statement and no extra fsync on the detokenize path."""

    def __init__(self, db: Database) -> None:
        self._db = db
        if db.dialect not in ("postgresql", "sqlite"):
            raise NotImplementedError(db.dialect)
        # Built by SQLAlchemy once, run on the driver's cursor: this is on every detokenize,
        # and SQLAlchemy's execution costs more CPU than the statement (measured: about 40%
        # of the check). The bound values SQLAlchemy made of literals travel with it.
        compiled = _take(db.dialect).compile(dialect=db.engine.dialect)
        self._sql = str(compiled)
        self._literals = {k: v for k, v in compiled.params.items() if v is not None}
        self._order = compiled.positiontup  # positional drivers (sqlite3): the names in order

    def __repr__(self) -> str:
        return f"SqlQuotaStore({self._db.dialect})"

    def take_items(
        self, caller: CallerName, purpose: Purpose, window_start: int, items: int, limit: int
    ) -> int | None:
        if items > limit:  # a first insert is not conditional: never try
            return None
        params: dict[str, Any] = {
            **self._literals,
            "caller": caller,
            "purpose": purpose,
            "window_start": window_start,
            "items": items,
            "limit": limit,
        }
        args: Any = tuple(params[p] for p in self._order) if self._order else params
        # Autocommit: the one statement is the transaction (one round trip on PostgreSQL). On
        # SQLite it is a write: it queues with this process's other writers.
        with self._db.writing(), self._db.read() as conn:
            driver: Any = conn.connection.driver_connection
            try:
                cursor = driver.cursor()
                try:
                    if self._db.dialect == "sqlite":
                        # The connection's sync level, for this commit only (the pool's
                        # connections are FULL for everything else: restored whatever happens).
                        cursor.execute("PRAGMA synchronous=NORMAL")
                        try:
                            cursor.execute(self._sql, args)
                            row = cursor.fetchone()
                        finally:
                            cursor.execute("PRAGMA synchronous=FULL")
                    else:
                        cursor.execute(self._sql, args)
                        row = cursor.fetchone()
                finally:
                    cursor.close()
            except conn.dialect.loaded_dbapi.Error as exc:
                conn.invalidate()  # its state is unknown: the pool opens a new one
                raise unavailable(exc) from None
        return None if row is None else int(row[0])

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
