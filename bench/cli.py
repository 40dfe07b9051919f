"""`python -m bench [options]`: run the suite, print the table and verdicts, write the JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bench import draw, report, stacks
from bench.procs import BenchError
from bench.seed import SeedPlan
from bench.suite import Options, Runner, options_dict

QUICK_SEED = SeedPlan(known_subjects=100, fields_per_subject=20, cold_requests=30)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark pdvault over gRPC on loopback against its baselines "
        "(no-op gRPC, AES-GCM, raw SQLAlchemy, Transit calls).",
    )
    p.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run")
    p.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument(
        "--kms",
        choices=("local", "vault"),
        default="vault",
        help="pdvault's key provider: the local key file, or HashiCorp Vault Transit through "
        "the emulator (default: vault, as production runs, with calls counted)",
    )
    p.add_argument("--transit-latency-ms", type=float, default=1.0, metavar="MS")
    p.add_argument(
        "--duration", type=float, metavar="S", help="seconds per measurement (default 5; 1.5 quick)"
    )
    p.add_argument(
        "--warmup", type=float, metavar="S", help="seconds before each (default 1; 0.5 quick)"
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="default bench/results/<time>.json")
    p.add_argument(
        "--soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="run only the soak: the mix at 70%% of max for SECONDS (600 in the issue)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="serving processes of pdvault (PDV_PROCESSES) and of the no-op server "
        "(default: pdvault's own default, one per core)",
    )
    p.add_argument(
        "--max-workers",
        type=int,
        default=16,
        metavar="T",
        help="threads per server (PDV_MAX_WORKERS; the no-op server gets the same)",
    )
    p.add_argument("--loadgen-procs", type=int, default=1, metavar="N")
    p.add_argument(
        "--connections",
        type=int,
        default=4,
        metavar="N",
        help="connections per serving process from each load-generator process (balanced)",
    )
    p.add_argument(
        "--concurrency", type=int, default=0, metavar="C", help="override in-flight requests"
    )
    p.add_argument("--open-fraction", type=float, default=0.7, metavar="F")
    p.add_argument(
        "--postgres-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="a server where the run may create and drop its own database",
    )
    p.add_argument("--storage-threads", type=int, default=4, metavar="N")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="WORKLOAD",
        help="run only these workloads (repeat or comma-separate), e.g. tokenize_1",
    )
    p.add_argument("--keep", action="store_true", help="keep the data and server logs")
    p.add_argument(
        "--budget",
        action="store_true",
        help="after each single-call workload of pdvault, a closed loop recorded with py-spy: "
        "the CPU budget per call by phase (see bench.profile)",
    )
    p.add_argument(
        "--html",
        type=Path,
        metavar="PATH",
        help="the run's pictures as one HTML page (default: the JSON's path with .html)",
    )
    return p


def options_from(args: argparse.Namespace) -> Options:
    dbs = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    quick = bool(args.quick)
    only = tuple(w.strip() for item in args.only for w in item.split(",") if w.strip())
    return Options(
        dbs=dbs,
        kms=args.kms,
        transit_latency_ms=args.transit_latency_ms,
        duration=args.duration if args.duration is not None else (1.5 if quick else 5.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if quick else 1.0),
        open_fraction=args.open_fraction,
        quick=quick,
        workers=args.workers,
        connections=args.connections,
        max_workers=args.max_workers,
        loadgen_procs=args.loadgen_procs,
        concurrency=args.concurrency,
        postgres_url=args.postgres_url,
        storage_threads=args.storage_threads,
        seed=QUICK_SEED if quick else SeedPlan(),
        soak=args.soak,
        only=only,
        keep=args.keep,
        budget=bool(args.budget),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    opts = options_from(args)
    if opts.budget:
        try:
            stacks.py_spy()
        except FileNotFoundError as exc:
            print(f"bench: --budget: {exc}", file=sys.stderr)
            return 2
    started = report.now()
    runner = Runner(opts)
    try:
        out = runner.run()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        runner.close()
    out["meta"] = report.metadata(started)
    out["meta"]["seconds"] = round((report.now() - started).total_seconds(), 1)
    out["options"] = options_dict(opts)
    out["targets"] = report.evaluate(out) if out["measurements"] else []
    path = args.json or report.default_json_path(started)
    report.write_json(out, path)
    page = args.html or path.with_suffix(".html")
    draw.write_run_page(json.loads(path.read_text()), page, title=path.name)
    print(report.render(out))
    print(f"\n{out['meta']['seconds']:.0f} s; JSON: {path}; pictures: {page}")
    return 0
