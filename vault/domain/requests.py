"""What the token service's requests and answers look like, and the checks of their syntax
that need no storage: limits, field shapes, request ids, a Detokenize request's fields."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from vault.domain import tokens
from vault.domain.policy import Policy
from vault.domain.types import (
    NAME_RE,
    Category,
    PlainValue,
    Purpose,
    Token,
    TokenFormat,
    View,
)
from vault.errors import (
    FieldViolation,
    InvalidArgument,
    PdvaultError,
)

__all__ = [
    "CVV_NAMES",
    "GCM_RANDOM_NONCE_LIMIT",
    "Detokenized",
    "FieldInput",
    "Limits",
    "Tokenized",
    "check_detokenize",
    "is_uuid",
    "normalized_request_id",
    "read_violations",
]


# NIST SP 800-38D section 8.3: with random 96-bit nonces, at most 2^32 invocations of the
# authenticated encryption function per key.
# The store counts committed encryptions; attempts rolled back (a token collision, a race) are
# not counted, so pdvault stops at half the limit: the margin covers them many times over.
GCM_RANDOM_NONCE_LIMIT = 2**31
CVV_NAMES = frozenset({"card_security_code", "cvv", "cvc", "cid", "cvv2", "cvc2"})
_JUSTIFICATION_RE = re.compile(r"[\x20-\x7e]{0,256}")


@dataclass(frozen=True, slots=True)
class Limits:
    max_fields: int = 1000
    max_tokens: int = 1000
    max_request_bytes: int = 4 * 1024 * 1024
    # What a Detokenize may return, counted from the stored ciphertexts before anything is
    # decrypted: gRPC's send limit (8 MiB) less room for the tokens and statuses around them.
    max_response_bytes: int = 7 * 1024 * 1024
    idempotency_retention: timedelta = timedelta(hours=24)
    encryption_limit: int = GCM_RANDOM_NONCE_LIMIT


@dataclass(frozen=True, slots=True)
class FieldInput:
    """One field of a Tokenize request as the transport hands it over (value may be absent)."""

    category: str
    value: PlainValue | None
    # None: a format this version does not know (a newer client's enum value).
    token_format: TokenFormat | None = TokenFormat.OPAQUE


@dataclass(frozen=True, slots=True)
class Tokenized:
    token: Token
    category: Category


@dataclass(frozen=True, slots=True)
class Detokenized:
    """The result for one token: a value, a masked value, or a refusal (`error`)."""

    token: str
    category: Category | None = None
    view: View | None = None
    value: PlainValue | None = None
    masked: str | None = None
    error: PdvaultError | None = None


def check_detokenize(
    policy: Policy, limits: Limits, requested: Sequence[str], purpose: str, justification: str
) -> None:
    """The syntax of a Detokenize request; INVALID_ARGUMENT naming every broken rule."""
    violations: list[FieldViolation] = []
    if not requested:
        violations.append(FieldViolation("tokens", "tokens.required", "must have at least 1 token"))
    elif len(requested) > limits.max_tokens:
        violations.append(
            FieldViolation(
                "tokens",
                "tokens.max_count",
                f"must have at most {limits.max_tokens} tokens",
            )
        )
    else:
        violations.extend(
            FieldViolation(
                f"tokens[{i}]",
                "token.syntax",
                "is not a pdvault token (tok_ and 26 base32 characters, or 16 digits)",
            )
            for i, t in enumerate(requested)
            if len(t) > tokens.TOKEN_MAX_LENGTH or not tokens.well_formed(t)
        )
    if not purpose:
        violations.append(FieldViolation("purpose", "purpose.required", "must be set"))
    violations.extend(read_violations(policy, purpose, justification))
    if violations:
        raise InvalidArgument(violations)


def read_violations(policy: Policy, purpose: str, justification: str) -> list[FieldViolation]:
    """The purpose (when given) and the justification of a read, a detokenize's or a
    document's: checked before they reach a decision, an audit row or an error message (a
    purpose of 10,000 characters was echoed in a document read's refusal)."""
    violations = []
    if purpose and (not NAME_RE.fullmatch(purpose) or Purpose(purpose) not in policy.purposes):
        violations.append(
            FieldViolation(
                "purpose",
                "purpose.unknown",
                "must be a purpose of the policy: " + ", ".join(sorted(policy.purposes)),
            )
        )
    if not _JUSTIFICATION_RE.fullmatch(justification):
        violations.append(
            FieldViolation(
                "justification",
                "justification.printable",
                "must be at most 256 printable ASCII characters",
            )
        )
    return violations


def is_uuid(text: str) -> bool:
    if len(text) != 36:
        return False
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def normalized_request_id(request_id: str) -> str:
    """A UUID in its canonical lower-case form (AIP-155 ids are compared as UUIDs, not text);
    anything else unchanged, for validation to refuse."""
    return str(uuid.UUID(request_id)) if is_uuid(request_id) else request_id
