"""Limits on bulk reads (OWASP API6, "unrestricted access to sensitive business flows"): a
request rate per caller, and an item quota per caller and purpose.

- The request rate is a token bucket per caller, held in each process's memory (`RateLimiter`):
  `per_second` calls refill it, `burst` is its size. With N processes or replicas a caller may
  make up to N times the rate; it bounds bursts, it is not an exact count.
- The item quota is exact across every process and replica: each item asked for (found or not,
  granted or refused, so that its use says nothing about which tokens exist) is counted in the
  database, in fixed windows (`QuotaStore`), before any data key is unwrapped. A request that
  would pass the limit is refused whole and counts nothing.

Both refuse with `QuotaExceeded` (RESOURCE_EXHAUSTED, RetryInfo and QuotaFailure): it names the
caller, the purpose and the limit, never a token.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from vault.domain.types import Action, AuditEvent, CallerName, Outcome, Purpose
from vault.errors import QuotaExceeded, Reason

if TYPE_CHECKING:  # the policy imports this module, and the stores import the policy
    from vault.domain.stores import AuditLog, QuotaStore

__all__ = [
    "MAX_WINDOW_SECONDS",
    "ItemQuota",
    "ItemQuotas",
    "Rate",
    "RateLimiter",
    "TokenBucket",
    "audit_rate_refusal",
    "parse_window",
    "window_start",
]


MAX_WINDOW_SECONDS = 31 * 86400  # a month at most: longer windows are a retention question
_WINDOW = re.compile(r"([1-9][0-9]{0,6})(s|m|h|d)")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(text: str) -> int:
    """`"90s"`, `"15m"`, `"1h"`, `"1d"` -> seconds. ValueError naming the rule otherwise."""
    found = _WINDOW.fullmatch(text)
    if found is None:
        raise ValueError('must be a whole number and a unit: s, m, h or d (for example "1h")')
    seconds = int(found.group(1)) * _UNIT[found.group(2)]
    if seconds > MAX_WINDOW_SECONDS:
        raise ValueError("must be at most 31 days")
    return seconds


@dataclass(frozen=True, slots=True)
class Rate:
    """Calls a caller may make per process: `per_second` on average, `burst` at once."""

    per_second: float
    burst: int

    def describe(self) -> str:
        return f"{self.per_second:g} calls per second, bursts of {self.burst} (per process)"


@dataclass(frozen=True, slots=True)
class ItemQuota:
    """Items a caller may ask for, for one purpose, per fixed window of `window` seconds
    (`window_text` as the policy wrote it)."""

    items: int
    window: int
    window_text: str

    def describe(self) -> str:
        return f"{self.items} items per {self.window_text}"


def window_start(now: datetime, window: int) -> int:
    """The fixed window `now` falls in, as its first second (Unix time): windows are aligned
    to the epoch, so every process agrees on them without talking."""
    return int(now.timestamp()) // window * window


class TokenBucket:
    """One caller's bucket: holds up to `burst` tokens, refilled at `per_second`; a call takes
    one. Not thread-safe on its own (`RateLimiter` holds the lock)."""

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self._tokens = float(rate.burst)
        self._at = now

    def take(self, now: float) -> float | None:
        """None if the call may go ahead (a token taken), else the seconds until one is there."""
        elapsed = max(0.0, now - self._at)
        self._tokens = min(float(self.rate.burst), self._tokens + elapsed * self.rate.per_second)
        self._at = max(self._at, now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / self.rate.per_second


class RateLimiter:
    """The request rate of each caller the policy gives one, in this process. `clock` is
    monotonic seconds (injected in tests). Thread-safe."""

    def __init__(self, rates: dict[CallerName, Rate], clock: Callable[[], float]) -> None:
        self._rates = dict(rates)
        self._clock = clock
        self._buckets: dict[CallerName, TokenBucket] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RateLimiter(callers={len(self._rates)})"

    def admit(self, caller: CallerName) -> None:
        """Take one call from the caller's bucket; `QuotaExceeded` (RATE_LIMITED) when empty."""
        rate = self._rates.get(caller)
        if rate is None:
            return
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(caller)
            if bucket is None:
                bucket = self._buckets[caller] = TokenBucket(rate, now)
            wait = bucket.take(now)
        if wait is not None:
            raise QuotaExceeded(
                f"caller '{caller}' is over its request rate of {rate.describe()}; retry after "
                "RetryInfo's delay",
                reason=Reason.RATE_LIMITED,
                retry_after=wait,
                caller=caller,
                purpose=None,
                limit=rate.burst,
                quota_id="rate",
                description=rate.describe(),
            )


def audit_rate_refusal(
    audit: AuditLog, clock: Callable[[], datetime]
) -> Callable[[QuotaExceeded, str], None]:
    """What records a call refused over its caller's rate: one entry naming the caller, the
    method and the rule (a call refused this way has read no request, so names no token)."""

    def record(exc: QuotaExceeded, method: str) -> None:
        audit.append(
            [
                AuditEvent(
                    occurred_at=clock(),
                    caller=CallerName(exc.caller),
                    action=Action.CALL,
                    outcome=Outcome.REFUSED,
                    rule=exc.rule,
                    detail=f"{method[:120]}: over the request rate of {exc.description}",
                )
            ]
        )

    return record


class ItemQuotas:
    """The item quota of each (caller, purpose) the policy gives one, counted in the database.

    `take` MUST be called before any data key is unwrapped for the request, with every item the
    request asks for (repeats included): it counts them all, or (over the limit) none.
    """

    def __init__(
        self,
        quotas: dict[tuple[CallerName, Purpose], ItemQuota],
        store: QuotaStore,
        clock: Callable[[], datetime],
    ) -> None:
        self._quotas = dict(quotas)
        self._store = store
        self._clock = clock

    def __repr__(self) -> str:
        return f"ItemQuotas(quotas={len(self._quotas)})"

    def quota(self, caller: CallerName, purpose: Purpose) -> ItemQuota | None:
        return self._quotas.get((caller, purpose))

    def take(self, caller: CallerName, purpose: Purpose, items: int) -> None:
        """Count `items` against the caller's quota for `purpose` (none set: nothing to do);
        `QuotaExceeded` (QUOTA_EXCEEDED), counting nothing, if they do not fit."""
        quota = self._quotas.get((caller, purpose))
        if quota is None or items <= 0:
            return
        now = self._clock()
        start = window_start(now, quota.window)
        used = None
        if items <= quota.items:  # a request larger than the whole quota never fits
            used = self._store.take_items(caller, purpose, start, items, quota.items)
        if used is None:
            ends = datetime.fromtimestamp(start + quota.window, UTC)
            wait = max(0.0, (ends - now).total_seconds())
            larger = items > quota.items
            raise QuotaExceeded(
                f"caller '{caller}' asked for {items} items for purpose '{purpose}', "
                + (
                    f"more than its whole quota of {quota.describe()}; ask for fewer"
                    if larger
                    else f"over its quota of {quota.describe()}; the window ends in "
                    f"{math.ceil(wait)} s"
                ),
                reason=Reason.QUOTA_EXCEEDED,
                retry_after=wait,
                caller=caller,
                purpose=purpose,
                limit=quota.items,
                quota_id="items",
                description=quota.describe(),
            )
