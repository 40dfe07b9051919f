"""Every option the bench commands document reaches what it sets: parsed through each command's
own parser (`python -m bench`, `bench.documents`, `bench.trust`, `bench.profile`), with the work
itself replaced by a recorder (no server is started)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

import bench.cli
import bench.documents
import bench.profile
import bench.trust
from bench.procs import BenchError

PG = "postgresql+psycopg://someone@db.example:5432/postgres"


def test_the_harness_options_reach_its_runner() -> None:
    args = bench.cli._parser().parse_args(
        ["--workers", "3", "--concurrency", "5", "--keep", "--kms", "local", "--postgres-url", PG]
    )
    opts = bench.cli.options_from(args)
    assert (opts.workers, opts.concurrency, opts.keep, opts.kms) == (3, 5, True, "local")
    assert opts.postgres_url == PG


def test_the_documents_options_reach_its_run() -> None:
    args = bench.documents._parser().parse_args(
        [
            *("--rounds", "4", "--grpc-rounds", "6", "--validation-rounds", "2", "--keep"),
            *("--db", "sqlite", "--postgres-url", PG),
        ]
    )
    opts = bench.documents.options_from(args)
    assert (opts.rounds, opts.grpc_rounds, opts.validation_rounds) == (4, 6, 2)
    assert opts.keep
    assert opts.dbs == ("sqlite",)
    assert opts.postgres_url == PG


def test_the_trust_options_reach_its_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[argparse.Namespace] = []

    def run(opts: argparse.Namespace, _say: Any) -> dict[str, Any]:
        seen.append(opts)
        return {"budget": bench.trust.BUDGET, "databases": {}}

    monkeypatch.setattr(bench.trust, "run", run)
    out = tmp_path / "trust.json"
    argv = ["--quick", "--db", "postgresql", "--rounds", "7", "--postgres-url", PG]
    assert bench.trust.main([*argv, "--json", str(out)]) == 0
    [opts] = seen
    assert (opts.quick, opts.db, opts.rounds, opts.postgres_url) == (True, "postgresql", 7, PG)
    assert json.loads(out.read_text())["budget"] == bench.trust.BUDGET


class _Runner:
    seen: ClassVar[list[Any]] = []

    def __init__(self, opts: Any) -> None:
        self.seen.append(opts)

    def profile_only(self, db: str, workload: Any, seconds: float, rate: int) -> Any:
        self.seen.append((db, workload.name, seconds, rate))
        raise BenchError("recorded")

    def close(self) -> None:
        pass


def test_the_profile_options_reach_its_runner(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(bench.profile, "py_spy", lambda: "py-spy")
    monkeypatch.setattr(bench.profile, "Runner", _Runner)
    _Runner.seen = []
    argv = ["--workload", "detokenize_1", "--db", "sqlite", "--kms", "local", "--seconds", "3"]
    argv += ["--rate", "50", "--workers", "2", "--concurrency", "9", "--postgres-url", PG]
    assert bench.profile.main([*argv, "--out", str(tmp_path)]) == 2  # the recorder's refusal
    opts, call = _Runner.seen
    assert (opts.kms, opts.workers, opts.concurrency, opts.postgres_url) == ("local", 2, 9, PG)
    assert call == ("sqlite", "detokenize_1", 3.0, 50)


def test_the_profile_top_reaches_a_rereading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[tuple[Path, int]] = []

    def read_again(directory: Path, top: int) -> int:
        seen.append((directory, top))
        return 0

    monkeypatch.setattr(bench.profile, "read_again", read_again)
    assert bench.profile.main(["--from", str(tmp_path), "--top", "5"]) == 0
    assert seen == [(tmp_path, 5)]
