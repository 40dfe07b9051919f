"""What one request carries, passed explicitly from the transport through the use cases down
to the adapters: who calls, until when, and the ids that tie its log lines together.

Nothing about a request travels in a context variable: a `RequestContext` is in the signature
of every use case and of the key provider's methods. Work done outside a request (start-up,
the shred log's re-application, a sweep) runs under `RequestContext.system()`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from vault.domain.types import CallerName

__all__ = ["MARGIN_SHARE", "MIN_MARGIN", "NO_DEADLINE_ABOVE", "RequestContext"]


# Stop working this long before the caller's deadline, so that the answer still reaches it:
# a tenth of the time, at least 50 ms.
MARGIN_SHARE = 0.1
MIN_MARGIN = 0.05
# grpc-python reports "no deadline" as an enormous number of seconds, not None.
NO_DEADLINE_ABOVE = 10**6


@dataclass(frozen=True, slots=True)
class RequestContext:
    caller: CallerName
    # When adapters must give up (time.monotonic()), margin included; None: no deadline.
    deadline: float | None = None
    # This call's id in the logs (never the client's request_id, which is part of the API).
    call_id: str = field(default_factory=lambda: secrets.token_hex(8))
    # The W3C trace id, when a trace is on.
    trace_id: str = ""
    # The approved dual-control request this work carries out (vault.domain.approvals); set
    # only by the approval use case, never from anything a caller sends.
    approval: str = ""

    @classmethod
    def for_call(
        cls, caller: CallerName, seconds: float | None, call_id: str = "", trace_id: str = ""
    ) -> RequestContext:
        """The context of a call with `seconds` left (None or huge: no deadline)."""
        deadline = None
        if seconds is not None and seconds <= NO_DEADLINE_ABOVE:
            margin = max(MIN_MARGIN, seconds * MARGIN_SHARE)
            deadline = time.monotonic() + seconds - margin
        return cls(caller, deadline, call_id or secrets.token_hex(8), trace_id)

    @classmethod
    def system(cls, what: str = "system") -> RequestContext:
        """Work that no caller waits for: start-up, re-applying the shred log, sweeps."""
        return cls(CallerName(what))

    def remaining(self) -> float | None:
        """Seconds left before the deadline (margin included), or None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()
