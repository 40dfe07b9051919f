"""The one-time conversion of stored subject digests (vault.storage.sql.naming), on SQLite
and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import insert, select

from tests.contract.conftest import NOW
from vault.domain.naming import SubjectNames, unkeyed_subject_digest
from vault.domain.secrets import Secret
from vault.errors import ConfigurationError
from vault.storage import migrate
from vault.storage.sql import Database, make_engine
from vault.storage.sql.naming import convert_subject_digests
from vault.storage.tables import approval_requests, service_state, shredded_subjects, subjects

NAMES = SubjectNames(Secret(b"n" * 32))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Iterator[Database]:
    url: str = request.getfixturevalue("database_url_" + request.param)
    engine = make_engine(url)
    migrate.upgrade(engine)
    try:
        yield Database(engine, names=NAMES)
    finally:
        engine.dispose()


def old_rows(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            insert(subjects).values(
                subject_id="alive",
                subject_digest=unkeyed_subject_digest("alive"),
                state="active",
                created_at=NOW,
            )
        )
        conn.execute(
            insert(shredded_subjects).values(
                subject_digest=unkeyed_subject_digest("gone"),
                receipt_id="r1",
                shredded_at=NOW,
                shredded_by="ops",
                values_destroyed=1,
            )
        )
        conn.execute(
            insert(approval_requests).values(
                request_id="apr_1",
                action="operator_shred",
                parameters=json.dumps({"subject_digest": unkeyed_subject_digest("gone")}),
                requested_by="ops",
                created_at=NOW,
                expires_at=NOW,
                state="executed",
            )
        )


def test_old_digests_are_converted_exactly_once(db: Database) -> None:
    old_rows(db)
    assert convert_subject_digests(db, NOW) == 3
    assert convert_subject_digests(db, NOW) == 0  # the marker: done
    with db.engine.connect() as conn:
        assert conn.execute(select(subjects.c.subject_digest)).scalar_one() == NAMES.digest("alive")
        assert conn.execute(select(shredded_subjects.c.subject_digest)).scalar_one() == (
            NAMES.digest("gone")
        )
        parameters = json.loads(conn.execute(select(approval_requests.c.parameters)).scalar_one())
        assert parameters == {"subject_digest": NAMES.digest("gone")}
        [marker] = conn.execute(select(service_state.c.value)).scalars().all()
    assert marker == f"hmac-sha256:{NAMES.fingerprint()}"


def test_a_new_database_is_only_marked(db: Database) -> None:
    assert convert_subject_digests(db, NOW) == 0
    with db.engine.connect() as conn:
        assert conn.execute(select(service_state)).first() is not None


def test_another_naming_secret_is_refused(db: Database) -> None:
    old_rows(db)
    convert_subject_digests(db, NOW)
    other = Database(db.engine, names=SubjectNames(Secret(b"o" * 32)))
    with pytest.raises(ConfigurationError, match="another naming secret"):
        convert_subject_digests(other, NOW)
    with db.engine.connect() as conn:  # nothing changed
        assert conn.execute(select(shredded_subjects.c.subject_digest)).scalar_one() == (
            NAMES.digest("gone")
        )
