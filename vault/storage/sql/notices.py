"""The `NoticeFeed` port over SQL, and how a write publishes a notice.

A write that must reach every process's caches (a shred, a change of API keys) inserts a row in
`notices` in its own transaction (`publish`): it is announced if and only if it commits. Every
process then learns of it through one of two adapters:

- `PostgresNoticeFeed`: `publish` also NOTIFYs (PostgreSQL delivers notifications on commit);
  one LISTEN connection per process. After a lost connection it cannot know what it missed, so
  it calls `on_lost` (every cache forgets everything) before listening again.
- `PolledNoticeFeed` (SQLite, which has no NOTIFY): polls for rows past the last seq it saw,
  every `interval` seconds (one by default): a notice reaches every process within that time.

Either way correctness does not rest on the feed: every read checks the database (a shredded
subject has no rows), and the feed only removes key material and stale credentials from memory
sooner than their cache limits would.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime

import psycopg
from sqlalchemy import Connection, Engine, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from vault.domain.ports import Notice, NoticeKind
from vault.domain.types import AuditEvent
from vault.storage.sql.database import Database
from vault.storage.sql.rows import insert_audit
from vault.storage.tables import notices

__all__ = [
    "NOTICE_CHANNEL",
    "PolledNoticeFeed",
    "PostgresNoticeFeed",
    "announce",
    "publish",
    "purge_notices",
]


log = logging.getLogger(__name__)

NOTICE_CHANNEL = "pdvault_notice"


def publish(conn: Connection, kind: NoticeKind, key: str, now: datetime) -> None:
    """Announce, in the caller's transaction, what every process must forget."""
    conn.execute(insert(notices).values(kind=kind.value, key=key, created_at=now))
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_notify(NOTICE_CHANNEL, f"{kind.value}:{key}")))


def announce(
    db: Database, kind: NoticeKind, key: str, audit: Sequence[AuditEvent], now: datetime
) -> None:
    """Record `audit` and announce a notice to every process, in one transaction: a change
    that is not a write of the database (a policy file put in force) is told only if its
    audit entries commit."""

    def body(conn: Connection) -> None:
        insert_audit(conn, audit)
        publish(conn, kind, key, now)

    db.write(body)


def _parse(payload: str) -> Notice | None:
    kind, _, key = payload.partition(":")
    try:
        return Notice(NoticeKind(kind), key)
    except ValueError:
        log.warning("an unknown notice was ignored")
        return None


class PostgresNoticeFeed:
    def __init__(self, database_url: str) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return "PostgresNoticeFeed()"

    def start(
        self, on_notice: Callable[[Notice], None], on_lost: Callable[[], None], wait: float = 10.0
    ) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(on_notice, on_lost), name="notices", daemon=True
        )
        self._thread.start()
        self._ready.wait(wait)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self, on_notice: Callable[[Notice], None], on_lost: Callable[[], None]) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {NOTICE_CHANNEL}")
                    self._ready.set()
                    backoff = 0.5
                    while not self._stop.is_set():
                        for raw in conn.notifies(timeout=0.5):
                            notice = _parse(raw.payload)
                            if notice is not None:
                                on_notice(notice)
            except psycopg.Error as exc:
                log.warning("the notice listener lost its connection (%s)", type(exc).__name__)
                on_lost()  # what was missed is unknown: forget everything
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)


class PolledNoticeFeed:
    def __init__(self, engine: Engine, interval: float = 1.0) -> None:
        # A read: no transaction (on SQLite a transaction would take the write lock).
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: int | None = None

    def __repr__(self) -> str:
        return f"PolledNoticeFeed(last={self._last})"

    def start(self, on_notice: Callable[[Notice], None], on_lost: Callable[[], None]) -> None:
        try:
            with self._reader.connect() as conn:
                self._last = conn.execute(select(func.max(notices.c.seq))).scalar() or 0
        except SQLAlchemyError as exc:
            log.warning("notices: cannot read where they stand (%s)", type(exc).__name__)
        self._thread = threading.Thread(
            target=self._run, args=(on_notice, on_lost), name="notices", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def poll(self, on_notice: Callable[[Notice], None], on_lost: Callable[[], None]) -> None:
        """One look at the table: deliver what was published since the last one."""
        try:
            with self._reader.connect() as conn:
                if self._last is None:  # never read: whatever came before is unknown
                    self._last = conn.execute(select(func.max(notices.c.seq))).scalar() or 0
                    on_lost()
                    return
                found = conn.execute(
                    select(notices.c.seq, notices.c.kind, notices.c.key)
                    .where(notices.c.seq > self._last)
                    .order_by(notices.c.seq)
                ).all()
        except SQLAlchemyError as exc:
            log.warning("notices: poll failed (%s)", type(exc).__name__)
            return
        for seq, kind, key in found:
            notice = _parse(f"{kind}:{key}")
            if notice is not None:
                on_notice(notice)
            self._last = seq

    def _run(self, on_notice: Callable[[Notice], None], on_lost: Callable[[], None]) -> None:
        while not self._stop.wait(self._interval):
            self.poll(on_notice, on_lost)


def purge_notices(engine: Engine, before: datetime) -> None:
    """Forget notices older than `before` (every process has polled them long since)."""
    with engine.begin() as conn:
        conn.execute(notices.delete().where(notices.c.created_at < before))
