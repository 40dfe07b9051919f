"""OpenTelemetry traces: a server span per call, and children for the database, the key
provider and the audit commit, exported over OTLP (`PDV_OTLP_ENDPOINT`).

What a span may carry: its name (fixed by the code), the method, the status code, the class of
an exception. Never a request field, a token, a value, a subject, or an exception's message
(a driver's message can quote a row): `record_exception` is never called, and errors are
recorded as `exception.type` alone. Spans are made only inside a call: work outside one (a
group commit's batch, run in an empty context by whichever request leads it; readiness checks,
sweeps) makes none, so there are no orphan traces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["EXPORT_SECONDS", "FLUSH_SECONDS", "Tracing"]


_PROPAGATOR = TraceContextTextMapPropagator()  # W3C traceparent only: no baggage is read
# How long one export may take, retries included (the exporter's default is 10 s), and how
# long the spans still pending may take to leave at shutdown: a collector that does not answer
# must not eat the pod's termination grace.
EXPORT_SECONDS = 5.0
FLUSH_SECONDS = 3.0


class Tracing:
    """One process's tracer: its own provider (never the global one), sampling as the standard
    OTEL_TRACES_SAMPLER variables say (parent-based, always on by default)."""

    def __init__(self, exporter: SpanExporter, *, batch: bool = True) -> None:
        self._provider = TracerProvider(resource=Resource.create({"service.name": "pdvault"}))
        self._exporter = exporter
        self._processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self._provider.add_span_processor(self._processor)
        self._tracer = self._provider.get_tracer("vault")

    def __repr__(self) -> str:
        return "Tracing()"

    @classmethod
    def otlp(cls, endpoint: str) -> Tracing:
        """Export to an OTLP/gRPC collector (the exporter reads the standard
        OTEL_EXPORTER_OTLP_* variables for headers and certificates)."""
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,  # (its gRPC machinery loads only when traces are sent)
        )

        return cls(OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_SECONDS))

    def start_call(self, name: str, carrier: Mapping[str, str], attributes: dict[str, str]) -> Span:
        """The server span of a call, a child of the caller's trace when it sent a W3C
        `traceparent`."""
        parent = _PROPAGATOR.extract(carrier=dict(carrier))
        return self._tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )

    @staticmethod
    def activate(span: Span) -> None:
        """Make `span` current in the running context (a call's own context, discarded with
        the call, so it needs no detaching)."""
        otel_context.attach(trace.set_span_in_context(span))

    @contextlib.contextmanager
    def child(self, name: str) -> Iterator[None]:
        """A child of the current span, or nothing outside a call."""
        if not trace.get_current_span().is_recording():
            yield
            return
        with self._tracer.start_as_current_span(
            name, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield
            except BaseException as exc:
                failed(span, exc)
                raise

    def shutdown(self) -> None:
        """Export what is pending (for at most FLUSH_SECONDS), then stop."""
        self._processor.force_flush(timeout_millis=int(FLUSH_SECONDS * 1000))
        self._exporter.shutdown()  # ends an export still retrying
        self._provider.shutdown()


def failed(span: Span, exc: BaseException) -> None:
    """Record an error on `span`: its class, never its message."""
    span.set_status(Status(StatusCode.ERROR))
    span.set_attribute("exception.type", type(exc).__name__)
