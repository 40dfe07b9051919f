"""Pictures of benchmark results: one self-contained HTML page of inline SVG per run (no
plotting library, no script, nothing fetched), or two runs side by side.

`python -m bench` writes one beside its JSON; `python -m bench.compare A.json B.json --html
OUT` draws two; `python -m bench.draw RESULT.json [--html OUT]` draws any result file of
`bench/results/`: a run of `python -m bench` (throughput and p50/p99 per workload beside its
no-op baselines, the CPU budget per call when `--budget` ran, the soak's p99 and memory over
time when a soak ran),
of `python -m bench.timing` (median and p90 per class) or of `python -m bench.documents`
(upload and download MB/s per document).
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Series = tuple[str, float]  # (series name, value)
Group = tuple[str, list[Series]]  # (group label, its bars)

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


def _esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def _num(x: object) -> float:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "-"
    if abs(x) >= 10_000:
        return f"{x / 1e3:,.1f}k"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def _colors(names: Sequence[str]) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(dict.fromkeys(names))}


def bar_chart(title: str, groups: list[Group], unit: str, width: int = 900) -> str:
    """Horizontal bars, one block per group, one bar per series; each bar is labelled with its
    value (missing values are left out). Linear scale from 0."""
    groups = [(g, [(s, v) for s, v in bars if not math.isnan(v)]) for g, bars in groups]
    groups = [(g, bars) for g, bars in groups if bars]
    names = [s for _, bars in groups for s, _ in bars]
    colors = _colors(names)
    top = max((v for _, bars in groups for _, v in bars), default=0.0) or 1.0
    left, bar, gap, right = 230, 14, 10, 90
    height = 40 + sum(len(bars) * bar + gap for _, bars in groups) + 20 * (len(colors) // 4 + 1)
    plot = width - left - right
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11" role="img" aria-label="{_esc(title)}">',
        f'<text x="4" y="16" font-size="14" font-weight="bold">{_esc(title)}</text>',
    ]
    y = 30
    for label, bars in groups:
        parts.append(
            f'<text x="{left - 6}" y="{y + len(bars) * bar / 2 + 4:.0f}" '
            f'text-anchor="end">{_esc(label)}</text>'
        )
        for series, value in bars:
            w = max(0.5, plot * value / top)
            parts.append(
                f"<g><title>{_esc(series)}: {_fmt(value)} {_esc(unit)}</title>"
                f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar - 2}" '
                f'fill="{colors[series]}"/>'
                f'<text x="{left + w + 4:.1f}" y="{y + bar - 4}">{_fmt(value)}</text></g>'
            )
            y += bar
        y += gap
    x = 4
    for series, color in colors.items():
        if x > width - 200:
            x, y = 4, y + 18
        parts.append(
            f'<rect x="{x}" y="{y + 4}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="{y + 13}">{_esc(series)}</text>'
        )
        x += 30 + 7 * len(series)
    parts.append(f'<text x="{width - 4}" y="16" text-anchor="end">{_esc(unit)}</text></svg>')
    return "".join(parts)


def line_chart(
    title: str,
    series: list[tuple[str, list[tuple[float, float]]]],
    x_unit: str,
    y_unit: str,
    width: int = 900,
    height: int = 260,
) -> str:
    """Lines over a shared x axis, y from 0 to the largest value, with dots at the samples."""
    points = [(x, y) for _, pts in series for x, y in pts if not math.isnan(y)]
    left, right, top, bottom = 60, 20, 30, 40
    pw, ph = width - left - right, height - top - bottom
    x0 = min((x for x, _ in points), default=0.0)
    x1 = max((x for x, _ in points), default=1.0)
    y1 = max((y for _, y in points), default=1.0) or 1.0
    span = (x1 - x0) or 1.0

    def px(x: float) -> float:
        return left + pw * (x - x0) / span

    def py(y: float) -> float:
        return top + ph * (1 - y / y1)

    colors = _colors([name for name, _ in series])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11" role="img" aria-label="{_esc(title)}">',
        f'<text x="4" y="16" font-size="14" font-weight="bold">{_esc(title)}</text>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#888"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#888"/>',
    ]
    for k in range(5):
        v = y1 * k / 4
        parts.append(
            f'<text x="{left - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{_fmt(v)}</text>'
            f'<line x1="{left}" y1="{py(v):.1f}" x2="{left + pw}" y2="{py(v):.1f}" '
            f'stroke="#eee"/>'
        )
    for k in range(5):
        v = x0 + span * k / 4
        parts.append(
            f'<text x="{px(v):.1f}" y="{top + ph + 14}" text-anchor="middle">{_fmt(v)}</text>'
        )
    parts.append(
        f'<text x="{left + pw / 2:.0f}" y="{height - 6}" text-anchor="middle">{_esc(x_unit)}</text>'
        f'<text x="{width - 4}" y="16" text-anchor="end">{_esc(y_unit)}</text>'
    )
    for i, (name, pts) in enumerate(series):
        kept = [(x, y) for x, y in pts if not math.isnan(y)]
        if not kept:
            continue
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in kept)
        c = colors[name]
        parts.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        parts.extend(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{c}">'
            f"<title>{_esc(name)}: {_fmt(y)} {_esc(y_unit)} at {_fmt(x)} {_esc(x_unit)}</title>"
            f"</circle>"
            for x, y in kept
        )
        parts.append(
            f'<rect x="{left + 10 + 160 * i}" y="{top - 4}" width="10" height="10" fill="{c}"/>'
            f'<text x="{left + 24 + 160 * i}" y="{top + 5}">{_esc(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def page(title: str, sections: list[tuple[str, str]], notes: Sequence[str] = ()) -> str:
    """One HTML document: a heading, notes, and each (heading, SVG or HTML) in turn."""
    body = "".join(f"<h2>{_esc(h)}</h2>\n{content}\n" for h, content in sections)
    note = "".join(f"<p>{_esc(n)}</p>" for n in notes)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:960px;margin:1em auto;color:#222}"
        "h2{font-size:1.05em;margin-top:1.6em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px;text-align:left}"
        ".PASS{color:#2a7a2a}.MISS{color:#b22}</style></head><body>"
        f"<h1>{_esc(title)}</h1>{note}\n{body}</body></html>\n"
    )


# -- a run of `python -m bench` -----------------------------------------------------------------


def _label(m: dict[str, Any]) -> str:
    return m["target"] if m["target"] != "pdvault" else f"pdvault {m['db']}"


def _rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    b = run.get("baselines", {})
    return [*b.get("noop", []), *b.get("noop_threads", []), *run.get("measurements", [])]


def _by_workload(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for m in rows:
        out.setdefault(m["workload"], []).append(m)
    return out


def _p(m: dict[str, Any], key: str) -> float:
    opened = m.get("open") or {}
    return _num((opened.get("latency_ms") or {}).get(key))


def run_sections(run: dict[str, Any], tag: str = "") -> list[tuple[str, str]]:
    """The pictures of one run: throughput, latency, budgets, soak, verdicts."""
    sections: list[tuple[str, str]] = []
    by = _by_workload(_rows(run))
    if by:
        groups = [
            (w, [(_label(m) + tag, _num(m["closed"]["requests_per_s"])) for m in ms])
            for w, ms in by.items()
        ]
        sections.append(
            (
                "Throughput: closed-loop maximum, beside the no-op baselines",
                bar_chart("Calls per second (higher is better)", groups, "req/s"),
            )
        )
        lat: list[Group] = []
        for w, ms in by.items():
            bars: list[Series] = []
            for m in ms:
                bars.append((f"{_label(m)}{tag} p50", _p(m, "p50_ms")))
                bars.append((f"{_label(m)}{tag} p99", _p(m, "p99_ms")))
            lat.append((w, bars))
        sections.append(
            (
                "Latency: open loop at 70% of the maximum, from the scheduled send",
                bar_chart("p50 and p99 (lower is better)", lat, "ms"),
            )
        )
    budgets = [m for m in run.get("measurements", []) if m.get("budget")]
    if budgets:
        groups = [
            (
                f"{m['db']} {m['workload']}",
                [(phase, _num(us)) for phase, us in m["budget"]["us_per_call"].items()],
            )
            for m in budgets
        ]
        sections.append(
            (
                "CPU budget per call by phase (py-spy; bench.profile)",
                bar_chart("Server CPU per call", groups, "us"),
            )
        )
    soak = run.get("soak")
    if soak:
        windows = soak.get("windows", [])
        rate = _fmt(_num(soak["rate"]))
        sections.append(
            (
                f"Soak on {soak['db']}: {soak['seconds']:.0f} s at {rate} req/s",
                line_chart(
                    "p99 per tenth of the soak",
                    [("p99", [(_num(w["from_s"]), _num(w["p99_ms"])) for w in windows])],
                    "seconds",
                    "ms",
                )
                + line_chart(
                    "Resident memory of all server processes",
                    [("RSS", [(_num(t), _num(mb)) for t, mb in soak.get("rss_mb", [])])],
                    "seconds",
                    "MiB",
                ),
            )
        )
    targets = run.get("targets") or []
    if targets:
        rows = "".join(
            f"<tr><td class='{_esc(v['verdict'])}'>{_esc(v['verdict'])}</td>"
            f"<td>{_esc(v.get('db') or v.get('where', ''))}</td><td>{_esc(v['target'])}</td>"
            f"<td>{_esc(v['measured'])}</td></tr>"
            for v in targets
        )
        sections.append(("Targets", f"<table>{rows}</table>"))
    return sections


# -- other result files: bench.timing, bench.documents, bench.trust --------------------------------


def timing_sections(run: dict[str, Any]) -> list[tuple[str, str]]:
    classes = run["classes"]
    groups = [
        (name, [("median", _num(c.get("median_us"))), ("p90", _num(c.get("p90_us")))])
        for name, c in classes.items()
    ]
    return [
        (
            f"Refused detokenize, one call at a time ({run.get('options', {}).get('db', '')})",
            bar_chart("Time of a refusal per class of token", groups, "us"),
        )
    ]


def documents_sections(run: dict[str, Any]) -> list[tuple[str, str]]:
    groups = [
        (
            f"{g['db']} {g['sample']}",
            [("upload", _num(g.get("upload_mb_s"))), ("download", _num(g.get("download_mb_s")))],
        )
        for g in run.get("grpc", [])
    ]
    return [("Documents over gRPC", bar_chart("Transfer rate (higher is better)", groups, "MB/s"))]


def trust_groups(run: dict[str, Any], tag: str = "") -> list[Group]:
    """bench.trust: each piece's microseconds per request, per database."""
    return [
        (f"{db}{tag}", [(name, _num(us)) for name, us in r.get("components_us", {}).items()])
        for db, r in run["databases"].items()
    ]


