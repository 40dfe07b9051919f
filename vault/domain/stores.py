"""The storage ports, one per aggregate, as Protocols, and the records they exchange.

- `ValueStore`: each subject's data key and tokenized values;
- `SubjectStore`: subjects, their lifecycle state and consents, and what is kept of shredded ones;
- `IdempotencyStore`: the remembered answers of Tokenize calls with a request id (AIP-155);
- `AuditLog`: the audit events, durable before any answer that depends on them;
- `CredentialStore`: callers' API keys (hashes only);
- `ApprovalStore`: dual control's requests, each waiting for a second operator;
- `KeyInventory`: which key-encryption-key versions wrap which data keys, and the check values
  that recognise the key;
- `DocumentStore`: documents' records (type, state, retention, holds, wrapped document keys);
- `BlobStore`: documents' sealed segments (in the database by default; an object store later);
- `QuotaStore`: items counted against callers' item quotas, per fixed window.

Adapters: `vault.storage.sql` (SQLite and PostgreSQL) and `vault.storage.memory` (in memory, for
the domain's unit tests). One contract suite per port runs against every adapter
(tests/contract). No method ever receives a plaintext value or an unwrapped key.

Writes that must be atomic with records of another aggregate (a tokenize's audit events and
idempotency record, a shred's audit event) take those records as arguments: the adapter writes
them in the same transaction.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from vault.domain.documents import (
    DocumentId,
    DocumentType,
    MediaType,
    ScanResult,
    Variant,
)
from vault.domain.policy import ApprovalAction
from vault.domain.types import (
    AuditEvent,
    CallerName,
    Category,
    IdempotencyRecord,
    Purpose,
    RetainedDocument,
    StoredDataKey,
    StoredValue,
    SubjectId,
    SubjectRecord,
    SubjectState,
    Token,
    WrappedKey,
)

__all__ = [
    "ApiKeyRecord",
    "ApprovalChange",
    "ApprovalRecord",
    "ApprovalState",
    "ApprovalStore",
    "AuditHead",
    "AuditLog",
    "BlobStore",
    "CredentialStore",
    "DocumentRecord",
    "DocumentStore",
    "DocumentTombstone",
    "Hold",
    "IdempotencyStore",
    "KeyInfo",
    "KeyInventory",
    "Lookup",
    "NewDocument",
    "QuotaStore",
    "RetentionKey",
    "ShredResult",
    "ShreddedRecord",
    "StoredCheckpoint",
    "StoredEntry",
    "Stores",
    "SubjectStore",
    "ValueStore",
    "VariantRecord",
    "WriteOutcome",
]


class WriteOutcome(enum.Enum):
    """How a write that can lose a race ended. These are answers, not errors: the use case
    decides what each means for its caller (draw new tokens, retry, refuse)."""

    DONE = enum.auto()
    TOKEN_COLLISION = enum.auto()  # a generated token exists already: draw new ones
    SUBJECT_RACE = enum.auto()  # the subject's key was created or removed meanwhile
    DUPLICATE_REQUEST = enum.auto()  # a twin with the same request id committed first
    SUBJECT_STOPPED = enum.auto()
    SUBJECT_SHREDDED = enum.auto()  # the id belongs to a crypto-shredded subject
    KEY_EXHAUSTED = enum.auto()  # the data key reached its encryption limit
    GONE = enum.auto()  # the row to change no longer exists


@dataclass(frozen=True, slots=True)
class ShreddedRecord:
    """What the database keeps of a shredded subject: its digest and the receipt's facts."""

    subject_digest: str
    receipt_id: str
    shredded_at: datetime
    shredded_by: CallerName
    values_destroyed: int
    # Set when this shred destroyed data found under an id that was already shredded (a
    # restored copy): the receipt of the shred before it.
    previous_receipt_id: str | None = None
    documents_destroyed: int = 0
    retained: tuple[RetainedDocument, ...] = ()


