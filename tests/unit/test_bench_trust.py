"""bench.trust's component measurements, the group commit's batches read from pdvault's metrics,
and its verdict, on SQLite and PostgreSQL applications (tiny rounds: the figures are not looked
at, only that each piece runs, is named and counts what it says)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text

import bench.trust
from bench.document_transfers import settings
from bench.suite import Options as SuiteOptions
from bench.suite import Runner, Target
from bench.trust import (
    BUDGET,
    PER,
    Backends,
    Cost,
    TrustRunner,
    audit_batches,
    components,
    per_call,
    render,
    scrape,
    verdicts,
)
from bench.workloads import Dataset, Workload
from vault.app import build_app
from vault.observability.metrics import Families, MetricsEndpoint


def test_every_component_is_measured_on_a_real_application(
    tmp_path: Path, database_url: str
) -> None:
    app = build_app(settings(tmp_path, database_url))
    try:
        parts = components(app, rounds=1, seconds=0.01, log_size=64)
    finally:
        app.close()
    raw = parts.pop("_audit_row_raw")
    assert raw.wall_us > 0
    assert set(parts) == set(PER)
    assert all(min(c.wall_us, c.cpu_us, c.db_cpu_us) >= 0 for c in parts.values())
    if database_url.startswith("sqlite"):  # SQLite works in the calling thread: no backend
        assert all(c.db_cpu_us == 0 for c in [raw, *parts.values()])


@pytest.mark.postgres
def test_the_postgresql_backends_cpu_is_counted(
    tmp_path: Path, database_url_postgresql: str
) -> None:
    app = build_app(settings(tmp_path, database_url_postgresql))
    try:
        with app.database.engine.connect() as conn:
            own = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        backends = Backends(app)
        assert own in backends.pids()

        def busy_backend() -> None:  # the backend works, this thread waits
            with app.database.engine.connect() as conn:
                conn.execute(text("SELECT count(*) FROM generate_series(1, 300000)")).one()

        cost = per_call(busy_backend, rounds=1, seconds=0.0, backends=backends)
    finally:
        app.close()
    assert cost.db_cpu_us > 0
    assert cost.total_us == cost.cpu_us + cost.db_cpu_us


def test_the_group_commits_batches_are_read_from_the_metrics_endpoint() -> None:
    registry = CollectorRegistry()
    m = Families(registry)
    endpoint = MetricsEndpoint("127.0.0.1:0", registry)
    try:
        addr = f"127.0.0.1:{endpoint.port}"
        before = scrape(addr)
        for entries in (3, 1, 2):  # three commits of the group commit, six entries
            m.audit_entries.observe(entries)
        for _ in range(6):  # six calls answered
            m.handled.labels("unary", "pdvault.v1.TokenService", "Detokenize", "OK").inc()
        after = scrape(addr)
    finally:
        endpoint.stop()
    assert after["commits"] - before["commits"] == 3
    assert after["entries"] - before["entries"] == 6
    assert after["requests"] - before["requests"] == 6
    batches = audit_batches("detokenize_1", before, after)
    assert batches["entries_per_commit"] == 2
    assert batches["head_moves_per_request"] == batches["group_commits_per_request"] == 0.5


def test_a_tokenize_moves_the_head_only_in_the_group_commit() -> None:
    """Its values and entries are a job of the group commit: the metrics count its moves."""
    before = {"requests": 0.0, "commits": 0.0, "entries": 0.0}
    after = {"requests": 10.0, "commits": 4.0, "entries": 10.0}
    batches = audit_batches("tokenize_1", before, after)
    assert batches["head_moves_per_request"] == 0.4


def test_the_runner_turns_the_metrics_on_and_reads_them_around_closed_loops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = TrustRunner(SuiteOptions(dbs=("sqlite",), kms="local"))
    try:
        server, pg = runner._server("sqlite")
        assert pg is None
        assert server.env()["PDV_METRICS_ADDR"] == runner.metrics_addr

        scrapes = iter(
            [
                {"requests": 5.0, "commits": 2.0, "entries": 2.0},
                {"requests": 105.0, "commits": 27.0, "entries": 102.0},
            ]
        )
        seen: list[str] = []
        result: Any = object()
        monkeypatch.setattr(bench.trust, "scrape", lambda addr: next(scrapes))
        monkeypatch.setattr(bench.trust, "idle_cpu_per_s", lambda name, s: 0.25)

        def jobs(self: Runner, target: Target, w: Workload, data: Any, mode: str, **kw: Any) -> Any:
            seen.append(mode)
            return result

        monkeypatch.setattr(Runner, "_jobs", jobs)
        target = Target("pdvault", "addr", "key", (), (), db="postgresql", db_process="postgres")
        w = Workload("detokenize_1", "detokenize", 1)
        data = Dataset(subjects=(), tokens=())
        assert runner._jobs(target, w, data, "closed") is result
        assert runner._jobs(target, w, data, "open") is result  # not read around
    finally:
        runner.close()
    assert seen == ["closed", "open"]
    assert runner.audit["detokenize_1"]["head_moves_per_request"] == 0.25
    assert runner.audit["detokenize_1"]["entries_per_commit"] == 4
    assert runner.idle_db_cpu_per_s == {"detokenize_1": 0.25}


def _calls(head_moves: float, db_cpu: float = 0.0, idle: float = 0.0) -> dict[str, Any]:
    return {
        "requests_per_s": 500.0,
        "server_cpu_us": 1000.0,
        "db_cpu_us": db_cpu,
        "db_idle_cpu_us": idle,
        "audit": {"head_moves_per_request": head_moves, "entries_per_commit": 1 / head_moves},
    }


def test_the_verdict_weighs_each_piece_by_how_often_a_call_pays_it() -> None:
    parts = {name: Cost(0.0, 0.0) for name in PER}
    parts["quota: items counted in the database"] = Cost(90.0, 50.0, 30.0)
    parts["audit: head locked, read and moved (database)"] = Cost(200.0, 100.0, 60.0)
    parts["caller lookup (API key)"] = Cost(2.0, 2.0)
    calls = {"tokenize_1": _calls(1.0, 600.0, 100.0), "detokenize_1": _calls(0.25, 600.0, 100.0)}
    out = verdicts(parts, calls)
    tok, det = out["tokenize_1"], out["detokenize_1"]
    assert tok["weights"]["quota: items counted in the database"] == 0  # a detokenize's alone
    assert tok["cost"]["total_us"] == 2 + 100 + 60  # one head move, in its own transaction
    assert det["cost"]["total_us"] == 2 + 80 + (100 + 60) / 4  # the head shared by 4 entries
    # The database's CPU in the numerator and the denominator alike, its idle CPU taken off.
    assert det["denominator_us"] == 1000 + 600 - 100
    assert det["share"] == det["cost"]["total_us"] / 1500
    assert det["share_pdvault_only"] == (2 + 50 + 100 / 4) / 1000


def test_the_report_names_each_part_and_the_verdict() -> None:
    parts = {name: Cost(10.0, 10.0) for name in PER}
    calls = {"detokenize_1": _calls(0.5)}
    out = {
        "budget": BUDGET,
        "databases": {
            "sqlite": {
                "calls": calls,
                "components": {n: {"per": PER[n], **c.as_dict()} for n, c in parts.items()},
                "audit_row_raw": Cost(30.0, 25.0).as_dict(),
                "workloads": verdicts(parts, calls),
            }
        },
    }
    text = render(out)
    assert "caller lookup (API key)" in text
    assert "head moves/request 0.500, entries/group commit 2.00" in text
    assert "PASS detokenize_1: 55 us of CPU per request, 5.5% of the call's 1000 us" in text


def test_the_command_line_parses_through_python_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.trust", "--help"], capture_output=True, text=True, check=True
    )
    assert "--quick" in done.stdout
    assert "--db" in done.stdout
