"""The CallerService's servicer: proto -> domain, one use case, domain -> proto."""

from __future__ import annotations

from typing import Any

from pdvault.v1 import caller_service_pb2 as pb

from vault.domain.credentials import CallerAdministration
from vault.transport.convert import timestamp
from vault.transport.rpc import Call, Method

__all__ = ["CallerServicer"]


class CallerServicer:
    def __init__(self, admin: CallerAdministration) -> None:
        self._admin = admin

    def methods(self) -> dict[str, Method[Any, Any]]:
        return {
            "AddCallerKey": Method("AddCallerKey", pb.AddCallerKeyRequest, self.add),
            "ListCallerKeys": Method("ListCallerKeys", pb.ListCallerKeysRequest, self.list_keys),
            "RevokeCallerKey": Method("RevokeCallerKey", pb.RevokeCallerKeyRequest, self.revoke),
        }

    def add(self, request: pb.AddCallerKeyRequest, call: Call) -> pb.AddCallerKeyResponse:
        new = self._admin.add_key(call.ctx, request.caller, request.rotation)
        return pb.AddCallerKeyResponse(caller=new.caller, key_id=new.key_id, api_key=new.key)

    def list_keys(self, request: pb.ListCallerKeysRequest, call: Call) -> pb.ListCallerKeysResponse:
        out = pb.ListCallerKeysResponse()
        for k in self._admin.list_keys(call.ctx):
            key = out.keys.add(caller=k.caller, key_id=k.key_id, created_at=timestamp(k.created_at))
            if k.last_used_at is not None:
                key.last_used_at.CopyFrom(timestamp(k.last_used_at))
            if k.revoked_at is not None:
                key.revoked_at.CopyFrom(timestamp(k.revoked_at))
        return out

    def revoke(self, request: pb.RevokeCallerKeyRequest, call: Call) -> pb.RevokeCallerKeyResponse:
        self._admin.revoke(call.ctx, request.caller, request.key_id)
        return pb.RevokeCallerKeyResponse()
