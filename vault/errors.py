"""The one exception root of pdvault, one class per thing a caller can act on, and one enum of
reasons, each with its one status code.

Every message here is shown to callers as it is: it MUST NOT contain a value, key material, a
credential or a key id. Name the field and the rule instead.

A caller acts on two things: the status code (what kind of failure: retry, fix the request, ask
for permission) and the reason (`google.rpc.ErrorInfo.reason`, which failure exactly). Each
`Reason` belongs to exactly one `Code`, and an error refuses a reason of another code, so the
two never disagree. `vault.transport.status` maps a `Code` to gRPC's status by name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ERROR_DOMAIN",
    "Aborted",
    "ApprovalRequired",
    "Code",
    "ConfigurationError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "IntegrityError",
    "InvalidArgument",
    "KeyServiceDenied",
    "KeyServiceUnavailable",
    "NotFound",
    "PdvaultError",
    "PermissionDenied",
    "QuotaExceeded",
    "Reason",
    "ResourceExhausted",
    "StorageUnavailable",
    "Unauthenticated",
]


ERROR_DOMAIN = "pdvault.dev"


class Code(enum.Enum):
    """The canonical status codes pdvault answers with (google.rpc.Code names)."""

    INVALID_ARGUMENT = enum.auto()
    UNAUTHENTICATED = enum.auto()
    PERMISSION_DENIED = enum.auto()
    NOT_FOUND = enum.auto()
    FAILED_PRECONDITION = enum.auto()
    ABORTED = enum.auto()
    RESOURCE_EXHAUSTED = enum.auto()
    DEADLINE_EXCEEDED = enum.auto()
    UNAVAILABLE = enum.auto()
    DATA_LOSS = enum.auto()
    INTERNAL = enum.auto()


class Reason(enum.Enum):
    """Why a call or an item failed: `ErrorInfo.reason`, stable, each with one status code and
    what a client should do about it (docs/api.md is generated from these)."""

    def __init__(self, code: Code, advice: str) -> None:
        self.code = code
        self.advice = advice

    # The request itself.
    INVALID_ARGUMENT = (Code.INVALID_ARGUMENT, "fix the fields named in BadRequest; do not retry")
    UNAUTHENTICATED = (Code.UNAUTHENTICATED, "send a valid key: authorization: Bearer <key>")
    CERTIFICATE_REFUSED = (
        Code.UNAUTHENTICATED,
        "the client certificate is not a valid X509-SVID (exactly one URI SAN, a spiffe:// ID "
        "with a path, not a CA) or has expired: get a proper one from the workload's issuer",
    )
    MTLS_REQUIRED = (
        Code.UNAUTHENTICATED,
        "the policy requires this caller to present its client certificate (mTLS); an API key "
        "alone is refused",
    )
    CREDENTIALS_DISAGREE = (
        Code.UNAUTHENTICATED,
        "the client certificate and the API key name different callers: send one, or both of "
        "the same caller",
    )
    REQUEST_TOO_SLOW = (
        Code.DEADLINE_EXCEEDED,
        "the request message did not arrive in time; send it at once after opening the call",
    )
    TOO_MANY_CALLS = (
        Code.RESOURCE_EXHAUSTED,
        "a cap on calls in flight was reached; retry after RetryInfo's delay",
    )
    RESPONSE_TOO_LARGE = (Code.RESOURCE_EXHAUSTED, "ask for fewer tokens per call")
    RATE_LIMITED = (
        Code.RESOURCE_EXHAUSTED,
        "the caller is over its request rate (per server process, from the policy); retry "
        "after RetryInfo's delay",
    )
    QUOTA_EXCEEDED = (
        Code.RESOURCE_EXHAUSTED,
        "the caller's item quota for this purpose is used up for the current window "
        "(QuotaFailure names caller, purpose and limit); retry after RetryInfo's delay, or ask "
        "for the policy's quota to change",
    )
    # The policy.
    PERMISSION_DENIED = (
        Code.PERMISSION_DENIED,
        "the caller may not claim this purpose or use this operation; ask for the policy to change",
    )
    IDENTITY_UNKNOWN = (
        Code.PERMISSION_DENIED,
        "the client certificate's SPIFFE ID is no caller's in the policy; ask for it to be added",
    )
    LEGAL_BASIS_REFUSED = (
        Code.PERMISSION_DENIED,
        "this caller may not state a legal basis for this purpose; send the request without one",
    )
    TOKEN_REFUSED = (
        Code.PERMISSION_DENIED,
        "no such token, or its category is not for this purpose (the two look the same)",
    )
    CONSENT_REQUIRED = (
        Code.PERMISSION_DENIED,
        "the purpose needs the data subject's consent, and none is recorded",
    )
    CONSENT_WITHDRAWN = (Code.PERMISSION_DENIED, "the data subject withdrew this purpose")
    # The data subject's lifecycle.
    SUBJECT_UNKNOWN = (Code.NOT_FOUND, "no data subject with this id is held")
    SUBJECT_DELETED = (
        Code.NOT_FOUND,
        "the data subject was crypto-shredded: its tokens and its id resolve to nothing, for ever",
    )
    SUBJECT_STOPPED = (
        Code.FAILED_PRECONDITION,
        "the data subject's account is stopped (Account Stop): resume it, or use a purpose or "
        "legal basis the policy allows on stopped accounts",
    )
    VALUE_EXPIRED = (
        Code.NOT_FOUND,
        "the value's retention period ended and it was erased; the token resolves to nothing",
    )
    # Documents.
    DOCUMENT_MOVED = (
        Code.NOT_FOUND,
        "the value became a document (the retired identity_document field): read the document "
        "the message names with DocumentService.GetDocument",
    )
    DOCUMENT_REFUSED = (
        Code.PERMISSION_DENIED,
        "no such document, or this caller or purpose may not read it (the two look the same)",
    )
    DOCUMENT_DELETED = (
        Code.NOT_FOUND,
        "the document was destroyed (deleted, its subject shredded, or its retention ended)",
    )
    DOCUMENT_NOT_CLEAN = (
        Code.FAILED_PRECONDITION,
        "the document's malware scan has not said clean; it is readable once a scan does",
    )
    DOCUMENT_HELD = (
        Code.FAILED_PRECONDITION,
        "a legal hold stands on the document; release every hold first",
    )
    VARIANT_MISSING = (
        Code.NOT_FOUND,
        "the document has no such variant (only images have a sanitized copy, and a retention "
        "rule may have destroyed the original)",
    )
    # Keys.
    DATA_KEY_EXHAUSTED = (
        Code.FAILED_PRECONDITION,
        "the subject's data key reached NIST SP 800-38D's limit; tell the operators",
    )
    KEY_VERSION_IN_USE = (
        Code.FAILED_PRECONDITION,
        "data keys still use the versions to trim: run RewrapDataKeys first",
    )
    VAULT_ADMIN_TOKEN_REQUIRED = (
        Code.FAILED_PRECONDITION,
        "send the operator's own HashiCorp Vault token in x-vault-token",
    )
    KEY_SERVICE_UNAVAILABLE = (
        Code.UNAVAILABLE,
        "the key provider does not answer; retry after RetryInfo's delay",
    )
    KEY_SERVICE_DENIED = (
        Code.PERMISSION_DENIED,
        "the key provider refused pdvault's own credential; tell the operators (error id)",
    )
    DATA_INTEGRITY = (
        Code.DATA_LOSS,
        "stored data failed its integrity check, or its key version was destroyed; do not retry",
    )
    # Dual control.
    APPROVAL_REQUIRED = (
        Code.FAILED_PRECONDITION,
        "the policy holds this step for a second operator: a pending request was created "
        "(ErrorInfo metadata request_id, expires_at); another operator approves it with "
        "ApprovalService.ApproveRequest, which carries the step out",
    )
    SELF_APPROVAL = (
        Code.PERMISSION_DENIED,
        "an operator cannot approve or reject its own request: another operator must",
    )
    APPROVAL_UNKNOWN = (Code.NOT_FOUND, "no approval request with this id")
    APPROVAL_EXPIRED = (
        Code.FAILED_PRECONDITION,
        "the approval request expired before anyone approved it: request the step again",
    )
    APPROVAL_DECIDED = (
        Code.FAILED_PRECONDITION,
        "the approval request was already approved, rejected or expired: see ListApprovals",
    )
    # The service.
    STORAGE_UNAVAILABLE = (
        Code.UNAVAILABLE,
        "the database does not answer; retry after RetryInfo's delay",
    )
    CONTENTION = (Code.ABORTED, "concurrent writes kept winning; retry the call")
    CONFIGURATION = (Code.FAILED_PRECONDITION, "the server's configuration refuses this")
    INTERNAL = (Code.INTERNAL, "an unexpected failure; tell the operators the error id")


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One broken rule: `field` is a path such as `fields[2].value`, `rule` a stable name."""

    field: str
    rule: str
    description: str


