"""The deadline of the request being served, so that adapters (the key provider's retries)
give up in time for the caller to hear UNAVAILABLE rather than DEADLINE_EXCEEDED.

The transport sets it from the gRPC deadline; code running outside a request sees None.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

# Stop working this long before the caller's deadline, so the answer still reaches it:
# a tenth of the time, at least 50 ms.
MARGIN_SHARE = 0.1
MIN_MARGIN = 0.05

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "pdvault_deadline", default=None
)


# grpc-python reports "no deadline" as an enormous number of seconds, not None.
NO_DEADLINE_ABOVE = 10**6


@contextmanager
def deadline_in(seconds: float | None) -> Iterator[None]:
    if seconds is not None and seconds > NO_DEADLINE_ABOVE:
        seconds = None
    margin = 0.0 if seconds is None else max(MIN_MARGIN, seconds * MARGIN_SHARE)
    token = _deadline.set(None if seconds is None else time.monotonic() + seconds - margin)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the current request's deadline, or None without one."""
    at = _deadline.get()
    return None if at is None else at - time.monotonic()
