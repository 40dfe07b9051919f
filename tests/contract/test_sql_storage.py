"""What only the SQL adapters have: migrations, an unreachable database, the group commit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select

from tests.contract.conftest import event
from vault.errors import StorageUnavailable
from vault.storage import migrate
from vault.storage.sql import Database, SqlAuditLog, make_engine, sql_stores
from vault.storage.tables import audit_events, metadata


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def audit(engine: Engine) -> Iterator[SqlAuditLog]:
    log = SqlAuditLog(Database(engine))
    yield log
    log.close()


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


def test_an_unreachable_database_is_storage_unavailable() -> None:
    eng = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    stores = sql_stores(Database(eng), group_commit=False)
    with pytest.raises(StorageUnavailable) as err:
        stores.values.data_keys([])
    assert "127.0.0.1" not in str(err.value)


def test_audit_rows_hold_no_subject_id(engine: Engine, audit: SqlAuditLog) -> None:
    audit.append([event("tok_a")])
    with engine.connect() as conn:
        named = set(conn.execute(select(audit_events.c.subject_id)).scalars())
    assert len(named) == 1
    assert next(iter(named)).startswith("ref:")  # the digest keyed by the subject's data key


def test_a_failed_audit_commit_fails_its_requests(
    audit: SqlAuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(_events: object) -> None:
        raise StorageUnavailable("the database is unavailable; retry later")

    assert audit.group is not None
    monkeypatch.setattr(audit.group, "_commit", down)
    with pytest.raises(StorageUnavailable):
        audit.append([event("tok_a")])


def test_a_bad_audit_event_fails_only_its_own_request(
    engine: Engine, audit: SqlAuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #8 item 7: a commit that fails for one request's events is retried request by
    request; the others' events land."""
    group = audit.group
    assert group is not None
    real = group._commit

    def picky(events: object) -> None:
        assert isinstance(events, list)
        if any(e.token == "tok_bad" for e in events):
            raise ValueError("a column refused a value")
        real(events)

    monkeypatch.setattr(group, "_commit", picky)
    good = group.submit([event("tok_good")])
    bad = group.submit([event("tok_bad")])
    other = group.submit([event("tok_other")])
    assert good.result(timeout=10) is None
    assert other.result(timeout=10) is None
    with pytest.raises(ValueError, match="refused"):
        bad.result(timeout=10)
    with engine.connect() as conn:
        tokens = set(conn.execute(select(audit_events.c.token)).scalars())
    assert tokens == {"tok_good", "tok_other"}
