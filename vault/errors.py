"""The one exception root of pdvault, and one class per thing a caller can act on.

Every message here is shown to callers as it is: it MUST NOT contain a value, key material, a
credential or a key id. Name the field and the rule instead. The mapping from these classes to gRPC
status codes lives in one table in `vault.transport.status`.
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR_DOMAIN = "pdvault.dev"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One broken rule: `field` is a path such as `fields[2].value`, `rule` a stable name."""

    field: str
    rule: str
    description: str


class PdvaultError(Exception):
    """Root of every error pdvault raises on purpose.

    `reason` is the machine-readable `google.rpc.ErrorInfo.reason` (UPPER_SNAKE_CASE);
    `message` is for people and is safe to show to the caller.
    """

    reason: str = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(PdvaultError):
    """The request breaks one or more rules; nothing was written."""

    reason = "INVALID_ARGUMENT"

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

    reason = "UNAUTHENTICATED"


class PermissionDenied(PdvaultError):
    """The policy refuses the whole request; `rule` names the rule that decided."""

    reason = "PERMISSION_DENIED"

    def __init__(self, message: str, *, rule: str, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.rule = rule


class NotFound(PdvaultError):
    """The named thing does not exist (or no longer does: a shredded subject)."""

    reason = "NOT_FOUND"


class FailedPrecondition(PdvaultError):
    """The system is not in a state that allows the request (for example a key limit reached)."""

    reason = "FAILED_PRECONDITION"


class ResourceExhausted(PdvaultError):
    """A limit was reached; retrying later, or with less, may succeed. `retry_after` (seconds)
    tells the client when a retry may succeed, where pdvault knows."""

    reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class DeadlineExceeded(PdvaultError):
    """The call did not complete in the time allowed (its request message came too slowly)."""

    reason = "DEADLINE_EXCEEDED"


class KeyServiceUnavailable(PdvaultError):
    """The key provider cannot be reached or refused to work; the request may be retried."""

    reason = "KEY_SERVICE_UNAVAILABLE"


class KeyServiceDenied(PdvaultError):
    """The key provider refused pdvault's own credential: an operator must fix its policy."""

    reason = "KEY_SERVICE_DENIED"


class StorageUnavailable(PdvaultError):
    """The database cannot be reached; the request may be retried."""

    reason = "STORAGE_UNAVAILABLE"


class IntegrityError(PdvaultError):
    """A stored ciphertext or wrapped key failed authentication: tampering or corruption.

    Deliberately message-less towards callers (like Fernet's `InvalidToken`): which check failed,
    and on which key, is not something a caller can act on and helps an attacker.
    """

    reason = "DATA_INTEGRITY"

    def __init__(self, message: str = "stored data failed its integrity check") -> None:
        super().__init__(message)


class ConfigurationError(PdvaultError):
    """pdvault was started with settings it cannot work with."""

    reason = "CONFIGURATION"
