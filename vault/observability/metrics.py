"""Prometheus metrics: the families pdvault exports and the plaintext HTTP endpoint serving them
(`PDV_METRICS_ADDR`).

One set of families per process, on a registry of its own (never prometheus_client's global
one). With several serving processes (`PDV_PROCESSES` > 1) prometheus_client's multiprocess mode
is on: the parent makes an empty directory and names it in `PROMETHEUS_MULTIPROC_DIR` before it
spawns the children, each child writes its samples to its own files there, and the parent alone
serves the endpoint, summing every child's files at each scrape (`multiprocess_mode="livesum"`
for the one gauge: the entries of the caches of the processes alive). The variable must be set
before prometheus_client is first imported in a process, which is why nothing imports this
module until metrics are on.

Every label value comes from a closed set: method names, status codes, the policy's callers,
purposes and categories (anything else is `other`), providers and operations, exception class
names. No token, subject, value or request field is ever a label.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

from vault.errors import ConfigurationError

__all__ = [
    "MULTIPROCESS_VARIABLE",
    "Families",
    "MetricsEndpoint",
    "exposition",
    "families",
    "multiprocess_registry",
]

MULTIPROCESS_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"
_GRPC = ("grpc_type", "grpc_service", "grpc_method")
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Families:
    """pdvault's metric families (see the README's Observability section for each)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        # The names and labels of go-grpc-prometheus (and py-grpc-prometheus), so dashboards
        # made for them work; grpc_code is the status code's name, OK, INVALID_ARGUMENT ...
        self.started = Counter(
            "grpc_server_started", "RPCs started on the server.", _GRPC, registry=r
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status.",
            (*_GRPC, "grpc_code"),
            registry=r,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its end on the server.",
            _GRPC,
            registry=r,
        )
        self.tokenized = Counter(
            "pdvault_tokenized_items",
            "Values tokenized, by caller and category.",
            ("caller", "category"),
            registry=r,
        )
        self.detokenized = Counter(
            "pdvault_detokenized_items",
            "Tokens asked to be detokenized, by caller, purpose and outcome (ok, masked, or the "
            "item's error reason).",
            ("caller", "purpose", "outcome"),
            registry=r,
        )
        self.key_calls = Counter(
            "pdvault_key_provider_calls",
            "Calls to the key provider (one per batch), by provider and operation.",
            ("provider", "operation"),
            registry=r,
        )
        self.key_errors = Counter(
            "pdvault_key_provider_errors",
            "Calls to the key provider that failed, by the error's class.",
            ("provider", "operation", "error"),
            registry=r,
        )
        self.key_seconds = Histogram(
            "pdvault_key_provider_seconds",
            "Duration of calls to the key provider.",
            ("provider", "operation"),
            registry=r,
        )
        self.cache_hits = Counter(
            "pdvault_key_cache_hits", "Data-key unwraps the cache answered.", registry=r
        )
        self.cache_misses = Counter(
            "pdvault_key_cache_misses",
            "Data-key unwraps the cache could not answer (the key provider was asked).",
            registry=r,
        )
        self.cache_entries = Gauge(
            "pdvault_key_cache_entries",
            "Data keys held in the caches of the serving processes.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.audit_seconds = Histogram(
            "pdvault_audit_commit_seconds",
            "Duration of one commit of audit entries (a group commit's batch).",
            registry=r,
        )
        self.audit_entries = Histogram(
            "pdvault_audit_commit_entries",
            "Audit entries committed together in one commit (the group commit's batch size).",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.document_bytes = Counter(
            "pdvault_document_bytes",
            "Document content received (in) and sent (out), in bytes.",
            ("direction",),
            registry=r,
        )


class _ThisProcess:
    """This process's registry and families, made on first use."""

    lock = threading.Lock()
    made: tuple[CollectorRegistry, Families] | None = None

    @classmethod
    def get(cls) -> tuple[CollectorRegistry, Families]:
        with cls.lock:
            if cls.made is None:
                registry = CollectorRegistry()
                cls.made = registry, Families(registry)
            return cls.made


def families() -> Families:
    """This process's families, made on first use."""
    return _ThisProcess.get()[1]


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """A registry summing the samples every process wrote to `directory`."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry


def exposition(registry: CollectorRegistry | None = None) -> str:
    """The text a scrape gets: `registry`'s, or this process's families'."""
    return generate_latest(registry or _ThisProcess.get()[0]).decode("utf-8")


class MetricsEndpoint:
    """The plaintext HTTP endpoint (`GET /metrics`) on `addr`, on a thread of its own, owned by
    the process that serves the API (or by the parent of several)."""

    def __init__(self, addr: str, registry: CollectorRegistry | None = None) -> None:
        host, _, port = addr.rpartition(":")
        registry = registry or _ThisProcess.get()[0]
        self.addr = addr
        try:
            self._server, self._thread = start_http_server(
                int(port), addr=host.strip("[]"), registry=registry
            )
        except OSError:
            raise ConfigurationError(
                f"cannot listen on PDV_METRICS_ADDR={addr}: is the address in use?"
            ) from None
        self.port: int = self._server.server_port

    def __repr__(self) -> str:
        return f"MetricsEndpoint({self.addr}, port={self.port})"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
