"""The Python client of pdvault's gRPC API (installable without the server)."""

from pdvault_client.address import check_address
from pdvault_client.admin import KeyAdmin, SubjectAdmin
from pdvault_client.client import Client
from pdvault_client.errors import (
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PdvaultError,
    PermissionDeniedError,
    QuotaViolation,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from pdvault_client.types import (
    MAX_MESSAGE_BYTES,
    CacheStats,
    Detokenized,
    Field,
    KeyStatus,
    RetryPolicy,
    RewrapStep,
    Tokenized,
    Trimmed,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "CacheStats",
    "Client",
    "DataLossError",
    "DeadlineExceededError",
    "Detokenized",
    "FailedPreconditionError",
    "Field",
    "FieldViolation",
    "InvalidArgumentError",
    "KeyAdmin",
    "KeyStatus",
    "NotFoundError",
    "PdvaultError",
    "PermissionDeniedError",
    "QuotaViolation",
    "ResourceExhaustedError",
    "RetryPolicy",
    "RewrapStep",
    "SubjectAdmin",
    "Tokenized",
    "Trimmed",
    "UnauthenticatedError",
    "UnavailableError",
    "check_address",
]
