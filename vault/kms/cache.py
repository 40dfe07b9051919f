"""A cache of unwrapped data keys in front of any key provider.

Modelled on aws-encryption-sdk's caching materials manager: every entry has a maximum age and a
maximum number of uses, the cache a maximum size (least recently used out first). It lives in this
process's memory only, is never persisted, and forgets a subject on demand (shred) and every entry
of a key version whose decryption is retired.

The guarantee while the provider is away: a subject whose data key was unwrapped or created here
less than `max_age` ago, and used fewer than `max_uses` times since, keeps working; every other
subject gets UNAVAILABLE until the provider is back. Entries are never extended during an outage.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vault.domain.context import RequestContext
from vault.domain.ports import NO_TELEMETRY, KekStatus, KeyProvider, Telemetry
from vault.domain.secrets import Secret
from vault.domain.types import SubjectId, WrappedKey

__all__ = ["CacheLimits", "CacheStats", "CachingKeyProvider"]


@dataclass(frozen=True, slots=True)
class CacheLimits:
    """The cache's bounds; their defaults are `vault.config.Settings`' (PDV_KEY_CACHE_*)."""

    max_entries: int
    max_age: float
    max_uses: int


@dataclass(frozen=True, slots=True)
class CacheStats:
    entries: int
    hits: int
    misses: int
    evictions: int
    limits: CacheLimits

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@dataclass(slots=True)
class _Entry:
    key: Secret
    kek_version: int
    created: float
    uses: int = 0


class CachingKeyProvider:
    """`KeyProvider` that answers unwraps from memory when it can. Thread-safe."""

    def __init__(
        self,
        inner: KeyProvider,
        limits: CacheLimits,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self.inner = inner
        self._telemetry = telemetry
        self.name = inner.name
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[SubjectId, WrappedKey], _Entry] = OrderedDict()
        self._hits = self._misses = self._evictions = 0
        # Bumped by forget, clear and retire: an unwrap that started before one of them must
        # not put its (now forgotten or retired) key back into the cache.
        self._generation = 0

    def __repr__(self) -> str:
        return f"CachingKeyProvider({self.inner!r}, entries={len(self._entries)})"

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                len(self._entries), self._hits, self._misses, self._evictions, self.limits
            )

    # -- use ----------------------------------------------------------------------------------

    def wrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, Secret]]
    ) -> list[WrappedKey]:
        generation = self._generation
        wrapped = self.inner.wrap(ctx, keys)
        for (subject, dek), w in zip(keys, wrapped, strict=True):
            self._put(subject, w, dek, generation)  # a new subject's next call needs no unwrap
        self._report(0, 0)
        return wrapped

    def unwrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, WrappedKey]]
    ) -> list[Secret | None]:
        out: list[Secret | None] = [None] * len(keys)
        missing: list[int] = []
        now = self._clock()
        with self._lock:
            generation = self._generation
            for i, (subject, wrapped) in enumerate(keys):
                entry = self._entries.get((subject, wrapped))
                if entry is not None and self._fresh(entry, now):
                    entry.uses += 1
                    self._entries.move_to_end((subject, wrapped))
                    out[i] = Secret(entry.key.reveal())  # a copy: callers wipe what they get
                    self._hits += 1
                else:
                    if entry is not None:
                        self._drop((subject, wrapped))
                    missing.append(i)
                    self._misses += 1
        if missing:
            fetched = self.inner.unwrap(ctx, [keys[i] for i in missing])
            for i, key in zip(missing, fetched, strict=True):
                if key is not None:
                    subject, wrapped = keys[i]
                    self._put(subject, wrapped, key, generation)
                out[i] = key
        self._report(len(keys) - len(missing), len(missing))
        return out

    def rewrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, WrappedKey]]
    ) -> list[WrappedKey | None]:
        return self.inner.rewrap(ctx, keys)

    def forget(self, subject: SubjectId) -> None:
        """Drop every cached key of `subject` (crypto-shredding)."""
        with self._lock:
            self._generation += 1
            for k in [k for k in self._entries if k[0] == subject]:
                self._drop(k)
        self._report(0, 0)

    def forget_digests(self, digests: set[str], digest_of: Callable[[SubjectId], str]) -> None:
        """Drop the keys of subjects named by digest (shredded in another process);
        `digest_of` is the keyed digest the notices use (`SubjectNames.digest`)."""
        with self._lock:
            subjects = {k[0] for k in self._entries}
        for subject in subjects:
            if digest_of(subject) in digests:
                self.forget(subject)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            for k in list(self._entries):
                self._drop(k)
        self._report(0, 0)

    # -- administration -----------------------------------------------------------------------

    def status(self, ctx: RequestContext) -> KekStatus:
        return self.inner.status(ctx)

    def naming_secret(self, ctx: RequestContext) -> Secret:
        return self.inner.naming_secret(ctx)

    def rotate(self, ctx: RequestContext, admin: Secret | None) -> KekStatus:
        return self.inner.rotate(ctx, admin)

    def set_min_decryption_version(
        self, ctx: RequestContext, version: int, admin: Secret | None
    ) -> KekStatus:
        status = self.inner.set_min_decryption_version(ctx, version, admin)
        self._retire_below(status.min_decryption_version)
        return status

    def trim(
        self, ctx: RequestContext, min_available_version: int, admin: Secret | None
    ) -> KekStatus:
        status = self.inner.trim(ctx, min_available_version, admin)
        self._retire_below(status.min_decryption_version)
        return status

    # -- internals ----------------------------------------------------------------------------

    def _report(self, hits: int, misses: int) -> None:
        self._telemetry.key_cache(hits, misses, len(self._entries))

    def _fresh(self, entry: _Entry, now: float) -> bool:
        return now - entry.created < self.limits.max_age and entry.uses < self.limits.max_uses

    def _put(self, subject: SubjectId, wrapped: WrappedKey, key: Secret, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # forgotten or retired while we were unwrapping
            k = (subject, wrapped)
            if k in self._entries:
                self._drop(k)
            self._entries[k] = _Entry(Secret(key.reveal()), wrapped.kek_version, self._clock())
            while len(self._entries) > self.limits.max_entries:
                self._drop(next(iter(self._entries)))

    def _retire_below(self, version: int) -> None:
        # A key version that may no longer decrypt must not keep serving from memory either.
        with self._lock:
            self._generation += 1
            for k in [k for k, e in self._entries.items() if e.kek_version < version]:
                self._drop(k)

    def _drop(self, k: tuple[SubjectId, WrappedKey]) -> None:
        entry = self._entries.pop(k)
        entry.key.wipe()
        self._evictions += 1