def trust_sections(run: dict[str, Any]) -> list[tuple[str, str]]:
    shares = [
        (db, [(w, 100 * _num(x)) for w, x in r.get("share", {}).items()])
        for db, r in run["databases"].items()
    ]
    return [
        (
            "Issue #12's pieces per request",
            bar_chart("Microseconds per request", trust_groups(run), "us"),
        ),
        (
            "Their sum as a share of a single call's server CPU (budget 15%)",
            bar_chart("Share of the server's CPU per call", shares, "%"),
        ),
    ]


def kind(run: dict[str, Any]) -> str:
    if "classes" in run:
        return "timing"
    if "grpc" in run and "validation" in run:
        return "documents"
    if "databases" in run and "budget" in run:
        return "trust"
    return "bench"


def sections_of(run: dict[str, Any], tag: str = "") -> list[tuple[str, str]]:
    k = kind(run)
    if k == "timing":
        return timing_sections(run)
    if k == "documents":
        return documents_sections(run)
    if k == "trust":
        return trust_sections(run)
    return run_sections(run, tag)


def _meta_note(run: dict[str, Any], name: str = "") -> str:
    meta = run.get("meta", {})
    load = meta.get("load_average_at_start")
    return (
        f"{name + ': ' if name else ''}{meta.get('started', '?')}, commit {meta.get('commit', '?')}"
        f"{' (dirty)' if meta.get('dirty') else ''}, {meta.get('cores', '?')} cores"
        + (f", load average {load:.1f} at start" if isinstance(load, int | float) else "")
        + (", QUICK" if run.get("options", {}).get("quick") else "")
    )


