"""`python -m bench.compare BEFORE.json AFTER.json [--html OUT]`: what changed between two runs.

Per workload (target, database, name): the closed-loop maximum, the open-loop p99 and the
server's CPU per request, before and after, with the change; then the verdicts that changed.
With `--html OUT`, both runs drawn side by side in the same charts (bench.draw); result files
of bench.timing and bench.documents are drawn too (the table is for `python -m bench` runs).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from bench import draw

Key = tuple[str, str, str]


def _rows(run: dict[str, Any]) -> dict[Key, dict[str, Any]]:
    baselines = run.get("baselines", {})
    every = [
        *baselines.get("noop", []),
        *baselines.get("noop_threads", []),
        *run.get("measurements", []),
    ]
    return {(m["target"], m["db"] or "-", m["workload"]): m for m in every}


def _num(x: object) -> float:
    return float(x) if isinstance(x, int | float) else math.nan


def _figures(m: dict[str, Any]) -> tuple[float, float, float]:
    closed = m["closed"]
    opened = m.get("open") or {}
    p99 = _num(opened.get("latency_ms", {}).get("p99_ms")) if opened else math.nan
    return (
        _num(closed["requests_per_s"]),
        p99,
        _num(closed["cpu_ms_per_request"]["server"]),
    )


def _change(before: float, after: float) -> str:
    if math.isnan(before) or math.isnan(after) or before == 0:
        return "    -"
    return f"{(after / before - 1):+5.0%}"


def _f(x: float) -> str:
    return "-" if math.isnan(x) else (f"{x:,.0f}" if x >= 100 else f"{x:.2f}")


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    a, b = _rows(before), _rows(after)
    lines = [
        f"before: {before['meta']['started']} {before['meta']['commit']}   "
        f"after: {after['meta']['started']} {after['meta']['commit']}",
        f"{'target':<12} {'db':<10} {'workload':<20} {'req/s before':>12} {'after':>8} {'chg':>5}  "
        f"{'p99 ms before':>13} {'after':>7} {'chg':>5}  {'srvCPU before':>13} {'after':>6} "
        f"{'chg':>5}",
    ]
    for key in [k for k in b if k in a] + [k for k in a if k not in b]:
        if key not in a or key not in b:
            continue
        (r0, p0, c0), (r1, p1, c1) = _figures(a[key]), _figures(b[key])
        lines.append(
            f"{key[0]:<12} {key[1]:<10} {key[2]:<20} {_f(r0):>12} {_f(r1):>8} {_change(r0, r1)}  "
            f"{_f(p0):>13} {_f(p1):>7} {_change(p0, p1)}  {_f(c0):>13} {_f(c1):>6} "
            f"{_change(c0, c1)}"
        )
    v0 = {(v["db"], v["target"]): v for v in before.get("targets", [])}
    changed = [
        (v0[(v["db"], v["target"])], v)
        for v in after.get("targets", [])
        if (v["db"], v["target"]) in v0 and v0[(v["db"], v["target"])]["verdict"] != v["verdict"]
    ]
    if changed:
        lines.append("")
        lines.append("verdicts that changed:")
        lines.extend(
            f"  {old['verdict']} -> {new['verdict']}  {new['db']:<10} {new['target']}  "
            f"({old['measured']} -> {new['measured']})"
            for old, new in changed
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument(
        "--html", type=Path, metavar="OUT", help="also draw both runs side by side in OUT"
    )
    args = parser.parse_args(argv)
    try:
        runs = [json.loads(p.read_text()) for p in (args.before, args.after)]
    except (OSError, ValueError) as exc:
        print(f"bench.compare: cannot read a result file: {exc}", file=sys.stderr)
        return 2
    if args.html is not None:
        args.html.parent.mkdir(parents=True, exist_ok=True)
        names = (args.before.name, args.after.name)
        args.html.write_text(draw.compare_page(runs[0], runs[1], names), encoding="utf-8")
    if all(draw.kind(r) == "bench" for r in runs):
        print(compare(*runs))
    if args.html is not None:
        print(f"pictures: {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