@dataclass(frozen=True, slots=True)
class ShredResult:
    """What `Store.shred` found. `destroyed` is None when the subject had no row: then
    `receipt` is the receipt of an earlier shred (or None: the id was never held)."""

    receipt: ShreddedRecord | None
    destroyed: tuple[int, int] | None  # (data keys, values)
    # Blobs of the documents destroyed, to delete from the BlobStore (marked doomed).
    blobs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Lookup:
    """What one detokenize reads, in one statement whatever the tokens turn out to be:
    stored values, their subjects' data keys (with state), each subject's consent for the
    purpose (True granted, False withdrawn, None never recorded), and tombstones of tokens
    whose subject was shredded (token -> category)."""

    values: dict[Token, StoredValue]
    keys: dict[SubjectId, StoredDataKey]
    consent: dict[SubjectId, bool | None]
    shredded: dict[Token, Category]
    # Tokens among `shredded` whose value was erased at the end of its retention period (its
    # subject lives on), not by a shred of the subject.
    expired: set[Token] = field(default_factory=set)
    # Tokens among `shredded` whose value became a document (the retired identity_document
    # field): token -> the document's id.
    moved: dict[Token, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    key_id: str
    caller: CallerName
    key_hash: bytes
    revoked: bool


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What an operator sees of a key: never its hash."""

    key_id: str
    caller: CallerName
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApprovalState(enum.Enum):
    """A dual-control request's life: pending until another operator approves (then it runs
    once: executed or failed) or rejects it, or until it expires."""

    PENDING = "pending"
    APPROVED = "approved"  # an approver claimed it; its step is being carried out
    EXECUTED = "executed"
    FAILED = "failed"  # approved, but the step refused or failed when carried out
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """One request. `parameters` are what it takes to carry the step out again (a key
    version, a caller and key id, a subject id), never a value or a secret."""

    request_id: str
    action: ApprovalAction
    parameters: Mapping[str, str]
    requested_by: CallerName
    created_at: datetime
    expires_at: datetime
    state: ApprovalState = ApprovalState.PENDING
    decided_by: CallerName | None = None
    decided_at: datetime | None = None
    outcome: str | None = None  # what carrying it out did, or why it failed


@dataclass(frozen=True, slots=True)
class ApprovalChange:
    """A conditional change of state: it applies only to a request in state `before` (and,
    with `unexpired` True, only before its expiry; False, only after it)."""

    request_id: str
    before: ApprovalState
    after: ApprovalState
    at: datetime
    by: CallerName | None = None  # the deciding operator: never the one who requested it
    outcome: str | None = None
    parameters: Mapping[str, str] | None = None  # replaces the stored ones when set
    unexpired: bool | None = None


class ValueStore(Protocol):
    """Each subject's wrapped data key and its values (ciphertexts bound to token, subject and
    category). Writes under a subject MUST lock the subject first (the one lock order that keeps
    writes and shreds from deadlocking), and MUST refuse a shredded subject inside the
    transaction that would write under it."""

    def data_keys(self, subjects: Collection[SubjectId]) -> dict[SubjectId, StoredDataKey]:
        """The wrapped data keys of these subjects (those that have one), with their state."""
        ...

    def lookup(self, tokens: Collection[Token], purpose: Purpose | None = None) -> Lookup:
        """Everything a detokenize needs about these tokens, in one round trip. MUST do the
        same work whether the tokens exist, are shredded or are unknown (timing)."""
        ...

    def subject_values(self, subject: SubjectId) -> list[tuple[StoredValue, datetime]]:
        """The subject's values with when each was stored, oldest first."""
        ...

    def save_tokenized(
        self,
        *,
        subject: SubjectId,
        new_key: WrappedKey | None,
        encryption_limit: int,
        values: Sequence[StoredValue],
        audit: Sequence[AuditEvent],
        idempotency: IdempotencyRecord | None,
        now: datetime,
    ) -> WriteOutcome:
        """Atomically: record the request id; create the subject and its data key (when
        `new_key`), or lock the existing active subject; count the encryptions against
        `encryption_limit`; insert the values and the audit events. All or nothing.

        DONE, or (nothing written) DUPLICATE_REQUEST, SUBJECT_RACE (`new_key` given but the
        subject exists, or no `new_key` and the subject is gone), SUBJECT_SHREDDED,
        SUBJECT_STOPPED, TOKEN_COLLISION or KEY_EXHAUSTED.
        """
        ...

    def replace_value(
        self,
        value: StoredValue,
        encryption_limit: int,
        audit: Sequence[AuditEvent],
        allow_stopped: bool = False,
    ) -> WriteOutcome:
        """Overwrite a token's ciphertext in place under the subject's lock: DONE, GONE (the
        token or its subject is gone), SUBJECT_STOPPED (unless `allow_stopped`) or
        KEY_EXHAUSTED. The encryption counts MUST roll back with a refused write."""
        ...

    def values_stored_before(
        self, category: Category, before: datetime, limit: int
    ) -> list[tuple[Token, SubjectId]]:
        """Up to `limit` values of `category` stored before `before` (retention by upload)."""
        ...

    def values_of_ended_relationships(
        self, category: Category, ended_before: datetime, limit: int
    ) -> list[tuple[Token, SubjectId]]:
        """Up to `limit` values of `category` whose subject's relationship ended (Account
        Stop) before `ended_before` (retention by the end of the relationship)."""
        ...

    def erase_values(
        self, tokens: Sequence[Token], receipt_id: str, audit: Sequence[AuditEvent]
    ) -> int:
        """Delete these values (their retention period ended), keeping each token as an
        expired tombstone, and record `audit`, in one transaction. Returns how many."""
        ...


