"""Ids and value objects of pdvault's domain, in the domain's own words."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import NewType

from vault.domain.secrets import Secret

SubjectId = NewType("SubjectId", str)
"""The caller's own identifier of a data subject (a person), e.g. `user-42`."""

Token = NewType("Token", str)
"""What services hold instead of a value. Never derived from the value."""

Category = NewType("Category", str)
"""A kind of personal data, named by the policy: `card_number`, `address` ..."""

Purpose = NewType("Purpose", str)
"""Why a caller wants a value back, named by the policy: `payment`, `product_shipping` ..."""

CallerName = NewType("CallerName", str)
"""An authenticated service or person calling pdvault: `payment`, `support`, `ops` ..."""

SUBJECT_RE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class TokenFormat(enum.Enum):
    OPAQUE = "opaque"
    CARD_NUMBER = "card_number"


class View(enum.Enum):
    """How much of a value a caller sees."""

    FULL = "full"
    MASKED = "masked"


class ValueKind(enum.IntEnum):
    """Whether a value came in as text or as bytes; stored inside the ciphertext."""

    TEXT = 1
    BINARY = 2


@dataclass(frozen=True, slots=True)
class PlainValue:
    """A value in the clear. Its bytes are a `Secret`, so its repr shows nothing."""

    kind: ValueKind
    data: Secret

    @classmethod
    def text(cls, s: str) -> PlainValue:
        return cls(ValueKind.TEXT, Secret(s.encode("utf-8")))

    @classmethod
    def binary(cls, b: bytes) -> PlainValue:
        return cls(ValueKind.BINARY, Secret(b))


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key encrypted under a key-encryption key; `kek_version` says which version."""

    provider: str
    kek_version: int
    blob: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class StoredDataKey:
    """The data key row of one subject: wrapped, never in the clear."""

    subject: SubjectId
    wrapped: WrappedKey
    encryptions: int


@dataclass(frozen=True, slots=True)
class StoredValue:
    """One tokenized value as it is stored: its ciphertext is bound to token, subject, category."""

    token: Token
    subject: SubjectId
    category: Category
    token_format: TokenFormat
    ciphertext: bytes = field(repr=False)


class Action(enum.Enum):
    TOKENIZE = "tokenize"
    DETOKENIZE = "detokenize"
    KEY_STATUS = "key_status"
    KEY_ROTATE = "key_rotate"
    KEY_REWRAP = "key_rewrap"
    KEY_TRIM = "key_trim"


class Outcome(enum.Enum):
    GRANTED = "granted"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audited decision. It MUST NOT carry a value: only who, what, why and the outcome."""

    occurred_at: datetime
    caller: CallerName
    action: Action
    outcome: Outcome
    rule: str
    token: Token | None = None
    subject: SubjectId | None = None
    category: Category | None = None
    purpose: Purpose | None = None
    view: View | None = None
    justification: str | None = None
    request_id: str | None = None
    # What an operation did, in words and numbers (never a value or key material).
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The remembered answer to a Tokenize with a client-chosen request id (AIP-155)."""

    caller: CallerName
    request_id: str
    subject: SubjectId
    fingerprint: bytes = field(repr=False)
    tokens: tuple[tuple[Token, Category], ...]
    created_at: datetime
