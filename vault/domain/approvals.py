"""Dual control: an irreversible step that the policy holds for a second operator.

PCI DSS 4.0 3.6.1.2 and 3.7.6 ask for split knowledge and dual control of key-management
operations; pdvault extends it to the other steps that cannot be undone. `[dual_control]` in
the policy file names them (`keys_trim`, `caller_revoke`, `operator_shred`); off by default.

The life of a request:

1. An operator asks for a held step (a trim, a revocation, an operator's shred). The use case
   checks the request as it would before doing it (authorization, arguments, whether there is
   anything to do), then calls `DualControl.hold`: a pending request is stored with what it
   takes to carry the step out again (never a value or a secret) and the call answers
   FAILED_PRECONDITION, reason APPROVAL_REQUIRED, naming the request and its expiry.
2. Another operator (a caller with the `approvals` operation, never the requester) approves
   it: one conditional write moves it from pending to approved, so of any number of concurrent
   approvals, in any number of processes, exactly one wins; that one carries the step out, as
   the requester (the step's own checks run again), and records executed or failed. Or it
   rejects it. An expired request can be neither.
3. Every step is audited: the request, each refusal, the decision, the execution.

Invariants: a request MUST be carried out at most once, and only after a decision by a caller
other than its requester, before its expiry; a request's stored parameters MUST NOT hold a value
or a secret, and a shred's subject id is replaced by its digest once the request is settled.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime

from vault.domain.context import RequestContext
from vault.domain.naming import SubjectNames
from vault.domain.operations import authorize_operation
from vault.domain.policy import ApprovalAction, Policy
from vault.domain.ports import Clock
from vault.domain.secrets import Secret
from vault.domain.stores import (
    ApprovalChange,
    ApprovalRecord,
    ApprovalState,
    ApprovalStore,
    AuditLog,
)
from vault.domain.types import Action, AuditEvent, CallerName, Outcome
from vault.errors import (
    ApprovalRequired,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PdvaultError,
    PermissionDenied,
    Reason,
)

__all__ = [
    "APPROVALS_OPERATION",
    "LIST_LIMIT",
    "REQUEST_ID_RE",
    "DualControl",
    "StepRunner",
    "new_request_id",
]

APPROVALS_OPERATION = "approvals"
REQUEST_ID_RE = re.compile(r"apr_[0-9a-f]{16}")
LIST_LIMIT = 200

# Carries a held step out: (the requester's context, the stored parameters, the approver's
# own HashiCorp Vault token if one was sent) -> what it did, in words (no value, no secret).
StepRunner = Callable[[RequestContext, Mapping[str, str], Secret | None], str]


def new_request_id() -> str:
    return f"apr_{secrets.token_hex(8)}"


def _settled_parameters(record: ApprovalRecord, names: SubjectNames) -> Mapping[str, str] | None:
    """What a settled request keeps: a shred's subject id is replaced by its keyed digest (the
    subject may be gone; its id must not outlive it here, nor be found by a dictionary)."""
    subject = record.parameters.get("subject")
    if record.action is ApprovalAction.OPERATOR_SHRED and subject is not None:
        return {"subject_digest": names.digest(subject)}
    return None


class DualControl:
    """The held steps' gate (`hold`) and the approvers' use cases (`list`, `approve`,
    `reject`). Steps are carried out by the runners registered for their actions."""

    def __init__(
        self,
        *,
        policy: Policy,
        store: ApprovalStore,
        audit: AuditLog,
        clock: Clock,
        names: SubjectNames,
        new_id: Callable[[], str] = new_request_id,
    ) -> None:
        self.policy = policy
        self._names = names
        self._store = store
        self._audit = audit
        self._clock = clock
        self._new_id = new_id
        self._runners: dict[ApprovalAction, StepRunner] = {}

    def __repr__(self) -> str:
        return f"DualControl(required={sorted(a.value for a in self.policy.dual_control.required)})"

    def register(self, action: ApprovalAction, runner: StepRunner) -> None:
        self._runners[action] = runner

    # -- the gate ------------------------------------------------------------------------------

    def hold(
        self,
        ctx: RequestContext,
        action: ApprovalAction,
        parameters: Mapping[str, str],
        described: str,
    ) -> None:
        """Return when the step may go ahead now: the policy does not hold it, or `ctx`
        carries out an approved request. Otherwise store a pending request and raise
        ApprovalRequired. `described` says what the step does, for the audit (no value)."""
        rules = self.policy.dual_control
        if ctx.approval or not rules.requires(action):
            return
        now = self._clock()
        record = ApprovalRecord(
            request_id=self._new_id(),
            action=action,
            parameters=dict(parameters),
            requested_by=ctx.caller,
            created_at=now,
            expires_at=now + rules.expires,
        )
        event = self._event(
            ctx.caller,
            Action.APPROVAL_REQUEST,
            f"{record.request_id}: {action.value}: {described}; pending a second operator",
        )
        self._store.add_approval(record, [event])
        expires = record.expires_at.isoformat().replace("+00:00", "Z")
        raise ApprovalRequired(
            f"{action.value} needs a second operator's approval: request {record.request_id} "
            f"is pending until {expires}",
            info={
                "request_id": record.request_id,
                "action": action.value,
                "expires_at": expires,
            },
        )

    # -- the approvers' use cases ------------------------------------------------------------

    def list(self, ctx: RequestContext) -> list[ApprovalRecord]:
        """The newest requests, newest first; a pending one past its expiry is marked expired
        (and audited) on the way."""
        self._authorize(ctx, Action.APPROVAL_LIST)
        now = self._clock()
        found = [
            self._expire(r, now) if r.state is ApprovalState.PENDING and now >= r.expires_at else r
            for r in self._store.approvals(LIST_LIMIT)
        ]
        self._audit.append(
            [self._event(ctx.caller, Action.APPROVAL_LIST, f"{len(found)} requests")]
        )
        return found

    def reject(self, ctx: RequestContext, request_id: str) -> ApprovalRecord:
        record = self._decidable(ctx, request_id, Action.APPROVAL_REJECT)
        now = self._clock()
        change = ApprovalChange(
            record.request_id,
            ApprovalState.PENDING,
            ApprovalState.REJECTED,
            now,
            by=ctx.caller,
            parameters=_settled_parameters(record, self._names),
            unexpired=True,
        )
        event = self._event(
            ctx.caller, Action.APPROVAL_REJECT, f"{record.request_id}: {record.action.value}"
        )
        if not self._store.change_approval(change, [event]):
            raise self._lost(record.request_id)
        return self._get(record.request_id)

    def approve(
        self, ctx: RequestContext, request_id: str, admin: Secret | None = None
    ) -> ApprovalRecord:
        """Approve and carry the step out, once. Raises the step's own error if it refuses
        or fails then (the request is recorded as failed: request it again)."""
        record = self._decidable(ctx, request_id, Action.APPROVAL_APPROVE)
        runner = self._runners.get(record.action)
        if runner is None:  # the composition root registers one per action
            raise FailedPrecondition(f"this server cannot carry out {record.action.value}")
        claim = ApprovalChange(
            record.request_id,
            ApprovalState.PENDING,
            ApprovalState.APPROVED,
            self._clock(),
            by=ctx.caller,
            unexpired=True,
        )
        event = self._event(
            ctx.caller,
            Action.APPROVAL_APPROVE,
            f"{record.request_id}: {record.action.value} requested by {record.requested_by}",
        )
        if not self._store.change_approval(claim, [event]):
            raise self._lost(record.request_id)
        # Carried out as the requester: the step's own authorization and checks run again.
        step = dataclasses.replace(ctx, caller=record.requested_by, approval=record.request_id)
        try:
            done = runner(step, record.parameters, admin)
        except PdvaultError as exc:
            self._finish(record, ApprovalState.FAILED, exc.reason.name, ctx.caller)
            raise
        except Exception:
            self._finish(record, ApprovalState.FAILED, Reason.INTERNAL.name, ctx.caller)
            raise
        self._finish(record, ApprovalState.EXECUTED, done, ctx.caller)
        return self._get(record.request_id)

    # -- helpers -------------------------------------------------------------------------------

    def _decidable(self, ctx: RequestContext, request_id: str, action: Action) -> ApprovalRecord:
        """The request, if `ctx.caller` may decide it now: an approver, not its requester,
        while it is pending and unexpired. Each refusal is audited."""
        self._authorize(ctx, action)
        if not REQUEST_ID_RE.fullmatch(request_id):
            raise InvalidArgument.one(
                "request_id", "request_id.syntax", "must be a request id: apr_ and 16 hex digits"
            )
        record = self._store.approval(request_id)
        if record is None:
            raise NotFound(f"no approval request {request_id}", reason=Reason.APPROVAL_UNKNOWN)
        if record.requested_by == ctx.caller:
            rule = "dual_control:second-operator"
            self._audit.append(
                [self._event(ctx.caller, action, f"{request_id}: its own request", rule, False)]
            )
            raise PermissionDenied(
                f"request {request_id} is {ctx.caller}'s own: another operator must decide it "
                "(dual control)",
                rule=rule,
                reason=Reason.SELF_APPROVAL,
            )
        now = self._clock()
        if record.state is ApprovalState.PENDING and now >= record.expires_at:
            self._expire(record, now)
            self._audit.append(
                [self._event(ctx.caller, action, f"{request_id}: expired", granted=False)]
            )
            raise FailedPrecondition(
                f"request {request_id} expired; request the step again",
                reason=Reason.APPROVAL_EXPIRED,
            )
        if record.state is not ApprovalState.PENDING:
            raise self._lost(request_id, record)
        return record

    def _lost(self, request_id: str, record: ApprovalRecord | None = None) -> PdvaultError:
        """Why a request is not (or no longer) pending: another decision came first."""
        record = record or self._store.approval(request_id)
        if record is None:
            return NotFound(f"no approval request {request_id}", reason=Reason.APPROVAL_UNKNOWN)
        if record.state is ApprovalState.EXPIRED or (
            record.state is ApprovalState.PENDING and self._clock() >= record.expires_at
        ):
            return FailedPrecondition(
                f"request {request_id} expired; request the step again",
                reason=Reason.APPROVAL_EXPIRED,
            )
        by = f" by {record.decided_by}" if record.decided_by else ""
        return FailedPrecondition(
            f"request {request_id} is already {record.state.value}{by}",
            reason=Reason.APPROVAL_DECIDED,
        )

    def _expire(self, record: ApprovalRecord, now: datetime) -> ApprovalRecord:
        change = ApprovalChange(
            record.request_id,
            ApprovalState.PENDING,
            ApprovalState.EXPIRED,
            now,
            parameters=_settled_parameters(record, self._names),
            unexpired=False,
        )
        event = self._event(
            CallerName("system:dual-control"),
            Action.APPROVAL_EXPIRE,
            f"{record.request_id}: {record.action.value} expired undecided",
        )
        self._store.change_approval(change, [event])
        return self._get(record.request_id)

    def _finish(
        self, record: ApprovalRecord, state: ApprovalState, outcome: str, approver: CallerName
    ) -> None:
        change = ApprovalChange(
            record.request_id,
            ApprovalState.APPROVED,
            state,
            self._clock(),
            outcome=outcome[:256],
            parameters=_settled_parameters(record, self._names),
        )
        event = self._event(
            record.requested_by,
            Action.APPROVAL_EXECUTE,
            f"{record.request_id}: {record.action.value} {state.value}, approved by "
            f"{approver}: {outcome}"[:256],
            granted=state is ApprovalState.EXECUTED,
        )
        self._store.change_approval(change, [event])

    def _get(self, request_id: str) -> ApprovalRecord:
        record = self._store.approval(request_id)
        if record is None:  # requests are never deleted
            raise NotFound(f"no approval request {request_id}", reason=Reason.APPROVAL_UNKNOWN)
        return record

    def _authorize(self, ctx: RequestContext, action: Action) -> None:
        authorize_operation(
            self.policy, self._audit, self._clock, ctx.caller, APPROVALS_OPERATION, action
        )

    def _event(
        self,
        caller: CallerName,
        action: Action,
        detail: str | None,
        rule: str | None = None,
        granted: bool = True,
    ) -> AuditEvent:
        return AuditEvent(
            occurred_at=self._clock(),
            caller=caller,
            action=action,
            outcome=Outcome.GRANTED if granted else Outcome.REFUSED,
            rule=rule or f"caller:{caller}:operations",
            detail=detail,
        )
