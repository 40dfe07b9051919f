"""Ids and value objects of pdvault's domain, in the domain's own words."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import NewType

from vault.domain.secrets import Secret

__all__ = [
    "NAME_RE",
    "SUBJECT_RE",
    "Action",
    "AuditEvent",
    "ErasureReceipt",
    "IdempotencyRecord",
    "LegalBasis",
    "Outcome",
    "PlainValue",
    "RetainedDocument",
    "StoredDataKey",
    "StoredValue",
    "SubjectRecord",
    "SubjectState",
    "TokenFormat",
    "ValueKind",
    "View",
    "WrappedKey",
    "anonymized_subject",
]


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


def anonymized_subject(digest: str) -> SubjectId:
    """How entries from before keyed digests name a subject by its unkeyed digest (entries
    written before the Merkle log, documents' entries): read, never written for a shred
    (vault.domain.naming.keyed_audit_name)."""
    return SubjectId(f"sha256:{digest}")


class SubjectState(enum.Enum):
    ACTIVE = "active"
    STOPPED = "stopped"
    SHREDDED = "shredded"


class LegalBasis(enum.Enum):
    """The exceptions of the privacy policy's third-party section (Personal Information
    Protection Act Art. 23): provision without consent, or reading a stopped account."""

    LAW_OR_REGULATION = "law_or_regulation"
    PUBLIC_INTEREST = "public_interest"
    PUBLIC_FUNCTION = "public_function"
    LEGITIMATE_RIGHTS = "legitimate_rights"


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
    state: SubjectState = SubjectState.ACTIVE


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
    SUBJECT_SHOW = "subject_show"
    SUBJECT_STOP = "subject_stop"
    SUBJECT_RESUME = "subject_resume"
    SUBJECT_SHRED = "subject_shred"
    SUBJECT_EXPORT = "subject_export"
    SUBJECT_CONSENT = "subject_consent"
    VALUE_CORRECT = "value_correct"
    VALUE_EXPIRE = "value_expire"
    DOCUMENT_UPLOAD = "document_upload"
    DOCUMENT_READ = "document_read"
    DOCUMENT_SHOW = "document_show"
    DOCUMENT_LIST = "document_list"
    DOCUMENT_DELETE = "document_delete"
    DOCUMENT_HOLD = "document_hold"
    DOCUMENT_RELEASE = "document_release"
    DOCUMENT_VERIFIED = "document_verified"
    DOCUMENT_SCAN = "document_scan"
    DOCUMENT_RETAIN = "document_retain"
    DOCUMENT_EXPIRE = "document_expire"
    RETENTION_SWEEP = "retention_sweep"
    CALLER_KEY_ADD = "caller_key_add"
    CALLER_KEY_ROTATE = "caller_key_rotate"
    CALLER_KEY_REVOKE = "caller_key_revoke"
    CALLER_LIST = "caller_list"
    # Dual control (vault.domain.approvals): a held step, its decision, its execution.
    APPROVAL_REQUEST = "approval_request"
    APPROVAL_APPROVE = "approval_approve"
    APPROVAL_REJECT = "approval_reject"
    APPROVAL_EXECUTE = "approval_execute"
    APPROVAL_EXPIRE = "approval_expire"
    APPROVAL_LIST = "approval_list"
    AUTHENTICATE = "authenticate"  # a refused client certificate or credential
    CALL = "call"  # a call refused before its method ran (the caller's request rate)
    POLICY_RELOAD = "policy_reload"  # a policy file put in force (or refused) without a restart
    POLICY_SHOW = "policy_show"


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
    legal_basis: LegalBasis | None = None
    # How the entry names its subject: a digest keyed by the subject's own data key
    # (vault.domain.audit_log.SubjectRefs), or `sha256:` and the receipt's digest for a shred.
    # Set by the use case that holds the key; an event with `subject` and no ref is stored
    # without a subject.
    subject_ref: str | None = None
    policy_version: int | None = None  # the policy that decided it (set when appended)
    seq: int | None = None  # its place in the Merkle log (set when read back)


@dataclass(frozen=True, slots=True)
class SubjectRecord:
    """A subject's lifecycle state and consents (purpose -> granted or withdrawn)."""

    subject: SubjectId
    state: SubjectState
    consents: dict[Purpose, bool] = field(default_factory=dict)
    state_changed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RetainedDocument:
    """A document a shred did not destroy: kept under a legal duty (its retention rule) or a
    legal hold, until `until` (None: until the hold is released)."""

    document_id: str
    document_type: str
    rule: str  # `documents.<type>` or `hold`
    until: datetime | None


@dataclass(frozen=True, slots=True)
class KeptForShred:
    """What a shred's keep step did: the documents it moved under retention keys, and the id
    of every document of the subject it examined. A document the shred's transaction finds
    and the step did not examine arrived since (an upload racing the shred): the step runs
    again, or a document a law obliges us to keep would be destroyed."""

    retained: tuple[RetainedDocument, ...] = ()
    examined: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ErasureReceipt:
    """What a crypto-shred destroyed, when and by whom. It names the subject only by digest."""

    receipt_id: str
    subject_digest: str
    shredded_at: datetime
    shredded_by: CallerName
    data_keys_destroyed: int
    values_destroyed: int
    tokens_retired: int
    key_provider: str
    # Set when this shred destroyed data found under an id already shredded (a restored copy).
    previous_receipt_id: str | None = None
    documents_destroyed: int = 0
    # The exception to "deletion destroys everything": documents a law obliges us to keep.
    retained: tuple[RetainedDocument, ...] = ()


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The remembered answer to a Tokenize with a client-chosen request id (AIP-155)."""

    caller: CallerName
    request_id: str
    subject: SubjectId
    fingerprint: bytes = field(repr=False)
    tokens: tuple[tuple[Token, Category], ...]
    created_at: datetime
