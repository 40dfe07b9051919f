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
    Tokenized,
)
from pdvault_client.errors import (
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
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
    "PdvaultError",
    "PermissionDeniedError",
    "RetryPolicy",
    "RewrapStep",
    "Tokenized",
    "UnauthenticatedError",
    "UnavailableError",
]
