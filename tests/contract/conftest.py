"""The storage contract suites run against every adapter: SQLite, PostgreSQL and memory.

`harness` gives one adapter's `Stores`, and the one thing a test needs that no port offers:
putting a subject row back under a shredded id, as a partial restore of a backup would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, insert

from vault.domain.stores import Stores
from vault.domain.types import (
    Action,
    AuditEvent,
    CallerName,
    Category,
    Outcome,
    StoredValue,
    SubjectId,
    SubjectState,
    Token,
    TokenFormat,
    WrappedKey,
)
from vault.storage import migrate
from vault.storage.memory import MEMORY_NAMES, MemoryState, memory_stores
from vault.storage.memory import _Subject as MemorySubject
from vault.storage.sql import Database, make_engine, sql_stores
from vault.storage.tables import subjects

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
KEY = WrappedKey("local", 1, b"\x01" * 49)
S = SubjectId("user-1")


@dataclass
class Harness:
    kind: str
    stores: Stores
    database: Database | None = None
    memory: MemoryState | None = None

    def restore_subject(self, subject: SubjectId) -> None:
        """A subject row again under its id, as a partial restore of a backup would put it."""
        if self.memory is not None:
            self.memory.subjects[subject] = MemorySubject(SubjectState.ACTIVE, NOW)
            return
        assert self.database is not None
        with self.database.engine.begin() as conn:
            conn.execute(
                insert(subjects).values(
                    subject_id=subject,
                    subject_digest=MEMORY_NAMES.digest(subject),
                    state="active",
                    created_at=NOW,
                )
            )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "memory"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "memory":
        state = MemoryState()
        yield Harness("memory", memory_stores(state), memory=state)
        return
    yield from sql_harness(request, request.param)


def sql_harness(request: pytest.FixtureRequest, kind: str) -> Iterator[Harness]:
    """The SQL adapters' harness on a migrated scratch database of `kind`."""
    url: str = request.getfixturevalue("database_url_" + kind)
    engine = make_engine(url)
    migrate.upgrade(engine)
    db = Database(engine, names=MEMORY_NAMES)
    stores = sql_stores(db)
    try:
        yield Harness(kind, stores, database=db)
    finally:
        stores.audit.close()
        engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An empty database at the head migration (SQLite file or PostgreSQL)."""
    eng = make_engine(database_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def stores(harness: Harness) -> Stores:
    return harness.stores


def value(token: str, subject: SubjectId = S) -> StoredValue:
    return StoredValue(
        Token(token), subject, Category("name"), TokenFormat.OPAQUE, b"ct-" + token.encode()
    )


REF = "ref:" + "ab" * 32  # a subject's keyed digest, as SubjectRefs makes them


def event(
    token: str | None = None, subject: SubjectId | None = S, ref: str | None = REF
) -> AuditEvent:
    return AuditEvent(
        occurred_at=NOW,
        caller=CallerName("kyc"),
        action=Action.TOKENIZE,
        outcome=Outcome.GRANTED,
        rule="caller:kyc:tokenize",
        token=Token(token) if token else None,
        subject=subject,
        subject_ref=ref if subject is not None else None,
    )
