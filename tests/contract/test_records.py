"""The IdempotencyStore, AuditLog, CredentialStore and KeyInventory contracts, on every
adapter (SQLite, PostgreSQL, memory)."""

from __future__ import annotations

import threading
from datetime import timedelta

from tests.contract.conftest import KEY, NOW, REF, S, event, value
from tests.contract.test_value_store import save
from vault.domain.stores import ApiKeyRecord, Stores
from vault.domain.types import (
    CallerName,
    Category,
    IdempotencyRecord,
    SubjectId,
    Token,
    WrappedKey,
)

RID = "7d5b8a3e-4f3c-4a43-9a5e-3b8d2f1f0c11"


def test_idempotency_records(stores: Stores) -> None:
    record = IdempotencyRecord(
        caller=CallerName("kyc"),
        request_id=RID,
        subject=S,
        fingerprint=b"f" * 32,
        tokens=((Token("tok_a"), Category("name")),),
        created_at=NOW,
    )
    stores.values.save_tokenized(
        subject=S,
        new_key=KEY,
        encryption_limit=10,
        values=[value("tok_a")],
        audit=[],
        idempotency=record,
        now=NOW,
    )
    assert stores.idempotency.idempotency(CallerName("kyc"), RID) == record
    assert stores.idempotency.idempotency(CallerName("payment"), RID) is None
    stores.idempotency.forget_idempotency(CallerName("kyc"), RID)
    assert stores.idempotency.idempotency(CallerName("kyc"), RID) is None


def test_idempotency_records_are_purged_by_age(stores: Stores) -> None:
    for i, age in enumerate((timedelta(hours=30), timedelta(hours=1))):
        rid = f"7d5b8a3e-4f3c-4a43-9a5e-3b8d2f1f0c1{i}"
        stores.values.save_tokenized(
            subject=SubjectId(f"u{i}"),
            new_key=KEY,
            encryption_limit=10,
            values=[value(f"tok_{i}", SubjectId(f"u{i}"))],
            audit=[],
            idempotency=IdempotencyRecord(
                CallerName("kyc"), rid, SubjectId(f"u{i}"), b"f", (), NOW - age
            ),
            now=NOW,
        )
    assert stores.idempotency.purge_idempotency(NOW - timedelta(hours=24)) == 1


def test_audit_events_name_subjects_by_keyed_digest_only(stores: Stores) -> None:
    stores.audit.append([event("tok_a"), event(subject=None), event("tok_b", ref=None)])
    stores.audit.append([])
    [mine] = stores.audit.of_subject([REF], [])
    assert mine.token == "tok_a"
    assert mine.subject_ref == REF
    # A subject named without its keyed digest is stored without a subject, never by id.
    [by_token] = stores.audit.of_subject([], ["tok_b"])
    assert by_token.subject_ref is None
    assert stores.audit.of_subject(["ref:nobody"], ["tok_nobody"]) == []
    assert stores.audit.of_subject([], []) == []
    assert all(S not in repr(e.subject) for e in stores.audit.of_subject([REF], ["tok_b"]))


def test_audit_entries_have_gap_free_places_and_leaf_hashes(stores: Stores) -> None:
    from vault.domain.audit_log import entry_bytes, verify_log

    stores.audit.append([event("tok_a"), event("tok_b")])
    stores.audit.append([event("tok_c")])
    found = stores.audit.entries(0, 100)
    assert [e.event.seq for e in found] == [0, 1, 2]
    head = stores.audit.head()
    assert head.size == 3
    result = verify_log(
        (
            (e.event.seq, e.leaf_hash, entry_bytes(e.event, e.event.seq or 0, e.stored_subject))
            for e in found
        ),
        [],
        head.size,
    )
    assert result.ok, result.problems
    assert result.root == head.root
    assert stores.audit.leaf_hashes(1, 3) == [e.leaf_hash for e in found[1:]]


def test_concurrent_audit_appends_all_land(stores: Stores) -> None:
    def worker(i: int) -> None:
        for j in range(20):
            stores.audit.append([event(f"tok_{i}_{j}")])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stores.audit.of_subject([REF], [])) == 160
    assert [e.event.seq for e in stores.audit.entries(0, 1000)] == list(range(160))


def test_api_keys(stores: Stores) -> None:
    stores.credentials.add_api_key(ApiKeyRecord("abc", CallerName("kyc"), b"h" * 32, False))
    stores.credentials.add_api_key(ApiKeyRecord("old", CallerName("ops"), b"o" * 32, True))
    [got] = [r for r in stores.credentials.api_keys() if r.key_id == "abc"]
    assert got == ApiKeyRecord("abc", CallerName("kyc"), b"h" * 32, False)
    assert stores.credentials.callers_with_keys() == {"kyc"}  # ops's only key is revoked


def test_the_key_inventory(stores: Stores) -> None:
    save(stores, "tok_a")
    save(stores, "tok_b", subject=SubjectId("user-2"))
    assert stores.keys.kek_version_counts() == {("local", 1): 2}
    due = stores.keys.data_keys_to_rewrap("local", 2, 1)
    assert [k.subject for k in due] == [S]
    assert [k.subject for k in stores.keys.data_keys_to_rewrap("local", 2, 5, S)] == ["user-2"]
    fresh = WrappedKey("local", 2, b"\x02" * 49)
    assert stores.keys.replace_wrapped_keys([(due[0], fresh)], [event()]) == 1
    assert stores.keys.replace_wrapped_keys([(due[0], fresh)], []) == 0  # no longer the one read
    assert stores.keys.kek_version_counts() == {("local", 1): 1, ("local", 2): 1}


def test_check_values_are_recorded_once_per_version(stores: Stores) -> None:
    first = WrappedKey("local", 1, b"\x01" * 49)
    stores.keys.add_kek_check(first, NOW)
    stores.keys.add_kek_check(WrappedKey("local", 1, b"\x09" * 49), NOW)
    assert stores.keys.kek_checks("local") == {1: first}
    assert stores.keys.kek_checks("vault-transit") == {}