class SubjectStore(Protocol):
    """Subjects, their lifecycle state and consents, and what is kept of shredded ones: their
    digest and receipt (never their id) and their tokens as tombstones naming the category."""

    def subject_record(self, subject: SubjectId) -> SubjectRecord | None: ...

    def subjects_with_digests(self, digests: Collection[str]) -> list[SubjectId]:
        """The held subjects among these digests (the shred log names subjects by digest)."""
        ...

    def shred_receipt(self, digest: str) -> ShreddedRecord | None:
        """The receipt of the shred of the subject with this keyed digest."""
        ...

    def shred_receipt_of(self, subject: SubjectId) -> ShreddedRecord | None:
        """The receipt of the shred of `subject` (found by its keyed digest), if shredded."""
        ...

    def set_state(
        self, subject: SubjectId, state: SubjectState, now: datetime, audit: Sequence[AuditEvent]
    ) -> bool:
        """Set the state and record `audit` in one transaction; False if no such subject."""
        ...

    def set_consent(
        self,
        subject: SubjectId,
        purpose: Purpose,
        granted: bool,
        now: datetime,
        audit: Sequence[AuditEvent],
    ) -> bool:
        """Record consent to `purpose` (or its withdrawal); False if no such subject."""
        ...

    def shred(
        self,
        subject: SubjectId,
        receipt: ShreddedRecord,
        audit: Sequence[AuditEvent],
        examined: Collection[str] | None = None,
    ) -> ShredResult:
        """Atomically destroy the subject's data key, values, consents and idempotency
        fingerprints and its row, keep its tokens as tombstones and `receipt` as the record of
        the shred, naming the earlier receipt the store holds for the id (else the one
        `receipt` names, from the shred log). If the subject has no row, change nothing and
        return the earlier receipt, if any. MUST wait for writes under way under the subject,
        and MUST leave nothing that a later write could bring back. If a document of the
        subject has a legal hold, or (given `examined`, the documents the keep step looked
        at) is not among `examined`, change nothing and return ShredResult(None, None): the
        keep step runs again."""
        ...

    def scrub(self) -> bool:
        """Clear old images of deleted rows from the database's own files (after a shred).
        False if it could not finish now (busy); then it is to be tried again."""
        ...


class IdempotencyStore(Protocol):
    """The answers of Tokenize calls with a request id, kept for a while (AIP-155). Records are
    written by `ValueStore.save_tokenized`, in its transaction."""

    def idempotency(self, caller: CallerName, request_id: str) -> IdempotencyRecord | None: ...

    def forget_idempotency(self, caller: CallerName, request_id: str) -> None: ...

    def purge_idempotency(self, before: datetime) -> int:
        """Delete records older than `before`; returns how many."""
        ...


