"""One table from exception to gRPC status, and the rich error details that go with it (AIP-193).

Unexpected exceptions become INTERNAL with an error id to find the log line; their text is never
sent, because it could carry anything. No call ends in UNKNOWN.
"""

from __future__ import annotations

import logging
import traceback
import uuid

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from vault import errors

__all__ = ["STATUS_TABLE", "internal_status", "status_code_of", "to_status_proto"]


log = logging.getLogger(__name__)

# Each Reason has one Code (vault.errors); each Code one gRPC status, by name.
STATUS_TABLE: dict[errors.Code, grpc.StatusCode] = {
    code: getattr(grpc.StatusCode, code.name) for code in errors.Code
}


def status_code_of(exc: errors.PdvaultError) -> grpc.StatusCode:
    return STATUS_TABLE[exc.reason.code]


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status_proto(exc: errors.PdvaultError) -> status_pb2.Status:
    code = status_code_of(exc)
    metadata = {}
    rule = getattr(exc, "rule", None)
    if isinstance(rule, str):
        metadata["rule"] = rule
    if isinstance(exc, errors.ApprovalRequired):
        metadata.update(exc.info)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=exc.reason.name, domain=errors.ERROR_DOMAIN, metadata=metadata
            )
        )
    ]
    if isinstance(exc, errors.InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description, reason=v.rule
                        )
                        for v in exc.violations
                    ]
                )
            )
        )
    if isinstance(exc, errors.QuotaExceeded):
        details.append(_pack(_quota_failure(exc)))
    delay = None
    if isinstance(exc, errors.KeyServiceUnavailable | errors.StorageUnavailable):
        delay = 0.2
    elif isinstance(exc, errors.ResourceExhausted):
        delay = exc.retry_after
    if delay is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(round(delay * 1000))
        details.append(_pack(retry))
    return status_pb2.Status(code=code.value[0], message=exc.message, details=details)


def _quota_failure(exc: errors.QuotaExceeded) -> error_details_pb2.QuotaFailure:
    """Which limit refused (AIP-193): the caller, the purpose and the limit, never a token."""
    dimensions = {"caller": exc.caller}
    subject = f"caller:{exc.caller}"
    if exc.purpose is not None:
        dimensions["purpose"] = exc.purpose
        subject += f"/purpose:{exc.purpose}"
    return error_details_pb2.QuotaFailure(
        violations=[
            error_details_pb2.QuotaFailure.Violation(
                subject=subject,
                description=exc.description,
                api_service=errors.ERROR_DOMAIN,
                quota_metric=f"{errors.ERROR_DOMAIN}/{exc.quota_id}",
                quota_id=exc.quota_id,
                quota_dimensions=dimensions,
                quota_value=exc.limit,
            )
        ]
    )


def internal_status(exc: BaseException) -> status_pb2.Status:
    error_id = uuid.uuid4().hex[:12]
    # The exception's class and the frames of its traceback go to the log; its message might
    # hold anything, so it is not written.
    log.error(
        "internal error %s: %s\n%s",
        error_id,
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error (id {error_id}); the operator can find it in the server log",
        details=[
            _pack(
                error_details_pb2.ErrorInfo(
                    reason=errors.Reason.INTERNAL.name,
                    domain=errors.ERROR_DOMAIN,
                    metadata={"error_id": error_id},
                )
            )
        ],
    )
