"""The keyed digest of subject ids (vault.domain.naming) and the shred log's two line forms."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vault.domain.naming import (
    KEYED_PREFIX,
    NAMING_SCHEME,
    SubjectNames,
    keyed_audit_name,
    unkeyed_subject_digest,
)
from vault.domain.secrets import Secret
from vault.kms.shred_log import FileShredLog

A = SubjectNames(Secret(b"a" * 32))
B = SubjectNames(Secret(b"b" * 32))
AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_the_digest_is_keyed() -> None:
    assert A.digest("user-42") != B.digest("user-42")
    assert A.digest("user-42") == SubjectNames(Secret(b"a" * 32)).digest("user-42")
    assert A.digest("user-42") != A.digest("user-43")
    assert len(A.digest("user-42")) == 64  # the width of the columns that hold it
    int(A.digest("user-42"), 16)


def test_no_dictionary_of_ids_reproduces_it_without_the_secret() -> None:
    ids = [f"user-{i}" for i in range(2000)]
    target = A.digest("user-42")
    assert target not in {unkeyed_subject_digest(s) for s in ids}  # the old, reversible form
    assert target not in {B.digest(s) for s in ids}  # another secret
    assert target in {A.digest(s) for s in ids}  # only the holder of the secret finds it


def test_an_unkeyed_digest_converts_to_the_keyed_digest_of_the_same_subject() -> None:
    assert A.from_unkeyed(unkeyed_subject_digest("user-42")) == A.digest("user-42")
    with pytest.raises(ValueError, match="hex"):
        A.from_unkeyed("not hex")


def test_the_secret_is_never_shown_and_must_be_long_enough() -> None:
    assert "aaaa" not in repr(A)
    assert A.fingerprint() != B.fingerprint()
    assert "a" * 8 not in A.fingerprint()
    with pytest.raises(ValueError, match="32 bytes"):
        SubjectNames(Secret(b"short"))


def test_audit_entries_of_a_shred_name_the_keyed_digest() -> None:
    assert keyed_audit_name(A.digest("s")) == f"{KEYED_PREFIX}{A.digest('s')}"
    assert A.audit_name("s") == keyed_audit_name(A.digest("s"))


def test_the_shred_log_reads_old_lines_as_keyed_digests(tmp_path: Path) -> None:
    path = tmp_path / "shred-log.jsonl"
    old = {"digest": unkeyed_subject_digest("user-7"), "receipt_id": "r1", "shredded_at": "x"}
    old["shredded_at"] = AT.isoformat()
    unknown = dict(old, digest=A.digest("user-9"), scheme="other", receipt_id="r9")
    document = dict(old, digest="document:doc_1", receipt_id="r0")  # a deleted document's
    path.write_text(
        json.dumps(old) + "\n" + json.dumps(unknown) + "\n" + json.dumps(document) + "\n"
    )
    log = FileShredLog(path, A)
    entry = log.record(A.digest("user-8"), "r2", AT)
    entries = log.entries()
    assert set(entries) == {A.digest("user-7"), A.digest("user-8"), "document:doc_1"}
    # ("other": skipped)
    assert entries[A.digest("user-7")].receipt_id == "r1"
    assert entry.receipt_id == "r2"
    # The old line is never rewritten; the new one says its scheme.
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == old
    assert lines[3] == {
        "digest": A.digest("user-8"),
        "receipt_id": "r2",
        "scheme": NAMING_SCHEME,
        "shredded_at": AT.isoformat(),
    }
    assert unkeyed_subject_digest("user-8") not in path.read_text()
    log.record("document:doc_2", "r4", AT)  # names no subject: no scheme, read as written
    assert "scheme" not in json.loads(path.read_text().splitlines()[-1])
    assert FileShredLog(path, A).entries()["document:doc_2"].receipt_id == "r4"
    # A repeat of an old shred finds the old line, by its keyed digest.
    assert log.record(A.digest("user-7"), "r3", AT).receipt_id == "r1"
