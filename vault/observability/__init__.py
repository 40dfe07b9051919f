"""Metrics and traces: the `Telemetry` port's adapter, and what the transport records per call.

`Observability` is one process's: it holds the Prometheus families when `PDV_METRICS_ADDR` is
set (`vault.observability.metrics`) and the tracer when `PDV_OTLP_ENDPOINT` is
(`vault.observability.tracing`); with neither it records nothing and imports neither library.
The adapters (key provider, cache, database, audit log) see it as `Telemetry`; the transport
opens a `CallObservation` per call and closes it with what the call's servicer noted
(`CallFacts`). Label values come from closed sets only (`Labels`).
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from vault.observability.metrics import Families
    from vault.observability.tracing import Tracing

__all__ = ["OTHER", "CallFacts", "CallObservation", "Labels", "Observability"]


OTHER = "other"  # the label of a name outside its closed set
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


@dataclass(frozen=True)
class Labels:
    """The closed sets label values come from: the policy's callers, purposes, categories.
    A name outside its set (a purpose the policy does not know, sent by a caller) is `other`."""

    callers: frozenset[str] = frozenset()
    purposes: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()

    def caller(self, name: str) -> str:
        return name if name in self.callers else OTHER

    def purpose(self, name: str) -> str:
        return name if name in self.purposes else OTHER

    def category(self, name: str) -> str:
        return name if name in self.categories else OTHER


@dataclass
class CallFacts:
    """What a servicer notes about its call, for the access log and the metrics: the purpose
    it was asked for, how many items it carried, and per item what became of it."""

    purpose: str = ""
    items: int = 0
    tokenized: Counter[str] = field(default_factory=Counter)  # category -> values
    detokenized: Counter[str] = field(default_factory=Counter)  # outcome -> tokens
    bytes_in: int = 0
    bytes_out: int = 0


class CallObservation:
    """One call, from its start to its status: its ids, its span, its metrics."""

    def __init__(
        self,
        owner: Observability,
        grpc_type: str,
        service: str,
        method: str,
        metadata: Mapping[str, str],
    ) -> None:
        self._owner = owner
        self._labels = (grpc_type, service, method)
        self.method = f"/{service}/{method}"
        self.request_id = secrets.token_hex(8)
        self.facts = CallFacts()
        self._started = time.perf_counter()
        # The context the call's work runs in (copied per job for the thread pool): its span
        # is current there, and the log lines of the call carry its ids (vault.logs).
        self.context = contextvars.copy_context()
        self._span: Span | None = None
        tracing = owner.tracing
        if tracing is not None:
            self._span = tracing.start_call(
                self.method,
                metadata,
                {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
            )
            self.context.run(tracing.activate, self._span)
            span_context = self._span.get_span_context()
            self.trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else ""
        else:
            found = _TRACEPARENT.match(metadata.get("traceparent", ""))
            self.trace_id = found.group(1) if found else ""
        if owner.families is not None:
            owner.families.started.labels(*self._labels).inc()

    def finish(self, caller: str, code: str, error: BaseException | None = None) -> dict[str, Any]:
        """End the call with status `code` (OK, INVALID_ARGUMENT ...): its metrics and its
        span. Returns the fields of its access log line."""
        seconds = time.perf_counter() - self._started
        facts, labels = self.facts, self._owner.labels
        purpose = labels.purpose(facts.purpose) if facts.purpose else ""
        m = self._owner.families
        if m is not None:
            m.handled.labels(*self._labels, code).inc()
            m.handling.labels(*self._labels).observe(seconds)
            who = labels.caller(caller)
            for category, n in facts.tokenized.items():
                m.tokenized.labels(who, labels.category(category)).inc(n)
            for outcome, n in facts.detokenized.items():
                m.detokenized.labels(who, purpose or OTHER, outcome).inc(n)
            if facts.bytes_in:
                m.document_bytes.labels("in").inc(facts.bytes_in)
            if facts.bytes_out:
                m.document_bytes.labels("out").inc(facts.bytes_out)
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415  (tracing on)

            self._span.set_attribute("rpc.grpc.status_code", code)
            if error is not None:
                self._span.set_attribute("exception.type", type(error).__name__)
            if code != "OK":
                self._span.set_status(Status(StatusCode.ERROR))
            self._span.end()
        fields: dict[str, Any] = {
            "method": self.method,
            "caller": caller,
            "status": code,
            "duration_ms": round(seconds * 1000, 3),
            "items": facts.items,
            "request_id": self.request_id,
        }
        if purpose:
            fields["purpose"] = purpose
        if self.trace_id:
            fields["trace_id"] = self.trace_id
        if facts.bytes_in:
            fields["bytes_in"] = facts.bytes_in
        if facts.bytes_out:
            fields["bytes_out"] = facts.bytes_out
        return fields


class Observability:
    """One process's metrics and tracer; the `Telemetry` port of the adapters."""

    def __init__(
        self,
        labels: Labels | None = None,
        *,
        metrics: bool = False,
        tracing: Tracing | None = None,
    ) -> None:
        self.labels = labels or Labels()
        self.families: Families | None = None
        if metrics:
            # Imported only now: PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is.
            from vault.observability.metrics import families  # noqa: PLC0415

            self.families = families()
        self.tracing = tracing

    def __repr__(self) -> str:
        return (
            f"Observability(metrics={self.families is not None}, "
            f"tracing={self.tracing is not None})"
        )

    def begin_call(
        self, grpc_type: str, service: str, method: str, metadata: Mapping[str, str]
    ) -> CallObservation:
        return CallObservation(self, grpc_type, service, method, metadata)

    def close(self) -> None:
        """Export the spans still pending."""
        if self.tracing is not None:
            self.tracing.shutdown()

    # -- Telemetry (vault.domain.ports) ----------------------------------------------------------

    def span(self, name: str) -> AbstractContextManager[None]:
        if self.tracing is None:
            return contextlib.nullcontext()
        return self.tracing.child(name)

    def key_provider_call(self, provider: str, operation: str, seconds: float, error: str) -> None:
        m = self.families
        if m is None:
            return
        m.key_calls.labels(provider, operation).inc()
        m.key_seconds.labels(provider, operation).observe(seconds)
        if error:
            m.key_errors.labels(provider, operation, error).inc()

    def key_cache(self, hits: int, misses: int, entries: int) -> None:
        m = self.families
        if m is None:
            return
        if hits:
            m.cache_hits.inc(hits)
        if misses:
            m.cache_misses.inc(misses)
        m.cache_entries.set(entries)

    def audit_commit(self, seconds: float, entries: int) -> None:
        m = self.families
        if m is None:
            return
        m.audit_seconds.observe(seconds)
        m.audit_entries.observe(entries)