@dataclass(frozen=True, slots=True)
class AuditHead:
    size: int
    root: bytes


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An audit entry as stored: the event (with its place), the subject column's value, and
    the leaf hash stored with it (None if missing)."""

    event: AuditEvent
    stored_subject: str | None
    leaf_hash: bytes | None


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    created_at: datetime


class AuditLog(Protocol):
    """Every decision pdvault takes on a caller's behalf, as an append-only Merkle log
    (vault.domain.audit_log). Entries name subjects by keyed digest only. Appends MUST be
    serialized across processes: gap-free places, one tree."""

    def append(self, events: Sequence[AuditEvent]) -> None:
        """Commit `events`. MUST be durable when it returns; a bad event MUST fail only the
        call that brought it, never others committed with it."""
        ...

    def of_subject(self, names: Collection[str], items: Collection[str]) -> list[AuditEvent]:
        """The events that name one of `names` (a subject's keyed digest, or its legacy
        digest) or one of `items` (its tokens and documents), in order (for its export)."""
        ...

    def head(self) -> AuditHead: ...

    def entries(self, first: int, limit: int) -> list[StoredEntry]:
        """Up to `limit` entries from place `first`, in order (rows without a place last)."""
        ...

    def leaf_hashes(self, first: int, end: int) -> list[bytes]:
        """The stored leaf hashes of places `first` to `end - 1`."""
        ...

    def checkpoints(self) -> list[StoredCheckpoint]: ...

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> bool:
        """Store a checkpoint unless one of its size exists; True if stored."""
        ...

    def seal_legacy(self) -> int:
        """Give entries written before the Merkle log their places and leaf hashes, in the
        order they were written. Returns how many."""
        ...

    def close(self) -> None:
        """Commit what is queued and stop."""
        ...


class CredentialStore(Protocol):
    """Callers' API keys: only SHA-256 hashes of their secrets."""

    def api_keys(self) -> list[ApiKeyRecord]:
        """Every key record (a few per caller): authentication holds them in memory."""
        ...

    def add_api_key(
        self, record: ApiKeyRecord, audit: Sequence[AuditEvent] = (), now: datetime | None = None
    ) -> None:
        """Store the key and record `audit`, and tell every process (a notice), in one
        transaction."""
        ...

    def callers_with_keys(self) -> set[CallerName]:
        """The callers with at least one key that is not revoked."""
        ...

    def key_infos(self) -> list[KeyInfo]:
        """Every key, oldest first, for operators."""
        ...

    def revoke(
        self, caller: CallerName, key_id: str, now: datetime, audit: Sequence[AuditEvent]
    ) -> bool:
        """Revoke the key (if it is `caller`'s and not revoked yet), record `audit` and tell
        every process (a notice, so that it stops authenticating within a second), in one
        transaction. False if there is no such live key."""
        ...

    def touch(self, used: dict[str, datetime]) -> None:
        """Record when keys were last used (a later time only)."""
        ...


class ApprovalStore(Protocol):
    """Dual control's requests. Invariant: a change of state is one conditional write, so of
    any number of concurrent approvals (in any number of processes) exactly one moves a
    request out of PENDING: only that one carries its step out."""

    def add_approval(self, record: ApprovalRecord, audit: Sequence[AuditEvent]) -> None:
        """Store a new request and record `audit`, in one transaction."""
        ...

    def approval(self, request_id: str) -> ApprovalRecord | None: ...

    def approvals(self, limit: int) -> list[ApprovalRecord]:
        """The `limit` newest requests, newest first."""
        ...

    def change_approval(self, change: ApprovalChange, audit: Sequence[AuditEvent]) -> bool:
        """Apply `change` if the request is in `change.before` (and `by`, when set, is not
        its requester; and the expiry condition holds), recording `audit`, in one
        transaction. False, with nothing written, otherwise."""
        ...


class KeyInventory(Protocol):
    """Which key-encryption-key version wraps which data key, and the check values by which
    start-up recognises the key the data keys were wrapped by."""

    def kek_version_counts(self) -> dict[tuple[str, int], int]:
        """How many data keys each (provider, version) wraps."""
        ...

    def data_keys_to_rewrap(
        self, provider: str, below_version: int, limit: int, after: SubjectId | None = None
    ) -> list[StoredDataKey]:
        """Up to `limit` data keys of `provider` under a version below `below_version`, in
        subject order, starting after `after`."""
        ...

    def replace_wrapped_keys(
        self, updates: Sequence[tuple[StoredDataKey, WrappedKey]], audit: Sequence[AuditEvent]
    ) -> int:
        """Swap each data key's wrapping for the new one if it is still the one read (a
        concurrent rewrap or shred MUST never be overwritten) and record `audit`, in one
        transaction. Returns how many were replaced."""
        ...

    def kek_checks(self, provider: str) -> dict[int, WrappedKey]: ...

    def add_kek_check(self, check: WrappedKey, now: datetime) -> None:
        """Record a check value for its (provider, version), unless one is recorded."""
        ...


@dataclass(frozen=True, slots=True)
class Hold:
    """A legal hold: the document is not destroyed (by a sweep, a delete or its subject's
    shred) while any hold stands. `reason` is a case reference, never content."""

    hold_id: str
    reason: str
    placed_by: CallerName
    placed_at: datetime


