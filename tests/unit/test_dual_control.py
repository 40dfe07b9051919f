"""Dual control's state machine (vault.domain.approvals) on the in-memory store, with a clock
the test moves: a held step, self-approval refused, approval carrying the step out once,
rejection, expiry, a step that fails when carried out, and the policy file's `[dual_control]`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from vault.domain.approvals import DualControl
from vault.domain.context import RequestContext
from vault.domain.policy import ApprovalAction, Policy
from vault.domain.policy_file import default_policy_text, parse_policy
from vault.domain.secrets import Secret
from vault.domain.stores import ApprovalChange, ApprovalState, Stores
from vault.domain.types import Action, CallerName, Outcome
from vault.errors import (
    ApprovalRequired,
    ConfigurationError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Reason,
)
from vault.storage.memory import MEMORY_NAMES, memory_stores

DUAL = """
[dual_control]
required = ["keys_trim", "caller_revoke", "operator_shred"]
expires = "PT1H"
"""
POLICY = parse_policy(default_policy_text() + DUAL)
START = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
OPS, SECURITY = CallerName("ops"), CallerName("security")


def ctx(caller: str) -> RequestContext:
    return RequestContext(CallerName(caller))


@dataclass
class Runner:
    """A step that records how it was carried out (or fails, when told to)."""

    runs: list[tuple[RequestContext, Mapping[str, str], Secret | None]] = field(
        default_factory=list
    )
    fail: Exception | None = None

    def __call__(self, c: RequestContext, p: Mapping[str, str], admin: Secret | None) -> str:
        self.runs.append((c, dict(p), admin))
        if self.fail is not None:
            raise self.fail
        return "done it"


@dataclass
class Setup:
    dual: DualControl
    stores: Stores
    runner: Runner
    now: list[datetime]

    def later(self, delta: timedelta) -> None:
        self.now[0] += delta

    def held(
        self,
        action: ApprovalAction = ApprovalAction.KEYS_TRIM,
        parameters: Mapping[str, str] | None = None,
    ) -> str:
        with pytest.raises(ApprovalRequired) as raised:
            self.dual.hold(ctx("ops"), action, parameters or {"min_version": "3"}, "a step")
        request_id = raised.value.info["request_id"]
        assert raised.value.reason is Reason.APPROVAL_REQUIRED
        return request_id

    def actions(self) -> list[tuple[str, Action, Outcome]]:
        events = [e.event for e in self.stores.audit.entries(0, 1000)]
        return [(e.caller, e.action, e.outcome) for e in events]


def make(policy: Policy = POLICY) -> Setup:
    stores = memory_stores()
    now = [START]
    dual = DualControl(
        policy=policy,
        store=stores.approvals,
        audit=stores.audit,
        clock=lambda: now[0],
        names=MEMORY_NAMES,
    )
    runner = Runner()
    for action in ApprovalAction:
        dual.register(action, runner)
    return Setup(dual, stores, runner, now)


def test_a_held_step_creates_a_pending_request_and_says_which() -> None:
    s = make()
    with pytest.raises(ApprovalRequired) as raised:
        s.dual.hold(ctx("ops"), ApprovalAction.KEYS_TRIM, {"min_version": "3"}, "retire below v3")
    info = raised.value.info
    assert info["action"] == "keys_trim"
    assert info["expires_at"] == "2026-11-29T13:00:00Z"
    assert info["request_id"] in raised.value.message
    [pending] = s.dual.list(ctx("security"))
    assert pending.request_id == info["request_id"]
    assert pending.state is ApprovalState.PENDING
    assert pending.requested_by == OPS
    assert pending.parameters == {"min_version": "3"}
    assert pending.expires_at == START + timedelta(hours=1)
    assert (OPS, Action.APPROVAL_REQUEST, Outcome.GRANTED) in s.actions()
    assert s.runner.runs == []


def test_off_by_default_and_never_for_the_approved_step_itself() -> None:
    off = make(parse_policy(default_policy_text()))
    off.dual.hold(ctx("ops"), ApprovalAction.KEYS_TRIM, {"min_version": "3"}, "x")  # no raise
    assert off.stores.approvals.approvals(10) == []
    on = make()
    approved = RequestContext(OPS, approval="apr_" + "0" * 16)
    on.dual.hold(approved, ApprovalAction.KEYS_TRIM, {"min_version": "3"}, "x")  # no raise
    assert on.stores.approvals.approvals(10) == []


def test_another_operator_approves_and_the_step_runs_once_as_the_requester() -> None:
    s = make()
    request_id = s.held()
    token = Secret(b"hvs.approver")
    done = s.dual.approve(ctx("security"), request_id, token)
    assert done.state is ApprovalState.EXECUTED
    assert done.decided_by == SECURITY
    assert done.decided_at == START
    assert done.outcome == "done it"
    [(run_ctx, params, admin)] = s.runner.runs
    assert run_ctx.caller == OPS  # the step's own checks run for the requester
    assert run_ctx.approval == request_id
    assert params == {"min_version": "3"}
    assert admin is token
    # A second approval (the same approver or another) carries out nothing more.
    for again in ("security", "security"):
        with pytest.raises(FailedPrecondition) as raised:
            s.dual.approve(ctx(again), request_id)
        assert raised.value.reason is Reason.APPROVAL_DECIDED
        assert "already executed by security" in raised.value.message
    assert len(s.runner.runs) == 1
    actions = s.actions()
    assert (SECURITY, Action.APPROVAL_APPROVE, Outcome.GRANTED) in actions
    assert (OPS, Action.APPROVAL_EXECUTE, Outcome.GRANTED) in actions


def test_an_operator_cannot_approve_or_reject_its_own_request() -> None:
    s = make()
    request_id = s.held()
    for decide in (s.dual.approve, s.dual.reject):
        with pytest.raises(PermissionDenied) as raised:
            decide(ctx("ops"), request_id)
        assert raised.value.reason is Reason.SELF_APPROVAL
    assert s.runner.runs == []
    assert s.dual.list(ctx("ops"))[0].state is ApprovalState.PENDING
    refused = [a for a in s.actions() if a[2] is Outcome.REFUSED]
    assert refused == [
        (OPS, Action.APPROVAL_APPROVE, Outcome.REFUSED),
        (OPS, Action.APPROVAL_REJECT, Outcome.REFUSED),
    ]
    # The store refuses it too, whatever the use case checked.
    change = ApprovalChange(
        request_id, ApprovalState.PENDING, ApprovalState.APPROVED, START, by=OPS, unexpired=True
    )
    assert not s.stores.approvals.change_approval(change, [])


def test_a_rejected_request_is_never_carried_out() -> None:
    s = make()
    request_id = s.held()
    rejected = s.dual.reject(ctx("security"), request_id)
    assert rejected.state is ApprovalState.REJECTED
    assert rejected.decided_by == SECURITY
    with pytest.raises(FailedPrecondition) as raised:
        s.dual.approve(ctx("security"), request_id)
    assert raised.value.reason is Reason.APPROVAL_DECIDED
    assert s.runner.runs == []
    assert (SECURITY, Action.APPROVAL_REJECT, Outcome.GRANTED) in s.actions()


def test_an_expired_request_cannot_be_approved_or_rejected() -> None:
    s = make()
    first, second = s.held(), s.held()
    s.later(timedelta(minutes=59, seconds=59))
    assert s.dual.list(ctx("security"))[0].state is ApprovalState.PENDING  # not yet
    s.later(timedelta(seconds=1))
    with pytest.raises(FailedPrecondition) as raised:
        s.dual.approve(ctx("security"), first)
    assert raised.value.reason is Reason.APPROVAL_EXPIRED
    with pytest.raises(FailedPrecondition) as rejected:
        s.dual.reject(ctx("security"), second)
    assert rejected.value.reason is Reason.APPROVAL_EXPIRED
    states = {r.request_id: r.state for r in s.dual.list(ctx("security"))}
    assert states == {first: ApprovalState.EXPIRED, second: ApprovalState.EXPIRED}
    assert s.runner.runs == []
    assert any(a[1] is Action.APPROVAL_EXPIRE for a in s.actions())


def test_listing_marks_overdue_requests_expired() -> None:
    s = make()
    request_id = s.held()
    s.later(timedelta(hours=2))
    [listed] = s.dual.list(ctx("security"))
    assert listed.state is ApprovalState.EXPIRED
    assert listed.decided_at == START + timedelta(hours=2)
    with pytest.raises(FailedPrecondition) as raised:
        s.dual.approve(ctx("security"), request_id)
    assert raised.value.reason is Reason.APPROVAL_EXPIRED


def test_a_step_that_fails_when_carried_out_is_recorded_as_failed_and_raises() -> None:
    s = make()
    request_id = s.held()
    s.runner.fail = FailedPrecondition("in use", reason=Reason.KEY_VERSION_IN_USE)
    with pytest.raises(FailedPrecondition) as raised:
        s.dual.approve(ctx("security"), request_id)
    assert raised.value.reason is Reason.KEY_VERSION_IN_USE
    record = s.stores.approvals.approval(request_id)
    assert record is not None
    assert record.state is ApprovalState.FAILED
    assert record.outcome == "KEY_VERSION_IN_USE"
    with pytest.raises(FailedPrecondition):  # failed is final: request the step again
        s.dual.approve(ctx("security"), request_id)
    assert len(s.runner.runs) == 1
    assert (OPS, Action.APPROVAL_EXECUTE, Outcome.REFUSED) in s.actions()


def test_a_settled_shred_request_keeps_only_the_subjects_digest() -> None:
    s = make()
    approved = s.held(ApprovalAction.OPERATOR_SHRED, {"subject": "user-42"})
    rejected = s.held(ApprovalAction.OPERATOR_SHRED, {"subject": "user-43"})
    assert s.runner.runs == []
    s.dual.approve(ctx("security"), approved)
    assert s.runner.runs[0][1] == {"subject": "user-42"}  # carried out with the id
    s.dual.reject(ctx("security"), rejected)
    kept = {r.request_id: r.parameters for r in s.dual.list(ctx("security"))}
    assert kept[approved] == {"subject_digest": MEMORY_NAMES.digest("user-42")}
    assert kept[rejected] == {"subject_digest": MEMORY_NAMES.digest("user-43")}
    details = " ".join(e.event.detail or "" for e in s.stores.audit.entries(0, 1000))
    assert "user-42" not in details
    assert "user-43" not in details


def test_who_may_decide_and_what_a_request_id_looks_like() -> None:
    s = make()
    request_id = s.held()
    with pytest.raises(PermissionDenied) as denied:
        s.dual.approve(ctx("kyc"), request_id)  # kyc has no approvals operation
    assert denied.value.rule == "caller:kyc:operations"
    with pytest.raises(PermissionDenied):
        s.dual.list(ctx("payment"))
    with pytest.raises(InvalidArgument) as bad:
        s.dual.approve(ctx("security"), "apr_not-an-id")
    assert bad.value.violations[0].field == "request_id"
    with pytest.raises(NotFound) as unknown:
        s.dual.reject(ctx("security"), "apr_" + "f" * 16)
    assert unknown.value.reason is Reason.APPROVAL_UNKNOWN
    assert s.runner.runs == []


def test_concurrent_approvals_carry_the_step_out_once() -> None:
    s = make()
    request_ids = [s.held() for _ in range(5)]
    approvers = ["security", "legal_ops"]  # legal_ops: a third approver, below
    policy = parse_policy(
        default_policy_text()
        + DUAL
        + '\n[callers.legal_ops]\ntext = "t"\npurposes = []\nview = "masked"\ntokenize = []\n'
        + 'operations = ["approvals"]\n'
    )
    s.dual.policy = policy
    for request_id in request_ids:
        barrier = threading.Barrier(4)
        results: list[str] = []

        def approve(
            caller: str,
            rid: str = request_id,
            b: threading.Barrier = barrier,
            out: list[str] = results,
        ) -> None:
            b.wait()
            try:
                s.dual.approve(ctx(caller), rid)
                out.append("executed")
            except FailedPrecondition as exc:
                out.append(exc.reason.name)

        threads = [threading.Thread(target=approve, args=(approvers[i % 2],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["APPROVAL_DECIDED"] * 3 + ["executed"]
    assert len(s.runner.runs) == len(request_ids)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('required = ["keys_destroy"]', "dual_control.required: 'keys_destroy' is not one of"),
        ('required = "keys_trim"', "dual_control.required: must be a list of names"),
        ('required = ["keys_trim"]\nexpires = "P1Y"', "dual_control.expires: must be an ISO"),
        ('required = ["keys_trim"]\nexpires = "PT30S"', "dual_control.expires: must be an ISO"),
        ('required = ["keys_trim"]\nexpires = "P31D"', "dual_control.expires: must be an ISO"),
        ('required = ["keys_trim"]\nexpires = 24', "dual_control.expires: must be an ISO"),
        ('required = ["keys_trim"]\nwho = "anyone"', "dual_control: unknown settings who"),
    ],
)
def test_the_policy_files_dual_control_table_is_validated(table: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_policy(default_policy_text() + f"\n[dual_control]\n{table}\n")
    assert message in raised.value.message


def test_dual_control_needs_a_second_approver() -> None:
    alone = default_policy_text().replace(
        'operations = ["approvals"]', "operations = []"
    )  # security approves nothing: ops could never have its requests approved
    with pytest.raises(ConfigurationError) as raised:
        parse_policy(alone + '\n[dual_control]\nrequired = ["keys_trim"]\n')
    assert "no other caller has the approvals operation to approve what ops request" in (
        raised.value.message
    )
    parse_policy(alone)  # without dual control, nothing to approve


def test_the_policy_files_dual_control_table_is_read() -> None:
    assert POLICY.dual_control.required == set(ApprovalAction)
    assert POLICY.dual_control.expires == timedelta(hours=1)
    default = parse_policy(default_policy_text())
    assert default.dual_control.required == frozenset()
    assert default.dual_control.expires == timedelta(hours=24)
    assert "approvals" in default.callers[SECURITY].operations
    some = parse_policy(default_policy_text() + '\n[dual_control]\nrequired = ["keys_trim"]\n')
    assert some.dual_control.requires(ApprovalAction.KEYS_TRIM)
    assert not some.dual_control.requires(ApprovalAction.OPERATOR_SHRED)
