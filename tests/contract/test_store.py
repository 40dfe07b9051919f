"""The Store contract, run against every adapter: SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select

from vault.domain.ports import ApiKeyRecord, ShreddedRecord, WriteOutcome
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
    subject_digest,
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
) -> WriteOutcome:
    return store.save_tokenized(
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
    assert save(store, "tok_a", "tok_b") is WriteOutcome.DONE
    found = store.lookup([Token("tok_a"), Token("tok_b"), Token("tok_zz")])
    values, keys = found.values, found.keys
    assert set(values) == {"tok_a", "tok_b"}
    assert values[Token("tok_a")].ciphertext == b"ct-tok_a"
    assert keys[S].wrapped == KEY
    assert keys[S].encryptions == 2
    assert store.data_keys([S])[S].wrapped == KEY
    assert store.data_keys([SubjectId("nobody")]) == {}


def test_a_second_new_key_for_a_subject_is_a_race(store: SqlStore) -> None:
    save(store, "tok_a")
    assert save(store, "tok_b") is WriteOutcome.SUBJECT_RACE
    assert store.lookup([Token("tok_b")]).values == {}


def test_a_token_collision_writes_nothing(store: SqlStore) -> None:
    save(store, "tok_a")
    assert save(store, "tok_c", "tok_a", new_key=None) is WriteOutcome.TOKEN_COLLISION
    assert store.lookup([Token("tok_c")]).values == {}
    assert store.data_keys([S])[S].encryptions == 1  # the count rolled back too


def test_the_encryption_limit_is_enforced(store: SqlStore) -> None:
    save(store, "tok_a", "tok_b", limit=3)
    assert save(store, "tok_c", "tok_d", new_key=None, limit=3) is WriteOutcome.KEY_EXHAUSTED
    assert save(store, "tok_c", new_key=None, limit=3) is WriteOutcome.DONE
    assert store.data_keys([S])[S].encryptions == 3
    exhausted = store.save_tokenized(
        subject=SubjectId("user-2"),
        new_key=KEY,
        encryption_limit=1,
        values=[value("tok_x", SubjectId("user-2")), value("tok_y", SubjectId("user-2"))],
        audit=[],
        idempotency=None,
        now=NOW,
    )
    assert exhausted is WriteOutcome.KEY_EXHAUSTED


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
    again = store.save_tokenized(
        subject=S,
        new_key=None,
        encryption_limit=10,
        values=[value("tok_b")],
        audit=[],
        idempotency=record,
        now=NOW,
    )
    assert again is WriteOutcome.DUPLICATE_REQUEST


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
        done = store.save_tokenized(
            subject=S,
            new_key=KEY,
            encryption_limit=10,
            values=[value(f"tok_{i}")],
            audit=[],
            idempotency=None,
            now=NOW,
        )
        outcomes.append("won" if done is WriteOutcome.DONE else "lost")

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
    def down(_events: object) -> None:
        raise StorageUnavailable("the database is unavailable; retry later")

    assert store._audit is not None
    monkeypatch.setattr(store._audit, "_commit", down)
    with pytest.raises(StorageUnavailable):
        store.append_audit([event("tok_a")])


def test_a_bad_audit_event_fails_only_its_own_request(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #8 item 7: a commit that fails for one request's events is retried request by
    request; the others' events land."""
    assert store._audit is not None
    real = store._audit._commit

    def picky(events: object) -> None:
        assert isinstance(events, list)
        if any(e.token == "tok_bad" for e in events):
            raise ValueError("a column refused a value")
        real(events)

    monkeypatch.setattr(store._audit, "_commit", picky)
    good = store._audit.submit([event("tok_good")])
    bad = store._audit.submit([event("tok_bad")])
    other = store._audit.submit([event("tok_other")])
    assert good.result(timeout=10) is None
    assert other.result(timeout=10) is None
    with pytest.raises(ValueError, match="refused"):
        bad.result(timeout=10)
    with store._engine.connect() as conn:
        tokens = set(conn.execute(select(audit_events.c.token)).scalars())
    assert tokens == {"tok_good", "tok_other"}


def test_audit_rows_name_subjects_by_digest_only(store: SqlStore) -> None:
    store.append_audit([event("tok_a")])
    with store._engine.connect() as conn:
        named = set(conn.execute(select(audit_events.c.subject_id)).scalars())
    assert named == {f"sha256:{subject_digest(S)}"}
    assert [e.token for e in store.subject_audit(S)] == ["tok_a"]


def _receipt(receipt_id: str) -> ShreddedRecord:
    return ShreddedRecord(subject_digest(S), receipt_id, NOW, CallerName("ops"), 0)


def test_a_shredded_id_is_refused_inside_the_transaction(store: SqlStore) -> None:
    """Issue #8 item 1: whatever the caller read before, the save refuses a shredded id."""
    save(store, "tok_a")
    result = store.shred(S, _receipt("r-1"), [])
    assert result.destroyed == (1, 1)
    assert save(store, "tok_b") is WriteOutcome.SUBJECT_SHREDDED  # a "new" subject: refused
    assert save(store, "tok_c", new_key=None) is WriteOutcome.SUBJECT_RACE  # its key is gone
    assert store.data_keys([S]) == {}
    assert store.lookup([Token("tok_b"), Token("tok_c")]).values == {}


def test_the_lookup_reads_live_and_shredded_tokens_in_one_statement(store: SqlStore) -> None:
    save(store, "tok_a", "tok_b")
    other = SubjectId("user-2")
    store.save_tokenized(
        subject=other,
        new_key=KEY,
        encryption_limit=10,
        values=[value("tok_x", other)],
        audit=[],
        idempotency=None,
        now=NOW,
    )
    store.shred(other, ShreddedRecord(subject_digest(other), "r", NOW, CallerName("ops"), 0), [])
    found = store.lookup([Token("tok_a"), Token("tok_x"), Token("tok_zz")])
    assert set(found.values) == {"tok_a"}
    assert found.shredded == {Token("tok_x"): Category("name")}
    assert found.keys[S].encryptions == 2


def test_a_repeated_shred_returns_the_receipt_and_a_reshred_names_it(store: SqlStore) -> None:
    save(store, "tok_a")
    first = store.shred(S, _receipt("r-1"), [])
    assert first.receipt is not None
    assert first.receipt.previous_receipt_id is None
    repeat = store.shred(S, _receipt("r-2"), [])
    assert repeat.destroyed is None
    assert repeat.receipt == first.receipt  # unchanged
    # Live data under the shredded id again (a restored copy of the data tables, say):
    with store._engine.begin() as conn:
        from vault.storage.tables import subjects

        conn.execute(
            subjects.insert().values(
                subject_id=S, subject_digest=subject_digest(S), state="active", created_at=NOW
            )
        )
    again = store.shred(S, _receipt("r-3"), [])
    assert again.destroyed == (0, 0)
    assert again.receipt is not None
    assert again.receipt.receipt_id == "r-3"
    assert again.receipt.previous_receipt_id == "r-1"
    assert store.shred_receipt(subject_digest(S)) == again.receipt


def test_scrub_answers(store: SqlStore) -> None:
    save(store, "tok_a")
    store.shred(S, _receipt("r-1"), [])
    assert store.scrub() is True
