"""The verdicts against the issue's targets, the table on stdout, and the JSON file."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy

from bench import stacks
from bench.procs import ROOT

# fields/s a batch of 100 must reach, per database
TOKENIZE_BATCH_MIN = {"sqlite": 10_000, "postgresql": 6_000}
DETOKENIZE_BATCH_MIN = {"sqlite": 20_000, "postgresql": 12_000}
CACHED = ("tokenize_1", "detokenize_1", "mix_1", "tokenize_100", "detokenize_100")
COLD = ("tokenize_100_new", "detokenize_100_cold")


def _verdict(ok: bool | None) -> str:
    return "N/A" if ok is None else ("PASS" if ok else "MISS")


def evaluate(out: dict[str, Any]) -> list[dict[str, Any]]:
    """One verdict per target row and database."""
    verdicts: list[dict[str, Any]] = []
    by: dict[tuple[str, str], dict[str, Any]] = {
        (m["db"], m["workload"]): m for m in out["measurements"]
    }
    dbs = list(dict.fromkeys(m["db"] for m in out["measurements"]))

    def add(db: str, target: str, ok: bool | None, measured: str) -> None:
        verdicts.append({"db": db, "target": target, "verdict": _verdict(ok), "measured": measured})

    for db in dbs:
        for name, share, p99_max in (("tokenize_1", 0.5, 20.0), ("detokenize_1", 0.6, 15.0)):
            m = by.get((db, name))
            if m is None:
                continue
            what = name.replace("_1", ", 1 per call")
            vs = m.get("ratios", {}).get("vs_noop")
            base = m["closed"]["requests_per_s"] / vs if vs else math.nan
            add(
                db,
                f"{what}: >= {share:.0%} of the no-op call's throughput",
                None if vs is None else vs >= share,
                f"{_pct(vs)} ({_n(m['closed']['requests_per_s'])} vs {_n(base)} req/s)",
            )
            p99 = m["open"]["latency_ms"]["p99_ms"] if m["open"] else math.nan
            rate = m["open"]["target_rate"] if m["open"] else math.nan
            add(
                db,
                f"{what}: p99 <= {p99_max:g} ms (open loop at 70% of max)",
                None if math.isnan(p99) else p99 <= p99_max,
                f"p99 {p99:.1f} ms at {_n(rate)} req/s",
            )
        for name, floor, phase in (
            ("tokenize_100", TOKENIZE_BATCH_MIN, "insert_100"),
            ("detokenize_100", DETOKENIZE_BATCH_MIN, "select_100"),
        ):
            m = by.get((db, name))
            if m is None:
                continue
            fields = m["closed"]["fields_per_s"]
            what = name.replace("_100", ", batches of 100")
            add(
                db,
                f"{what}: >= {floor[db]:,} fields/s",
                fields >= floor[db],
                f"{_n(fields)} fields/s",
            )
            vs = m.get("ratios", {}).get("vs_storage")
            storage = out["baselines"].get("storage", {}).get(db, {}).get(phase, {})
            add(
                db,
                f"{what}: >= 50% of raw storage ({phase.replace('_', ' ')} rows/s)",
                None if vs is None else vs >= 0.5,
                f"{_pct(vs)} ({_n(fields)} vs {_n(storage.get('rows_per_s', math.nan))} rows/s)",
            )
        cached = [by[(db, w)] for w in CACHED if (db, w) in by and by[(db, w)]["transit"]]
        if cached:
            worst = max(m["transit"]["data_calls_per_request"] for m in cached)
            add(
                db,
                "Transit: 0 calls per call for a cached subject",
                worst == 0,
                f"max {worst:.3f}/req over {', '.join(m['workload'] for m in cached)}",
            )
        cold = [by[(db, w)] for w in COLD if (db, w) in by and by[(db, w)]["transit"]]
        if cold:
            worst = max(m["transit"]["data_calls_per_request"] for m in cold)
            add(
                db,
                "Transit: <= 1 call per request on a cold batch",
                worst <= 1.0,
                ", ".join(
                    f"{m['workload']} {m['transit']['data_calls_per_request']:.2f}/req"
                    for m in cold
                ),
            )
        elif out.get("options", {}).get("kms") != "vault":
            add(db, "Transit calls per request", None, "run with --kms vault to count them")
    return verdicts


# -- formatting ---------------------------------------------------------------------------------


def _n(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f}M"
    if abs(x) >= 10_000:
        return f"{x / 1e3:.1f}k"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}"


def _pct(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.0%}"


def _lagged(m: dict[str, Any]) -> bool:
    """The generator itself sent late: the open-loop latency is partly the machine's (the
    generator and server share two cores), not the server's alone."""
    o = m["open"]
    if not o:
        return False
    lag, p99 = o["send_lag_ms"]["p99_ms"], o["latency_ms"]["p99_ms"]
    return bool(lag > 2.0 and lag > 0.2 * p99)


