"""`python -m bench.trust`: what issue #12's trust features cost each request, in one run.

Issue #12 put three things on every request's path: the caller lookup (an API key checked
against the in-memory key table), the audit log's Merkle hashing (a subject ref keyed by the
data key, a leaf hash, the tree's frontier moved) with its head row locked and updated, the item
quota of a detokenize (one conditional upsert in the database) and the request rate (a token
bucket in memory). None of them can be switched off in the server, so this harness measures each
apart, in-process, on the database under test, and sets the sum beside what a whole single call
costs in the same run:

1. **End to end** (bench's own Runner, `TrustRunner`): `pdv serve` on the database with its
   metrics endpoint on (`PDV_METRICS_ADDR`), seeded and warmed, closed loops of `tokenize_1` and
   `detokenize_1` over gRPC: requests/s, the server's CPU per request and, on PostgreSQL, its
   processes' CPU per request; the endpoint, read before and after each loop, gives how many
   commits the audit's group commit made and how many entries each held
   (`pdvault_audit_commit_entries`), so how many times a request moved the log's head.
2. **Components**, in this process, against an application `vault.app.build_app` wired on a
   scratch copy of the same database: per call of each piece, the median of rounds, the wall
   time, this thread's CPU (pdvault's side; SQLite works in it) and the CPU of the PostgreSQL
   backends of the scratch database (/proc, the server is local). The audit head's cost is the
   difference between appending one entry through `rows.insert_audit` and inserting the same row
   without the head, less the leaf hash (counted apart): what one head move costs.

The verdict, on CPU: the pieces of one request (each weighted by how often a request pays it:
the head once per head move) are at most 15% of the CPU a single call costs the server, and on
PostgreSQL the database's processes too (the issue's budget). Wall time is kept for reference.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, text

from bench.document_transfers import settings
from bench.loadgen import JobResult, Mode
from bench.procs import HOST, PdvaultServer, PostgresDatabase, database_url, free_port
from bench.procstat import pids_named, run_seconds
from bench.suite import Options as SuiteOptions
from bench.suite import Runner, Target
from bench.workloads import Dataset, Workload
from vault.app import App, build_app
from vault.crypto.aead import AesGcmCipher
from vault.domain.audit_log import SubjectRefs, entry_bytes
from vault.domain.callers import issue_api_key
from vault.domain.merkle import MerkleTree, leaf_hash
from vault.domain.quotas import Rate, RateLimiter
from vault.domain.secrets import Secret
from vault.domain.types import (
    Action,
    AuditEvent,
    CallerName,
    Outcome,
    Purpose,
    SubjectId,
    Token,
)
from vault.storage.sql import rows
from vault.storage.tables import audit_events

PER_TX = 50  # audit appends per transaction in the head measurement
BUDGET = 0.15  # issue #12: the trust features' total cost under 15% of single-call throughput
WORKLOADS = ("tokenize_1", "detokenize_1")
IDLE_SECONDS = 1.0  # the database's CPU while nothing of the run calls it, before each loop
Say = Callable[[str], None]

# How often one single call pays each piece: per request, per audit entry (a single call
# writes one), or per move of the log's head. The item quota is a detokenize's alone
# (vault.domain.detokenization; a tokenize counts no items).
PER: dict[str, str] = {
    "caller lookup (API key)": "request",
    "rate: token bucket": "request",
    "quota: items counted in the database": "request",
    "audit: subject ref (HMAC under the data key)": "entry",
    "audit: leaf hash (Merkle)": "entry",
    "audit: head locked, read and moved (database)": "head move",
}
ONLY: dict[str, tuple[str, ...]] = {"quota: items counted in the database": ("detokenize_1",)}
# Head moves of a request outside the group commit. None since 2662d49: a tokenize's writes
# and entries go through the group commit too (Database.write with an order), and a
# detokenize's entries (SqlAuditLog.append); the metrics count every batch's commit.
OWN_TX_HEAD_MOVES = {"tokenize_1": 0.0, "detokenize_1": 0.0}


@dataclass(frozen=True)
class Cost:
    """Microseconds per call of one piece."""

    wall_us: float
    cpu_us: float  # the measuring thread's CPU: pdvault's side (and SQLite's, in-process)
    db_cpu_us: float = 0.0  # the PostgreSQL backends' CPU (0 on SQLite)

    @property
    def total_us(self) -> float:
        """What the verdict counts: CPU, pdvault's and the database's."""
        return self.cpu_us + self.db_cpu_us

    def minus(self, other: Cost) -> Cost:
        return Cost(
            max(0.0, self.wall_us - other.wall_us),
            max(0.0, self.cpu_us - other.cpu_us),
            max(0.0, self.db_cpu_us - other.db_cpu_us),
        )

    def __mul__(self, k: float) -> Cost:
        return Cost(self.wall_us * k, self.cpu_us * k, self.db_cpu_us * k)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "total_us": self.total_us}


def weighted(parts: Iterable[tuple[Cost, float]]) -> Cost:
    scaled = [c * k for c, k in parts]
    return Cost(
        sum(c.wall_us for c in scaled),
        sum(c.cpu_us for c in scaled),
        sum(c.db_cpu_us for c in scaled),
    )


class Backends:
    """The CPU seconds of the PostgreSQL backends serving `app`'s database, read from /proc (the
    server is local); nothing on SQLite, whose work is the calling thread's."""

    def __init__(self, app: App) -> None:
        self._db = app.database if app.database.dialect == "postgresql" else None

    def pids(self) -> set[int]:
        if self._db is None:
            return set()
        with self._db.engine.connect() as conn:
            return set(
                conn.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
                ).scalars()
            )

    @staticmethod
    def seconds(pids: Iterable[int]) -> dict[int, float]:
        return {p: run_seconds(p) for p in pids}


