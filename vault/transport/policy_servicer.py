"""The PolicyService's servicer: proto -> domain, one use case, domain -> proto."""

from __future__ import annotations

from typing import Any

from pdvault.v1 import policy_service_pb2 as pb

from vault.domain.policy_admin import PolicyAdministration
from vault.transport.rpc import Call, Method

__all__ = ["PolicyServicer"]


class PolicyServicer:
    def __init__(self, admin: PolicyAdministration) -> None:
        self._admin = admin

    def methods(self) -> dict[str, Method[Any, Any]]:
        return {
            "GetPolicy": Method("GetPolicy", pb.GetPolicyRequest, self.get),
            "ReloadPolicy": Method("ReloadPolicy", pb.ReloadPolicyRequest, self.reload),
        }

    def get(self, _request: pb.GetPolicyRequest, call: Call) -> pb.GetPolicyResponse:
        now = self._admin.show(call.ctx)
        return pb.GetPolicyResponse(
            name=now.policy.name, version=now.policy.version, digest=now.digest
        )

    def reload(self, _request: pb.ReloadPolicyRequest, call: Call) -> pb.ReloadPolicyResponse:
        change = self._admin.reload(call.ctx)
        return pb.ReloadPolicyResponse(
            name=change.after.policy.name,
            version=change.after.policy.version,
            digest=change.after.digest,
            previous_name=change.before.policy.name,
            previous_version=change.before.policy.version,
            previous_digest=change.before.digest,
            changed=change.changed,
        )
