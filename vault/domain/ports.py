"""The ports: what the use cases need from the world, as Protocols. Adapters live in
`vault.crypto`, `vault.kms` and `vault.storage`; one contract suite per port runs against each."""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from vault.domain.context import RequestContext
from vault.domain.secrets import Secret
from vault.domain.types import (
    AuditEvent,
    CallerName,
    Category,
    IdempotencyRecord,
    PlainValue,
    Purpose,
    StoredDataKey,
    StoredValue,
    SubjectId,
    SubjectRecord,
    SubjectState,
    Token,
    WrappedKey,
)

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware UTC."""


@dataclass(frozen=True, slots=True)
class Binding:
    """What a ciphertext is bound to (AES-GCM associated data): rows cannot be swapped."""

    token: Token
    subject: SubjectId
    category: Category


class Cipher(Protocol):
    """Local authenticated encryption of values under data keys (implemented in vault.crypto)."""

    def new_data_key(self) -> Secret:
        """A fresh random 256-bit data key."""
        ...

    def seal(self, key: Secret, binding: Binding, value: PlainValue) -> bytes:
        """Encrypt `value`, binding the ciphertext to `binding`. MUST use a fresh random nonce."""
        ...

    def open(self, key: Secret, binding: Binding, ciphertext: bytes) -> PlainValue:
        """Decrypt; MUST raise `vault.errors.IntegrityError` if anything does not authenticate."""
        ...

    def opener(self, key: Secret) -> Callable[[Binding, bytes], PlainValue]:
        """`open` for many values under one key, with the key set up once."""
        ...

    def fingerprint(self, key: Secret, message: bytes) -> bytes:
        """A keyed MAC of `message` under a subkey of `key` (for idempotency checks)."""
        ...


@dataclass(frozen=True, slots=True)
class KekStatus:
    """The key-encryption key's versions, as HashiCorp Vault Transit's key ladder describes them.

    Versions below `min_decryption_version` can no longer unwrap (reversible); versions below
    `min_available_version` are destroyed (permanent).
    """

    provider: str
    key_name: str
    latest_version: int
    min_decryption_version: int
    min_available_version: int


class KeyProvider(Protocol):
    """Wraps and unwraps data keys with a key-encryption key that never leaves the provider.

    Implementations: a local key file (embedded default), HashiCorp Vault Transit; a cache can
    wrap either. `admin` is an operator's own credential for the provider, needed where the
    provider separates key administration from use (HashiCorp Vault's ops policy); providers
    that do not (the local file) ignore it. `ctx` is the request's: a remote provider MUST give
    up by its deadline (retries included), so the caller hears UNAVAILABLE in time.
    """

    name: str

    def wrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, Secret]]
    ) -> list[WrappedKey]:
        """Wrap each data key, in order. MUST make at most one remote call for the batch.

        Raises `KeyServiceUnavailable` or `KeyServiceDenied`; never half-succeeds.
        """
        ...

    def unwrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, WrappedKey]]
    ) -> list[Secret | None]:
        """Unwrap each key, in order; None for one that does not authenticate or whose key
        version is no longer allowed. MUST make at most one remote call for the batch."""
        ...

    def rewrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, WrappedKey]]
    ) -> list[WrappedKey | None]:
        """Re-encrypt each wrapped key under the latest version, in order, without the data key
        leaving the provider where the provider allows it; None for one that cannot be."""
        ...

    def status(self, ctx: RequestContext) -> KekStatus: ...

    def rotate(self, ctx: RequestContext, admin: Secret | None) -> KekStatus:
        """Add a new latest version; new data keys are wrapped with it from now on."""
        ...

    def set_min_decryption_version(
        self, ctx: RequestContext, version: int, admin: Secret | None
    ) -> KekStatus:
        """Refuse to unwrap with versions below `version` (reversible)."""
        ...

    def trim(
        self, ctx: RequestContext, min_available_version: int, admin: Secret | None
    ) -> KekStatus:
        """Destroy versions below `min_available_version` (permanent). MUST refuse to go above
        `min_decryption_version`."""
        ...


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


@dataclass(frozen=True, slots=True)
class ShredResult:
    """What `Store.shred` found. `destroyed` is None when the subject had no row: then
    `receipt` is the receipt of an earlier shred (or None: the id was never held)."""

    receipt: ShreddedRecord | None
    destroyed: tuple[int, int] | None  # (data keys, values)


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


@dataclass(frozen=True, slots=True)
class ShredLogEntry:
    digest: str
    receipt_id: str
    shredded_at: datetime


class ShredLog(Protocol):
    """The record of shredded subjects kept outside the database, beside the key provider.

    It outlives database restores: at start-up pdvault shreds again every subject of a restored
    copy that the log names. Entries name subjects by digest only.
    """

    def record(self, digest: str, receipt_id: str, at: datetime) -> ShredLogEntry:
        """The subject's entry: the one already recorded (from any process), else a new one
        with these facts. MUST be durable when it returns (it is called before the database
        transaction of the shred) and MUST write at most one entry per digest."""
        ...

    def entries(self) -> dict[str, ShredLogEntry]:
        """digest -> entry, for every shred recorded."""
        ...


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    key_id: str
    caller: CallerName
    key_hash: bytes
    revoked: bool


class ApiKeyStore(Protocol):
    """What authentication needs: every API key record (a few per caller)."""

    def api_keys(self) -> list[ApiKeyRecord]: ...


class Store(Protocol):
    """Persistence of data keys, ciphertexts, audit events and idempotency records.

    No method ever receives a plaintext value. Every write method is one transaction, retried
    whole on a deadlock or serialization failure. Writes under a subject MUST lock the subject
    first (the one lock order that keeps shred and tokenize from deadlocking), and a write that
    would create a subject MUST refuse an id that was shredded, inside that transaction.
    """

    def data_keys(self, subjects: Collection[SubjectId]) -> dict[SubjectId, StoredDataKey]:
        """The wrapped data keys of these subjects (those that have one)."""
        ...

    def lookup(self, tokens: Collection[Token], purpose: Purpose | None = None) -> Lookup:
        """Everything a detokenize needs about these tokens, in one round trip. MUST run the
        same statements whether the tokens exist, are shredded or are unknown (timing)."""
        ...

    def shred_receipt(self, digest: str) -> ShreddedRecord | None: ...

    def subject_record(self, subject: SubjectId) -> SubjectRecord | None: ...

    def subject_values(self, subject: SubjectId) -> list[tuple[StoredValue, datetime]]: ...

    def subject_audit(self, subject: SubjectId) -> list[AuditEvent]: ...

    def subjects_with_digests(self, digests: Collection[str]) -> list[SubjectId]: ...

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
    ) -> bool: ...

    def replace_value(
        self,
        value: StoredValue,
        encryption_limit: int,
        audit: Sequence[AuditEvent],
        allow_stopped: bool = False,
    ) -> WriteOutcome:
        """Overwrite a token's ciphertext in place under the subject's lock: DONE, GONE (the
        token or its subject is gone), SUBJECT_STOPPED (unless `allow_stopped`) or
        KEY_EXHAUSTED."""
        ...

    def shred(
        self,
        subject: SubjectId,
        receipt: ShreddedRecord,
        audit: Sequence[AuditEvent],
    ) -> ShredResult:
        """Atomically destroy the subject's data key, values, consents and fingerprints, keep
        its tokens as tombstones and `receipt` as the record of the shred, naming the earlier
        receipt the database holds for the id (else the one `receipt` names, from the shred
        log). If the subject has no row, change nothing and return the earlier receipt, if
        any."""
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
        """Atomically: create the subject and its data key (when `new_key`), or lock the
        existing active subject; count the encryptions against `encryption_limit`; insert the
        values, the audit events and the idempotency record. All or nothing.

        DONE, or (nothing written) SUBJECT_RACE (`new_key` given but the subject exists, or
        no `new_key` and the subject is gone), SUBJECT_SHREDDED, SUBJECT_STOPPED,
        TOKEN_COLLISION, DUPLICATE_REQUEST or KEY_EXHAUSTED.
        """
        ...

    def scrub(self) -> bool:
        """Clear old images of deleted rows from the database's own files (after a shred).
        False if it could not finish now (busy); then it is to be tried again."""
        ...

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Commit audit events. MUST be durable when it returns; a bad event MUST fail only
        the call that brought it, never others committed with it."""
        ...

    def forget_idempotency(self, caller: CallerName, request_id: str) -> None: ...

    def purge_idempotency(self, before: datetime) -> int:
        """Delete idempotency records older than `before`; returns how many."""
        ...

    def idempotency(self, caller: CallerName, request_id: str) -> IdempotencyRecord | None:
        """The remembered answer of an earlier request, if younger than its retention."""
        ...

    def api_key(self, key_id: str) -> ApiKeyRecord | None: ...

    def api_keys(self) -> list[ApiKeyRecord]: ...

    def add_api_key(self, record: ApiKeyRecord) -> None: ...

    def callers_with_keys(self) -> set[CallerName]: ...

    def kek_version_counts(self) -> dict[tuple[str, int], int]:
        """How many data keys are wrapped under each (provider, key-encryption-key version)."""
        ...

    def kek_checks(self, provider: str) -> dict[int, WrappedKey]:
        """The check values wrapped under each version of `provider`'s key-encryption key:
        how start-up recognises the key the data keys were wrapped by."""
        ...

    def add_kek_check(self, check: WrappedKey, now: datetime) -> None:
        """Record a check value for its (provider, version), unless one is recorded."""
        ...

    def data_keys_to_rewrap(
        self, provider: str, below_version: int, limit: int, after: SubjectId | None = None
    ) -> list[StoredDataKey]:
        """Up to `limit` data keys of `provider` wrapped under a version below `below_version`,
        in subject order, starting after `after`."""
        ...

    def replace_wrapped_keys(
        self, updates: Sequence[tuple[StoredDataKey, WrappedKey]], audit: Sequence[AuditEvent]
    ) -> int:
        """Swap each data key's wrapping for the new one if it is still the one read (so a
        concurrent rewrap or shred is never overwritten), and record `audit`, in one
        transaction. Returns how many were replaced."""
        ...
