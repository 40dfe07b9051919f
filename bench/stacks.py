"""Where a serving process of pdvault spends its time: py-spy's samples, read and summed
(`python -m bench.profile` and `python -m bench --budget` use it; bench/README.md, "Where the
time goes", says how to read them).

py-spy (a sampling profiler, a dev dependency) records every serving process from outside
while a workload runs: the server runs unchanged, with nothing switched on inside it. It
samples with `--gil` (the stack of the thread holding the GIL: the samples add up to Python's
CPU time, C code called without releasing the GIL included, and waiting is never counted) and
`--nonblocking` (the process is read without being stopped).

The **CPU budget per call** maps each sample to one phase of a call by the functions on its
stack (`PHASES`: the first phase, in that order, one of whose rules matches the stack) and
turns sample counts into microseconds of CPU per call: samples / rate / calls. The serving
processes' CPU over the same seconds, read per thread from /proc, gives the rest its size:
`OUTSIDE`, C code that released the GIL (SQLite's engine, libpq, OpenSSL, system calls) and
threads that never run Python (gRPC core's).

Why from stacks, not from timers inside the server: it needs no code in `vault` (zero cost
when off, as nothing exists to switch off), it sees every phase including ones nobody thought
to time (`other` names its own top functions), and it can never expose a value or a token:
py-spy reads function names, file names and line numbers, never a variable (`--locals` is never
passed). Its cost: a sample is a statistical estimate (200 Hz over 5-10 s: a phase of 5% is
known to about +-1 percentage point).
"""

from __future__ import annotations

import html
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

Stack = tuple[str, ...]

