"""Cross-process cache eviction on PostgreSQL: every pdvault process LISTENs on the shred
channel and drops a shredded subject's data key from its cache when a shred commits anywhere.

Correctness does not rest on this: detokenize and tokenize read the subject's rows from the
database on every call, and a shredded subject has none, so no process can serve its data even
before the notice arrives. The notice removes the key material from every process's memory at
once instead of when the cache entry ages out. After a lost connection the listener cannot know
what it missed, so it clears the whole cache before listening again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from vault.domain.types import SubjectId
from vault.storage.sql import SHRED_CHANNEL
from vault.storage.tables import shredded_subjects

log = logging.getLogger(__name__)


class ShredListener:
    def __init__(
        self,
        database_url: str,
        forget: Callable[[SubjectId], None],
        forget_all: Callable[[], None],
    ) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._forget = forget
        self._forget_all = forget_all
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shred-listener", daemon=True)

    def __repr__(self) -> str:
        return "ShredListener()"

    def start(self, wait: float = 10.0) -> None:
        self._thread.start()
        self._ready.wait(wait)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {SHRED_CHANNEL}")
                    self._ready.set()
                    backoff = 0.5
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            self._forget(SubjectId(notice.payload))
            except psycopg.Error as exc:
                log.warning("shred listener lost its connection (%s)", type(exc).__name__)
                self._forget_all()  # what was missed is unknown: forget everything
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)


class ShredPoller:
    """The same for SQLite, which has no NOTIFY: several processes on one database file poll the
    shred records once a second and drop the keys of subjects shredded elsewhere."""

    def __init__(
        self,
        engine: Engine,
        forget_digests: Callable[[set[str]], None],
        interval: float = 1.0,
    ) -> None:
        # A read: no transaction (on SQLite a transaction would take the write lock).
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._forget = forget_digests
        self._interval = interval
        self._stop = threading.Event()
        self._since = datetime.now(UTC)
        self._thread = threading.Thread(target=self._run, name="shred-poller", daemon=True)

    def __repr__(self) -> str:
        return "ShredPoller()"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with self._reader.connect() as conn:
                    rows = conn.execute(
                        select(
                            shredded_subjects.c.subject_digest, shredded_subjects.c.shredded_at
                        ).where(shredded_subjects.c.shredded_at >= self._since)
                    ).all()
            except SQLAlchemyError as exc:
                log.warning("shred poll failed (%s)", type(exc).__name__)
                continue
            if rows:
                self._forget({d for d, _ in rows})
                self._since = max(at for _, at in rows)
