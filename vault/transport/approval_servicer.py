"""The ApprovalService's servicer: proto -> domain, one use case, domain -> proto."""

from __future__ import annotations

from typing import Any

from pdvault.v1 import approval_service_pb2 as pb

from vault.domain.approvals import DualControl
from vault.domain.policy import ApprovalAction
from vault.domain.stores import ApprovalRecord, ApprovalState
from vault.transport.convert import timestamp
from vault.transport.key_servicer import operator_token
from vault.transport.rpc import Call, Method

__all__ = ["ApprovalServicer"]

_ACTIONS = {
    ApprovalAction.KEYS_TRIM: pb.APPROVAL_ACTION_KEYS_TRIM,
    ApprovalAction.CALLER_REVOKE: pb.APPROVAL_ACTION_CALLER_REVOKE,
    ApprovalAction.OPERATOR_SHRED: pb.APPROVAL_ACTION_OPERATOR_SHRED,
}
_STATES = {
    ApprovalState.PENDING: pb.APPROVAL_STATE_PENDING,
    ApprovalState.APPROVED: pb.APPROVAL_STATE_APPROVED,
    ApprovalState.EXECUTED: pb.APPROVAL_STATE_EXECUTED,
    ApprovalState.FAILED: pb.APPROVAL_STATE_FAILED,
    ApprovalState.REJECTED: pb.APPROVAL_STATE_REJECTED,
    ApprovalState.EXPIRED: pb.APPROVAL_STATE_EXPIRED,
}


def approval_out(r: ApprovalRecord) -> pb.Approval:
    out = pb.Approval(
        request_id=r.request_id,
        action=_ACTIONS[r.action],
        parameters=dict(r.parameters),
        requested_by=r.requested_by,
        created_at=timestamp(r.created_at),
        expires_at=timestamp(r.expires_at),
        state=_STATES[r.state],
        decided_by=r.decided_by or "",
        outcome=r.outcome or "",
    )
    if r.decided_at is not None:
        out.decided_at.CopyFrom(timestamp(r.decided_at))
    return out


class ApprovalServicer:
    def __init__(self, dual_control: DualControl) -> None:
        self._dual = dual_control

    def methods(self) -> dict[str, Method[Any, Any]]:
        return {
            "ListApprovals": Method("ListApprovals", pb.ListApprovalsRequest, self.list),
            "ApproveRequest": Method("ApproveRequest", pb.ApproveRequestRequest, self.approve),
            "RejectRequest": Method("RejectRequest", pb.RejectRequestRequest, self.reject),
        }

    def list(self, request: pb.ListApprovalsRequest, call: Call) -> pb.ListApprovalsResponse:
        return pb.ListApprovalsResponse(
            approvals=[approval_out(r) for r in self._dual.list(call.ctx)]
        )

    def approve(self, request: pb.ApproveRequestRequest, call: Call) -> pb.ApproveRequestResponse:
        with operator_token(call) as admin:
            done = self._dual.approve(call.ctx, request.request_id, admin)
        return pb.ApproveRequestResponse(approval=approval_out(done))

    def reject(self, request: pb.RejectRequestRequest, call: Call) -> pb.RejectRequestResponse:
        done = self._dual.reject(call.ctx, request.request_id)
        return pb.RejectRequestResponse(approval=approval_out(done))
