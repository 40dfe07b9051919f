"""The Python client of pdvault's gRPC API (installable without the server)."""

from pdvault_client.client import Client, Detokenized, Field, RetryPolicy, Tokenized
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
    "Client",
    "DataLossError",
    "DeadlineExceededError",
    "Detokenized",
    "FailedPreconditionError",
    "Field",
    "FieldViolation",
    "InvalidArgumentError",
    "PdvaultError",
    "PermissionDeniedError",
    "RetryPolicy",
    "Tokenized",
    "UnauthenticatedError",
    "UnavailableError",
]
