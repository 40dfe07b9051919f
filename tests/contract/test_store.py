"""The Store contract, run against every adapter: SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select

from vault.domain.ports import (
    ApiKeyRecord,
    DuplicateRequestError,
    KeyUsageExhaustedError,
    SubjectKeyRaceError,
    TokenCollisionError,
)
from vault.domain.types import (
    Action,
    AuditEvent,
    CallerName,
    Category,
    IdempotencyRecord,
    Outcome,
    StoredValue,
    SubjectId,
    Token,
    TokenFormat,
    WrappedKey,
)
from vault.errors import StorageUnavailable
from vault.storage import migrate
from vault.storage.store import SqlStore, make_engine
from vault.storage.tables import audit_events, metadata

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
KEY = WrappedKey("local", 1, b"\x01" * 49)
S = SubjectId("user-1")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine: Engine) -> SqlStore:
    return SqlStore(engine)


def value(token: str, subject: SubjectId = S) -> StoredValue:
    return StoredValue(
        Token(token), subject, Category("name"), TokenFormat.OPAQUE, b"ct-" + token.encode()
    )


def event(token: str | None = None) -> AuditEvent:
    return AuditEvent(
        occurred_at=NOW,
        caller=CallerName("kyc"),
        action=Action.TOKENIZE,
        outcome=Outcome.GRANTED,
        rule="caller:kyc:tokenize",
        token=Token(token) if token else None,
        subject=S,
    )


def save(
    store: SqlStore, *tokens: str, new_key: WrappedKey | None = KEY, limit: int = 2**32
) -> None:
    store.save_tokenized(
        subject=S,
        new_key=new_key,
        encryption_limit=limit,
        values=[value(t) for t in tokens],
        audit=[event(t) for t in tokens],
        idempotency=None,
        now=NOW,
    )


def test_migrations_match_the_table_definitions(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_migrations_downgrade_and_upgrade_again(engine: Engine) -> None:
    with engine.begin() as conn:
        from alembic import command

        cfg = migrate._config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(engine)
    assert "token_values" in inspect(engine).get_table_names()


def test_save_then_read_values_and_keys(store: SqlStore) -> None:
    save(store, "tok_a", "tok_b")
    values, keys, _consents = store.values_and_keys(
        [Token("tok_a"), Token("tok_b"), Token("tok_zz")]
    )
    assert set(values) == {"tok_a", "tok_b"}
    assert values[Token("tok_a")].ciphertext == b"ct-tok_a"
    assert keys[S].wrapped == KEY
    assert keys[S].encryptions == 2
    assert store.data_keys([S])[S].wrapped == KEY
    assert store.data_keys([SubjectId("nobody")]) == {}


def test_a_second_new_key_for_a_subject_is_a_race(store: SqlStore) -> None:
    save(store, "tok_a")
    with pytest.raises(SubjectKeyRaceError):
        save(store, "tok_b")
    values, _, _ = store.values_and_keys([Token("tok_b")])
    assert values == {}


def test_a_token_collision_writes_nothing(store: SqlStore) -> None:
    save(store, "tok_a")
    with pytest.raises(TokenCollisionError):
        save(store, "tok_c", "tok_a", new_key=None)
    values, _keys, _consents = store.values_and_keys([Token("tok_c")])
    assert values == {}
    assert store.data_keys([S])[S].encryptions == 1  # the count rolled back too


def test_the_encryption_limit_is_enforced(store: SqlStore) -> None:
    save(store, "tok_a", "tok_b", limit=3)
    with pytest.raises(KeyUsageExhaustedError):
        save(store, "tok_c", "tok_d", new_key=None, limit=3)
    save(store, "tok_c", new_key=None, limit=3)
    assert store.data_keys([S])[S].encryptions == 3
    with pytest.raises(KeyUsageExhaustedError):
        store.save_tokenized(
            subject=SubjectId("user-2"),
            new_key=KEY,
            encryption_limit=1,
            values=[value("tok_x", SubjectId("user-2")), value("tok_y", SubjectId("user-2"))],
            audit=[],
            idempotency=None,
            now=NOW,
        )


def test_idempotency_records(store: SqlStore) -> None:
    record = IdempotencyRecord(
        caller=CallerName("kyc"),
        request_id="7d5b8a3e-4f3c-4a43-9a5e-3b8d2f1f0c11",
        subject=S,
        fingerprint=b"f" * 32,
        tokens=((Token("tok_a"), Category("name")),),
        created_at=NOW,
    )
    store.save_tokenized(
        subject=S,
        new_key=KEY,
        encryption_limit=10,
        values=[value("tok_a")],
        audit=[],
        idempotency=record,
        now=NOW,
    )
    assert store.idempotency(CallerName("kyc"), record.request_id) == record
    assert store.idempotency(CallerName("payment"), record.request_id) is None
    with pytest.raises(DuplicateRequestError):
        store.save_tokenized(
            subject=S,
            new_key=None,
            encryption_limit=10,
            values=[value("tok_b")],
            audit=[],
            idempotency=record,
            now=NOW,
        )


def test_audit_append_and_api_keys(store: SqlStore) -> None:
    store.append_audit([event("tok_a"), event()])
    store.append_audit([])
    store.add_api_key(ApiKeyRecord("abc", CallerName("kyc"), b"h" * 32, revoked=False))
    got = store.api_key("abc")
    assert got is not None
    assert got.caller == "kyc"
    assert got.key_hash == b"h" * 32
    assert store.api_key("nope") is None
    assert store.callers_with_keys() == {"kyc"}


def test_concurrent_first_writes_for_one_subject(store: SqlStore) -> None:
    """Two requests creating the same subject's key at once: exactly one wins."""
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            store.save_tokenized(
                subject=S,
                new_key=KEY,
                encryption_limit=10,
                values=[value(f"tok_{i}")],
                audit=[],
                idempotency=None,
                now=NOW,
            )
            outcomes.append("won")
        except SubjectKeyRaceError:
            outcomes.append("lost")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]


def test_an_unreachable_database_is_storage_unavailable() -> None:
    eng = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    with pytest.raises(StorageUnavailable) as err:
        SqlStore(eng).data_keys([S])
    assert "127.0.0.1" not in str(err.value)


def test_concurrent_audit_appends_share_commits_and_all_land(store: SqlStore) -> None:
    def worker(i: int) -> None:
        for j in range(20):
            store.append_audit([event(f"tok_{i}_{j}")])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with store._engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(audit_events)).scalar_one()
    assert count == 160


def test_a_failed_audit_commit_fails_its_requests(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_events: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "_commit_audit", broken)
    with pytest.raises(StorageUnavailable, match="audit"):
        store.append_audit([event("tok_a")])
