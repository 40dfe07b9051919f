"""The data-key cache: limits of size, age and uses; forgetting; retired versions; figures."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pytest

from vault.app import cache_limits
from vault.config import Settings
from vault.domain.context import RequestContext
from vault.domain.naming import SubjectNames, unkeyed_subject_digest
from vault.domain.secrets import Secret
from vault.domain.types import SubjectId, WrappedKey
from vault.kms.cache import CachingKeyProvider
from vault.kms.local import LocalKeyFileProvider

LIMITS = cache_limits(Settings())
CTX = RequestContext.system("test")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counting(LocalKeyFileProvider):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.unwraps = 0

    def unwrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, WrappedKey]]
    ) -> list[Secret | None]:
        self.unwraps += 1
        return super().unwrap(ctx, keys)


@pytest.fixture
def inner(tmp_path: Path) -> Counting:
    return Counting(tmp_path / "kek.json")


def dek(i: int) -> Secret:
    return Secret(bytes([i]) * 32)


S = SubjectId("s")


def test_wrapped_keys_are_served_from_memory(inner: Counting) -> None:
    cache = CachingKeyProvider(inner, LIMITS)
    [w] = cache.wrap(CTX, [(S, dek(1))])
    assert cache.unwrap(CTX, [(S, w)]) == [dek(1)]
    assert inner.unwraps == 0  # wrap put it in the cache
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (1, 0, 1)
    assert stats.hit_rate == 1.0


def test_callers_get_copies_they_may_wipe(inner: Counting) -> None:
    cache = CachingKeyProvider(inner, LIMITS)
    [w] = cache.wrap(CTX, [(S, dek(1))])
    [first] = cache.unwrap(CTX, [(S, w)])
    assert first is not None
    first.wipe()
    assert cache.unwrap(CTX, [(S, w)]) == [dek(1)]


def test_entries_expire_by_age(inner: Counting) -> None:
    clock = Clock()
    cache = CachingKeyProvider(inner, dataclasses.replace(LIMITS, max_age=60), clock=clock)
    [w] = cache.wrap(CTX, [(S, dek(1))])
    clock.now += 59
    cache.unwrap(CTX, [(S, w)])
    assert inner.unwraps == 0
    clock.now += 2
    assert cache.unwrap(CTX, [(S, w)]) == [dek(1)]
    assert inner.unwraps == 1
    assert cache.stats().evictions == 1


def test_entries_expire_by_uses(inner: Counting) -> None:
    cache = CachingKeyProvider(inner, dataclasses.replace(LIMITS, max_uses=3))
    [w] = cache.wrap(CTX, [(S, dek(1))])
    for _ in range(3):
        cache.unwrap(CTX, [(S, w)])
    assert inner.unwraps == 0
    cache.unwrap(CTX, [(S, w)])
    assert inner.unwraps == 1


def test_size_is_bounded_least_recently_used_first(inner: Counting) -> None:
    cache = CachingKeyProvider(inner, dataclasses.replace(LIMITS, max_entries=2))
    wrapped = [cache.wrap(CTX, [(SubjectId(f"s{i}"), dek(i))])[0] for i in range(3)]
    assert cache.stats().entries == 2
    cache.unwrap(CTX, [(SubjectId("s0"), wrapped[0])])
    assert inner.unwraps == 1  # s0 was the oldest: evicted
    cache.unwrap(CTX, [(SubjectId("s2"), wrapped[2])])
    assert inner.unwraps == 1


def test_a_batch_mixes_hits_and_one_call_for_the_misses(inner: Counting) -> None:
    cache = CachingKeyProvider(inner, LIMITS)
    direct = inner.wrap(CTX, [(SubjectId(f"s{i}"), dek(i)) for i in range(5)])
    [cached] = cache.wrap(CTX, [(SubjectId("c"), dek(9))])
    items = [(SubjectId("c"), cached)] + [(SubjectId(f"s{i}"), w) for i, w in enumerate(direct)]
    assert cache.unwrap(CTX, items) == [dek(9)] + [dek(i) for i in range(5)]
    assert inner.unwraps == 1


def test_forget_drops_a_subject(inner: Counting) -> None:
    cache = CachingKeyProvider(inner, LIMITS)
    [w] = cache.wrap(CTX, [(S, dek(1))])
    cache.wrap(CTX, [(SubjectId("other"), dek(2))])
    cache.forget(S)
    assert cache.stats().entries == 1
    cache.unwrap(CTX, [(S, w)])
    assert inner.unwraps == 1


def test_retiring_a_version_drops_its_entries(inner: Counting) -> None:
    cache = CachingKeyProvider(inner, LIMITS)
    [old] = cache.wrap(CTX, [(S, dek(1))])
    cache.rotate(CTX, None)
    cache.set_min_decryption_version(CTX, 2, None)
    assert cache.stats().entries == 0
    assert cache.unwrap(CTX, [(S, old)]) == [None]  # not served from memory either


def test_failed_unwraps_are_not_cached(inner: Counting) -> None:
    cache = CachingKeyProvider(inner, LIMITS)
    bad = WrappedKey("local", 1, b"\x01" * 61)
    assert cache.unwrap(CTX, [(S, bad)]) == [None]
    assert cache.stats().entries == 0


def test_reprs_show_no_keys(inner: Counting) -> None:
    cache = CachingKeyProvider(inner, LIMITS)
    cache.wrap(CTX, [(S, dek(65))])
    assert "AAAA" not in repr(cache)
    assert "entries=1" in repr(cache)


def test_a_key_forgotten_while_it_was_being_unwrapped_is_not_cached(inner: Counting) -> None:
    cache = CachingKeyProvider(inner, LIMITS)
    [w] = inner.wrap(CTX, [(S, dek(1))])
    real = inner.unwrap

    def slow_unwrap(
        ctx: RequestContext, keys: Sequence[tuple[SubjectId, WrappedKey]]
    ) -> list[Secret | None]:
        cache.forget(S)  # a shred lands while the provider is answering
        return real(ctx, keys)

    inner.unwrap = slow_unwrap  # type: ignore[method-assign]
    assert cache.unwrap(CTX, [(S, w)]) == [dek(1)]
    assert cache.stats().entries == 0


def test_a_notice_names_the_subject_by_its_keyed_digest(inner: Counting) -> None:
    """Another process's shred: the notice carries the keyed digest, never the id."""
    names = SubjectNames(Secret(b"k" * 32))
    cache = CachingKeyProvider(inner, LIMITS)
    other = SubjectId("other")
    cache.wrap(CTX, [(S, dek(1)), (other, dek(2))])
    cache.forget_digests({unkeyed_subject_digest(S)}, names.digest)  # the old form: no match
    assert cache.stats().entries == 2
    cache.forget_digests({names.digest(S)}, names.digest)
    assert cache.stats().entries == 1
