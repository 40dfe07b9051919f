"""Identity documents name their subject by the keyed digest (issue 12 §3), through real
servers built with build_app on SQLite and PostgreSQL: no column of any table holds the
unkeyed digest of a document's subject, kept across a shred or destroyed; and documents stored
before keyed digests (bound to the unkeyed digest) are converted once at start-up and still
download byte for byte, the retained ones of shredded subjects included."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pytest
from sqlalchemy import Engine, LargeBinary, String, Text, delete, select, update

from tests.conftest import RunningServer, running
from tests.integration.test_attack_documents import read, upload
from tests.samples import jpeg, png
from vault.app import build_app
from vault.domain.naming import SubjectNames, unkeyed_subject_digest
from vault.domain.secrets import Secret
from vault.domain.types import SubjectId
from vault.storage.sql.naming import DOCUMENTS_MARKER
from vault.storage.tables import document_tombstones, documents, metadata, service_state

SUBJECTS = ("docname-kept", "docname-deleted", "docname-live")
LEGAL = {"legal_basis": "law_or_regulation"}


def unkeyed_mentions(engine: Engine, subject_ids: Iterable[str]) -> list[str]:
    """Every place (table.column) where a string or bytes column holds the unkeyed digest of
    one of `subject_ids`: in hex, as `sha256:` and hex, or as its 32 raw bytes."""
    needles: list[tuple[str, str, bytes]] = []
    for subject in subject_ids:
        digest = unkeyed_subject_digest(subject)
        needles.append((subject, digest, bytes.fromhex(digest)))
    found = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text | LargeBinary)]
            if not columns:
                continue
            for row in conn.execute(select(*columns)):
                for column, value in zip(columns, row, strict=True):
                    if value is None:
                        continue
                    for subject, hex_digest, raw in needles:
                        if isinstance(value, str):
                            hit = hex_digest in value.lower()  # `sha256:` + hex contains it
                        else:
                            data = bytes(value)
                            hit = raw in data or hex_digest.encode() in data.lower()
                        if hit:
                            found.append(f"{table.name}.{column.name}: {subject}")
    return found


def stored_documents(server: RunningServer) -> dict[str, tuple[bytes, bool]]:
    """Uploads for three subjects: `docname-kept` is shredded (its passport is kept by law,
    its insurance card destroyed), one of `docname-deleted`'s documents is deleted, and
    `docname-live` keeps its own. Each document still held: its content, and whether it is
    retained (its subject shredded)."""
    kept, deleted, _live = SUBJECTS
    contents: dict[str, bytes] = {}
    by_subject: dict[str, list[str]] = {}
    with server.client("kyc") as kyc, server.client("ops") as ops:
        for subject in SUBJECTS:
            for kind, content in (("passport", jpeg()), ("health_insurance_card", png())):
                doc = upload(kyc, subject, kind, content)
                contents[doc] = content
                by_subject.setdefault(subject, []).append(doc)
        doomed = by_subject[deleted][1]
        ops.documents().delete(doomed)
        del contents[doomed]
        receipt = ops.subjects().shred(kept)["receipt"]
    retained = {r["documentId"] for r in receipt["retained"]}
    assert len(retained) == 1  # the passport
    held = {
        doc: (content, doc in retained)
        for doc, content in contents.items()
        if doc in retained or doc not in by_subject[kept]
    }
    assert len(held) == 4
    return held


def reads_back(server: RunningServer, held: dict[str, tuple[bytes, bool]]) -> list[str]:
    """Documents that do not download byte for byte: the live ones read by kyc, the retained
    ones by legal (the only reader of what a law keeps)."""
    wrong = []
    with server.client("kyc") as kyc, server.client("legal") as legal:
        for doc, (content, retained) in held.items():
            if retained:
                got = read(legal, doc, "third_party_provision", legal_basis="law_or_regulation")
            else:
                got = read(kyc, doc, "identity_verification")
            if got != content:
                wrong.append(doc)
    return wrong


def test_no_column_of_any_table_holds_the_unkeyed_digest_of_a_documents_subject(
    server: RunningServer,
) -> None:
    held = stored_documents(server)
    assert reads_back(server, held) == []  # (audited: the retained one by its keyed digest)
    engine = server.app.engine
    assert unkeyed_mentions(engine, SUBJECTS) == []
    names = server.app.database.names
    with engine.connect() as conn:
        heads = conn.execute(select(documents.c.subject_digest, documents.c.binding)).all()
        tombs = conn.execute(
            select(document_tombstones.c.subject_digest, document_tombstones.c.naming)
        ).all()
    keyed = {names.digest(s) for s in SUBJECTS}
    assert {(d in keyed, b) for d, b in heads} == {(True, "hmac")}
    assert len(tombs) == 2  # the deleted document and the shredded subject's insurance card
    assert {(d in keyed, n) for d, n in tombs} == {(True, "hmac")}


class OldNames(SubjectNames):
    """What documents were named and bound by before keyed digests: the unkeyed digest."""

    def digest(self, subject: SubjectId | str) -> str:
        return unkeyed_subject_digest(subject)


def make_old(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> dict[str, tuple[bytes, bool]]:
    """Documents as the version before stored them: bound to and named by the unkeyed digest,
    tombstones too (but a shred's, which already had the receipt's keyed digest), no binding
    or naming column, no marker."""
    archive = server.app.uses.documents
    with monkeypatch.context() as m:
        m.setattr(archive, "_names", OldNames(Secret(b"o" * 32)))
        held = stored_documents(server)
    with server.app.engine.begin() as conn:
        conn.execute(update(documents).values(binding=None))
        conn.execute(update(document_tombstones).values(naming=None))
        conn.execute(delete(service_state).where(service_state.c.name == DOCUMENTS_MARKER))
    return held


def test_documents_stored_before_keyed_digests_are_converted_once_and_still_open(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    held = make_old(server, monkeypatch)
    engine = server.app.engine
    with engine.connect() as conn:
        old = dict(conn.execute(select(documents.c.document_id, documents.c.subject_digest)).all())
    assert set(old.values()) <= {unkeyed_subject_digest(s) for s in SUBJECTS}
    # The version before opened them with the digest in the row: so does this one, unconverted.
    assert reads_back(server, held) == []

    settings = server.app.settings
    for start in (1, 2):  # the first start converts, the second finds nothing to do
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vault.app"):
            app = build_app(settings)
        converted = [r.getMessage() for r in caplog.records if "documents:" in r.getMessage()]
        # 4 documents and 2 tombstones (the shred's, keyed already, is only marked)
        assert converted == (["documents: 6 records converted to keyed digests"] * (start == 1))
        with running(app, close=True) as srv:
            assert reads_back(srv, held) == [], start
            names = app.database.names
            with engine.connect() as conn:
                rows = conn.execute(
                    select(documents.c.document_id, documents.c.subject_digest, documents.c.binding)
                ).all()
                marker = conn.execute(
                    select(service_state.c.value).where(service_state.c.name == DOCUMENTS_MARKER)
                ).scalar_one()
            assert {tuple(r) for r in rows} == {
                (d, names.from_unkeyed(digest), "sha256") for d, digest in old.items()
            }
            assert marker == f"hmac-sha256:{names.fingerprint()}"
            # Audit entries written before keep their names (the Merkle log is never
            # rewritten); every other table is clean.
            assert [m for m in unkeyed_mentions(engine, SUBJECTS) if "audit" not in m] == []


def test_a_converted_document_is_kept_across_a_later_shred_and_deleted_by_its_keyed_digest(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the conversion, a legacy document of a subject shredded then is re-wrapped under
    a retention key through its sealed binding and still opens; one deleted leaves a keyed
    tombstone."""
    held = make_old(server, monkeypatch)
    _kept, deleted, live = SUBJECTS
    with running(build_app(server.app.settings), close=True) as srv:
        names = srv.app.database.names
        engine = srv.app.engine
        with engine.connect() as conn:
            of = {
                s: [
                    d
                    for (d,) in conn.execute(
                        select(documents.c.document_id).where(documents.c.subject_id == s)
                    )
                ]
                for s in (deleted, live)
            }
        with srv.client("ops") as ops:
            ops.documents().delete(of[deleted][0])
            receipt = ops.subjects().shred(live)["receipt"]
        del held[of[deleted][0]]
        retained = {r["documentId"] for r in receipt["retained"]}
        assert len(retained) == 1  # the passport, re-wrapped under a retention key
        for doc in of[live]:
            if doc in retained:
                held[doc] = (held[doc][0], True)
            else:
                del held[doc]
        assert reads_back(srv, held) == []
        with engine.connect() as conn:
            tombs = dict(
                conn.execute(
                    select(document_tombstones.c.document_id, document_tombstones.c.naming)
                ).all()
            )
            digests = set(conn.execute(select(document_tombstones.c.subject_digest)).scalars())
        assert set(tombs.values()) == {"hmac"}
        assert len(tombs) == 4  # two from before, the deletion and the shred's insurance card
        assert digests <= {names.digest(s) for s in SUBJECTS}
        assert [m for m in unkeyed_mentions(engine, SUBJECTS) if "audit" not in m] == []
