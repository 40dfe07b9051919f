"""What the client library hands back and takes: plain values, never protobuf messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pdvault_client.errors import PdvaultError

__all__ = [
    "CHANNEL_OPTIONS",
    "MAX_MESSAGE_BYTES",
    "CacheStats",
    "DeletedDocument",
    "Detokenized",
    "Document",
    "Field",
    "KeyStatus",
    "LegalHold",
    "Retention",
    "RetryPolicy",
    "RewrapStep",
    "Sweep",
    "Tokenized",
    "Trimmed",
    "VariantInfo",
]

# The largest message the client sends or accepts: the server's own limit (MAX_MESSAGE_BYTES in
# vault/transport/server.py, not imported: this library installs without the server). gRPC's
# default receive limit, 4 MiB, would refuse a batch the server is allowed to send.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)


@dataclass(frozen=True)
class Field:
    """One value to tokenize. `value` is text or bytes; `card_token` asks for a 16-digit token."""

    category: str
    value: str | bytes
    card_token: bool = False

    def __repr__(self) -> str:  # a value never reaches a repr
        return f"Field(category={self.category!r}, value=<redacted>, card_token={self.card_token})"


@dataclass(frozen=True)
class Tokenized:
    token: str
    category: str


@dataclass(frozen=True)
class Detokenized:
    """One token's result: `value` (full view), `masked`, or `error` (an exception, not raised)."""

    token: str
    category: str = ""
    value: str | bytes | None = None
    masked: str | None = None
    error: PdvaultError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        shown = "<redacted>" if self.value is not None else None
        return (
            f"Detokenized(token={self.token!r}, category={self.category!r}, value={shown}, "
            f"masked={self.masked!r}, error={self.error!r})"
        )


@dataclass(frozen=True)
class CacheStats:
    entries: int
    hits: int
    misses: int
    evictions: int
    hit_rate: float
    max_entries: int
    max_age_seconds: float
    max_uses: int
    # Each server process keeps its own cache: these figures are of this one.
    process_id: int = 0
    host: str = ""


@dataclass(frozen=True)
class KeyStatus:
    provider: str
    key_name: str
    latest_version: int
    min_decryption_version: int
    min_available_version: int
    data_keys_by_version: dict[int, int]
    other_provider_data_keys: int
    cache: CacheStats | None
    # version -> active | retired | destroyed | unknown_to_provider (see key_service.proto)
    version_states: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Trimmed:
    """What a trim did: the key after it, the versions destroyed, and when none could be,
    the oldest versions still wrapping data keys (rewrap them first)."""

    status: KeyStatus
    destroyed_versions: tuple[int, ...]
    still_in_use: dict[int, int]


@dataclass(frozen=True)
class RewrapStep:
    rewrapped: int
    failed: int
    remaining: int
    target_version: int
    next_page_token: str


@dataclass(frozen=True)
class RetryPolicy:
    """Retries on UNAVAILABLE with exponential backoff and full jitter, within the deadline."""

    attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0


# -- documents (DocumentService) ------------------------------------------------------------------
# Enumerations are the API's names in lower case without their prefix: a document type is
# `passport` (DOCUMENT_TYPE_PASSPORT), a variant `sanitized`, a scan state `not_scanned`.


@dataclass(frozen=True)
class VariantInfo:
    """One copy of a document: `original` or `sanitized` (images without metadata)."""

    variant: str
    media_type: str
    size: int


@dataclass(frozen=True)
class Retention:
    """The retention rule a document is kept under (document_service.proto `Retention`).

    `rule` is empty when its type has no rule (kept until its subject is deleted); `due_at` is
    None while the period has not started (a rule that runs from the relationship's end)."""

    rule: str
    trigger: str
    keep: str
    then: str
    legal: bool
    due_at: datetime | None
    source: str


@dataclass(frozen=True)
class LegalHold:
    hold_id: str
    reason: str
    placed_by: str
    placed_at: datetime | None


@dataclass(frozen=True)
class Document:
    """A document's metadata, never its content. `subject` is empty for a document kept after
    its subject's deletion (`retained`); `verified_at` is None until MarkDocumentVerified."""

    id: str
    subject: str
    subject_digest: str
    type: str
    media_type: str
    created_at: datetime | None
    uploaded_by: str
    scan_state: str
    scan_engine: str
    variants: tuple[VariantInfo, ...]
    retention: Retention
    holds: tuple[LegalHold, ...]
    verified_at: datetime | None
    retained: bool
    pages: int
    insurer_number_masked: bool

    def variant(self, name: str) -> VariantInfo | None:
        """The copy called `name` (original, sanitized), or None if it is not held."""
        return next((v for v in self.variants if v.variant == name), None)

    @property
    def size(self) -> int:
        """The size of the original, or of the first copy held once the original is gone."""
        held = self.variant("original") or (self.variants[0] if self.variants else None)
        return held.size if held else 0


@dataclass(frozen=True)
class DeletedDocument:
    document_id: str
    destroyed_at: datetime | None


@dataclass(frozen=True)
class Sweep:
    """What one retention sweep did (SweepRetentionResponse)."""

    sweep_id: str
    documents_destroyed: int
    originals_destroyed: int
    documents_held: int
    values_erased: int
    blobs_deleted: int
    retention_keys_destroyed: int
    documents_redestroyed: int