def per_call(work: Callable[[], object], rounds: int, seconds: float, backends: Backends) -> Cost:
    """Median over `rounds` of the wall time, this thread's CPU and the database backends' CPU
    per call of `work`."""
    walls, cpus, dbs = [], [], []
    for _ in range(rounds):
        work()  # a pooled connection checked out: its backend is listed below
        pids = backends.pids()
        db0 = backends.seconds(pids)
        n, start, cpu0 = 0, time.perf_counter(), time.thread_time()
        deadline = start + seconds
        while True:
            work()
            n += 1
            if n % 16 == 0 and time.perf_counter() >= deadline:
                break
        cpu1, end = time.thread_time(), time.perf_counter()
        db1 = backends.seconds(pids | backends.pids())  # one born meanwhile counts whole
        walls.append((end - start) / n * 1e6)
        cpus.append((cpu1 - cpu0) / n * 1e6)
        dbs.append(sum(t - db0.get(p, 0.0) for p, t in db1.items()) / n * 1e6)
    return Cost(statistics.median(walls), statistics.median(cpus), statistics.median(dbs))


def _event(seq: int) -> AuditEvent:
    return AuditEvent(
        occurred_at=datetime.now(UTC),
        caller=CallerName("payment"),
        action=Action.DETOKENIZE,
        outcome=Outcome.GRANTED,
        rule="category card_number allows purpose payment",
        token=Token(f"tok_{seq:020d}"),
        subject_ref="ref:" + "ab" * 32,
        request_id=f"req-{seq}",
    )


