"""Errors as exceptions: one root, one class per gRPC status a caller acts on, with the rich
details (ErrorInfo reason, field violations, quota violations, retry delay) already decoded."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    field: str
    rule: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One limit that was reached (`google.rpc.QuotaFailure`): what it applies to, and why.
    pdvault's own: `quota_id` `rate` (calls per second, per server process) or `items` (items
    per window for a purpose), `dimensions` `{"caller": ..., "purpose": ...}` (no purpose for
    the rate), `limit` the burst or the number of items."""

    subject: str
    description: str
    quota_id: str = ""
    dimensions: dict[str, str] = field(default_factory=dict)
    limit: int = 0


class PdvaultError(Exception):
    """Root of the client's errors. `code` is the gRPC status; `reason` the ErrorInfo reason."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        violations: tuple[FieldViolation, ...] = (),
        retry_delay: float | None = None,
        quota_violations: tuple[QuotaViolation, ...] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}
        self.violations = violations
        # `google.rpc.RetryInfo`: wait at least this long (seconds) before trying again.
        self.retry_delay = retry_delay
        self.quota_violations = quota_violations


class InvalidArgumentError(PdvaultError):
    pass


class UnauthenticatedError(PdvaultError):
    pass


class PermissionDeniedError(PdvaultError):
    pass


class UnavailableError(PdvaultError):
    pass


class DeadlineExceededError(PdvaultError):
    pass


class FailedPreconditionError(PdvaultError):
    pass


class NotFoundError(PdvaultError):
    pass


class DataLossError(PdvaultError):
    pass


class ResourceExhaustedError(PdvaultError):
    """A limit was reached: a message larger than either side accepts, or a quota. Retrying
    the same request does not help; send less, or wait `retry_delay` when the server gives one.
    """


RATE_LIMITED = "RATE_LIMITED"
QUOTA_EXCEEDED = "QUOTA_EXCEEDED"


class QuotaExceededError(ResourceExhaustedError):
    """A limit of the policy: the caller's request rate (`reason` RATE_LIMITED; the client
    waited and retried already when the delay fitted in the call's deadline) or its item quota
    for a purpose (QUOTA_EXCEEDED). `retry_after`: seconds until the bucket or the window frees
    (None if the server gave none); `caller`, `purpose` (None for the rate) and `limit` from
    the QuotaFailure."""

    @property
    def retry_after(self) -> float | None:
        return self.retry_delay

    def _dimension(self, key: str) -> str | None:
        for v in self.quota_violations:
            if key in v.dimensions:
                return v.dimensions[key]
        return None

    @property
    def caller(self) -> str | None:
        return self._dimension("caller")

    @property
    def purpose(self) -> str | None:
        return self._dimension("purpose")

    @property
    def limit(self) -> int | None:
        return self.quota_violations[0].limit if self.quota_violations else None


_CLASSES: dict[grpc.StatusCode, type[PdvaultError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.DATA_LOSS: DataLossError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
}
_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


def from_status(status: status_pb2.Status) -> PdvaultError:
    """Decode a `google.rpc.Status` (a whole call's, or one batch item's) into an exception."""
    code = _BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    reason, metadata, violations, delay = "", {}, [], None
    quotas: list[QuotaViolation] = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        quota = error_details_pb2.QuotaFailure()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(bad):
            violations = [
                FieldViolation(v.field, v.reason, v.description) for v in bad.field_violations
            ]
        elif detail.Unpack(retry):
            delay = retry.retry_delay.ToMilliseconds() / 1000
        elif detail.Unpack(quota):
            quotas = [
                QuotaViolation(
                    v.subject,
                    v.description,
                    v.quota_id,
                    dict(v.quota_dimensions),
                    int(v.quota_value),
                )
                for v in quota.violations
            ]
    cls = _CLASSES.get(code, PdvaultError)
    if reason in (RATE_LIMITED, QUOTA_EXCEEDED) and code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        cls = QuotaExceededError
    return cls(code, status.message, reason, metadata, tuple(violations), delay, tuple(quotas))


def from_rpc_error(err: grpc.RpcError) -> PdvaultError:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    if status is not None:
        return from_status(status)
    # Every RpcError raised by a call is also a grpc.Call, whose code() and details() say more.
    code_of = getattr(err, "code", None)
    details_of = getattr(err, "details", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details = details_of() if callable(details_of) else str(err)
    cls = _CLASSES.get(code, PdvaultError)
    return cls(code, details or code.name)
