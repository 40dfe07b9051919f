"""`python -m bench.trust`: what issue #12's trust features cost each request, in one run.

Issue #12 put three things on every request's path: the caller lookup (an API key checked
against the in-memory key table), the audit log's Merkle hashing (a subject ref keyed by the
data key, a leaf hash, the tree's frontier moved) with its head row locked and updated in the
request's transaction, the item quota (one conditional upsert in the database) and the request
rate (a token bucket in memory). None of them can be
switched off in the server, so this harness measures each apart, in-process, on the database
under test, and sets the sum beside what a whole single call costs the server in the same run:

1. **End to end** (bench's own Runner): `pdv serve` on the database, seeded and warmed, closed
   loops of `tokenize_1` and `detokenize_1` over gRPC: requests/s and the server's CPU per
   request; the no-op gRPC server in the same model as the bound.
2. **Components**, in this process, against an application `vault.app.build_app` wired on a
   scratch copy of the same database: microseconds per request of each piece, the median of
   rounds. The audit head's cost is the difference between a transaction that appends one entry
   through `rows.insert_audit` and one that inserts the same row without the head (the raw
   baseline).

The verdict: the components' sum is at most 15% of the server's CPU per single call (the
issue's budget). Wall time of a database statement is counted in full, an upper bound on the
CPU it adds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bench.document_transfers import settings
from bench.procs import database_url
from bench.suite import Options as SuiteOptions
from bench.suite import Runner
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
Say = Callable[[str], None]


def per_call_us(work: Callable[[], object], rounds: int, seconds: float) -> float:
    """Median over `rounds` of the wall microseconds per call of `work`."""
    results = []
    for _ in range(rounds):
        n, start = 0, time.perf_counter()
        deadline = start + seconds
        while True:
            work()
            n += 1
            if n % 16 == 0 and time.perf_counter() >= deadline:
                break
        results.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(results)


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


def components(app: App, rounds: int, seconds: float, log_size: int = 100_000) -> dict[str, float]:
    """Microseconds per request of each of issue #12's pieces, on `app`'s database."""
    out: dict[str, float] = {}
    secret, record = issue_api_key(CallerName("payment"))
    app.stores.credentials.add_api_key(record)
    app.authenticator.invalidate()
    app.authenticator.authenticate(secret)  # loaded
    out["caller lookup (API key)"] = per_call_us(
        lambda: app.authenticator.authenticate(secret), rounds, seconds
    )

    refs = SubjectRefs(AesGcmCipher())
    key = Secret(os.urandom(32))
    subject = SubjectId("bench-subject-0001")
    out["audit: subject ref (HMAC under the data key)"] = per_call_us(
        lambda: refs.ref(key, subject), rounds, seconds
    )

    # The item quota: one conditional upsert of the window's count (vault.storage.sql.quotas),
    # and the request rate: a token bucket in memory (its limit set out of reach).
    window = int(time.time()) // 3600 * 3600
    quotas = app.stores.quotas
    out["quota: items counted in the database"] = per_call_us(
        lambda: quotas.take_items(CallerName("payment"), Purpose("payment"), window, 1, 10**12),
        rounds,
        seconds,
    )
    rates = RateLimiter({CallerName("payment"): Rate(10**9, 10**9)}, time.monotonic)
    out["rate: token bucket"] = per_call_us(
        lambda: rates.admit(CallerName("payment")), rounds, seconds
    )

    tree = MerkleTree()
    for i in range(log_size):  # a log of some size: the frontier is log2(size) hashes
        tree.append(leaf_hash(i.to_bytes(8, "big")))
    frontier = tree.to_bytes()
    event = _event(1)

    def hash_one() -> None:
        t = MerkleTree.from_bytes(frontier)
        t.append(leaf_hash(entry_bytes(event, t.size, event.subject_ref)))
        t.root()
        t.to_bytes()

    out["audit: leaf hash and tree head (Merkle)"] = per_call_us(hash_one, rounds, seconds)

    # The head in the database: entries appended through the Merkle log (the head row locked,
    # read and moved each time), against the same rows inserted without the head, PER_TX
    # statements to a transaction: the commit is there either way and only adds noise.
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

    times: dict[str, list[float]] = {"head": [], "raw": []}  # interleaved: drift falls on both
    for _ in range(rounds):
        times["head"].append(per_call_us(lambda: db.write(append_with_head), 1, seconds) / PER_TX)
        times["raw"].append(per_call_us(lambda: db.write(append_raw), 1, seconds) / PER_TX)
    head, raw = statistics.median(times["head"]), statistics.median(times["raw"])
    out["audit: head locked and moved (database)"] = max(0.0, head - raw)
    out["_audit_row_raw_us"] = raw
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
        only=("tokenize_1", "detokenize_1"),
        postgres_url=opts.postgres_url,
    )
    runner = Runner(suite)
    out: dict[str, Any] = {"budget": BUDGET, "databases": {}}
    try:
        noop = runner.noop("aio")
        out["noop"] = noop
        for db in dbs:
            say(f"{db}: end to end, tokenize_1 and detokenize_1 over gRPC")
            measurements, _ = runner.pdvault(db)
            calls = {
                m["workload"]: {
                    "requests_per_s": m["closed"]["requests_per_s"],
                    "server_cpu_us": m["closed"]["cpu_ms_per_request"]["server"] * 1000,
                }
                for m in measurements
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
            raw = parts.pop("_audit_row_raw_us")
            total = sum(parts.values())
            out["databases"][db] = {
                "calls": calls,
                "components_us": parts,
                "audit_row_raw_us": raw,
                "total_us": total,
                "share": {w: total / c["server_cpu_us"] for w, c in calls.items()},
            }
    finally:
        runner.close()
    return out


def render(out: dict[str, Any]) -> str:
    lines = []
    for db, r in out["databases"].items():
        lines.append(f"== {db}")
        for w, c in r["calls"].items():
            lines.append(
                f"  {w:<14} {c['requests_per_s']:8.0f} req/s, server CPU "
                f"{c['server_cpu_us']:7.0f} us/request"
            )
        for name, us in r["components_us"].items():
            lines.append(f"  {name:<48} {us:8.1f} us")
        lines.append(f"  {'(raw audit row insert, for scale)':<48} {r['audit_row_raw_us']:8.1f} us")
        lines.append(f"  {'total of issue #12 per request':<48} {r['total_us']:8.1f} us")
        for w, share in r["share"].items():
            verdict = "PASS" if share <= out["budget"] else "MISS"
            lines.append(
                f"  {verdict} {w}: {share:.1%} of the server's CPU per call "
                f"(budget {out['budget']:.0%})"
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
