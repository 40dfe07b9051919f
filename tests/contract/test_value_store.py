"""The ValueStore contract, on every adapter (SQLite, PostgreSQL, memory)."""

from __future__ import annotations

import threading

from tests.contract.conftest import KEY, NOW, Harness, S, event, value
from vault.domain.stores import ShreddedRecord, Stores, WriteOutcome
from vault.domain.types import (
    CallerName,
    Category,
    IdempotencyRecord,
    SubjectId,
    SubjectState,
    Token,
    WrappedKey,
)
from vault.storage.memory import MEMORY_NAMES


def save(
    stores: Stores,
    *tokens: str,
    new_key: WrappedKey | None = KEY,
    limit: int = 2**32,
    subject: SubjectId = S,
) -> WriteOutcome:
    return stores.values.save_tokenized(
        subject=subject,
        new_key=new_key,
        encryption_limit=limit,
        values=[value(t, subject) for t in tokens],
        audit=[event(t, subject) for t in tokens],
        idempotency=None,
        now=NOW,
    )


def shred(stores: Stores, subject: SubjectId = S, receipt_id: str = "r-1") -> None:
    record = ShreddedRecord(MEMORY_NAMES.digest(subject), receipt_id, NOW, CallerName("ops"), 0)
    stores.subjects.shred(subject, record, [])


def test_save_then_read_values_and_keys(stores: Stores) -> None:
    assert save(stores, "tok_a", "tok_b") is WriteOutcome.DONE
    found = stores.values.lookup([Token("tok_a"), Token("tok_b"), Token("tok_zz")])
    values, keys = found.values, found.keys
    assert set(values) == {"tok_a", "tok_b"}
    assert values[Token("tok_a")].ciphertext == b"ct-tok_a"
    assert keys[S].wrapped == KEY
    assert keys[S].encryptions == 2
    assert stores.values.data_keys([S])[S].wrapped == KEY
    assert stores.values.data_keys([SubjectId("nobody")]) == {}
    assert [v.token for v, _at in stores.values.subject_values(S)] == ["tok_a", "tok_b"]


def test_a_second_new_key_for_a_subject_is_a_race(stores: Stores) -> None:
    save(stores, "tok_a")
    assert save(stores, "tok_b") is WriteOutcome.SUBJECT_RACE
    assert stores.values.lookup([Token("tok_b")]).values == {}


def test_a_token_collision_writes_nothing(stores: Stores) -> None:
    save(stores, "tok_a")
    assert save(stores, "tok_c", "tok_a", new_key=None) is WriteOutcome.TOKEN_COLLISION
    assert stores.values.lookup([Token("tok_c")]).values == {}
    assert stores.values.data_keys([S])[S].encryptions == 1  # the count rolled back too


def test_the_encryption_limit_is_enforced(stores: Stores) -> None:
    save(stores, "tok_a", "tok_b", limit=3)
    assert save(stores, "tok_c", "tok_d", new_key=None, limit=3) is WriteOutcome.KEY_EXHAUSTED
    assert save(stores, "tok_c", new_key=None, limit=3) is WriteOutcome.DONE
    assert stores.values.data_keys([S])[S].encryptions == 3
    two = SubjectId("user-2")
    assert save(stores, "tok_x", "tok_y", limit=1, subject=two) is WriteOutcome.KEY_EXHAUSTED


def test_a_stopped_subject_takes_no_new_values(stores: Stores) -> None:
    save(stores, "tok_a")
    assert stores.subjects.set_state(S, SubjectState.STOPPED, NOW, [])
    assert save(stores, "tok_b", new_key=None) is WriteOutcome.SUBJECT_STOPPED
    assert stores.values.data_keys([S])[S].state is SubjectState.STOPPED


def test_a_duplicate_request_id_writes_nothing(stores: Stores) -> None:
    record = IdempotencyRecord(
        caller=CallerName("kyc"),
        request_id="7d5b8a3e-4f3c-4a43-9a5e-3b8d2f1f0c11",
        subject=S,
        fingerprint=b"f" * 32,
        tokens=((Token("tok_a"), Category("name")),),
        created_at=NOW,
    )

    def with_record(token: str, key: WrappedKey | None) -> WriteOutcome:
        return stores.values.save_tokenized(
            subject=S,
            new_key=key,
            encryption_limit=10,
            values=[value(token)],
            audit=[],
            idempotency=record,
            now=NOW,
        )

    assert with_record("tok_a", KEY) is WriteOutcome.DONE
    assert stores.idempotency.idempotency(CallerName("kyc"), record.request_id) == record
    assert with_record("tok_b", None) is WriteOutcome.DUPLICATE_REQUEST
    assert stores.values.lookup([Token("tok_b")]).values == {}


def test_concurrent_first_writes_for_one_subject(stores: Stores) -> None:
    """Two requests creating the same subject's key at once: exactly one wins."""
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def attempt(i: int) -> None:
        barrier.wait()
        done = save(stores, f"tok_{i}")
        outcomes.append("won" if done is WriteOutcome.DONE else "lost")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]


def test_a_shredded_id_is_refused_inside_the_transaction(stores: Stores) -> None:
    """Issue #8 item 1: whatever the caller read before, the save refuses a shredded id."""
    save(stores, "tok_a")
    shred(stores)
    assert save(stores, "tok_b") is WriteOutcome.SUBJECT_SHREDDED  # a "new" subject: refused
    assert save(stores, "tok_c", new_key=None) is WriteOutcome.SUBJECT_RACE  # its key is gone
    assert stores.values.data_keys([S]) == {}
    assert stores.values.lookup([Token("tok_b"), Token("tok_c")]).values == {}


def test_the_lookup_reads_live_and_shredded_tokens(stores: Stores) -> None:
    save(stores, "tok_a", "tok_b")
    other = SubjectId("user-2")
    save(stores, "tok_x", subject=other)
    shred(stores, other, "r")
    found = stores.values.lookup([Token("tok_a"), Token("tok_x"), Token("tok_zz")])
    assert set(found.values) == {"tok_a"}
    assert found.shredded == {Token("tok_x"): Category("name")}
    assert found.keys[S].encryptions == 2


def test_a_value_is_replaced_in_place(harness: Harness) -> None:
    stores = harness.stores
    save(stores, "tok_a", limit=2)
    new = value("tok_a")
    changed = type(new)(new.token, new.subject, new.category, new.token_format, b"ct-new")
    assert stores.values.replace_value(changed, 2, [event("tok_a")]) is WriteOutcome.DONE
    assert stores.values.lookup([Token("tok_a")]).values[Token("tok_a")].ciphertext == b"ct-new"
    assert stores.values.replace_value(changed, 2, []) is WriteOutcome.KEY_EXHAUSTED
    gone = type(new)(Token("tok_zz"), S, new.category, new.token_format, b"x")
    assert stores.values.replace_value(gone, 10, []) is WriteOutcome.GONE
    assert stores.values.data_keys([S])[S].encryptions == 2  # the refused writes counted nothing
    stores.subjects.set_state(S, SubjectState.STOPPED, NOW, [])
    assert stores.values.replace_value(changed, 10, []) is WriteOutcome.SUBJECT_STOPPED
    assert stores.values.replace_value(changed, 10, [], allow_stopped=True) is WriteOutcome.DONE
