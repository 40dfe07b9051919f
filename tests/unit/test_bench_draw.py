"""bench.draw and `bench.compare --html`: every committed result file of bench/results draws,
and a run of `python -m bench` (made up here: its shape, not its figures) draws its throughput,
latency, CPU budget, soak and verdicts as one self-contained page."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from bench import compare, draw
from bench.procs import ROOT

RESULTS = sorted((ROOT / "bench" / "results").glob("*.json"))


def _svgs(page: str) -> list[ET.Element]:
    found = re.findall(r"<svg.*?</svg>", page, re.S)
    return [ET.fromstring(s) for s in found]  # noqa: S314  (our own output)


def _self_contained(page: str) -> None:
    assert page.startswith("<!doctype html>")
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']https?:""", page)  # nothing fetched


def _measurement(target: str, db: str | None, workload: str, rps: float, p99: float) -> Any:
    return {
        "target": target,
        "db": db,
        "workload": workload,
        "baseline_workload": workload,
        "closed": {"requests_per_s": rps, "cpu_ms_per_request": {"server": 1000 / rps}},
        "open": {"latency_ms": {"p50_ms": p99 / 4, "p99_ms": p99}},
    }


def _run(scale: float = 1.0) -> dict[str, Any]:
    pdv = _measurement("pdvault", "sqlite", "detokenize_1", 800 * scale, 12.0)
    pdv["budget"] = {
        "us_per_call": {"database": 300.0, "audit append (with Merkle hashing)": 400.0},
        "samples": 100,
        "calls": 50,
        "rate_hz": 200,
        "process_cpu_us_per_call": None,
    }
    return {
        "meta": {"started": "2026-11-29T18:00:00Z", "commit": "abc1234", "cores": 2},
        "options": {"quick": True},
        "baselines": {
            "noop": [_measurement("noop", None, "detokenize_1", 4000, 5.0)],
            "noop_threads": [_measurement("noop_threads", None, "detokenize_1", 4500, 6.0)],
        },
        "measurements": [
            pdv,
            _measurement("pdvault", "sqlite", "tokenize_<1>", 400 * scale, float("nan")),
        ],
        "targets": [
            {"db": "sqlite", "target": "detokenize <1>", "verdict": "MISS", "measured": "20%"}
        ],
        "soak": {
            "db": "sqlite",
            "seconds": 60,
            "rate": 500.0,
            "windows": [{"from_s": 6.0 * k, "p99_ms": 10.0 + k} for k in range(10)],
            "rss_mb": [[5.0 * k, 300.0 + k] for k in range(12)],
        },
    }


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_every_committed_result_file_draws(path: Path, tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    assert draw.main([str(path), "--html", str(out)]) == 0
    page = out.read_text()
    _self_contained(page)
    svgs = _svgs(page)
    assert svgs
    run = json.loads(path.read_text())
    if draw.kind(run) == "timing":
        for name in run["classes"]:
            assert f">{name}<" in page
    elif draw.kind(run) == "documents":
        assert f"{run['grpc'][0]['db']} {run['grpc'][0]['sample']}" in page


def test_committed_results_draw_side_by_side(tmp_path: Path) -> None:
    timing = [p for p in RESULTS if p.name.startswith("timing-")]
    out = tmp_path / "cmp.html"
    assert compare.main([str(timing[0]), str(timing[1]), "--html", str(out)]) == 0
    page = out.read_text()
    _self_contained(page)
    assert "median (A)" in page
    assert "median (B)" in page


def test_a_bench_run_draws_every_part(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(_run()))
    out = tmp_path / "run.html"
    assert draw.main([str(path), "--html", str(out)]) == 0
    page = out.read_text()
    _self_contained(page)
    titles = [t.get("aria-label") for t in _svgs(page)]
    assert titles == [
        "Calls per second (higher is better)",
        "p50 and p99 (lower is better)",
        "Server CPU per call",
        "p99 per tenth of the soak",
        "Resident memory of all server processes",
    ]
    for label in ("noop", "noop_threads", "pdvault sqlite", "pdvault sqlite p99", "database"):
        assert f">{label}<" in page
    # names are escaped, never markup; a missing figure (NaN) is left out, not drawn as 0
    assert "tokenize_&lt;1&gt;" in page
    assert "tokenize_<1>" not in page
    assert "detokenize &lt;1&gt;" in page
    assert "nan" not in page.lower().replace("nanosec", "")
    assert "QUICK" in page
    assert "abc1234" in page


def test_two_bench_runs_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_run()))
    b.write_text(json.dumps(_run(scale=1.5)))
    out = tmp_path / "ab.html"
    assert compare.main([str(a), str(b), "--html", str(out)]) == 0
    assert "+50%" in capsys.readouterr().out  # the table still prints
    page = out.read_text()
    _self_contained(page)
    assert len(_svgs(page)) == 3
    assert ">pdvault sqlite (A)<" in page
    assert ">pdvault sqlite (B)<" in page
    assert ">1,200<" in page  # B's detokenize_1: 800 x 1.5


def test_a_bar_chart_scales_to_its_largest_value() -> None:
    svg = ET.fromstring(draw.bar_chart("t", [("g", [("a", 50.0), ("b", 100.0)])], "x"))  # noqa: S314  (our own output)
    widths = [float(r.get("width", 0)) for r in svg.iter("{http://www.w3.org/2000/svg}rect")]
    assert widths[0] * 2 == pytest.approx(widths[1])


def test_an_unreadable_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert draw.main([str(bad)]) == 2
    assert compare.main([str(bad), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2


def test_the_harness_writes_the_page_beside_its_json(tmp_path: Path) -> None:
    run = copy.deepcopy(_run())
    out = tmp_path / "deep" / "x.html"
    draw.write_run_page(run, out, title="x.json")
    assert "<title>x.json</title>" in out.read_text()