# -- reading py-spy's output ------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def short_file(path: str) -> str:
    """A frame's file without the machine's prefixes: `vault/storage/sql/values.py`,
    `sqlalchemy/engine/base.py`, `threading.py`."""
    p = path.replace("\\", "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in p:
            return p.split(marker, 1)[1]
    root = str(ROOT).replace("\\", "/") + "/"
    if p.startswith(root):
        return p[len(root) :]
    m = re.search(r"/lib/python3\.\d+/(.*)$", p)
    if m:
        return m.group(1)
    return p


def frame_name(raw: str) -> str:
    """`func (file)` without the line number and with a short file: one name per function, so
    that a function's samples add up whatever line each was taken at."""
    m = _FRAME.match(raw.strip())
    if not m:
        return raw.strip()
    return f"{m.group('func')} ({short_file(m.group('file'))})"


def parse_collapsed(lines: Iterable[str]) -> Counter[Stack]:
    """Collapsed stacks (`a;b;c 12`, outermost first) as counts per stack of function names."""
    out: Counter[Stack] = Counter()
    for raw in lines:
        text = raw.rstrip("\n")
        if not text.strip():
            continue
        stack_text, _, count = text.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        stack = tuple(frame_name(f) for f in stack_text.split(";") if f)
        if stack:
            out[stack] += int(count)
    return out


def write_collapsed(stacks: Counter[Stack], path: Path) -> None:
    path.write_text(
        "".join(f"{';'.join(s)} {n}\n" for s, n in sorted(stacks.items(), key=lambda x: -x[1])),
        encoding="utf-8",
    )


# -- tables ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionTime:
    name: str
    own: int  # samples where it is the innermost frame
    cumulative: int  # samples where it is anywhere on the stack (counted once per sample)


def function_times(stacks: Counter[Stack]) -> list[FunctionTime]:
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    for stack, n in stacks.items():
        own[stack[-1]] += n
        for name in set(stack):
            cumulative[name] += n
    return [FunctionTime(name, own[name], cumulative[name]) for name in cumulative]


def top_table(stacks: Counter[Stack], n: int = 25, per_call_us: float = math.nan) -> str:
    """The top `n` functions by own time, then by cumulative time: samples, share, and µs per
    call if `per_call_us` (µs of one sample per call) is given."""
    total = sum(stacks.values())
    times = function_times(stacks)
    lines: list[str] = []
    orders: list[tuple[str, Callable[[FunctionTime], int]]] = [
        ("own time (the function itself, not what it calls)", lambda f: f.own),
        ("cumulative time (the function and all it calls)", lambda f: f.cumulative),
    ]
    for title, key in orders:
        lines.append(f"Top {n} functions by {title}")
        lines.append(f"  {'samples':>8} {'share':>6} {'us/call':>8}  function (file)")
        for f in sorted(times, key=lambda f: (-key(f), f.name))[:n]:
            k = key(f)
            us = "-" if math.isnan(per_call_us) else f"{k * per_call_us:.1f}"
            lines.append(f"  {k:>8} {k / total if total else 0:>6.1%} {us:>8}  {f.name}")
        lines.append("")
    return "\n".join(lines)


# -- the CPU budget per call ------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A frame matches if its file starts with one of `files` (short form, see `short_file`)
    and, when `funcs` is given, its function is one of them. A `leaf` rule looks at the
    innermost frame only (what the thread was doing itself, not what it was called from)."""

    files: tuple[str, ...]
    funcs: tuple[str, ...] = ()
    leaf: bool = False

    def matches(self, frame: str) -> bool:
        m = _FRAME.match(frame)
        func, file = (m.group("func"), m.group("file")) if m else (frame, "")
        if not file.startswith(self.files):
            return False
        # py-spy names a method `Class.method`: either form may be given
        return not self.funcs or func in self.funcs or func.rsplit(".", 1)[-1] in self.funcs

    def matches_stack(self, stack: Stack) -> bool:
        if self.leaf:
            return bool(stack) and self.matches(stack[-1])
        return any(self.matches(frame) for frame in stack)


# The phases of a call, in the order they claim a sample: a sample belongs to the first phase
# one of whose rules matches any frame of its stack. The audit comes first because it writes
# through the database and hashes (its SQL is the audit's, not a "database read"); the quota
# before the database for the same reason (its counter is a row); authentication before
# policy (the caller's key lookup is authentication). Frames are matched by file prefix, so a
# new function in one of these modules lands in its phase without a change here.
PHASES: tuple[tuple[str, tuple[Rule, ...]], ...] = (
    (
        "audit append (with Merkle hashing)",
        (
            Rule(("vault/domain/audit_log.py", "vault/domain/merkle.py")),
            Rule(("vault/storage/group_commit.py", "vault/storage/sql/audit.py")),
            # a tokenize writes its audit entries in its own transaction, beside its values
            Rule(("vault/storage/sql/rows.py",), ("insert_audit", "audited_subject")),
            Rule(("vault/domain/",), ("record", "append", "submit", "audit")),
        ),
    ),
    (
        "quota check",
        (Rule(("vault/domain/quotas.py", "vault/storage/sql/quotas.py")),),
    ),
    (
        "authentication",
        (
            Rule(("vault/transport/rpc.py",), ("authenticate", "peer", "_bearer")),
            Rule(("vault/domain/credentials.py", "vault/domain/identity.py")),
            Rule(("vault/domain/callers.py",)),
        ),
    ),
    (
        "policy decision",
        (Rule(("vault/domain/access.py", "vault/domain/policy.py", "vault/domain/retention.py")),),
    ),
    (
        "decryption and encryption",
        (
            Rule(("vault/crypto/", "cryptography/")),
            Rule(("vault/kms/", "vault/domain/keys.py", "vault/domain/subject_keys.py")),
        ),
    ),
    (
        "database",
        (
            Rule(("vault/storage/",)),
            Rule(("sqlalchemy/", "sqlite3/", "psycopg/", "psycopg_binary/", "psycopg_pool/")),
        ),
    ),
    (
        "metrics and access log",
        (
            Rule(("vault/observability/", "prometheus_client/", "opentelemetry/")),
            Rule(("vault/logs.py", "logging/")),
            Rule(("vault/transport/rpc.py",), ("_Watch.begin", "_Observed.end")),
        ),
    ),
    (
        "protobuf conversion",
        (
            Rule(("vault/transport/token_servicer.py",), ("_result_out", "_value_in", "_outcome")),
            Rule(("vault/transport/convert.py", "google/protobuf/")),
            Rule(("vault/transport/rpc.py",), ("_parse", "_serialize")),
        ),
    ),
    (
        # Every worker thread's stack starts in concurrent.futures and threading: only what a
        # thread does itself there (a hand-off, a wake-up, gRPC's Cython code called from the
        # event loop, which py-spy shows as the asyncio frame that called it) is the framework's.
        "gRPC, asyncio, thread hand-offs",
        (
            Rule(
                (
                    "grpc/",
                    "grpc_status/",
                    "asyncio/",
                    "concurrent/futures/",
                    "selectors.py",
                    "threading.py",
                    "queue.py",
                ),
                leaf=True,
            ),
        ),
    ),
)
OTHER = "other"
OUTSIDE = "not in the samples (GIL released: C code, gRPC core)"
PHASE_NAMES = tuple(name for name, _ in PHASES)


def phase_of(stack: Stack, phases: Sequence[tuple[str, tuple[Rule, ...]]] = PHASES) -> str:
    for name, rules in phases:
        if any(rule.matches_stack(stack) for rule in rules):
            return name
    return OTHER


def phase_samples(stacks: Counter[Stack]) -> Counter[str]:
    out: Counter[str] = Counter()
    for stack, n in stacks.items():
        out[phase_of(stack)] += n
    return out


@dataclass
class Budget:
    """Microseconds of server CPU per call, per phase, from `samples` taken at `rate` Hz over
    `calls` calls; `process_cpu_s` the serving processes' CPU seconds over the same window
    (from /proc), whose part no sample accounts for is `OUTSIDE`."""

    phases: dict[str, float]  # µs per call
    samples: int
    calls: int
    rate: float
    process_cpu_us: float  # per call, from /proc; NaN if unknown
    other_top: list[tuple[str, float]] = field(default_factory=list)  # µs per call
    threads: dict[str, float] = field(default_factory=dict)  # µs per call by thread name
    # Of process_cpu_us, the part in the kernel (system time), and the context switches per call
    # (every thread's voluntary and involuntary ones): the cost of hand-offs between threads
    # (the GIL, futexes, the event loop's wake-ups) that no Python sample shows. NaN: unknown.
    system_us: float = math.nan
    switches: float = math.nan

    @property
    def sampled_us(self) -> float:
        return sum(v for k, v in self.phases.items() if k != OUTSIDE)

    def as_dict(self) -> dict[str, Any]:
        return {
            "us_per_call": self.phases,
            "samples": self.samples,
            "calls": self.calls,
            "rate_hz": self.rate,
            "process_cpu_us_per_call": self.process_cpu_us,
            "other_top_us_per_call": self.other_top,
            "threads_us_per_call": self.threads,
            "system_us_per_call": self.system_us,
            "context_switches_per_call": self.switches,
        }


def budget_from_dict(d: dict[str, Any]) -> Budget:
    """A Budget from its `as_dict` (as the JSON keeps it; NaN may have become null)."""
    process = d.get("process_cpu_us_per_call")
    return Budget(
        phases={k: float(v or 0.0) for k, v in d["us_per_call"].items()},
        samples=int(d["samples"]),
        calls=int(d["calls"]),
        rate=float(d["rate_hz"]),
        process_cpu_us=math.nan if process is None else float(process),
        other_top=[(str(n), float(v)) for n, v in d.get("other_top_us_per_call", [])],
        threads={k: float(v) for k, v in d.get("threads_us_per_call", {}).items()},
        system_us=_number(d.get("system_us_per_call")),
        switches=_number(d.get("context_switches_per_call")),
    )


def _number(v: Any) -> float:
    return math.nan if v is None else float(v)


def budget(
    stacks: Counter[Stack],
    rate: float,
    calls: int,
    process_cpu_s: float = math.nan,
    threads_s: dict[str, float] | None = None,
    kernel: KernelShare | None = None,
) -> Budget:
    per_sample_us = 1e6 / rate / calls if calls and rate else math.nan
    counts = phase_samples(stacks)
    phases = {name: counts.get(name, 0) * per_sample_us for name in (*PHASE_NAMES, OTHER)}
    process_us = process_cpu_s * 1e6 / calls if calls else math.nan
    if not math.isnan(process_us):
        phases[OUTSIDE] = max(0.0, process_us - sum(phases.values()))
    own: Counter[str] = Counter()
    for stack, n in stacks.items():
        if phase_of(stack) == OTHER:
            own[stack[-1]] += n
    other_top = [(name, n * per_sample_us) for name, n in own.most_common(8)]
    threads = {k: v * 1e6 / calls for k, v in (threads_s or {}).items()} if calls else {}
    system_us = kernel.system_s * 1e6 / calls if kernel and calls else math.nan
    switches = kernel.switches / calls if kernel and calls else math.nan
    return Budget(
        phases,
        sum(stacks.values()),
        calls,
        rate,
        process_us,
        other_top,
        threads,
        system_us,
        switches,
    )


def render_budget(b: Budget, title: str = "", noop_cpu_us: float = math.nan) -> str:
    lines = [
        f"CPU budget per call{': ' + title if title else ''} ({b.samples:,} samples at "
        f"{b.rate:g} Hz over {b.calls:,} calls)",
        f"  {'phase':<52} {'us/call':>8} {'share':>6}",
    ]
    total = b.process_cpu_us if not math.isnan(b.process_cpu_us) else b.sampled_us
    for name, us in b.phases.items():
        share = us / total if total else math.nan
        lines.append(f"  {name:<52} {us:>8.1f} {share:>6.1%}")
    lines.append(f"  {'total (serving processes, from /proc)':<52} {total:>8.1f}")
    if not math.isnan(b.system_us):
        share = b.system_us / total if total else math.nan
        lines.append(
            f"  {'  of which in the kernel (system time)':<52} {b.system_us:>8.1f} {share:>6.1%}"
        )
    if not math.isnan(b.switches):
        lines.append(f"  {'context switches per call (all threads)':<52} {b.switches:>8.1f}")
    if not math.isnan(noop_cpu_us):
        lines.append(
            f"  {'the no-op server, same method (measured)':<52} {noop_cpu_us:>8.1f}   "
            f"gap {total - noop_cpu_us:,.0f} us"
        )
    if b.threads:
        lines.append(
            "  CPU by thread name (from /proc; Python's threads are named after the process, "
            "gRPC core's grpc_*/default-executor...):"
        )
        lines.extend(
            f"    {us:8.1f}  {name}" for name, us in sorted(b.threads.items(), key=lambda x: -x[1])
        )
    if b.other_top:
        lines.append("  'other', its top functions by own time (us/call):")
        lines.extend(f"    {us:8.1f}  {name}" for name, us in b.other_top)
    return "\n".join(lines)


# -- a flame graph --------------------------------------------------------------------------


def _color(name: str) -> str:
    h = 0
    for ch in name:
        h = (h * 31 + ord(ch)) & 0xFFFFFF
    if "vault/" in name:
        return f"hsl({20 + h % 30},85%,{55 + h % 15}%)"  # pdvault's own code: orange
    return f"hsl({200 + h % 40},45%,{62 + h % 15}%)"  # libraries and the runtime: blue


def flame_svg(stacks: Counter[Stack], title: str = "", width: int = 1200) -> str:
    """An SVG flame graph (root at the bottom, children on top, widths by samples). Frames
    narrower than half a pixel are left out; each frame's tooltip gives samples and share."""
    total = sum(stacks.values())
    tree: dict[str, Any] = {"n": 0, "kids": {}}
    for stack, n in stacks.items():
        node = tree
        node["n"] += n
        for frame in stack:
            node = node["kids"].setdefault(frame, {"n": 0, "kids": {}})
            node["n"] += n
    depth = max((len(s) for s in stacks), default=0)
    row, top = 16, 40
    height = top + (depth + 1) * row + 10
    scale = (width - 20) / total if total else 0.0
    rects: list[str] = []

    def draw(node: dict[str, Any], x: float, level: int) -> None:
        for name, kid in sorted(node["kids"].items()):
            w = kid["n"] * scale
            if w >= 0.5:
                y = height - 10 - (level + 1) * row
                label = html.escape(name)
                tip = f"{label}: {kid['n']:,} samples, {kid['n'] / total:.1%}"
                text = ""
                if w > 30:
                    chars = int(w / 6.5)
                    shown = html.escape(name if len(name) <= chars else name[: chars - 2] + "..")
                    text = f'<text x="{x + 3:.1f}" y="{y + 11}">{shown}</text>'
                rects.append(
                    f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" '
                    f'height="{row - 1}" fill="{_color(name)}"/>{text}</g>'
                )
                draw(kid, x, level + 1)
            x += w

    draw(tree, 10.0, 0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="11">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<text x="10" y="20" font-size="14">{html.escape(title)} ({total:,} samples; '
        f"orange: pdvault, blue: libraries; hover for figures)</text>" + "".join(rects) + "</svg>\n"
    )


# -- recording -------------------------------------------------------------------------------


def py_spy() -> str:
    """The py-spy executable: next to this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    if here.exists():
        return str(here)
    found = shutil.which("py-spy")
    if found is None:
        raise FileNotFoundError(
            "py-spy is not installed: .venv/bin/pip install -c constraints.txt py-spy"
        )
    return found


def start_recording(
    pid: int, seconds: float, rate: int, out: Path, gil: bool = True
) -> subprocess.Popen[bytes]:
    """py-spy attached to `pid` for `seconds`, writing raw collapsed stacks to `out`. Without
    `--locals` (it never reads a variable) and without `--idle` (waiting threads are not CPU)."""
    return subprocess.Popen(  # noqa: S603  (our own tool, fixed arguments)
        [
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, math.ceil(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--full-filenames",
            "--output",
            str(out),
            # Only the thread holding the GIL: the samples add up to Python's CPU time, and
            # threads waiting (for the GIL, a lock, the disk) are never counted as busy.
            *(["--gil"] if gil else []),
            # Read the process's memory without stopping it: stopping 200 times a second for
            # every thread cost more than half of the throughput here.
            "--nonblocking",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def finish_recording(proc: subprocess.Popen[bytes], out: Path, timeout: float) -> Counter[Stack]:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    if not out.exists():
        raise RuntimeError(
            "py-spy wrote no profile: " + output.decode(errors="replace").strip()[-400:]
        )
    return parse_collapsed(out.read_text(encoding="utf-8", errors="replace").splitlines())


def _threads(pids: Iterable[int]) -> Iterator[tuple[tuple[int, int], Path, str]]:
    """Each thread of `pids` as ((pid, thread id), its /proc directory, its `stat` line);
    threads and processes that end meanwhile are skipped."""
    for pid in pids:
        try:
            tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            continue
        for tid in tids:
            where = Path(f"/proc/{pid}/task/{tid}")
            try:
                yield (pid, tid), where, (where / "stat").read_text()
            except OSError:
                continue


def _stat_fields(stat: str) -> list[str]:
    """The fields of a `stat` line after the command name (which may hold spaces): index 11
    is utime, 12 stime, in clock ticks."""
    return stat[stat.rfind(")") + 2 :].split()


def thread_cpu(pids: Iterable[int]) -> dict[tuple[int, int], tuple[str, float]]:
    """(pid, thread id) -> (thread name, CPU seconds so far), from /proc/<pid>/task/*/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[tuple[int, int], tuple[str, float]] = {}
    for key, _where, stat in _threads(pids):
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = _stat_fields(stat)
        out[key] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


@dataclass(frozen=True)
class KernelShare:
    system_s: float  # system CPU seconds
    switches: int  # voluntary + involuntary context switches


def kernel_counters(pids: Iterable[int]) -> dict[tuple[int, int], tuple[float, int]]:
    """(pid, thread id) -> (system CPU seconds, context switches so far), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[tuple[int, int], tuple[float, int]] = {}
    for key, where, stat in _threads(pids):
        try:
            status = (where / "status").read_text()
        except OSError:
            continue
        switches = sum(
            int(line.split()[1])
            for line in status.splitlines()
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
        )
        out[key] = (int(_stat_fields(stat)[12]) / tick, switches)
    return out


def kernel_share(
    before: dict[tuple[int, int], tuple[float, int]],
    after: dict[tuple[int, int], tuple[float, int]],
) -> KernelShare:
    """What the threads spent between two `kernel_counters` readings (a thread born in between
    counts whole)."""
    system = sum(s - before.get(k, (0.0, 0))[0] for k, (s, _) in after.items())
    switches = sum(n - before.get(k, (0.0, 0))[1] for k, (_, n) in after.items())
    return KernelShare(max(0.0, system), max(0, switches))


def thread_cpu_by_name(
    before: dict[tuple[int, int], tuple[str, float]],
    after: dict[tuple[int, int], tuple[str, float]],
) -> dict[str, float]:
    """CPU seconds spent between two `thread_cpu` readings, summed per thread name (a thread
    born in between counts whole)."""
    out: dict[str, float] = {}
    for key, (name, t) in after.items():
        out[name] = out.get(name, 0.0) + t - before.get(key, (name, 0.0))[1]
    return {k: round(v, 6) for k, v in out.items() if v > 0}


# -- one profiled measurement, used by the suite (--budget) and by main() ----------------------


@dataclass
class Profiled:
    stacks: Counter[Stack]
    budget: Budget
    requests_per_s: float
    seconds: float


def profile_workload(
    run_closed: Callable[[float, float], Future[Any]],
    serving: Sequence[int],
    seconds: float,
    rate: int,
    workdir: Path,
    warmup: float = 1.0,
) -> Profiled:
    """Start a closed loop (`run_closed(warmup, seconds)` returns a future of its JobResult),
    record every serving process for `seconds` once the warm-up is over, and return the merged
    stacks and the budget per call over the calls of the measured window."""
    future = run_closed(warmup, seconds)
    time.sleep(warmup + 0.3)  # the generator's start_at, then its warm-up
    procs = []
    threads_before = thread_cpu(serving)
    kernel_before = kernel_counters(serving)
    for pid in serving:
        out = workdir / f"py-spy-{pid}.txt"
        procs.append((start_recording(pid, seconds, rate, out), out))
    stacks: Counter[Stack] = Counter()
    for proc, out in procs:
        stacks.update(finish_recording(proc, out, timeout=seconds + 30))
    threads = thread_cpu_by_name(threads_before, thread_cpu(serving))
    kernel = kernel_share(kernel_before, kernel_counters(serving))
    result = future.result()
    calls_per_s = result.ok / result.window if result.window else 0.0
    calls = round(calls_per_s * seconds)
    # The serving processes' CPU over the recording, from /proc (the threads' sum); py-spy's
    # own start-up makes the recording a little longer than `seconds`, hence the threads' sum
    # rather than the generator's window.
    server_cpu_s = sum(threads.values()) if threads else math.nan
    return Profiled(
        stacks, budget(stacks, rate, calls, server_cpu_s, threads, kernel), calls_per_s, seconds
    )