class PdvaultError(Exception):
    """Root of every error pdvault raises on purpose.

    `reason` is the machine-readable `google.rpc.ErrorInfo.reason`; `message` is for people
    and is safe to show to the caller. A subclass fixes the status `code`; `reason` MUST be one
    of that code's reasons.
    """

    code = Code.INTERNAL
    default_reason = Reason.INTERNAL

    def __init__(self, message: str, *, reason: Reason | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        if self.reason.code is not self.code:
            raise ValueError(f"{self.reason.name} is a {self.reason.code.name} reason")


class InvalidArgument(PdvaultError):
    """The request breaks one or more rules; nothing was written."""

    code = Code.INVALID_ARGUMENT
    default_reason = Reason.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation]) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one violation")
        self.violations = tuple(violations)
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        super().__init__(f"{first.field}: {first.description}{more}")

    @classmethod
    def one(cls, field: str, rule: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, rule, description)])


class Unauthenticated(PdvaultError):
    """No credential, or one that pdvault does not know."""

    code = Code.UNAUTHENTICATED
    default_reason = Reason.UNAUTHENTICATED


class PermissionDenied(PdvaultError):
    """The policy refuses; `rule` names the rule that decided."""

    code = Code.PERMISSION_DENIED
    default_reason = Reason.PERMISSION_DENIED

    def __init__(self, message: str, *, rule: str, reason: Reason | None = None) -> None:
        super().__init__(message, reason=reason)
        self.rule = rule


