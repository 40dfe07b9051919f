"""The operator services through a `Client`: SubjectService, KeyService, CallerService,
ApprovalService and PolicyService."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pdvault.v1 import (
    approval_service_pb2,
    approval_service_pb2_grpc,
    caller_service_pb2,
    key_service_pb2,
    policy_service_pb2,
    subject_service_pb2,
)

from pdvault_client.convert import (
    VAULT_TOKEN_METADATA,
    key_status,
    message_to_dict,
    rewrap_step,
    trimmed,
    value_message,
)
from pdvault_client.types import KeyStatus, RewrapStep, Trimmed

if TYPE_CHECKING:
    from pdvault_client.client import Client

__all__ = [
    "ApprovalAdmin",
    "CallerAdmin",
    "KeyAdmin",
    "PolicyAdmin",
    "SubjectAdmin",
    "shred_request",
]


def shred_request(subject: str, by_subject: bool) -> subject_service_pb2.ShredSubjectRequest:
    requester = (
        subject_service_pb2.SHRED_REQUESTER_SUBJECT
        if by_subject
        else subject_service_pb2.SHRED_REQUESTER_OPERATOR
    )
    return subject_service_pb2.ShredSubjectRequest(subject=subject, requested_by=requester)


class ApprovalAdmin:
    """The ApprovalService, through a Client: dual control's second operator (callers with
    the `approvals` operation). Answers are plain dicts (the proto's JSON form). Approve and
    reject are not retried: a retry after the first took effect would be refused anyway."""

    def __init__(self, client: Client, vault_token: str | None = None) -> None:
        self._client = client
        self._stub = approval_service_pb2_grpc.ApprovalServiceStub(client._channel)
        self._admin = ((VAULT_TOKEN_METADATA, vault_token),) if vault_token else ()

    def __repr__(self) -> str:
        return "ApprovalAdmin()"

    def list(self) -> list[dict[str, Any]]:
        answer = self._client._call(
            self._stub.ListApprovals, approval_service_pb2.ListApprovalsRequest()
        )
        found: list[dict[str, Any]] = message_to_dict(answer).get("approvals", [])
        return found

    def approve(self, request_id: str) -> dict[str, Any]:
        """Approve another operator's request: its step is carried out now, once."""
        answer = self._client._call(
            self._stub.ApproveRequest,
            approval_service_pb2.ApproveRequestRequest(request_id=request_id),
            extra_metadata=self._admin,
            retry=False,
        )
        approval: dict[str, Any] = message_to_dict(answer)["approval"]
        return approval

    def reject(self, request_id: str) -> dict[str, Any]:
        answer = self._client._call(
            self._stub.RejectRequest,
            approval_service_pb2.RejectRequestRequest(request_id=request_id),
            retry=False,
        )
        approval: dict[str, Any] = message_to_dict(answer)["approval"]
        return approval


class CallerAdmin:
    """The CallerService, through a Client: callers' API keys (operators with the `callers`
    operation). Answers are plain dicts (the proto's JSON form); `add` holds the new key."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = client._caller_stub

    def __repr__(self) -> str:
        return "CallerAdmin()"

    def add(self, caller: str, rotation: bool = False) -> dict[str, Any]:
        """A new key for `caller` (shown once). Not retried: a retry would issue another."""
        answer = self._client._call(
            self._stub.AddCallerKey,
            caller_service_pb2.AddCallerKeyRequest(caller=caller, rotation=rotation),
            retry=False,
        )
        return message_to_dict(answer)

    def list(self) -> list[dict[str, Any]]:
        answer = self._client._call(
            self._stub.ListCallerKeys, caller_service_pb2.ListCallerKeysRequest()
        )
        keys: list[dict[str, Any]] = message_to_dict(answer).get("keys", [])
        return keys

    def revoke(self, caller: str, key_id: str) -> None:
        self._client._call(
            self._stub.RevokeCallerKey,
            caller_service_pb2.RevokeCallerKeyRequest(caller=caller, key_id=key_id),
        )


class PolicyAdmin:
    """The PolicyService, through a Client (operators with the `policy` operation): the policy
    in force, and its reload. Answers are plain dicts (the proto's JSON form)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = client._policy_stub

    def __repr__(self) -> str:
        return "PolicyAdmin()"

    def get(self) -> dict[str, Any]:
        """`name`, `version` and `digest` of the policy in force in the process that answers."""
        answer = self._client._call(self._stub.GetPolicy, policy_service_pb2.GetPolicyRequest())
        return message_to_dict(answer)

    def reload(self) -> dict[str, Any]:
        """Put the server's policy file in force again (every process); the policy now in
        force and the one before (`previousName`, `previousVersion`, `previousDigest`) and
        whether it `changed`. An invalid file: InvalidArgumentError naming the problem."""
        answer = self._client._call(
            self._stub.ReloadPolicy, policy_service_pb2.ReloadPolicyRequest()
        )
        return message_to_dict(answer)


class SubjectAdmin:
    """The SubjectService, through a Client. Answers are plain dicts (the proto's JSON form,
    defaults included, see `message_to_dict`), ready to print or store; the export contains
    values: handle it as the data it is."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = client._subject_stub

    def __repr__(self) -> str:
        return "SubjectAdmin()"

    def _do(
        self, method: Callable[..., Any], request: object, retry: bool = True
    ) -> dict[str, Any]:
        answer = self._client._call(method, request, retry=retry)
        return message_to_dict(answer)

    def get(self, subject: str) -> dict[str, Any]:
        return self._do(
            self._stub.GetSubject, subject_service_pb2.GetSubjectRequest(subject=subject)
        )

    def stop(self, subject: str) -> dict[str, Any]:
        return self._do(
            self._stub.StopSubject, subject_service_pb2.StopSubjectRequest(subject=subject)
        )

    def resume(self, subject: str) -> dict[str, Any]:
        return self._do(
            self._stub.ResumeSubject, subject_service_pb2.ResumeSubjectRequest(subject=subject)
        )

    def shred(self, subject: str, *, by_subject: bool = False) -> dict[str, Any]:
        """Crypto-shred; idempotent, so a retry returns the same receipt. `by_subject`: the
        data subject asked for it through its own flow (audited); otherwise an operator did,
        and dual control may hold it for a second operator (FailedPreconditionError, reason
        APPROVAL_REQUIRED)."""
        return self._do(self._stub.ShredSubject, shred_request(subject, by_subject))

    def export(self, subject: str) -> dict[str, Any]:
        return self._do(
            self._stub.ExportSubject, subject_service_pb2.ExportSubjectRequest(subject=subject)
        )

    def consent(self, subject: str, purpose: str, granted: bool) -> dict[str, Any]:
        return self._do(
            self._stub.SetConsent,
            subject_service_pb2.SetConsentRequest(
                subject=subject, purpose=purpose, granted=granted
            ),
        )

    def correct(self, token: str, value: str | bytes) -> dict[str, Any]:
        return self._do(
            self._stub.CorrectValue,
            subject_service_pb2.CorrectValueRequest(token=token, value=value_message(value)),
        )


class KeyAdmin:
    """The KeyService, through a Client. Rotate is never retried: a retry could rotate twice."""

    def __init__(self, client: Client, vault_token: str | None) -> None:
        self._client = client
        self._admin = ((VAULT_TOKEN_METADATA, vault_token),) if vault_token else ()

    def __repr__(self) -> str:
        return "KeyAdmin()"

    def status(self) -> KeyStatus:
        answer = self._client._call(
            self._client._key_stub.GetKeyStatus, key_service_pb2.GetKeyStatusRequest()
        )
        return key_status(answer.status)

    def rotate(self) -> KeyStatus:
        answer = self._client._call(
            self._client._key_stub.RotateKey,
            key_service_pb2.RotateKeyRequest(),
            extra_metadata=self._admin,
            retry=False,
        )
        return key_status(answer.status)

    def rewrap_batch(self, batch_size: int = 100, page_token: str = "") -> RewrapStep:
        """One batch; pass the returned `next_page_token` to the next call until it is empty."""
        answer = self._client._call(
            self._client._key_stub.RewrapDataKeys,
            key_service_pb2.RewrapDataKeysRequest(batch_size=batch_size, page_token=page_token),
        )
        return rewrap_step(answer)

    def trim(self, min_version: int | None = None) -> Trimmed:
        answer = self._client._call(
            self._client._key_stub.TrimKeyVersions,
            key_service_pb2.TrimKeyVersionsRequest(min_version=min_version or 0),
            extra_metadata=self._admin,
        )
        return trimmed(answer)
