"""One benchmark run: the baselines, then pdvault on each database, in the same run.

Per workload: a closed loop finds the maximum throughput (and CPU per request at that load),
then an open loop at `open_fraction` (70%) of it gives the latency percentiles. Transit calls
are counted per workload when pdvault runs on the emulated HashiCorp Vault.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from array import array
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import baselines, stacks
from bench.loadgen import Job, JobResult, Mode, run_job
from bench.procs import BenchError, NoopServer, PdvaultServer, PostgresDatabase, Transit
from bench.procstat import rss_bytes
from bench.seed import SeedPlan, seed, warm
from bench.stats import percentile, summarize_ms
from bench.workloads import CALLER, NOOP_SUITE, SOAK, SUITE, Dataset, Workload

TRANSIT_DATA_CALLS = ("encrypt", "decrypt", "rewrap", "datakey")
# The no-op baselines' target names, per server model (bench.noop_server).
NOOP_TARGETS = {"aio": "noop", "threads": "noop_threads"}


@dataclass(frozen=True)
class Options:
    dbs: tuple[str, ...] = ("sqlite", "postgresql")
    kms: str = "vault"
    transit_latency_ms: float = 1.0
    duration: float = 5.0
    warmup: float = 1.0
    open_fraction: float = 0.7
    quick: bool = False
    workers: int = 0  # pdvault serving processes (PDV_PROCESSES); 0: pdvault's default
    max_workers: int = 16
    loadgen_procs: int = 1
    connections: int = 4  # per serving process, from each load-generator process
    concurrency: int = 0  # 0: each workload's own (16 per single call, 8 per batch)
    postgres_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    storage_threads: int = 4
    seed: SeedPlan = field(default_factory=SeedPlan)
    soak: float = 0.0
    only: tuple[str, ...] = ()
    keep: bool = False
    budget: bool = False  # profile each pdvault single-call workload: CPU budget per call
    budget_rate: int = 200  # py-spy samples per second


@dataclass
class Target:
    """Where the load goes: a server's address, who calls, which processes to watch."""

    name: str  # "noop", "noop_threads" or "pdvault"
    addr: str
    api_key: str
    pids: tuple[int, ...]
    serving: tuple[int, ...]
    db: str | None = None
    kms: str | None = None
    db_process: str | None = None
    kms_pid: int = 0