def components(app: App, rounds: int, seconds: float, log_size: int = 100_000) -> dict[str, Cost]:
    """The cost per call of each of issue #12's pieces, on `app`'s database (see PER), and the
    raw audit row insert for scale (`_audit_row_raw`)."""
    out: dict[str, Cost] = {}
    backends = Backends(app)
    secret, record = issue_api_key(CallerName("payment"))
    app.stores.credentials.add_api_key(record)
    app.authenticator.invalidate()
    app.authenticator.authenticate(secret)  # loaded
    out["caller lookup (API key)"] = per_call(
        lambda: app.authenticator.authenticate(secret), rounds, seconds, backends
    )

    refs = SubjectRefs(AesGcmCipher())
    key = Secret(os.urandom(32))
    subject = SubjectId("bench-subject-0001")
    out["audit: subject ref (HMAC under the data key)"] = per_call(
        lambda: refs.ref(key, subject), rounds, seconds, backends
    )

    # The item quota: one conditional upsert of the window's count (vault.storage.sql.quotas),
    # and the request rate: a token bucket in memory (its limit set out of reach).
    window = int(time.time()) // 3600 * 3600
    quotas = app.stores.quotas
    out["quota: items counted in the database"] = per_call(
        lambda: quotas.take_items(CallerName("payment"), Purpose("payment"), window, 1, 10**12),
        rounds,
        seconds,
        backends,
    )
    rates = RateLimiter({CallerName("payment"): Rate(10**9, 10**9)}, time.monotonic)
    out["rate: token bucket"] = per_call(
        lambda: rates.admit(CallerName("payment")), rounds, seconds, backends
    )

    # The leaf: one entry's bytes hashed and appended to a log of some size (the frontier is
    # log2(size) hashes), as rows.insert_audit does for each entry.
    tree = MerkleTree()
    for i in range(log_size):
        tree.append(leaf_hash(i.to_bytes(8, "big")))
    event = _event(1)
    out["audit: leaf hash (Merkle)"] = per_call(
        lambda: tree.append(leaf_hash(entry_bytes(event, tree.size, event.subject_ref))),
        rounds,
        seconds,
        backends,
    )

    # The head: entries appended through the Merkle log (the head row locked and read, the
    # frontier decoded, the leaf, the root, the head row moved), against the same rows inserted
    # without the head, PER_TX statements to a transaction: the commit is there either way and
    # only adds noise. Less the leaf, counted apart: what one move of the head costs.
    db = app.database
    counter = iter(range(10**9, 2 * 10**9))

    def append_with_head(conn: Any) -> None:
        for _ in range(PER_TX):
            rows.insert_audit(conn, [_event(next(counter))])

    def append_raw(conn: Any) -> None:
        for _ in range(PER_TX):
            seq = next(counter)
            conn.execute(
                insert(audit_events),
                [
                    {
                        "occurred_at": event.occurred_at,
                        "caller": event.caller,
                        "action": event.action.value,
                        "outcome": event.outcome.value,
                        "rule": event.rule,
                        "token": event.token,
                        "subject_id": event.subject_ref,
                        "request_id": f"req-{seq}",
                        "seq": seq,
                        "leaf_hash": bytes(32),
                    }
                ],
            )

    times: dict[str, list[Cost]] = {"head": [], "raw": []}  # interleaved: drift falls on both
    for _ in range(rounds):
        for name, body in (("head", append_with_head), ("raw", append_raw)):
            times[name].append(
                per_call(partial(db.write, body), 1, seconds, backends) * (1 / PER_TX)
            )
    head, raw = _median_cost(times["head"]), _median_cost(times["raw"])
    out["audit: head locked, read and moved (database)"] = head.minus(raw).minus(
        out["audit: leaf hash (Merkle)"]
    )
    out["_audit_row_raw"] = raw
    return out


def _median_cost(costs: list[Cost]) -> Cost:
    return Cost(
        statistics.median(c.wall_us for c in costs),
        statistics.median(c.cpu_us for c in costs),
        statistics.median(c.db_cpu_us for c in costs),
    )


# -- the end-to-end run: the group commit's batches, from pdvault's metrics ---------------------


