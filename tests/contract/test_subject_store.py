"""The SubjectStore contract, on every adapter (SQLite, PostgreSQL, memory)."""

from __future__ import annotations

from tests.contract.conftest import NOW, Harness, S, event
from tests.contract.test_value_store import save
from vault.domain.stores import ShreddedRecord, Stores
from vault.domain.types import CallerName, Purpose, SubjectId, SubjectState
from vault.storage.memory import MEMORY_NAMES


def _receipt(receipt_id: str, previous: str | None = None) -> ShreddedRecord:
    return ShreddedRecord(MEMORY_NAMES.digest(S), receipt_id, NOW, CallerName("ops"), 0, previous)


def test_state_and_consents(stores: Stores) -> None:
    assert stores.subjects.subject_record(S) is None
    assert not stores.subjects.set_state(S, SubjectState.STOPPED, NOW, [])
    save(stores, "tok_a")
    record = stores.subjects.subject_record(S)
    assert record is not None
    assert (record.state, record.consents) == (SubjectState.ACTIVE, {})
    assert stores.subjects.set_state(S, SubjectState.STOPPED, NOW, [event()])
    assert stores.subjects.set_consent(S, Purpose("advertising"), False, NOW, [])
    assert stores.subjects.set_consent(S, Purpose("usage_analysis"), True, NOW, [])
    record = stores.subjects.subject_record(S)
    assert record is not None
    assert record.state is SubjectState.STOPPED
    assert record.state_changed_at == NOW
    assert record.consents == {"advertising": False, "usage_analysis": True}
    assert not stores.subjects.set_consent(SubjectId("nobody"), Purpose("a"), True, NOW, [])
    assert stores.subjects.subjects_with_digests([MEMORY_NAMES.digest(S), "nope"]) == [S]


def test_a_shred_destroys_everything_and_keeps_the_receipt(stores: Stores) -> None:
    save(stores, "tok_a", "tok_b")
    stores.subjects.set_consent(S, Purpose("advertising"), True, NOW, [])
    result = stores.subjects.shred(S, _receipt("r-1"), [])
    assert result.destroyed == (1, 2)
    assert result.receipt is not None
    assert result.receipt.values_destroyed == 2
    assert stores.subjects.subject_record(S) is None
    assert stores.values.subject_values(S) == []
    assert stores.subjects.shred_receipt(MEMORY_NAMES.digest(S)) == result.receipt
    assert stores.subjects.scrub() is True


def test_a_repeated_shred_returns_the_receipt_and_a_reshred_names_it(harness: Harness) -> None:
    stores = harness.stores
    save(stores, "tok_a")
    first = stores.subjects.shred(S, _receipt("r-1"), [])
    assert first.receipt is not None
    assert first.receipt.previous_receipt_id is None
    repeat = stores.subjects.shred(S, _receipt("r-2"), [])
    assert repeat.destroyed is None
    assert repeat.receipt == first.receipt  # unchanged
    harness.restore_subject(S)  # live data under the shredded id again (a restored copy)
    again = stores.subjects.shred(S, _receipt("r-3"), [])
    assert again.destroyed == (0, 0)
    assert again.receipt is not None
    assert again.receipt.receipt_id == "r-3"
    assert again.receipt.previous_receipt_id == "r-1"
    assert stores.subjects.shred_receipt(MEMORY_NAMES.digest(S)) == again.receipt


def test_a_reshred_without_a_receipt_in_the_database_names_the_logs(harness: Harness) -> None:
    harness.restore_subject(S)  # a restored copy from before the shred: no receipt in it
    done = harness.stores.subjects.shred(S, _receipt("r-2", previous="r-1"), [])
    assert done.receipt is not None
    assert done.receipt.previous_receipt_id == "r-1"


def test_shredding_an_unknown_subject_changes_nothing(stores: Stores) -> None:
    nothing = stores.subjects.shred(SubjectId("nobody"), _receipt("r-1"), [])
    assert (nothing.receipt, nothing.destroyed) == (None, None)
    assert stores.subjects.shred_receipt(MEMORY_NAMES.digest(SubjectId("nobody"))) is None