@dataclass(frozen=True, slots=True)
class VariantRecord:
    """One sealed variant of a document: its key (wrapped under its owner's data key, bound to
    subject digest, document, variant and media type), its stream header, and where its
    segments are (a blob of the `BlobStore`)."""

    variant: Variant
    media_type: MediaType
    size: int  # bytes of plaintext
    segments: int
    blob: str
    header: bytes = field(repr=False)
    wrapped_key: bytes = field(repr=False)
    format: str = "DV1"


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """A document as stored. `key_owner` is whose data key wraps the variants' keys: the
    subject's id, or (retained after its subject's shred) a retention key's owner; `subject`
    is None once the subject was shredded."""

    document_id: DocumentId
    subject: SubjectId | None
    subject_digest: str
    document_type: DocumentType
    uploaded_by: CallerName
    created_at: datetime
    scan: ScanResult
    key_owner: str
    retention_rule: str | None
    due_at: datetime | None  # when its retention period ends; None: not started yet
    verified_at: datetime | None = None
    masked_statement: bool = False  # health insurance cards: the uploader said it is masked
    holds: tuple[Hold, ...] = ()
    variants: tuple[VariantRecord, ...] = ()
    pages: int | None = None
    # What the content is bound to when not `subject_digest`: a document stored before keyed
    # digests is bound to its subject's unkeyed digest, which the store keeps only sealed
    # (under a key derived from the naming secret) and opens when it reads the record.
    bound_digest: str | None = field(default=None, repr=False)

    @property
    def binding_digest(self) -> str:
        """The subject digest in the document's binding (vault.domain.documents)."""
        return self.subject_digest if self.bound_digest is None else self.bound_digest

    @property
    def retained(self) -> bool:
        """Kept after its subject's Account Deletion (a legal duty, or a hold)."""
        return self.subject is None

    def variant(self, which: Variant) -> VariantRecord | None:
        return next((v for v in self.variants if v.variant is which), None)


@dataclass(frozen=True, slots=True)
class NewDocument:
    """What an upload stores, with the subject's key (`new_key` creates the subject)."""

    record: DocumentRecord
    new_key: WrappedKey | None
    encryption_limit: int
    # A value of the retired identity_document field this document replaces: in the same
    # transaction its row goes and its token becomes a tombstone naming the document. (A move
    # of existing data: allowed on a stopped subject.)
    replaces: Token | None = None


@dataclass(frozen=True, slots=True)
class DocumentTombstone:
    """What is kept of a destroyed document: enough to answer "deleted" to a caller who could
    have read it, and to name it in receipts."""

    document_id: DocumentId
    document_type: DocumentType
    subject_digest: str
    destroyed_at: datetime
    cause: str  # delete | shred | retention


@dataclass(frozen=True, slots=True)
class RetentionKey:
    """A data key a retention rule owns (one per rule and year of the due date)."""

    owner: str
    wrapped: WrappedKey


