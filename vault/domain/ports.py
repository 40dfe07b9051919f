"""The ports: what the use cases need from the world, as Protocols. Adapters live in
`vault.crypto`, `vault.kms` and `vault.storage`; one contract suite per port runs against each."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

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
    that do not (the local file) ignore it.
    """

    name: str

    def wrap(self, keys: Sequence[tuple[SubjectId, Secret]]) -> list[WrappedKey]:
        """Wrap each data key, in order. MUST make at most one remote call for the batch.

        Raises `KeyServiceUnavailable` or `KeyServiceDenied`; never half-succeeds.
        """
        ...

    def unwrap(self, keys: Sequence[tuple[SubjectId, WrappedKey]]) -> list[Secret | None]:
        """Unwrap each key, in order; None for one that does not authenticate or whose key
        version is no longer allowed. MUST make at most one remote call for the batch."""
        ...

    def rewrap(self, keys: Sequence[tuple[SubjectId, WrappedKey]]) -> list[WrappedKey | None]:
        """Re-encrypt each wrapped key under the latest version, in order, without the data key
        leaving the provider where the provider allows it; None for one that cannot be."""
        ...

    def status(self) -> KekStatus: ...

    def rotate(self, admin: Secret | None) -> KekStatus:
        """Add a new latest version; new data keys are wrapped with it from now on."""
        ...

    def set_min_decryption_version(self, version: int, admin: Secret | None) -> KekStatus:
        """Refuse to unwrap with versions below `version` (reversible)."""
        ...

    def trim(self, min_available_version: int, admin: Secret | None) -> KekStatus:
        """Destroy versions below `min_available_version` (permanent). MUST refuse to go above
        `min_decryption_version`."""
        ...


class TokenCollisionError(Exception):
    """A generated token already exists; the use case draws new tokens and retries."""


class SubjectKeyRaceError(Exception):
    """Another request created this subject's data key first; the use case retries with it."""


class SubjectStoppedError(Exception):
    """The subject was stopped between reading its key and storing new data."""


class DuplicateRequestError(Exception):
    """A concurrent request with the same (caller, request id) committed first."""


class KeyUsageExhaustedError(Exception):
    """The subject's data key reached its encryption limit (NIST SP 800-38D section 8.3)."""


@dataclass(frozen=True, slots=True)
class ShreddedRecord:
    """What the database keeps of a shredded subject: its digest and the receipt's facts."""

    subject_digest: str
    receipt_id: str
    shredded_at: datetime
    shredded_by: CallerName
    values_destroyed: int


class ShredLog(Protocol):
    """The record of shredded subjects kept outside the database, beside the key provider.

    It outlives database restores: at start-up pdvault shreds again every subject of a restored
    copy that the log names. Entries name subjects by digest only. `append` MUST be durable
    when it returns (it is called before the database transaction of the shred).
    """

    def append(self, digest: str, receipt_id: str, at: datetime) -> None: ...

    def digests(self) -> dict[str, str]:
        """digest -> receipt id, for every shred recorded."""
        ...


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    key_id: str
    caller: CallerName
    key_hash: bytes
    revoked: bool


class ApiKeyStore(Protocol):
    """What authentication needs: API key records by id."""

    def api_key(self, key_id: str) -> ApiKeyRecord | None: ...


class Store(Protocol):
    """Persistence of data keys, ciphertexts, audit events and idempotency records.

    No method ever receives a plaintext value. Every write method is one transaction.
    """

    def data_keys(self, subjects: Collection[SubjectId]) -> dict[SubjectId, StoredDataKey]:
        """The wrapped data keys of these subjects (those that have one)."""
        ...

    def values_and_keys(
        self, tokens: Collection[Token], purpose: Purpose | None = None
    ) -> tuple[
        dict[Token, StoredValue], dict[SubjectId, StoredDataKey], dict[SubjectId, bool | None]
    ]:
        """The stored values of these tokens, their subjects' data keys (with the subject's
        state), and each subject's consent for `purpose` (True granted, False withdrawn, None
        never recorded), in one round trip."""
        ...

    def shredded_tokens(self, tokens: Collection[Token]) -> dict[Token, Category]:
        """Of these tokens, those whose subject was shredded, with their category."""
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
        self, value: StoredValue, encryption_limit: int, audit: Sequence[AuditEvent]
    ) -> bool:
        """Overwrite a token's ciphertext in place; False if the token is gone."""
        ...

    def shred(
        self,
        subject: SubjectId,
        digest: str,
        receipt_id: str,
        caller: CallerName,
        now: datetime,
        audit: Sequence[AuditEvent],
    ) -> tuple[int, int] | None:
        """Atomically destroy the subject's data key, values, consents and fingerprints, keep
        its tokens as tombstones and its digest as a record. Returns (data keys, values)
        destroyed; None if it has no row."""
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
    ) -> None:
        """Atomically: create the subject and its data key (when `new_key`), count the
        encryptions against `encryption_limit`, insert the values, the audit events and the
        idempotency record. All or nothing.

        Raises SubjectKeyRaceError if `new_key` is given and the subject already has a key,
        TokenCollisionError if a token exists, KeyUsageExhaustedError past the limit.
        """
        ...

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Commit audit events. MUST be durable when it returns."""
        ...

    def forget_idempotency(self, caller: CallerName, request_id: str) -> None: ...

    def purge_idempotency(self, before: datetime) -> int:
        """Delete idempotency records older than `before`; returns how many."""
        ...

    def idempotency(self, caller: CallerName, request_id: str) -> IdempotencyRecord | None:
        """The remembered answer of an earlier request, if younger than its retention."""
        ...

    def api_key(self, key_id: str) -> ApiKeyRecord | None: ...

    def add_api_key(self, record: ApiKeyRecord) -> None: ...

    def callers_with_keys(self) -> set[CallerName]: ...

    def kek_version_counts(self) -> dict[tuple[str, int], int]:
        """How many data keys are wrapped under each (provider, key-encryption-key version)."""
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