def scrape(addr: str) -> dict[str, float]:
    """From pdvault's metrics endpoint: calls answered, audit commits and the entries they held,
    so far (every serving process's, summed)."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        body = r.read().decode("utf-8")
    found = {"requests": 0.0, "commits": 0.0, "entries": 0.0}
    names = {
        "grpc_server_handled_total": "requests",
        "pdvault_audit_commit_entries_count": "commits",
        "pdvault_audit_commit_entries_sum": "entries",
    }
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name in names:
                found[names[sample.name]] += sample.value
    return found


def audit_batches(
    workload: str, before: dict[str, float], after: dict[str, float]
) -> dict[str, float]:
    """How a workload's loop moved the audit log's head, from two scrapes around it."""
    d = {k: after[k] - before[k] for k in before}
    requests = d["requests"]
    group = d["commits"] / requests if requests else math.nan
    return {
        **d,
        "entries_per_commit": d["entries"] / d["commits"] if d["commits"] else math.nan,
        "group_commits_per_request": group,
        "head_moves_per_request": OWN_TX_HEAD_MOVES[workload] + group,
    }


def _db_seconds(name: str) -> dict[int, float]:
    return {p: run_seconds(p) for p in pids_named(name)}


def idle_cpu_per_s(name: str, seconds: float) -> float:
    """CPU seconds per second the database's processes use while the run calls nothing: other
    work on the machine's shared PostgreSQL, and its own background."""
    before = _db_seconds(name)
    time.sleep(seconds)
    after = _db_seconds(name)
    return sum(t - before.get(p, 0.0) for p, t in after.items()) / seconds


class TrustRunner(Runner):
    """bench's Runner with pdvault's metrics endpoint on, read around each closed loop of
    pdvault: the group commit's batches; and the database's idle CPU just before it."""

    def __init__(self, opts: SuiteOptions) -> None:
        super().__init__(opts)
        self.metrics_addr = ""
        self.audit: dict[str, dict[str, float]] = {}
        self.idle_db_cpu_per_s: dict[str, float] = {}

    def _server(self, db: str) -> tuple[PdvaultServer, PostgresDatabase | None]:
        server, pg = super()._server(db)
        self.metrics_addr = f"{HOST}:{free_port()}"
        server.extra_env["PDV_METRICS_ADDR"] = self.metrics_addr
        return server, pg

    def _jobs(self, target: Target, w: Workload, data: Dataset, mode: Mode, **kw: Any) -> JobResult:
        if mode != "closed" or target.name != "pdvault":
            return super()._jobs(target, w, data, mode, **kw)
        if target.db_process:
            self.idle_db_cpu_per_s[w.name] = idle_cpu_per_s(target.db_process, IDLE_SECONDS)
        before = scrape(self.metrics_addr)
        result = super()._jobs(target, w, data, mode, **kw)
        self.audit[w.name] = audit_batches(w.name, before, scrape(self.metrics_addr))
        return result