class DocumentStore(Protocol):
    """Documents' records. Writes under a subject MUST lock the subject first (as
    `ValueStore`), and a new document MUST be refused inside the transaction that would write
    it if its subject is stopped or shredded."""

    def begin_upload(self, blobs: Sequence[str], now: datetime) -> None:
        """Mark these blobs as being written: until `add` commits them, the sweep deletes
        them once they are older than an upload may take (a process killed mid-upload)."""
        ...

    def add(self, new: NewDocument, audit: Sequence[AuditEvent]) -> WriteOutcome:
        """Atomically: create the subject with `new_key` (or lock the existing active one and
        count one encryption per variant against the limit), insert the document and its
        variants, clear their blobs' upload marks, replace the value `replaces` names (its
        tombstone cause `moved`, receipt the document id), record `audit`. DONE, or (nothing
        written) SUBJECT_RACE, SUBJECT_SHREDDED, SUBJECT_STOPPED, KEY_EXHAUSTED or GONE (the
        value to replace is gone)."""
        ...

    def document(self, document_id: DocumentId) -> DocumentRecord | None: ...

    def tombstone(self, document_id: DocumentId) -> DocumentTombstone | None: ...

    def documents_of(self, subject: SubjectId) -> list[DocumentRecord]:
        """The subject's documents, oldest first."""
        ...

    def set_verified(
        self,
        document_id: DocumentId,
        at: datetime,
        due_at: datetime | None,
        audit: Sequence[AuditEvent],
    ) -> bool:
        """Record the verification (once: the first one counts) and the due date it implies.
        False if no such live document."""
        ...

    def set_scan(
        self, document_id: DocumentId, scan: ScanResult, audit: Sequence[AuditEvent]
    ) -> bool: ...

    def add_hold(
        self, document_id: DocumentId, hold: Hold, audit: Sequence[AuditEvent]
    ) -> bool: ...

    def release_hold(
        self, document_id: DocumentId, hold_id: str | None, audit: Sequence[AuditEvent]
    ) -> int:
        """Release one hold (or every hold when `hold_id` is None); returns how many."""
        ...

    def set_due_dates(self, dates: Sequence[tuple[DocumentId, datetime | None]]) -> None:
        """Recompute due dates (the relationship ended or resumed)."""
        ...

    def destroy(
        self,
        document_id: DocumentId,
        variants: Collection[Variant] | None,
        tombstone: DocumentTombstone,
        audit: Sequence[AuditEvent],
        due_at: datetime | None = None,
        unless_held: bool = True,
    ) -> list[str] | None:
        """Destroy the variants named (every one when None: the whole document, leaving
        `tombstone`), their wrapped keys first; with some variants left, set `due_at`. Refused
        (None) if a hold stands and `unless_held`, or the document is gone. Returns the blobs
        to delete from the `BlobStore` (marked doomed in the transaction, so a crash before
        they are deleted leaves them to the sweep)."""
        ...

    def retain(
        self,
        document_id: DocumentId,
        owner: RetentionKey,
        rewrapped: Sequence[tuple[Variant, bytes]],
        due_at: datetime,
        expected_owner: str,
    ) -> bool:
        """Move a document under a retention key (its subject is being shredded): the
        variants' keys re-wrapped, the owner and due date set, the subject link cut. Only if
        its current owner is still `expected_owner`."""
        ...

    def due(self, now: datetime, limit: int) -> list[DocumentRecord]:
        """Up to `limit` documents whose retention period ended by `now`, held or not."""
        ...

    def retention_key(self, owner: str) -> RetentionKey | None: ...

    def add_retention_key(self, key: RetentionKey, now: datetime) -> RetentionKey:
        """Store the key unless one exists for `owner` (then return that one)."""
        ...

    def drop_unused_retention_keys(self) -> list[str]:
        """Destroy the retention keys no document uses any more; returns their owners."""
        ...

    def stale_blobs(self, before: datetime) -> list[str]:
        """Blobs marked doomed, or being written since before `before`."""
        ...

    def forget_blobs(self, blobs: Collection[str]) -> None:
        """Clear the marks of blobs the `BlobStore` deleted."""
        ...


class BlobStore(Protocol):
    """Documents' sealed segments by blob id (random; never a subject id or file name). The
    database by default, so backups and crypto-shredding cover documents as they cover
    fields; an object store can implement this port."""

    def write(self, blob: str, first: int, segments: Sequence[bytes]) -> None:
        """Store segments `first`, `first + 1`, ... of `blob` (durable when it returns)."""
        ...

    def read(self, blob: str, first: int, count: int) -> list[bytes]:
        """Up to `count` segments from `first`, in order."""
        ...

    def delete(self, blobs: Collection[str]) -> None: ...


class QuotaStore(Protocol):
    """Items counted against callers' item quotas, per (caller, purpose, fixed window). Shared
    by every process and replica: the count is exact, whatever runs concurrently."""

    def take_items(
        self, caller: CallerName, purpose: Purpose, window_start: int, items: int, limit: int
    ) -> int | None:
        """Add `items` to the window's count if the sum stays within `limit`, and return the
        new count; None (nothing added) if it would not. MUST be one atomic step: two
        concurrent calls MUST never both pass the limit. `window_start` is Unix time."""
        ...

    def used_items(self, caller: CallerName, purpose: Purpose, window_start: int) -> int:
        """The window's count (0 if nothing was counted in it)."""
        ...

    def purge_quotas(self, before: int) -> int:
        """Forget windows that started before `before` (Unix time); returns how many."""
        ...


@dataclass(frozen=True)
class Stores:
    """The storage ports of one database, as the composition root wires them."""

    values: ValueStore
    subjects: SubjectStore
    idempotency: IdempotencyStore
    audit: AuditLog
    credentials: CredentialStore
    keys: KeyInventory
    documents: DocumentStore
    blobs: BlobStore
    approvals: ApprovalStore
    quotas: QuotaStore
