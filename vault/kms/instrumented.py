"""A `KeyProvider` that tells `Telemetry` of every call to the one it wraps: a span, a count, a
duration and, on failure, the error's class. It sits under the data-key cache, so what it counts
are the calls that reach the provider (a cache hit never does)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from vault.domain.context import RequestContext
from vault.domain.ports import KekStatus, KeyProvider, Telemetry
from vault.domain.secrets import Secret
from vault.domain.types import SubjectId, WrappedKey

__all__ = ["InstrumentedKeyProvider"]

T = TypeVar("T")


class InstrumentedKeyProvider:
    """`KeyProvider` around `inner`, reporting each call to `telemetry`."""

    def __init__(self, inner: KeyProvider, telemetry: Telemetry) -> None:
        self.inner = inner
        self.name = inner.name
        self._telemetry = telemetry

    def __repr__(self) -> str:
        return f"InstrumentedKeyProvider({self.inner!r})"

    def _call(self, operation: str, work: Callable[[], T]) -> T:
        error = ""
        started = time.perf_counter()
        try:
            with self._telemetry.span(f"key_provider.{operation}"):
                return work()
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            self._telemetry.key_provider_call(
                self.name, operation, time.perf_counter() - started, error
            )

    def wrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, Secret]]
    ) -> list[WrappedKey]:
        return self._call("wrap", lambda: self.inner.wrap(ctx, keys))

    def unwrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, WrappedKey]]
    ) -> list[Secret | None]:
        return self._call("unwrap", lambda: self.inner.unwrap(ctx, keys))

    def rewrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, WrappedKey]]
    ) -> list[WrappedKey | None]:
        return self._call("rewrap", lambda: self.inner.rewrap(ctx, keys))

    def status(self, ctx: RequestContext) -> KekStatus:
        return self._call("status", lambda: self.inner.status(ctx))

    def naming_secret(self, ctx: RequestContext) -> Secret:
        return self._call("naming_secret", lambda: self.inner.naming_secret(ctx))

    def rotate(self, ctx: RequestContext, admin: Secret | None) -> KekStatus:
        return self._call("rotate", lambda: self.inner.rotate(ctx, admin))

    def set_min_decryption_version(
        self, ctx: RequestContext, version: int, admin: Secret | None
    ) -> KekStatus:
        return self._call(
            "set_min_decryption_version",
            lambda: self.inner.set_min_decryption_version(ctx, version, admin),
        )

    def trim(
        self, ctx: RequestContext, min_available_version: int, admin: Secret | None
    ) -> KekStatus:
        return self._call("trim", lambda: self.inner.trim(ctx, min_available_version, admin))
