"""The ApprovalStore contract, on every adapter (SQLite, PostgreSQL, memory): requests stored
and listed newest first, and each change of state conditional on the state, the requester and
the expiry, so that of concurrent approvals exactly one wins."""

from __future__ import annotations

import threading
from datetime import timedelta

from tests.contract.conftest import NOW
from vault.domain.policy import ApprovalAction
from vault.domain.stores import ApprovalChange, ApprovalRecord, ApprovalState, Stores
from vault.domain.types import Action, AuditEvent, CallerName, Outcome

OPS, SECURITY = CallerName("ops"), CallerName("security")


def request(n: int, at: timedelta = timedelta(0)) -> ApprovalRecord:
    return ApprovalRecord(
        request_id=f"apr_{n:016x}",
        action=ApprovalAction.KEYS_TRIM,
        parameters={"min_version": str(n)},
        requested_by=OPS,
        created_at=NOW + at,
        expires_at=NOW + at + timedelta(hours=1),
    )


def audit(detail: str) -> AuditEvent:
    return AuditEvent(
        occurred_at=NOW,
        caller=SECURITY,
        action=Action.APPROVAL_APPROVE,
        outcome=Outcome.GRANTED,
        rule="caller:security:operations",
        detail=detail,
    )


def details(stores: Stores) -> list[str]:
    return [e.event.detail or "" for e in stores.audit.entries(0, 100)]


def approve(request_id: str, by: CallerName = SECURITY, minutes: int = 1) -> ApprovalChange:
    return ApprovalChange(
        request_id,
        ApprovalState.PENDING,
        ApprovalState.APPROVED,
        NOW + timedelta(minutes=minutes),
        by=by,
        unexpired=True,
    )


def test_requests_are_stored_and_listed_newest_first(stores: Stores) -> None:
    for n in range(3):
        stores.approvals.add_approval(request(n, timedelta(minutes=n)), [audit(f"added {n}")])
    assert stores.approvals.approval(request(1).request_id) == request(1, timedelta(minutes=1))
    assert stores.approvals.approval("apr_" + "f" * 16) is None
    listed = stores.approvals.approvals(2)
    assert [r.request_id for r in listed] == [request(2).request_id, request(1).request_id]
    assert listed[0].parameters == {"min_version": "2"}
    assert listed[0].state is ApprovalState.PENDING
    assert listed[0].decided_by is None
    assert listed[0].decided_at is None
    assert details(stores) == ["added 0", "added 1", "added 2"]


def test_a_change_applies_only_from_its_state_with_its_audit(stores: Stores) -> None:
    r = request(1)
    stores.approvals.add_approval(r, [])
    assert stores.approvals.change_approval(approve(r.request_id), [audit("approved")])
    approved = stores.approvals.approval(r.request_id)
    assert approved is not None
    assert approved.state is ApprovalState.APPROVED
    assert approved.decided_by == SECURITY
    assert approved.decided_at == NOW + timedelta(minutes=1)
    # Not pending any more: a second approval changes nothing and records nothing.
    assert not stores.approvals.change_approval(approve(r.request_id), [audit("again")])
    done = ApprovalChange(
        r.request_id,
        ApprovalState.APPROVED,
        ApprovalState.EXECUTED,
        NOW + timedelta(minutes=2),
        outcome="destroyed v1",
        parameters={"min_version": "1", "note": "kept"},
    )
    assert stores.approvals.change_approval(done, [audit("executed")])
    executed = stores.approvals.approval(r.request_id)
    assert executed is not None
    assert executed.state is ApprovalState.EXECUTED
    assert executed.outcome == "destroyed v1"
    assert executed.parameters == {"min_version": "1", "note": "kept"}
    assert executed.decided_by == SECURITY  # the decision stays recorded
    assert executed.decided_at == NOW + timedelta(minutes=1)
    assert details(stores) == ["approved", "executed"]
    missing = approve("apr_" + "f" * 16)
    assert not stores.approvals.change_approval(missing, [audit("nothing")])


def test_the_requester_never_decides_its_own_request(stores: Stores) -> None:
    r = request(1)
    stores.approvals.add_approval(r, [])
    assert not stores.approvals.change_approval(approve(r.request_id, by=OPS), [audit("self")])
    record = stores.approvals.approval(r.request_id)
    assert record is not None
    assert record.state is ApprovalState.PENDING
    assert details(stores) == []


def test_expiry_decides_which_changes_apply(stores: Stores) -> None:
    r = request(1)
    stores.approvals.add_approval(r, [])
    expire = ApprovalChange(
        r.request_id,
        ApprovalState.PENDING,
        ApprovalState.EXPIRED,
        NOW + timedelta(minutes=59),
        unexpired=False,
    )
    assert not stores.approvals.change_approval(expire, [])  # not yet expired
    assert not stores.approvals.change_approval(approve(r.request_id, minutes=60), [])
    at_expiry = ApprovalChange(
        r.request_id, ApprovalState.PENDING, ApprovalState.EXPIRED, r.expires_at, unexpired=False
    )
    assert stores.approvals.change_approval(at_expiry, [audit("expired")])
    expired = stores.approvals.approval(r.request_id)
    assert expired is not None
    assert expired.state is ApprovalState.EXPIRED
    assert expired.decided_by is None
    assert expired.decided_at == r.expires_at


def test_of_concurrent_approvals_exactly_one_wins(stores: Stores) -> None:
    rounds, racers = 5, 6
    for n in range(rounds):
        r = request(n)
        stores.approvals.add_approval(r, [])
        barrier = threading.Barrier(racers)
        won: list[bool] = []

        def race(
            i: int, rid: str = r.request_id, b: threading.Barrier = barrier, out: list[bool] = won
        ) -> None:
            b.wait()
            by = CallerName(f"approver{i}")
            out.append(stores.approvals.change_approval(approve(rid, by=by), [audit(rid)]))

        threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(won) == [False] * (racers - 1) + [True]
    # One audit entry per request: only the winner's.
    assert sorted(details(stores)) == sorted(request(n).request_id for n in range(rounds))
