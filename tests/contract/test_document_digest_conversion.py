"""The one-time conversion of documents' and tombstones' subject digests to keyed digests
(vault.storage.sql.naming.convert_document_digests), on SQLite and PostgreSQL: rows written as
the version before wrote them become keyed, each legacy document keeps what its content is
bound to only sealed, a failure in the middle changes nothing, and another naming secret is
refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from tests.contract.conftest import NOW
from vault.domain.documents import DocumentId
from vault.domain.naming import SubjectNames, unkeyed_subject_digest
from vault.domain.secrets import Secret
from vault.errors import ConfigurationError
from vault.storage import migrate
from vault.storage.sql import Database, make_engine
from vault.storage.sql.documents import SqlDocumentStore
from vault.storage.sql.naming import (
    DOCUMENTS_MARKER,
    convert_document_digests,
    convert_subject_digests,
)
from vault.storage.tables import (
    document_tombstones,
    documents,
    service_state,
    shredded_subjects,
    subjects,
)

NAMES = SubjectNames(Secret(b"n" * 32))
LIVE, KEPT = "doc_live0000000000000000000000", "doc_kept0000000000000000000000"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Iterator[Database]:
    url: str = request.getfixturevalue("database_url_" + request.param)
    engine = make_engine(url)
    migrate.upgrade(engine)
    try:
        database = Database(engine, names=NAMES)
        convert_subject_digests(database, NOW)  # done first at start-up (subjects are keyed)
        yield database
    finally:
        engine.dispose()


def head(document_id: str, subject: str | None, digest_of: str, **kw: Any) -> dict[str, Any]:
    return {
        "document_id": document_id,
        "subject_id": subject,
        "subject_digest": unkeyed_subject_digest(digest_of),
        "document_type": "passport",
        "uploaded_by": "kyc",
        "created_at": NOW,
        "scan_state": "clean",
        "key_owner": subject or "#retention:passport:2033",
        **kw,
    }


def tomb(document_id: str, digest: str, cause: str) -> dict[str, Any]:
    return {
        "document_id": document_id,
        "document_type": "passport",
        "subject_digest": digest,
        "destroyed_at": NOW,
        "cause": cause,
    }


def old_rows(db: Database) -> None:
    """As the version before wrote them: documents named by and bound to the unkeyed digest
    (one live, one kept after its subject's shred); tombstones with the unkeyed digest, but a
    shred's made since keyed digests, which holds the receipt's keyed digest."""
    with db.engine.begin() as conn:
        conn.execute(
            insert(subjects).values(
                subject_id="alive",
                subject_digest=NAMES.digest("alive"),
                state="active",
                created_at=NOW,
            )
        )
        for gone in ("gone", "gone-later"):
            conn.execute(
                insert(shredded_subjects).values(
                    subject_digest=NAMES.digest(gone),
                    receipt_id=f"r-{gone}",
                    shredded_at=NOW,
                    shredded_by="ops",
                    values_destroyed=0,
                )
            )
        conn.execute(insert(documents), [head(LIVE, "alive", "alive"), head(KEPT, None, "gone")])
        conn.execute(
            insert(document_tombstones),
            [
                tomb("doc_deleted", unkeyed_subject_digest("alive"), "delete"),
                tomb("doc_shred_old", unkeyed_subject_digest("gone"), "shred"),
                tomb("doc_shred_keyed", NAMES.digest("gone-later"), "shred"),
            ],
        )


def columns(db: Database) -> tuple[dict[str, tuple[Any, ...]], dict[str, tuple[Any, ...]]]:
    with db.engine.connect() as conn:
        docs = conn.execute(
            select(
                documents.c.document_id,
                documents.c.subject_digest,
                documents.c.binding,
                documents.c.sealed_binding,
            )
        ).all()
        tombs = conn.execute(
            select(
                document_tombstones.c.document_id,
                document_tombstones.c.subject_digest,
                document_tombstones.c.naming,
            )
        ).all()
    return {d[0]: tuple(d[1:]) for d in docs}, {t[0]: tuple(t[1:]) for t in tombs}


def marker(db: Database) -> str | None:
    with db.engine.connect() as conn:
        value: str | None = conn.execute(
            select(service_state.c.value).where(service_state.c.name == DOCUMENTS_MARKER)
        ).scalar()
    return value


def test_old_documents_and_tombstones_are_converted_exactly_once(db: Database) -> None:
    old_rows(db)
    assert convert_document_digests(db, NOW) == 5
    assert convert_document_digests(db, NOW) == 0  # nothing left to convert
    docs, tombs = columns(db)
    assert {d: v[:2] for d, v in docs.items()} == {
        LIVE: (NAMES.digest("alive"), "sha256"),
        KEPT: (NAMES.digest("gone"), "sha256"),
    }
    assert tombs == {
        "doc_deleted": (NAMES.digest("alive"), "hmac"),
        "doc_shred_old": (NAMES.digest("gone"), "hmac"),
        "doc_shred_keyed": (NAMES.digest("gone-later"), "hmac"),  # not keyed twice
    }
    assert marker(db) == f"hmac-sha256:{NAMES.fingerprint()}"
    # The content's binding is kept only sealed, and the store opens it for the reader.
    for document_id, subject in ((LIVE, "alive"), (KEPT, "gone")):
        sealed = docs[document_id][2]
        assert unkeyed_subject_digest(subject).encode() not in sealed
        assert bytes.fromhex(unkeyed_subject_digest(subject)) not in sealed
        record = SqlDocumentStore(db).document(DocumentId(document_id))
        assert record is not None
        assert record.subject_digest == NAMES.digest(subject)
        assert record.binding_digest == unkeyed_subject_digest(subject)
        assert unkeyed_subject_digest(subject) not in repr(record)


def test_a_new_database_is_only_marked(db: Database) -> None:
    assert convert_document_digests(db, NOW) == 0
    assert marker(db) == f"hmac-sha256:{NAMES.fingerprint()}"


class FailingNames(SubjectNames):
    """Fails once the documents' UPDATE has run, converting the first tombstone: as a process
    killed in the middle of the transaction."""

    def __init__(self, secret: Secret, fail_after: int) -> None:
        super().__init__(secret)
        self.calls = fail_after

    def from_unkeyed(self, unkeyed: str) -> str:
        self.calls -= 1
        if self.calls < 0:
            raise RuntimeError("killed")
        return super().from_unkeyed(unkeyed)


def test_a_failure_in_the_middle_changes_nothing(db: Database) -> None:
    old_rows(db)
    before = columns(db)
    failing = Database(db.engine, names=FailingNames(Secret(b"n" * 32), fail_after=2))
    with pytest.raises(RuntimeError, match="killed"):
        convert_document_digests(failing, NOW)
    assert columns(db) == before  # every row as the version before left it: still opens
    assert marker(db) is None
    assert convert_document_digests(db, NOW) == 5


def test_another_naming_secret_is_refused(db: Database) -> None:
    old_rows(db)
    convert_document_digests(db, NOW)
    converted = columns(db)
    other = Database(db.engine, names=SubjectNames(Secret(b"o" * 32)))
    with pytest.raises(ConfigurationError, match="another naming secret"):
        convert_document_digests(other, NOW)
    assert columns(db) == converted


def test_rows_an_older_version_writes_later_are_converted_at_the_next_start(
    db: Database,
) -> None:
    """During a rolling upgrade a replica of the version before still writes the old form."""
    convert_document_digests(db, NOW)
    old_rows(db)
    assert convert_document_digests(db, NOW) == 5
    assert all(v[1] == "sha256" for v in columns(db)[0].values())


def test_a_sealed_binding_opens_only_for_its_own_document(db: Database) -> None:
    old_rows(db)
    convert_document_digests(db, NOW)
    docs, _ = columns(db)
    with db.engine.begin() as conn:  # moved to another document
        conn.execute(
            update(documents)
            .where(documents.c.document_id == LIVE)
            .values(sealed_binding=docs[KEPT][2])
        )
    store = SqlDocumentStore(db)
    live, kept = store.document(DocumentId(LIVE)), store.document(DocumentId(KEPT))
    assert live is not None
    assert kept is not None
    assert kept.binding_digest == unkeyed_subject_digest("gone")
    # Listed still, but bound to nothing any content authenticates under (DATA_LOSS on read).
    assert live.binding_digest not in (
        unkeyed_subject_digest("gone"),
        unkeyed_subject_digest("alive"),
        live.subject_digest,
    )
    other = Database(db.engine, names=SubjectNames(Secret(b"o" * 32)))
    opened = SqlDocumentStore(other).document(DocumentId(KEPT))
    assert opened is not None
    assert opened.binding_digest != unkeyed_subject_digest("gone")