class Runner:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.started = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="pdvault-bench-"))
        self.transit: Transit | None = None
        self.pool = ProcessPoolExecutor(
            max_workers=opts.loadgen_procs, mp_context=multiprocessing.get_context("spawn")
        )

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
        if self.transit is not None:
            self.transit.stop()
        if self.opts.keep:
            self.say(f"kept logs and data in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the whole run ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        o = self.opts
        out: dict[str, Any] = {"baselines": {}, "measurements": [], "soak": None}
        for _ in self.pool.map(_ready, range(o.loadgen_procs)):  # start the generator early
            pass
        if o.kms == "vault":
            self.transit = Transit(latency=o.transit_latency_ms / 1000)
            self.transit.start()
        if o.soak > 0:
            out["soak"] = self.soak(o.dbs[0])
            return out
        self.say("crypto baseline: AES-256-GCM with cryptography")
        out["baselines"]["crypto"] = baselines.crypto(2.0 if not o.quick else 0.6)
        if self.transit is not None:
            self.say(f"Transit baseline: hvac round trips, {o.transit_latency_ms:g} ms injected")
            out["baselines"]["transit"] = {
                "injected_latency_ms": o.transit_latency_ms,
                **baselines.transit(
                    self.transit.url, self.transit.service_token, 2.0 if not o.quick else 0.6
                ),
            }
        # The no-op in pdvault's server model bounds pdvault (vsNoop); the thread-pool one shows
        # what the other model would allow on the same machine, in the same run (issue #10).
        out["baselines"]["noop"] = self.noop("aio")
        out["baselines"]["noop_threads"] = self.noop("threads")
        out["baselines"]["storage"] = {}
        for db in o.dbs:
            measurements, storage = self.pdvault(db)
            out["measurements"].extend(measurements)
            out["baselines"]["storage"][db] = storage
        _add_ratios(out)
        return out

    # -- targets ----------------------------------------------------------------------------

    def noop(self, model: str) -> list[dict[str, Any]]:
        server = NoopServer(
            self.workdir / "logs",
            model=model,
            max_workers=self.opts.max_workers,
            processes=self.opts.workers,
        )
        server.start()
        name = NOOP_TARGETS[model]
        self.say(
            f"{name}: no-op server ({model}) on {server.addr} from "
            f"{len(server.serving_pids)} processes {server.serving_pids}"
        )
        try:
            target = Target(name, server.addr, "pdv_noop", server.pids, server.serving_pids)
            data = Dataset(
                subjects=tuple(f"noop-{i}" for i in range(100)),
                tokens=tuple(f"tok_{i:026d}" for i in range(10_000)),
            )
            return [self.measure(target, w, data) for w in self._selected(NOOP_SUITE)]
        finally:
            server.stop()

    def _server(self, db: str) -> tuple[PdvaultServer, PostgresDatabase | None]:
        o = self.opts
        pg = None
        url = ""
        if db == "postgresql":
            pg = PostgresDatabase(server=o.postgres_url)
            pg.create()
            url = pg.url
        server = PdvaultServer(
            data_dir=self.workdir / db,
            log_dir=self.workdir / "logs" / db,
            database_url=url,
            kms=o.kms,
            vault_addr=self.transit.url if self.transit else "",
            vault_token=self.transit.service_token if self.transit else "",
            max_workers=o.max_workers,
            processes=o.workers,
        )
        return server, pg

    def _prepared(self, server: PdvaultServer, db: str, plan: SeedPlan | None = None) -> Dataset:
        """Start, seed, restart (an empty key cache), warm the known subjects' keys."""
        server.start()
        self.say(
            f"{db}: pdvault serving on {server.addr} from {len(server.serving_pids)} processes "
            f"{server.serving_pids}; seeding"
        )
        data = seed(server.addr, server.api_key(CALLER), plan or self.opts.seed, db, self.say)
        server.restart()
        passes = warm(server.addr, server.api_key(CALLER), data.tokens, server.serving_pids)
        self.say(f"{db}: restarted (empty caches); warmed in {passes} passes")
        return data

    def _target(self, server: PdvaultServer, db: str) -> Target:
        return Target(
            "pdvault",
            server.addr,
            server.api_key(CALLER),
            server.pids,
            server.serving_pids,
            db=db,
            kms=self.opts.kms,
            db_process="postgres" if db == "postgresql" else None,
            kms_pid=os.getpid() if self.transit is not None else 0,
        )

    def pdvault(self, db: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        server, pg = self._server(db)
        try:
            data = self._prepared(server, db)
            target = self._target(server, db)
            measurements = [self.measure(target, w, data) for w in self._selected(SUITE)]
            server.stop()
            self.say(f"{db}: storage baseline (SQLAlchemy Core, same database)")
            url = pg.url if pg else f"sqlite:///{server.data_dir / 'pdvault.db'}"
            storage = baselines.storage(
                url, 4.0 if not self.opts.quick else 1.2, self.opts.storage_threads
            )
            return measurements, storage
        finally:
            server.stop()
            if pg is not None:
                pg.drop()

    def _selected(self, suite: tuple[Workload, ...]) -> list[Workload]:
        only = self.opts.only
        return [w for w in suite if not only or w.name in only]

    # -- one workload -------------------------------------------------------------------------

    def _jobs(self, target: Target, w: Workload, data: Dataset, mode: Mode, **kw: Any) -> JobResult:
        o = self.opts
        n = o.loadgen_procs
        start_at = time.time() + 0.3
        jobs = []
        for i in range(n):
            part = _dataset_for(w, data, i, n)
            base = Job(
                addr=target.addr,
                api_key=target.api_key,
                workload=w,
                data=part,
                mode=mode,
                start_at=start_at,
                server_pids=target.pids,
                serving_pids=target.serving,
                channels_per_process=o.connections,
                db_process=target.db_process,
                kms_pid=target.kms_pid,
                seed=i + 1,
                tag=f"{target.name}{target.db or ''}{i}{int(start_at)}",
                warmup=0.0 if w.cold else o.warmup,
                duration=o.duration,
            )
            job = replace(base, **kw)
            if mode == "closed":
                job = replace(job, concurrency=max(1, math.ceil(job.concurrency / n)))
            else:
                job = replace(job, rate=job.rate / n)
            jobs.append(job)
        return _merge(list(self.pool.map(run_job, jobs)))

    def measure(self, target: Target, w: Workload, data: Dataset) -> dict[str, Any]:
        o = self.opts
        concurrency = o.concurrency or w.concurrency
        label = f"{target.name}{'/' + target.db if target.db else ''} {w.name}"
        if self.transit is not None:
            self.transit.reset_calls()
        closed = self._jobs(target, w, data, "closed", concurrency=concurrency)
        transit_calls = self.transit.calls() if self.transit is not None else None
        c = _describe(closed)
        c["concurrency"] = concurrency
        self.say(
            f"{label}: max {c['requests_per_s']:.0f} req/s ({c['fields_per_s']:.0f} fields/s) at "
            f"C={concurrency}, server CPU {c['cpu_ms_per_request']['server']:.2f} ms/req"
            + (f", errors {c['errors']}" if c["errors"] else "")
        )
        opened = None
        if not w.cold and closed.ok > 0:
            rate = o.open_fraction * c["requests_per_s"]
            result = self._jobs(target, w, data, "open", rate=rate)
            opened = _describe(result)
            opened["target_rate"] = rate
            lat = opened["latency_ms"]
            self.say(
                f"{label}: open loop at {rate:.0f} req/s: p50 {lat['p50_ms']:.2f} "
                f"p99 {lat['p99_ms']:.2f} p99.9 {lat['p999_ms']:.2f} ms"
            )
        transit = None
        if transit_calls is not None and target.name == "pdvault":
            sent = max(closed.sent, 1)
            data_calls = sum(transit_calls.get(k, 0) for k in TRANSIT_DATA_CALLS)
            transit = {
                "calls": transit_calls,
                "requests": closed.sent,
                "data_calls_per_request": data_calls / sent,
            }
        budget = None
        if o.budget and target.name == "pdvault" and w.batch == 1 and not w.new_subjects:
            # at least 5 s: at 200 Hz, enough samples for a phase of 5% to show
            budget = self.budget(target, w, data, max(o.duration, 5.0)).budget
            self.say(stacks.render_budget(budget, label))
        return {
            "budget": budget.as_dict() if budget else None,
            "target": target.name,
            "db": target.db,
            "kms": target.kms,
            "serving_processes": len(target.serving),
            "workload": w.name,
            "kind": w.kind,
            "batch": w.batch,
            "new_subjects": w.new_subjects,
            "cold": w.cold,
            "description": w.description,
            "baseline_workload": w.baseline,
            "closed": c,
            "open": opened,
            "transit": transit,
        }

    # -- where the time goes (py-spy; bench.profile) ----------------------------------------

    def budget(self, target: Target, w: Workload, data: Dataset, seconds: float) -> stacks.Profiled:
        """A closed loop of `w` while py-spy records every serving process: the stacks and
        the CPU budget per call (see bench.profile)."""
        concurrency = self.opts.concurrency or w.concurrency
        background = ThreadPoolExecutor(1)

        def run_closed(warmup: float, duration: float) -> Future[JobResult]:
            return background.submit(
                self._jobs,
                target,
                w,
                data,
                "closed",
                concurrency=concurrency,
                warmup=warmup,
                duration=duration,
            )

        try:
            return stacks.profile_workload(
                run_closed,
                target.serving,
                seconds,
                self.opts.budget_rate,
                self.workdir,
                warmup=max(self.opts.warmup, 0.5),
            )
        except (OSError, RuntimeError) as exc:  # py-spy missing, refused or silent
            raise BenchError(f"profiling {w.name}: {exc}") from None
        finally:
            background.shutdown()

    def profile_only(self, db: str, w: Workload, seconds: float, rate: int) -> stacks.Profiled:
        """`python -m bench.profile`: pdvault on `db`, seeded and warmed, one profiled loop."""
        self.opts = replace(self.opts, budget_rate=rate)
        if self.opts.kms == "vault":
            self.transit = Transit(latency=self.opts.transit_latency_ms / 1000)
            self.transit.start()
        server, pg = self._server(db)
        try:
            data = self._prepared(server, db)
            self.say(f"{db}: profiling {w.name} for {seconds:g} s at {rate} Hz")
            return self.budget(self._target(server, db), w, data, seconds)
        finally:
            server.stop()
            if pg is not None:
                pg.drop()

    # -- soak ---------------------------------------------------------------------------------

    def soak(self, db: str) -> dict[str, Any]:
        o = self.opts
        server, pg = self._server(db)
        try:
            data = self._prepared(server, db, replace(o.seed, cold_requests=0))
            target = self._target(server, db)
            closed = self._jobs(target, SOAK, data, "closed", concurrency=SOAK.concurrency)
            top = _describe(closed)["requests_per_s"]
            rate = o.open_fraction * top
            warmup = min(30.0, max(2.0, o.soak / 20))
            self.say(
                f"soak: {db}, max {top:.0f} req/s; {o.soak:.0f} s at {rate:.0f} req/s "
                f"(after {warmup:.0f} s of warm-up)"
            )
            job = Job(
                addr=target.addr,
                api_key=target.api_key,
                workload=SOAK,
                data=_dataset_for(SOAK, data, 0, 1),
                mode="open",
                rate=rate,
                warmup=warmup,
                duration=o.soak,
                server_pids=target.pids,
                serving_pids=target.serving,
                channels_per_process=o.connections,
                db_process=target.db_process,
                kms_pid=target.kms_pid,
                timeline=True,
            )
            future: Future[JobResult] = self.pool.submit(run_job, job)
            rss: list[tuple[float, int]] = []
            t0 = time.monotonic() + warmup
            while not future.done():
                rss.append((time.monotonic() - t0, sum(rss_bytes(p) for p in server.pids)))
                time.sleep(min(5.0, max(0.5, o.soak / 100)))
            result = future.result()
            return _soak_report(result, rss, rate, top, o.soak, db)
        finally:
            server.stop()
            if pg is not None:
                pg.drop()


def _ready(_i: int) -> int:
    return os.getpid()


def _dataset_for(w: Workload, data: Dataset, i: int, n: int) -> Dataset:
    """Only what the workload reads, and this process's share of the cold supply."""
    if w.cold:
        return Dataset(cold_groups=data.cold_groups[i::n], run_tag=data.run_tag)
    needs_subjects = w.kind in ("tokenize", "mix") and not w.new_subjects
    needs_tokens = w.kind in ("detokenize", "mix")
    return Dataset(
        subjects=data.subjects if needs_subjects else (),
        tokens=data.tokens if needs_tokens else (),
        run_tag=data.run_tag,
    )


def _merge(results: list[JobResult]) -> JobResult:
    """Several generator processes' results as one. CPU of the watched processes is the same
    for all of them (the first one's is kept); the clients' own CPU adds up."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
    cpu = first.cpu
    if cpu is not None:
        cpu = replace(cpu, client=sum(r.cpu.client for r in results if r.cpu is not None))
    return JobResult(
        ok=sum(r.ok for r in results),
        failed=sum(r.failed for r in results),
        errors=dict(errors),
        token_errors=sum(r.token_errors for r in results),
        fields=sum(r.fields for r in results),
        window=max(r.window for r in results),
        latencies=b"".join(r.latencies for r in results),
        send_lag=b"".join(r.send_lag for r in results),
        offsets=b"".join(r.offsets for r in results),
        cpu=cpu,
        server_rss=first.server_rss,
        dropped=sum(r.dropped for r in results),
        exhausted=any(r.exhausted for r in results),
        sent=sum(r.sent for r in results),
        connections=dict(sum((Counter(r.connections) for r in results), Counter[str]())),
    )


def _samples(raw: bytes) -> array[float]:
    out = array("d")
    out.frombytes(raw)
    return out


def _describe(r: JobResult) -> dict[str, Any]:
    requests = r.ok + r.failed
    per = 1e3 / requests if requests else math.nan
    cpu = r.cpu
    lag = summarize_ms(_samples(r.send_lag))
    return {
        "requests": r.ok,
        "window_s": r.window,
        "requests_per_s": r.ok / r.window if r.window else 0.0,
        "fields_per_s": r.fields / r.window if r.window else 0.0,
        "latency_ms": summarize_ms(_samples(r.latencies)),
        "send_lag_ms": {"p50_ms": lag["p50_ms"], "p99_ms": lag["p99_ms"]},
        "cpu_ms_per_request": {
            "server": cpu.server * per if cpu else math.nan,
            "client": cpu.client * per if cpu else math.nan,
            "db": cpu.db * per if cpu else math.nan,
            "kms": cpu.kms * per if cpu else math.nan,
        },
        "machine_busy": cpu.machine_utilization if cpu else math.nan,
        "errors": r.errors,
        "token_errors": r.token_errors,
        "dropped": r.dropped,
        "exhausted": r.exhausted,
        "server_rss_mb": r.server_rss / 2**20,
        "connections": r.connections,
    }


def _add_ratios(out: dict[str, Any]) -> None:
    noop = {m["workload"]: m for m in out["baselines"].get("noop", [])}
    threads = {m["workload"]: m for m in out["baselines"].get("noop_threads", [])}
    crypto = out["baselines"].get("crypto", {})
    for m in out["measurements"]:
        ratios: dict[str, Any] = {}
        base = noop.get(m["baseline_workload"])
        if base and base["closed"]["requests_per_s"]:
            ratios["noop_workload"] = m["baseline_workload"]
            ratios["vs_noop"] = m["closed"]["requests_per_s"] / base["closed"]["requests_per_s"]
        other = threads.get(m["baseline_workload"])
        if other and other["closed"]["requests_per_s"]:
            ratios["vs_noop_threads"] = (
                m["closed"]["requests_per_s"] / other["closed"]["requests_per_s"]
            )
        storage = out["baselines"].get("storage", {}).get(m["db"], {})
        phase = _storage_phase(m)
        if phase and phase in storage:
            ratios["storage_phase"] = phase
            ratios["vs_storage"] = m["closed"]["fields_per_s"] / storage[phase]["rows_per_s"]
        if crypto and m["kind"] != "mix":
            per_s = crypto["encrypt_per_s" if m["kind"] == "tokenize" else "decrypt_per_s"]
            ratios["vs_crypto"] = m["closed"]["fields_per_s"] / per_s
        m["ratios"] = ratios


def _storage_phase(m: dict[str, Any]) -> str | None:
    if m["kind"] == "mix":
        return None
    verb = "insert" if m["kind"] == "tokenize" else "select"
    return f"{verb}_{100 if m['batch'] >= 100 else 1}"


def _soak_report(
    r: JobResult,
    rss: list[tuple[float, int]],
    rate: float,
    top: float,
    seconds: float,
    db: str,
) -> dict[str, Any]:
    lat = _samples(r.latencies)
    at = _samples(r.offsets)
    tenth = seconds / 10
    windows = []
    for k in range(10):
        part = sorted(x for x, t in zip(lat, at, strict=True) if k * tenth <= t < (k + 1) * tenth)
        windows.append(
            {"from_s": k * tenth, "requests": len(part), "p99_ms": percentile(part, 99) * 1e3}
        )
    measured = [(t, b) for t, b in rss if t >= 0]
    first = [b for t, b in measured if t < tenth] or [b for _, b in measured[:1]]
    last = [b for t, b in measured if t >= seconds - tenth] or [b for _, b in measured[-1:]]
    rss_growth = (max(last) / max(first) - 1) if first and last else math.nan
    p99_first, p99_last = windows[0]["p99_ms"], windows[-1]["p99_ms"]
    drift = p99_last / p99_first - 1 if p99_first else math.nan
    problems = r.failed + r.token_errors + r.dropped
    return {
        "db": db,
        "seconds": seconds,
        "max_requests_per_s": top,
        "rate": rate,
        "requests": r.ok,
        "latency_ms": summarize_ms(lat),
        "windows": windows,
        "rss_mb": [(round(t, 1), round(b / 2**20, 1)) for t, b in rss],
        "rss_growth": rss_growth,
        "p99_drift": drift,
        "errors": r.errors,
        "token_errors": r.token_errors,
        "dropped": r.dropped,
        "verdicts": {
            "rss_growth_below_10pct": rss_growth < 0.10,
            "p99_drift_below_20pct": abs(drift) < 0.20,
            "no_errors": problems == 0,
        },
    }


def options_dict(o: Options) -> dict[str, Any]:
    return asdict(o)
