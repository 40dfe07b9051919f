"""`python -m bench.profile --workload detokenize_1 --db sqlite --seconds 10`: a profile of
pdvault's serving process under one workload, with one command (see bench/stacks.py for what
is recorded and how the CPU budget per call is made, and bench/README.md)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import report
from bench.cli import QUICK_SEED
from bench.procs import ROOT, BenchError
from bench.stacks import (
    Budget,
    Stack,
    budget,
    budget_from_dict,
    flame_svg,
    parse_collapsed,
    py_spy,
    render_budget,
    top_table,
    write_collapsed,
)
from bench.suite import Options, Runner
from bench.workloads import SUITE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description="Profile a serving process of pdvault under one workload with py-spy: "
        "collapsed stacks, a flame graph, top functions and the CPU budget per call.",
    )
    p.add_argument("--workload", default="detokenize_1", help="a workload of the suite")
    p.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--kms", choices=("local", "vault"), default="vault")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds recorded (default 10)")
    p.add_argument("--rate", type=int, default=200, help="samples per second (default 200)")
    p.add_argument("--workers", type=int, default=1, help="serving processes (default 1)")
    p.add_argument("--top", type=int, default=25, help="rows of the top tables")
    p.add_argument("--concurrency", type=int, default=0, metavar="C")
    p.add_argument(
        "--from",
        dest="from_dir",
        type=Path,
        metavar="DIR",
        help="read a recorded profile (its profile.collapsed and budget.json) again with the "
        "current phases, and rewrite its flame.svg, top.txt and budget.json; starts nothing",
    )
    p.add_argument(
        "--out", type=Path, help="output directory (default bench/results/scratch/profile-<time>)"
    )
    p.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.from_dir is not None:
        return read_again(args.from_dir, args.top)
    by_name = {w.name: w for w in SUITE}
    if args.workload not in by_name:
        print(f"bench.profile: --workload must be one of {', '.join(by_name)}", file=sys.stderr)
        return 2
    if args.seconds <= 0 or args.rate <= 0 or args.workers < 1:
        print("bench.profile: --seconds, --rate and --workers must be positive", file=sys.stderr)
        return 2
    try:
        py_spy()
    except FileNotFoundError as exc:
        print(f"bench.profile: {exc}", file=sys.stderr)
        return 2
    started = report.now()
    out = args.out or ROOT / "bench" / "results" / "scratch" / (
        "profile-" + started.strftime("%Y%m%dT%H%M%SZ")
    )
    out.mkdir(parents=True, exist_ok=True)
    opts = Options(
        dbs=(args.db,),
        kms=args.kms,
        workers=args.workers,
        concurrency=args.concurrency,
        postgres_url=args.postgres_url,
        seed=QUICK_SEED,
        only=(args.workload,),
        quick=True,
    )
    runner = Runner(opts)
    try:
        profiled = runner.profile_only(args.db, by_name[args.workload], args.seconds, args.rate)
    except (BenchError, RuntimeError) as exc:
        print(f"bench.profile: {exc}", file=sys.stderr)
        return 2
    finally:
        runner.close()
    about = {
        "title": f"pdvault {args.workload} on {args.db}, {args.workers} serving process(es)",
        "workload": args.workload,
        "db": args.db,
        "seconds": args.seconds,
        "requests_per_s": profiled.requests_per_s,
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": report.metadata(started)["commit"],
    }
    write_collapsed(profiled.stacks, out / "profile.collapsed")
    _write_outputs(out, profiled.stacks, profiled.budget, about, args.top)
    return 0


def _write_outputs(
    out: Path, recorded: Counter[Stack], b: Budget, about: dict[str, Any], top: int
) -> None:
    """flame.svg, top.txt (also printed) and budget.json (what `--from` needs to read the
    stacks again) in `out`."""
    (out / "flame.svg").write_text(flame_svg(recorded, about["title"]), encoding="utf-8")
    per_sample_us = 1e6 / b.rate / b.calls if b.calls else math.nan
    text = (
        f"{about['title']}: {about['requests_per_s']:,.0f} calls/s while recorded "
        f"({about['seconds']:g} s)\n\n"
        + render_budget(b, about["workload"])
        + "\n\n"
        + top_table(recorded, top, per_sample_us)
    )
    (out / "top.txt").write_text(text, encoding="utf-8")
    report.write_json({**about, "budget": b.as_dict()}, out / "budget.json")
    print(text)
    print(f"written: {out}/profile.collapsed, flame.svg, top.txt, budget.json")


def read_again(directory: Path, top: int) -> int:
    """`--from DIR`: a recorded profile read again with the current phases (no server)."""
    try:
        about = json.loads((directory / "budget.json").read_text())
        lines = (directory / "profile.collapsed").read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        print(f"bench.profile: --from {directory}: {exc}", file=sys.stderr)
        return 2
    recorded = parse_collapsed(lines)
    old = budget_from_dict(about.pop("budget"))
    b = budget(
        recorded,
        old.rate,
        old.calls,
        old.process_cpu_us * old.calls / 1e6,
        {k: v * old.calls / 1e6 for k, v in old.threads.items()},
    )
    b.system_us, b.switches = old.system_us, old.switches  # from /proc then, kept as read
    _write_outputs(directory, recorded, b, about, top)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
