"""The log formats' allow-list, exceptions without their messages, the label guards, and the
observability settings."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from vault.config import load_settings
from vault.domain.ports import NO_TELEMETRY, Telemetry
from vault.errors import ConfigurationError
from vault.logs import CallIds, JsonFormatter, TextFormatter, bind_call
from vault.observability import OTHER, Labels, Observability

CANARY = "4111-canary-value-77"


def record(**extra: object) -> logging.LogRecord:
    return logging.getLogger("tests.logs").makeRecord(
        "tests.logs", logging.INFO, __file__, 1, "something happened", (), None, extra=extra
    )


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_a_field_outside_the_allow_list_is_dropped(formatter: logging.Formatter) -> None:
    out = formatter.format(record(value=CANARY, token=CANARY, subject=CANARY, caller="kyc"))
    assert CANARY not in out
    assert "kyc" in out
    assert "something happened" in out


def test_json_is_one_object_per_line_with_the_allowed_fields() -> None:
    out = JsonFormatter().format(record(method="/x.Y/Z", status="OK", items=3, value=CANARY))
    assert "\n" not in out
    entry = json.loads(out)
    assert entry["message"] == "something happened"
    assert (entry["method"], entry["status"], entry["items"]) == ("/x.Y/Z", "OK", 3)
    assert set(entry) == {"time", "level", "logger", "message", "process", "method", "status"} | {
        "items"
    }


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_an_exception_is_its_class_and_stack_never_its_message(
    formatter: logging.Formatter,
) -> None:
    try:
        raise ValueError(f"DETAIL: Key (value)=({CANARY}) already exists")
    except ValueError:
        exc_info = sys.exc_info()
    rec = logging.getLogger("tests.logs").makeRecord(
        "tests.logs", logging.ERROR, __file__, 1, "failed", (), exc_info
    )
    out = formatter.format(rec)
    assert CANARY not in out
    assert "ValueError" in out
    assert "test_an_exception_is_its_class_and_stack" in out  # the stack is kept


def test_lines_of_a_call_carry_its_ids() -> None:
    rec = record()
    bind_call("0123456789abcdef", "f" * 32)
    try:
        CallIds().filter(rec)
    finally:
        bind_call("", "")
    entry = json.loads(JsonFormatter().format(rec))
    assert (entry["request_id"], entry["trace_id"]) == ("0123456789abcdef", "f" * 32)


def test_labels_outside_their_closed_sets_are_other() -> None:
    labels = Labels(frozenset({"kyc"}), frozenset({"payment"}), frozenset({"name"}))
    assert labels.caller("kyc") == "kyc"
    assert labels.purpose(CANARY) == OTHER
    assert labels.category(CANARY) == OTHER
    assert labels.caller(CANARY) == OTHER


def test_observability_off_records_nothing_and_never_fails() -> None:
    off: Telemetry = Observability()  # the adapter of the port (mypy checks it is one)
    assert isinstance(off, Observability)
    with off.span("db.write"):
        off.key_provider_call("local", "wrap", 0.1, "")
        off.key_cache(1, 2, 3)
        off.audit_commit(0.1, 4)
    call = off.begin_call("unary", "pdvault.v1.TokenService", "Tokenize", {})
    fields = call.finish("kyc", "OK")
    assert fields["status"] == "OK"
    assert "trace_id" not in fields
    off.close()


def test_no_telemetry_is_a_telemetry_that_records_nothing() -> None:
    with NO_TELEMETRY.span("db.read"):
        NO_TELEMETRY.key_provider_call("local", "unwrap", 0.0, "")
        NO_TELEMETRY.key_cache(0, 0, 0)
        NO_TELEMETRY.audit_commit(0.0, 0)


def test_a_traceparent_gives_the_trace_id_when_tracing_is_off() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    call = Observability().begin_call(
        "unary", "s", "m", {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    )
    assert call.trace_id == trace_id
    junk = Observability().begin_call("unary", "s", "m", {"traceparent": CANARY})
    assert junk.trace_id == ""


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PDV_METRICS_ADDR": "nope"}, "PDV_METRICS_ADDR='nope': expected HOST:PORT"),
        (
            {"PDV_METRICS_ADDR": "127.0.0.1:50051"},
            "PDV_METRICS_ADDR=127.0.0.1:50051: the metrics port must be another port",
        ),
        ({"PDV_LOG_FORMAT": "yaml"}, "PDV_LOG_FORMAT='yaml': expected one of text, json"),
        ({"PDV_OTLP_ENDPOINT": "collector:4317"}, "PDV_OTLP_ENDPOINT='collector:4317': expected"),
    ],
)
def test_observability_settings_are_checked(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(env)
    assert refused.value.message.startswith(says)


def test_observability_settings_default_to_off() -> None:
    s = load_settings({})
    assert (s.metrics_addr, s.otlp_endpoint, s.log_format) == ("", "", "text")
    on = load_settings(
        {
            "PDV_METRICS_ADDR": "0.0.0.0:9464",
            "PDV_OTLP_ENDPOINT": "http://otel:4317",
            "PDV_LOG_FORMAT": "json",
        }
    )
    assert (on.metrics_addr, on.otlp_endpoint, on.log_format) == (
        "0.0.0.0:9464",
        "http://otel:4317",
        "json",
    )