def verdicts(parts: dict[str, Cost], calls: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each workload's cost of issue #12 per request, against what the call costs: pdvault's
    CPU and the database's (its idle CPU taken off) in the numerator and the denominator alike."""
    out = {}
    for w, c in calls.items():
        weights = {}
        for name, per in PER.items():
            if w not in ONLY.get(name, (w,)):
                weights[name] = 0.0
            elif per == "head move":
                weights[name] = c["audit"]["head_moves_per_request"]
            else:
                weights[name] = 1.0
        cost = weighted((parts[n], k) for n, k in weights.items())
        db = max(0.0, c["db_cpu_us"] - c["db_idle_cpu_us"])
        denominator = c["server_cpu_us"] + db
        out[w] = {
            "weights": weights,
            "cost": cost.as_dict(),
            "denominator_us": denominator,
            "share": cost.total_us / denominator,
            "share_pdvault_only": cost.cpu_us / c["server_cpu_us"],
            "share_wall_over_server_cpu": cost.wall_us / c["server_cpu_us"],
        }
    return out


def run(opts: argparse.Namespace, say: Say) -> dict[str, Any]:
    dbs = ("sqlite", "postgresql") if opts.db == "both" else (opts.db,)
    quick = opts.quick
    suite = SuiteOptions(
        dbs=dbs,
        kms="local",
        quick=quick,
        duration=1.5 if quick else 4.0,
        warmup=0.5 if quick else 1.0,
        only=WORKLOADS,
        postgres_url=opts.postgres_url,
    )
    runner = TrustRunner(suite)
    out: dict[str, Any] = {"budget": BUDGET, "databases": {}}
    try:
        noop = runner.noop("aio")
        out["noop"] = noop
        for db in dbs:
            say(f"{db}: end to end, tokenize_1 and detokenize_1 over gRPC")
            runner.audit, runner.idle_db_cpu_per_s = {}, {}
            measurements, _ = runner.pdvault(db)
            calls = {}
            for m in measurements:
                w, cpu = m["workload"], m["closed"]["cpu_ms_per_request"]
                rate = m["closed"]["requests_per_s"]
                pg = db == "postgresql"
                calls[w] = {
                    "requests_per_s": rate,
                    "server_cpu_us": cpu["server"] * 1000,
                    "db_cpu_us": cpu["db"] * 1000 if pg else 0.0,
                    "db_idle_cpu_us": runner.idle_db_cpu_per_s.get(w, 0.0) / rate * 1e6
                    if pg and rate
                    else 0.0,
                    "audit": runner.audit[w],
                }
            say(f"{db}: components in-process")
            with (
                database_url(db, opts.postgres_url, f"pdvault_bench_trust_{os.getpid()}") as url,
                tempfile.TemporaryDirectory() as tmp,
            ):
                app = build_app(settings(Path(tmp), url))
                try:
                    parts = components(app, opts.rounds, 0.3 if quick else 1.0)
                finally:
                    app.close()
            raw = parts.pop("_audit_row_raw")
            out["databases"][db] = {
                "calls": calls,
                "components": {n: {"per": PER[n], **c.as_dict()} for n, c in parts.items()},
                "audit_row_raw": raw.as_dict(),
                "workloads": verdicts(parts, calls),
            }
    finally:
        runner.close()
    return out


def render(out: dict[str, Any]) -> str:
    lines = []
    for db, r in out["databases"].items():
        lines.append(f"== {db}")
        for w, c in r["calls"].items():
            a = c["audit"]
            lines.append(
                f"  {w:<14} {c['requests_per_s']:8.0f} req/s, server CPU "
                f"{c['server_cpu_us']:7.0f} us/request, database CPU {c['db_cpu_us']:6.0f} "
                f"(idle {c['db_idle_cpu_us']:.0f}); head moves/request "
                f"{a['head_moves_per_request']:.3f}, entries/group commit "
                f"{a['entries_per_commit']:.2f}"
            )
        lines.append(f"  {'per call, us':<48} {'wall':>8} {'CPU':>8} {'db CPU':>8}  per")
        for name, c in r["components"].items():
            lines.append(
                f"  {name:<48} {c['wall_us']:8.1f} {c['cpu_us']:8.1f} {c['db_cpu_us']:8.1f}  "
                f"{c['per']}"
            )
        raw = r["audit_row_raw"]
        lines.append(
            f"  {'(raw audit row insert, for scale)':<48} {raw['wall_us']:8.1f} "
            f"{raw['cpu_us']:8.1f} {raw['db_cpu_us']:8.1f}"
        )
        for w, v in r["workloads"].items():
            cost = v["cost"]
            verdict = "PASS" if v["share"] <= out["budget"] else "MISS"
            lines.append(
                f"  {verdict} {w}: {cost['total_us']:.0f} us of CPU per request, {v['share']:.1%} "
                f"of the call's {v['denominator_us']:.0f} us (budget {out['budget']:.0%}); "
                f"pdvault's alone {v['share_pdvault_only']:.1%}, wall {cost['wall_us']:.0f} us"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.trust", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short measurements: about a minute")
    p.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--rounds", type=int, default=5, help="rounds per component (median)")
    p.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    opts = p.parse_args(argv)

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    out = run(opts, say)
    print(render(out))
    if opts.json is not None:
        opts.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
