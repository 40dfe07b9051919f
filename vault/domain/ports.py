"""The ports to the world outside the database: encryption, the key provider, the shred log and
the clock, as Protocols. Adapters live in `vault.crypto` and `vault.kms`; one contract suite per
port runs against each. The storage ports are in `vault.domain.stores`."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from vault.domain.context import RequestContext
from vault.domain.secrets import Secret
from vault.domain.types import (
    Category,
    PlainValue,
    SubjectId,
    Token,
    WrappedKey,
)

__all__ = [
    "NO_TELEMETRY",
    "Binding",
    "Cipher",
    "KekStatus",
    "KeyProvider",
    "Notice",
    "NoticeFeed",
    "NoticeKind",
    "ShredLog",
    "ShredLogEntry",
    "Telemetry",
]


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

    def naming_secret(self, ctx: RequestContext) -> Secret:
        """The service-wide naming secret (32 bytes) that keys the digests naming shredded
        subjects (vault.domain.naming). MUST be the same in every process and forever: a key
        rotation, retirement or trim never changes it. Asked once per process, at start-up."""
        ...

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


class NoticeKind(enum.Enum):
    SUBJECT_KEY = "subject_key"  # forget the cached data key of the subject with this digest
    API_KEYS = "api_keys"  # read the API key table again (a key was added or revoked)
    POLICY = "policy"  # read the policy file again (an operator reloaded it; key: its digest)


@dataclass(frozen=True, slots=True)
class Notice:
    """What one process tells every process to forget."""

    kind: NoticeKind
    key: str  # a subject digest, or a key id


class NoticeFeed(Protocol):
    """Notices written by any process, in the transaction of the write that caused them,
    delivered to every process: how a shred or a revocation reaches the caches of all of them.

    MUST deliver each notice committed after `start` at least once (polling adapters within
    their interval); when it cannot know what it missed (a lost connection), MUST call
    `on_lost` before it delivers again, so that the caches forget everything.
    """

    def start(self, on_notice: Callable[[Notice], None], on_lost: Callable[[], None]) -> None: ...

    def stop(self) -> None: ...


class Telemetry(Protocol):
    """What the adapters tell about their own work, for metrics and traces (adapters in
    `vault.observability`; `NO_TELEMETRY` when both are off).

    Every argument MUST come from a closed set fixed by the code (a provider's name, an
    operation's name, an exception's class name, a span's name) or be a number: never a value,
    a token, a subject, a key or anything a request carries, so that nothing a caller sends can
    reach a metric label or a span attribute. Each method MUST be cheap and MUST NOT raise.
    """

    def span(self, name: str) -> AbstractContextManager[None]:
        """A child span of the current call's span named `name` (none outside a call). An
        exception leaving it is recorded by its class name only, never its message."""
        ...

    def key_provider_call(self, provider: str, operation: str, seconds: float, error: str) -> None:
        """One call to the key provider (`error`: the exception's class name, "" for none)."""
        ...

    def key_cache(self, hits: int, misses: int, entries: int) -> None:
        """Unwraps the data-key cache answered (`hits`) or not (`misses`) since the last report,
        and the entries it holds now."""
        ...

    def audit_commit(self, seconds: float, entries: int) -> None:
        """One commit of audit entries (a group commit's batch) and how long it took."""
        ...


class _NoTelemetry:
    def __repr__(self) -> str:
        return "NO_TELEMETRY"

    def span(self, name: str) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def key_provider_call(self, provider: str, operation: str, seconds: float, error: str) -> None:
        pass

    def key_cache(self, hits: int, misses: int, entries: int) -> None:
        pass

    def audit_commit(self, seconds: float, entries: int) -> None:
        pass


NO_TELEMETRY: Telemetry = _NoTelemetry()
"""Telemetry that records nothing: metrics and traces off."""
