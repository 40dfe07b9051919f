"""Metrics, logs and traces (issue 13 §4), through real servers: what each says, and that a
canary value, token, subject and purpose appear in none of them."""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pdvault.v1 import common_pb2, token_service_pb2, token_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from pdvault_client import Client, Field, InvalidArgumentError, PermissionDeniedError
from tests.conftest import free_port, pdv_env, running, spawn_serve
from tests.samples import jpeg, noisy_image
from vault.app import build_app, observability
from vault.config import Settings
from vault.domain.policy_file import load_policy
from vault.logs import ACCESS_LOGGER, CallIds, JsonFormatter, TextFormatter
from vault.observability.metrics import exposition
from vault.observability.tracing import Tracing

pytestmark = pytest.mark.slow

# Distinctive enough that a hit anywhere is a leak, never a coincidence.
CANARY_VALUE = "Qzv Canaryvalue Xw"
CANARY_SUBJECT = "user-canarysubj-77q"
CANARY_PURPOSE = "canarypurpose_k9"
TOKENIZE = ("unary", "pdvault.v1.TokenService", "Tokenize")
DETOKENIZE = ("unary", "pdvault.v1.TokenService", "Detokenize")


@dataclasses.dataclass
class Workload:
    """What the workload sent and got: the secrets that must not show anywhere."""

    token: str

    def canaries(self) -> list[str]:
        return [CANARY_VALUE, CANARY_SUBJECT, CANARY_PURPOSE, self.token]


def run_workload(addr: str, keys: dict[str, str]) -> Workload:
    """Tokenize the canary, detokenize it, and have a detokenize refused for a purpose the
    policy does not know."""
    with Client(addr, keys["kyc"]) as kyc, Client(addr, keys["payment"]) as payment:
        [tok] = kyc.tokenize(CANARY_SUBJECT, [Field("name", CANARY_VALUE)])
        [got] = payment.detokenize([tok.token], "payment", justification="order-1")
        assert got.value == CANARY_VALUE
        with pytest.raises((InvalidArgumentError, PermissionDeniedError)):
            payment.detokenize([tok.token], CANARY_PURPOSE)
    return Workload(tok.token)


