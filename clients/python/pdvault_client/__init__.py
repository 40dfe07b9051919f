"""The Python client of pdvault's gRPC API (installable without the server)."""

from pdvault_client.client import (
    CacheStats,
    Client,
    Detokenized,
    Field,
    KeyAdmin,
    KeyStatus,
    RetryPolicy,
    RewrapStep,
    SubjectAdmin,
    Tokenized,
)
from pdvault_client.errors import (
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PdvaultError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)

__all__ = [
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
    "RetryPolicy",
    "RewrapStep",
    "SubjectAdmin",
    "Tokenized",
    "UnauthenticatedError",
    "UnavailableError",
]