class NotFound(PdvaultError):
    """The named thing does not exist (or no longer does: a shredded subject)."""

    code = Code.NOT_FOUND
    default_reason = Reason.SUBJECT_UNKNOWN


class FailedPrecondition(PdvaultError):
    """The system is not in a state that allows the request (for example a key limit reached)."""

    code = Code.FAILED_PRECONDITION
    default_reason = Reason.CONFIGURATION


class ApprovalRequired(FailedPrecondition):
    """Dual control holds the step: a pending request was created for a second operator.
    `info` (ErrorInfo metadata) names it: request_id, action, expires_at."""

    def __init__(self, message: str, *, info: dict[str, str]) -> None:
        super().__init__(message, reason=Reason.APPROVAL_REQUIRED)
        self.info = info


class Aborted(PdvaultError):
    """Concurrent requests kept winning; the call may be retried as a whole."""

    code = Code.ABORTED
    default_reason = Reason.CONTENTION


class ResourceExhausted(PdvaultError):
    """A limit was reached; retrying later, or with less, may succeed. `retry_after` (seconds)
    tells the client when a retry may succeed, where pdvault knows."""

    code = Code.RESOURCE_EXHAUSTED
    default_reason = Reason.TOO_MANY_CALLS

    def __init__(
        self, message: str, *, reason: Reason | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class QuotaExceeded(ResourceExhausted):
    """A limit of the policy was reached: the caller's request rate (`purpose` None) or its item
    quota for `purpose`. What `google.rpc.QuotaFailure` says: the caller, the purpose and the
    limit (`limit`, `description`), never a token."""

    def __init__(
        self,
        message: str,
        *,
        reason: Reason,
        retry_after: float,
        caller: str,
        purpose: str | None,
        limit: int,
        quota_id: str,
        description: str,
    ) -> None:
        super().__init__(message, reason=reason, retry_after=retry_after)
        self.caller = caller
        self.purpose = purpose
        self.limit = limit
        self.quota_id = quota_id  # "rate" or "items"
        self.description = description
        # The policy rule that refused: `caller:<name>:rate` or `caller:<name>:quotas:<purpose>`.
        self.rule = f"caller:{caller}:quotas:{purpose}" if purpose else f"caller:{caller}:rate"


class DeadlineExceeded(PdvaultError):
    """The call did not complete in the time allowed (its request message came too slowly)."""

    code = Code.DEADLINE_EXCEEDED
    default_reason = Reason.REQUEST_TOO_SLOW


class KeyServiceUnavailable(PdvaultError):
    """The key provider cannot be reached or refused to work; the request may be retried."""

    code = Code.UNAVAILABLE
    default_reason = Reason.KEY_SERVICE_UNAVAILABLE


class KeyServiceDenied(PdvaultError):
    """The key provider refused pdvault's own credential: an operator must fix its policy."""

    code = Code.PERMISSION_DENIED
    default_reason = Reason.KEY_SERVICE_DENIED


class StorageUnavailable(PdvaultError):
    """The database cannot be reached; the request may be retried."""

    code = Code.UNAVAILABLE
    default_reason = Reason.STORAGE_UNAVAILABLE


class IntegrityError(PdvaultError):
    """A stored ciphertext or wrapped key failed authentication: tampering or corruption.

    Deliberately message-less towards callers (like Fernet's `InvalidToken`): which check failed,
    and on which key, is not something a caller can act on and helps an attacker.
    """

    code = Code.DATA_LOSS
    default_reason = Reason.DATA_INTEGRITY

    def __init__(self, message: str = "stored data failed its integrity check") -> None:
        super().__init__(message)


class ConfigurationError(PdvaultError):
    """pdvault was started with settings it cannot work with."""

    code = Code.FAILED_PRECONDITION
    default_reason = Reason.CONFIGURATION