def scrape(addr: str) -> str:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as response:
        assert response.status == 200
        text: str = response.read().decode("utf-8")
        return text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """sample name and sorted labels -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def grpc_labels(kind: tuple[str, str, str], **more: str) -> dict[str, str]:
    return {"grpc_type": kind[0], "grpc_service": kind[1], "grpc_method": kind[2], **more}


def dev_keys(cwd: Path) -> dict[str, str]:
    keys: dict[str, str] = json.loads((cwd / ".pdvault" / "dev-credentials.json").read_text())
    return keys


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


# Label values: only names from closed sets.
POLICY = load_policy(None)
CLOSED = {
    "caller": {*POLICY.callers, "other"},
    "purpose": {*POLICY.purposes, "other"},
    "category": {*POLICY.categories, "other"},
    "grpc_type": {"unary", "client_stream", "server_stream"},
    "grpc_code": {c.name for c in grpc.StatusCode},
    "direction": {"in", "out"},
    "provider": {"local", "vault"},
}


def check_labels_closed(text: str) -> None:
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(("grpc_server", "pdvault_")):
            continue
        for s in family.samples:
            for label, v in s.labels.items():
                if label in CLOSED:
                    assert v in CLOSED[label], (s.name, label, v)
                elif label == "grpc_service":
                    assert v.startswith("pdvault.v1."), v
                elif label in ("grpc_method", "operation", "outcome", "error"):
                    assert v.replace("_", "").isalnum(), (s.name, label, v)
                else:
                    assert label in ("le", "quantile"), (s.name, label)


def test_metrics_and_json_logs_of_one_process(tmp_path: Path) -> None:
    """`pdv serve` with PDV_METRICS_ADDR and PDV_LOG_FORMAT=json: the families and their
    labels after a workload, one JSON object per log line, an access line per call."""
    metrics = f"127.0.0.1:{free_port()}"
    proc, addr, log = spawn_serve(
        tmp_path, PDV_PROCESSES="1", PDV_METRICS_ADDR=metrics, PDV_LOG_FORMAT="json"
    )
    try:
        work = run_workload(addr, dev_keys(tmp_path))
        text = scrape(metrics)
    finally:
        stop(proc)
    found = samples(text)
    assert value(found, "grpc_server_started_total", **grpc_labels(TOKENIZE)) == 1
    assert value(found, "grpc_server_handled_total", **grpc_labels(TOKENIZE, grpc_code="OK")) == 1
    assert value(found, "grpc_server_handled_total", **grpc_labels(DETOKENIZE, grpc_code="OK")) == 1
    refused = [
        k for k in found if k[0] == "grpc_server_handled_total" and ("grpc_code", "OK") not in k[1]
    ]
    assert refused, "the refused Detokenize is counted with its code"
    assert value(found, "grpc_server_handling_seconds_count", **grpc_labels(TOKENIZE)) == 1
    assert value(found, "pdvault_tokenized_items_total", caller="kyc", category="name") == 1
    assert (
        value(
            found,
            "pdvault_detokenized_items_total",
            caller="payment",
            purpose="payment",
            outcome="ok",
        )
        == 1
    )
    assert value(found, "pdvault_key_provider_calls_total", provider="local", operation="wrap") >= 1
    assert (
        value(found, "pdvault_key_provider_seconds_count", provider="local", operation="wrap") >= 1
    )
    assert value(found, "pdvault_key_cache_hits_total") >= 1  # the detokenize after the wrap
    assert value(found, "pdvault_key_cache_entries") >= 1
    assert value(found, "pdvault_audit_commit_entries_count") >= 1
    assert value(found, "pdvault_audit_commit_seconds_count") >= 1
    check_labels_closed(text)
    for canary in work.canaries():
        assert canary not in text

    lines = log.read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    # Every line pdvault logs is JSON (the one other line is the CLI's note on stderr).
    assert len(entries) == len([ln for ln in lines if not ln.startswith("pdv: ")])
    assert any("listening" in e["message"] for e in entries)
    access = [e for e in entries if e["logger"] == ACCESS_LOGGER]
    by_method = {(e["method"], e["status"]): e for e in access}
    tok = by_method["/pdvault.v1.TokenService/Tokenize", "OK"]
    assert tok["caller"] == "kyc"
    assert tok["items"] == 1
    assert tok["duration_ms"] >= 0
    assert len(tok["request_id"]) == 16
    assert "purpose" not in tok
    detok = by_method["/pdvault.v1.TokenService/Detokenize", "OK"]
    assert (detok["caller"], detok["purpose"], detok["items"]) == ("payment", "payment", 1)
    [other] = [e for e in access if e["method"].endswith("Detokenize") and e["status"] != "OK"]
    assert other["purpose"] == "other"  # a purpose outside the policy is never written
    assert len({e["request_id"] for e in access}) == len(access)
    allowed = {"time", "level", "logger", "message", "process", "exc_type", "exc_stack"}
    allowed |= {"request_id", "trace_id", "method", "caller", "purpose", "status"}
    allowed |= {"duration_ms", "items", "bytes_in", "bytes_out"}
    assert all(set(e) <= allowed for e in entries)
    whole = log.read_text()
    for canary in work.canaries():
        assert canary not in whole


def test_metrics_of_two_processes_are_summed(tmp_path: Path) -> None:
    """With PDV_PROCESSES=2 the parent serves the metrics of both children (prometheus_client's
    multiprocess mode): the counts of calls served by either add up."""
    metrics = f"127.0.0.1:{free_port()}"
    proc, addr, log = spawn_serve(
        tmp_path, PDV_PROCESSES="2", PDV_METRICS_ADDR=metrics, PDV_LOG_FORMAT="json"
    )
    keys = dev_keys(tmp_path)
    calls = 0
    try:
        pids: set[int] = set()
        # Each call on a new connection: the kernel spreads connections over the two (a bounded
        # loop; the chance that 60 connections all land on one process is 2**-59).
        while len(pids) < 2 and calls < 60:
            with Client(addr, keys["kyc"]) as kyc:
                kyc.tokenize(f"user-{calls}", [Field("name", "Ann Example")])
            calls += 1
            for line in log.read_text().splitlines():
                if line.startswith("{") and '"pdvault.access"' in line:
                    pids.add(json.loads(line)["process"])
        assert len(pids) == 2, "both processes served calls"
        text = scrape(metrics)
    finally:
        stop(proc)
    found = samples(text)
    assert value(found, "grpc_server_started_total", **grpc_labels(TOKENIZE)) == calls
    assert (
        value(found, "grpc_server_handled_total", **grpc_labels(TOKENIZE, grpc_code="OK")) == calls
    )
    assert value(found, "pdvault_tokenized_items_total", caller="kyc", category="name") == calls
    assert value(found, "pdvault_key_cache_entries") == calls  # livesum over both processes
    check_labels_closed(text)


class Collector:
    """An OTLP/gRPC trace collector that keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.unary_unary_rpc_method_handler(
            self._export,
            request_deserializer=trace_service_pb2.ExportTraceServiceRequest.FromString,
            response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
        )
        self.server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}
                )
            ]
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, _context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def span_names(self) -> list[str]:
        return [
            span.name
            for r in self.requests
            for rs in r.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    try:
        yield c
    finally:
        c.server.stop(None)


def test_traces_over_otlp_and_text_logs(tmp_path: Path, collector: Collector) -> None:
    """`pdv serve` with PDV_OTLP_ENDPOINT sends its spans to the collector (the last when it
    stops); text logs carry the access line's fields; no canary in either."""
    proc, addr, log = spawn_serve(
        tmp_path,
        PDV_PROCESSES="1",
        PDV_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
        PDV_LOG_FORMAT="text",
    )
    try:
        work = run_workload(addr, dev_keys(tmp_path))
    finally:
        stop(proc)
    names = collector.span_names()
    assert names.count("/pdvault.v1.TokenService/Tokenize") == 1
    assert names.count("/pdvault.v1.TokenService/Detokenize") == 2
    assert {"key_provider.wrap", "audit.commit", "db.write"} <= set(names)
    exported = b"".join(r.SerializeToString() for r in collector.requests)
    for canary in work.canaries():
        assert canary.encode() not in exported
    text = log.read_text()
    [tok] = [ln for ln in text.splitlines() if "method=/pdvault.v1.TokenService/Tokenize" in ln]
    assert " INFO pdvault.access: call " in tok
    fields = dict(part.split("=", 1) for part in tok.split(": call ", 1)[1].split())
    assert fields["caller"] == "kyc"
    assert (fields["status"], fields["items"]) == ("OK", "1")
    assert len(fields["request_id"]) == 16
    assert len(fields["trace_id"]) == 32
    assert float(fields["duration_ms"]) >= 0
    for canary in work.canaries():
        assert canary not in text


def span_text(span: ReadableSpan) -> str:
    """Everything a span carries, as text."""
    parts = [span.name, str(dict(span.attributes or {})), str(span.status.description)]
    for event in span.events:
        parts += [event.name, str(dict(event.attributes or {}))]
    parts.append(str(dict(span.resource.attributes)))
    return "\n".join(parts)


def test_spans_have_children_and_no_canary(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In memory: a server span per call, with children for the database, the key provider and
    the audit commit; ids of the call on every log line of it; nothing of the request in any
    attribute or event."""
    settings = dataclasses.replace(settings, cache_max_entries=0, metrics_addr="127.0.0.1:0")
    exporter = InMemorySpanExporter()
    observed = observability(settings, load_policy(settings.policy_file))
    observed.tracing = Tracing(exporter, batch=False)
    app = build_app(settings, observed=observed)
    inside = logging.getLogger("tests.inside")
    tokenize = app.tokens.tokenize

    def logged(*args: Any, **kwargs: Any) -> Any:
        inside.info("inside the call")  # a line logged below the transport, on the pool
        return tokenize(*args, **kwargs)

    monkeypatch.setattr(app.tokens, "tokenize", logged)
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(CallIds())
    with running(app, close=True) as srv:
        work = run_workload(srv.addr, srv.credentials())
    spans = exporter.get_finished_spans()
    servers = {s.name: s for s in spans if s.kind == SpanKind.SERVER}
    call = servers["/pdvault.v1.TokenService/Tokenize"]
    assert call.parent is None
    assert dict(call.attributes or {})["rpc.grpc.status_code"] == "OK"
    assert call.context is not None
    trace_id = format(call.context.trace_id, "032x")

    def children(parent: ReadableSpan) -> set[str]:
        assert parent.context is not None
        return {
            s.name
            for s in spans
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        }

    # Tokenize writes its audit entries in the transaction of its values (db.write).
    assert {"key_provider.wrap", "db.write"} <= children(call)
    detokenizes = [s for s in spans if s.name == "/pdvault.v1.TokenService/Detokenize"]
    assert any(
        {"key_provider.unwrap", "audit.commit", "db.read"} <= children(s) for s in detokenizes
    )
    assert all(
        children(s) <= {"db.read", "db.write", "key_provider.unwrap", "audit.commit"}
        for s in detokenizes
    )
    for span in spans:
        text = span_text(span)
        for canary in work.canaries():
            assert canary not in text, (span.name, canary)

    [line] = [r for r in caplog.records if r.getMessage() == "inside the call"]
    assert getattr(line, "trace_id", "") == trace_id
    [access] = [
        r
        for r in caplog.records
        if r.name == ACCESS_LOGGER and "Tokenize" in str(getattr(r, "method", ""))
    ]
    assert getattr(access, "trace_id", "") == trace_id
    assert getattr(access, "request_id", "") == getattr(line, "request_id", None)
    for record in caplog.records:
        for fmt in (JsonFormatter(), TextFormatter()):
            out = fmt.format(record)
            for canary in work.canaries():
                assert canary not in out


def test_observability_settings_through_pdv_serve(tmp_path: Path) -> None:
    """Each new variable, wrong, stops `pdv serve` with one line and exit status 2; a metrics
    port already taken too."""
    cases = {
        "PDV_LOG_FORMAT": ("yaml", "pdv serve: PDV_LOG_FORMAT='yaml': expected one of text, json"),
        "PDV_METRICS_ADDR": ("nope", "pdv serve: PDV_METRICS_ADDR='nope': expected HOST:PORT"),
        "PDV_OTLP_ENDPOINT": ("otel:4317", "pdv serve: PDV_OTLP_ENDPOINT='otel:4317': expected"),
    }
    for name, (wrong, says) in cases.items():
        out = pdv_serve(tmp_path, **{name: wrong, "PDV_PROCESSES": "1"})
        assert out.returncode == 2, out.stderr
        errors = [ln for ln in out.stderr.splitlines() if ln.startswith("pdv serve:")]
        assert errors == [errors[0]]
        assert errors[0].startswith(says), out.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for processes in ("1", "2"):
            out = pdv_serve(
                tmp_path,
                PDV_ADDR=f"127.0.0.1:{free_port()}",
                PDV_METRICS_ADDR=f"127.0.0.1:{port}",
                PDV_PROCESSES=processes,
            )
            assert out.returncode == 2, out.stderr
            assert "Traceback" not in out.stderr
            assert f"pdv serve: cannot listen on PDV_METRICS_ADDR=127.0.0.1:{port}" in out.stderr


def pdv_serve(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pdvault_client.cli", "serve"],
        cwd=cwd,
        env=pdv_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_document_bytes_in_and_out(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Uploads and downloads count their bytes (this process's families, by difference) and
    the access lines of the two streams say how many; the streams' types label them."""
    settings = dataclasses.replace(settings, metrics_addr="127.0.0.1:0")
    app = build_app(settings, observed=observability(settings, load_policy(settings.policy_file)))
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg(noisy_image()))
    size = photo.stat().st_size
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    before = samples(exposition())
    with running(app, close=True) as srv, srv.client("kyc", timeout=30) as kyc:
        doc = kyc.documents().upload(CANARY_SUBJECT, "passport", photo)
        kyc.documents().download(doc.id, "identity_verification", tmp_path / "out.jpg")
    after = samples(exposition())

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("pdvault_document_bytes_total", direction="in") == size
    assert grew("pdvault_document_bytes_total", direction="out") == size
    upload = ("client_stream", "pdvault.v1.DocumentService", "UploadDocument")
    get = ("server_stream", "pdvault.v1.DocumentService", "GetDocument")
    assert grew("grpc_server_handled_total", **grpc_labels(upload, grpc_code="OK")) == 1
    assert grew("grpc_server_handled_total", **grpc_labels(get, grpc_code="OK")) == 1
    lines = {getattr(r, "method", ""): r for r in caplog.records if r.name == ACCESS_LOGGER}
    assert getattr(lines["/pdvault.v1.DocumentService/UploadDocument"], "bytes_in", 0) == size
    got = lines["/pdvault.v1.DocumentService/GetDocument"]
    assert getattr(got, "bytes_out", 0) == size
    assert getattr(got, "purpose", "") == "identity_verification"
    assert CANARY_SUBJECT not in exposition()


def test_a_callers_traceparent_is_followed_and_its_tracestate_dropped(settings: Settings) -> None:
    """The server span joins the caller's trace (W3C traceparent), and nothing else the caller
    sends in its metadata (tracestate, its API key) reaches a span."""
    exporter = InMemorySpanExporter()
    observed = observability(settings, load_policy(settings.policy_file))
    observed.tracing = Tracing(exporter, batch=False)
    app = build_app(settings, observed=observed)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with running(app, close=True) as srv, srv.channel() as channel:
        key = srv.credentials()["kyc"]
        stub = token_service_pb2_grpc.TokenServiceStub(channel)
        stub.Tokenize(
            token_service_pb2.TokenizeRequest(
                subject=CANARY_SUBJECT,
                fields=[
                    token_service_pb2.TokenizeField(
                        category="name", value=common_pb2.Value(text=CANARY_VALUE)
                    )
                ],
            ),
            metadata=(
                ("authorization", f"Bearer {key}"),
                ("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),
                ("tracestate", f"vendor={CANARY_PURPOSE}"),
            ),
            timeout=10,
        )
    spans = exporter.get_finished_spans()
    [call] = [s for s in spans if s.kind == SpanKind.SERVER]
    assert call.context is not None
    assert format(call.context.trace_id, "032x") == trace_id
    assert call.parent is not None
    assert call.parent.span_id == 0x00F067AA0BA902B7
    for span in spans:
        assert span.context is not None
        assert CANARY_PURPOSE not in str(span.context.trace_state)
        assert key not in span_text(span)
        assert CANARY_VALUE not in span_text(span)