def _ms(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "-"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _errors(m: dict[str, Any]) -> str:
    n = sum(m["closed"]["errors"].values()) + m["closed"]["token_errors"]
    if m["open"]:
        n += sum(m["open"]["errors"].values()) + m["open"]["token_errors"] + m["open"]["dropped"]
    return str(n)


LEGEND = (
    "req/s, fields/s: closed-loop max. @70%: the open loop's rate. lag99: p99 of how late the "
    "generator sent (* on p99 where over 2 ms and 20% of it: partly the machine's, as the "
    "generator and the servers share two cores). CPU in ms per request: srv every server "
    "process, cli the generator, db PostgreSQL's processes. vsNoop: req/s over the no-op "
    "server's for the same method and shape. vsStor: fields/s over raw SQLAlchemy rows/s of the "
    "same operation. Transit: data calls (encrypt, decrypt, rewrap) per request."
)

COLUMNS: list[tuple[str, int, Callable[[dict[str, Any]], str]]] = [
    ("target", 12, lambda m: m["target"]),
    ("db", 10, lambda m: m["db"] or "-"),
    ("workload", 19, lambda m: m["workload"]),
    ("C", 3, lambda m: str(m["closed"]["concurrency"])),
    ("req/s", 7, lambda m: _n(m["closed"]["requests_per_s"])),
    ("fields/s", 8, lambda m: _n(m["closed"]["fields_per_s"])),
    ("@70%", 6, lambda m: _n(m["open"]["target_rate"]) if m["open"] else "-"),
    ("p50ms", 6, lambda m: _ms(m["open"]["latency_ms"]["p50_ms"]) if m["open"] else "-"),
    (
        "p99ms",
        6,
        lambda m: (
            (_ms(m["open"]["latency_ms"]["p99_ms"]) + ("*" if _lagged(m) else ""))
            if m["open"]
            else "-"
        ),
    ),
    ("p999ms", 6, lambda m: _ms(m["open"]["latency_ms"]["p999_ms"]) if m["open"] else "-"),
    (
        "lag99",
        5,
        lambda m: _ms(m["open"]["send_lag_ms"]["p99_ms"]) if m["open"] else "-",
    ),
    ("srvCPU", 6, lambda m: _ms(m["closed"]["cpu_ms_per_request"]["server"])),
    ("cliCPU", 6, lambda m: _ms(m["closed"]["cpu_ms_per_request"]["client"])),
    (
        "dbCPU",
        5,
        lambda m: _ms(m["closed"]["cpu_ms_per_request"]["db"]) if m["db"] == "postgresql" else "-",
    ),
    ("vsNoop", 6, lambda m: _pct(m.get("ratios", {}).get("vs_noop"))),
    ("vsStor", 6, lambda m: _pct(m.get("ratios", {}).get("vs_storage"))),
    (
        "Transit",
        7,
        lambda m: f"{m['transit']['data_calls_per_request']:.2f}" if m.get("transit") else "-",
    ),
    ("errors", 6, _errors),
]


def _row(cells: list[str]) -> str:
    return "  ".join(
        c.ljust(w) if i < 3 else c.rjust(w)
        for i, (c, (_, w, _f)) in enumerate(zip(cells, COLUMNS, strict=True))
    )


def render(out: dict[str, Any]) -> str:
    lines: list[str] = []
    meta = out["meta"]
    o = out["options"]
    lines.append(
        f"pdvault benchmark  {meta['started']}  commit {meta['commit']}"
        f"{' (dirty)' if meta['dirty'] else ''}  {meta['cores']} cores  kms={o['kms']}"
        + (f" (Transit emulator, {o['transit_latency_ms']:g} ms)" if o["kms"] == "vault" else "")
        + f"  {o['duration']:g} s per measurement{'  QUICK' if o['quick'] else ''}"
    )
    b = out["baselines"]
    if b:
        lines.append("")
        lines.append("Baselines (the limits pdvault is bounded by)")
    if "crypto" in b:
        c = b["crypto"]
        lines.append(
            f"  crypto     AES-256-GCM, one thread, {c['value_bytes_mean']:.0f}-byte values: "
            f"encrypt {_n(c['encrypt_per_s'])}/s ({c['encrypt_us']:.1f} us), "
            f"decrypt {_n(c['decrypt_per_s'])}/s ({c['decrypt_us']:.1f} us); "
            f"seal+open with new key objects {c['encrypt_decrypt_new_key_objects_us']:.1f} us"
        )
    if "transit" in b:
        t = b["transit"]
        lines.append(
            f"  transit    hvac -> emulator, {t['injected_latency_ms']:g} ms injected: "
            f"encrypt(1 key) {_n(t['encrypt_1']['calls_per_s'])}/s "
            f"p50 {_ms(t['encrypt_1']['p50_ms'])} ms; decrypt(batch of 10) "
            f"{_n(t['decrypt_batch_10']['calls_per_s'])}/s "
            f"p50 {_ms(t['decrypt_batch_10']['p50_ms'])} ms"
        )
    for db, s in b.get("storage", {}).items():
        lines.append(
            f"  storage    {db}, {s['threads']} threads, a transaction per batch: "
            f"insert x100 {_n(s['insert_100']['rows_per_s'])} rows/s, "
            f"x1 {_n(s['insert_1']['rows_per_s'])}/s; "
            f"select IN(100) {_n(s['select_100']['rows_per_s'])} rows/s, "
            f"x1 {_n(s['select_1']['rows_per_s'])}/s"
        )
    rows = list(b.get("noop", [])) + list(b.get("noop_threads", [])) + list(out["measurements"])
    if rows:
        lines.append("")
        lines.append(
            "Max throughput (closed loop, C in flight), latency (open loop at 70% of max, from "
            "the scheduled send), CPU ms per request at max"
        )
        lines.append(_row([name for name, _w, _f in COLUMNS]))
        lines.extend(_row([f(m) for _n2, _w, f in COLUMNS]) for m in rows)
        lines.extend(textwrap.wrap(LEGEND, width=130, initial_indent="  ", subsequent_indent="  "))
    lines.extend(_server_models(b))
    lines.extend(_budgets(out))
    if out.get("targets"):
        lines.append("")
        lines.append("Targets")
        lines.extend(
            f"  {v['verdict']:<4}  {v['db']:<10}  {v['target']:<60}  {v['measured']}"
            for v in out["targets"]
        )
    if out.get("soak"):
        s = out["soak"]
        lines.append("")
        lines.append(
            f"Soak ({s['db']}): {s['seconds']:.0f} s at {_n(s['rate'])} req/s "
            f"(70% of {_n(s['max_requests_per_s'])}), {s['requests']:,} requests"
        )
        lines.append("  p99 per tenth (ms): " + " ".join(_ms(w["p99_ms"]) for w in s["windows"]))
        v = s["verdicts"]
        lines.append(
            f"  {_verdict(v['rss_growth_below_10pct'])}  resident memory growth < 10%: "
            f"{_pct(s['rss_growth'])} ({s['rss_mb'][0][1] if s['rss_mb'] else '-'} -> "
            f"{s['rss_mb'][-1][1] if s['rss_mb'] else '-'} MiB)"
        )
        lines.append(
            f"  {_verdict(v['p99_drift_below_20pct'])}  p99 drift < 20% (last tenth vs first): "
            f"{_pct(s['p99_drift'])}"
        )
        lines.append(
            f"  {_verdict(v['no_errors'])}  no errors: {s['errors'] or 0} failed calls, "
            f"{s['token_errors']} refused tokens, {s['dropped']} never sent"
        )
    return "\n".join(lines)


def _budgets(out: dict[str, Any]) -> list[str]:
    """`--budget`: µs of server CPU per call by phase, beside the no-op's CPU per call."""
    noop = {m["workload"]: m for m in out["baselines"].get("noop", [])}
    lines: list[str] = []
    for m in out["measurements"]:
        b = m.get("budget")
        if not b:
            continue
        base = noop.get(m["baseline_workload"])
        noop_us = base["closed"]["cpu_ms_per_request"]["server"] * 1e3 if base else math.nan
        lines.append("")
        lines.append(
            stacks.render_budget(stacks.budget_from_dict(b), f"{m['db']} {m['workload']}", noop_us)
        )
    return lines


def _server_models(b: dict[str, Any]) -> list[str]:
    """The two no-op rows side by side: what each server model allows on this machine."""
    aio = {m["workload"]: m["closed"] for m in b.get("noop", [])}
    threads = {m["workload"]: m["closed"] for m in b.get("noop_threads", [])}
    shared = [w for w in aio if w in threads]
    if not shared:
        return []
    lines = [
        "",
        "No-op server models, same run: grpc.aio (pdvault's) vs the thread-pool server",
        f"  {'workload':<16} {'aio req/s':>10} {'threads req/s':>14} {'aio/threads':>12} "
        f"{'aio srvCPU':>11} {'threads srvCPU':>15}",
    ]
    for w in shared:
        a, t = aio[w], threads[w]
        ratio = a["requests_per_s"] / t["requests_per_s"] if t["requests_per_s"] else math.nan
        lines.append(
            f"  {w:<16} {_n(a['requests_per_s']):>10} {_n(t['requests_per_s']):>14} "
            f"{_pct(ratio):>12} {_ms(a['cpu_ms_per_request']['server']):>11} "
            f"{_ms(t['cpu_ms_per_request']['server']):>15}"
        )
    return lines


def metadata(started: datetime) -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            done = subprocess.run(  # noqa: S603  (read-only git queries of the work tree)
                ["git", *args],  # noqa: S607
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except OSError:
            return ""
        return done.stdout.strip()

    return {
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "machine": platform.machine(),
        "load_average_at_start": os.getloadavg()[0],
    }


def default_json_path(started: datetime) -> Path:
    return ROOT / "bench" / "results" / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"


def write_json(out: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(out), indent=1, default=_jsonable) + "\n")


def _finite(x: object) -> object:
    """NaN (no samples) as null: strict JSON has no NaN."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _jsonable(x: object) -> object:
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, datetime):
        return x.isoformat()
    return str(x)


def now() -> datetime:
    return datetime.now(UTC)
