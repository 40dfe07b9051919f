"""bench.trust's component measurements and its report, on a SQLite application in a temporary
directory (tiny rounds: the figures are not looked at, only that each piece runs and is named)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.document_transfers import settings
from bench.trust import BUDGET, components, render
from vault.app import build_app


def test_every_component_is_measured_on_a_real_application(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path, ""))
    try:
        parts = components(app, rounds=1, seconds=0.01, log_size=64)
    finally:
        app.close()
    raw = parts.pop("_audit_row_raw_us")
    assert raw > 0
    assert set(parts) == {
        "caller lookup (API key)",
        "quota: items counted in the database",
        "rate: token bucket",
        "audit: subject ref (HMAC under the data key)",
        "audit: leaf hash and tree head (Merkle)",
        "audit: head locked and moved (database)",
    }
    assert all(us >= 0 for us in parts.values())


def test_the_report_names_each_part_and_the_verdict() -> None:
    out = {
        "budget": BUDGET,
        "databases": {
            "sqlite": {
                "calls": {"detokenize_1": {"requests_per_s": 800.0, "server_cpu_us": 1000.0}},
                "components_us": {"caller lookup (API key)": 20.0},
                "audit_row_raw_us": 30.0,
                "total_us": 200.0,
                "share": {"detokenize_1": 0.2},
            }
        },
    }
    text = render(out)
    assert "caller lookup (API key)" in text
    assert "MISS detokenize_1: 20.0% of the server's CPU per call (budget 15%)" in text


def test_the_command_line_parses_through_python_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.trust", "--help"], capture_output=True, text=True, check=True
    )
    assert "--quick" in done.stdout
    assert "--db" in done.stdout