def run_page(run: dict[str, Any], title: str = "") -> str:
    return page(
        title or f"pdvault benchmark {run.get('meta', {}).get('started', '')}",
        sections_of(run),
        [_meta_note(run)],
    )


def write_run_page(run: dict[str, Any], path: Path, title: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_page(run, title), encoding="utf-8")


# -- two runs side by side ------------------------------------------------------------------


def _merge_groups(a: list[Group], b: list[Group]) -> list[Group]:
    """Each group's bars of the first run, then the second's, for the groups of either."""
    order = list(dict.fromkeys([g for g, _ in a] + [g for g, _ in b]))
    da, db = dict(a), dict(b)
    return [(g, [*da.get(g, []), *db.get(g, [])]) for g in order]


def compare_page(before: dict[str, Any], after: dict[str, Any], names: tuple[str, str]) -> str:
    """Both runs in the same charts (same scale): each bar named with its run (A or B)."""
    if kind(before) != kind(after):
        sections = [
            *[(f"A: {h}", c) for h, c in sections_of(before)],
            *[(f"B: {h}", c) for h, c in sections_of(after)],
        ]
    elif kind(before) != "bench":
        sections = [
            (h, bar_chart(h, _merge_groups(ga, gb), ""))
            for (h, ga), (_, gb) in zip(
                _groups_of(before, " (A)"), _groups_of(after, " (B)"), strict=False
            )
        ]
    else:
        sections = []
        for (h, ga, unit), (_, gb, _u) in zip(
            _bench_groups(before, " (A)"), _bench_groups(after, " (B)"), strict=True
        ):
            sections.append((h, bar_chart(h, _merge_groups(ga, gb), unit)))
    notes = [_meta_note(before, f"A {names[0]}"), _meta_note(after, f"B {names[1]}")]
    return page(f"pdvault benchmark: {names[0]} (A) vs {names[1]} (B)", sections, notes)


def _bench_groups(run: dict[str, Any], tag: str) -> list[tuple[str, list[Group], str]]:
    by = _by_workload(_rows(run))
    thr = [
        (w, [(_label(m) + tag, _num(m["closed"]["requests_per_s"])) for m in ms])
        for w, ms in by.items()
    ]
    p99 = [(w, [(_label(m) + tag, _p(m, "p99_ms")) for m in ms]) for w, ms in by.items()]
    cpu = [
        (w, [(_label(m) + tag, _num(m["closed"]["cpu_ms_per_request"]["server"])) for m in ms])
        for w, ms in by.items()
    ]
    return [
        ("Throughput, closed-loop maximum (higher is better)", thr, "req/s"),
        ("p99, open loop at 70% of each run's maximum (lower is better)", p99, "ms"),
        ("Server CPU per call at the maximum (lower is better)", cpu, "ms"),
    ]


def _groups_of(run: dict[str, Any], tag: str) -> list[tuple[str, list[Group]]]:
    if kind(run) == "trust":
        return [("Issue #12's pieces per request (us)", trust_groups(run, tag))]
    if kind(run) == "timing":
        return [
            (
                "Refusal time per class (us)",
                [
                    (n, [(f"median{tag}", _num(c.get("median_us")))])
                    for n, c in run["classes"].items()
                ],
            )
        ]
    return [
        (
            "Documents over gRPC (MB/s)",
            [
                (
                    f"{g['db']} {g['sample']}",
                    [
                        (f"upload{tag}", _num(g.get("upload_mb_s"))),
                        (f"download{tag}", _num(g.get("download_mb_s"))),
                    ],
                )
                for g in run.get("grpc", [])
            ],
        )
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.draw",
        description="Draw a result file of bench/results as a self-contained HTML page.",
    )
    parser.add_argument("result", type=Path)
    parser.add_argument("--html", type=Path, help="default: the result's path with .html")
    args = parser.parse_args(argv)
    try:
        run = json.loads(args.result.read_text())
    except (OSError, ValueError) as exc:
        print(f"bench.draw: cannot read {args.result}: {exc}", file=sys.stderr)
        return 2
    out = args.html or args.result.with_suffix(".html")
    write_run_page(run, out, title=args.result.name)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
