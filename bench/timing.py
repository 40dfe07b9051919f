"""`python -m bench.timing`: does the time of a refused detokenize tell whether a token exists?

Issue #8, item 9. A caller who may not read a token's category gets the same answer for it as
for a token that was never issued (PERMISSION_DENIED, reason TOKEN_REFUSED), and so does a
caller for a token whose subject was shredded, when it could not have read that category. The
answers' bytes are the same; this command measures whether their *time* differs.

It starts pdvault (one serving process, the local key file, SQLite or PostgreSQL), seeds through
the API three classes of tokens that `shipping` asking for `product_shipping` is refused:

- `forbidden`: card-number tokens of a live subject (shipping may not read `card_number`);
- `shredded`: card-number tokens of a subject then shredded (SubjectService.ShredSubject, `ops`);
- `unknown`: well-formed opaque tokens (`tok_` + 26 base32) that were never issued;

checks each class is what it claims (as `payment`: forbidden tokens read, shredded ones answer
SUBJECT_DELETED, unknown ones TOKEN_REFUSED), then detokenizes one token per call as `shipping`,
one call of each class per round in a random order, timing each call on the client
(`time.perf_counter_ns`), after an unmeasured warm-up. Per class: median and p90; per class
against `unknown`: the difference of the medians, a bootstrap 95% interval of it (rounds
resampled), and a permutation test (the class labels swapped within rounds at random, which is
how the order was drawn). And whether every error answer is byte-identical.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from pdvault.v1 import (
    common_pb2,
    subject_service_pb2,
    subject_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)

from bench import report
from bench.procs import BenchError, PdvaultServer, PostgresDatabase
from bench.stats import percentile
from bench.workloads import DETOKENIZE, sample_value

CLASSES = ("forbidden", "shredded", "unknown")
BASE = "unknown"  # what the other classes are compared with
CALLER, PURPOSE = "shipping", "product_shipping"  # may not read card_number
ALPHA = 0.01  # two comparisons; a difference is called distinguishable below this p
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


@dataclass(frozen=True)
class Options:
    db: str = "sqlite"
    rounds: int = 2000  # measured rounds: one call of each class per round
    warmup: int = 300  # unmeasured rounds first
    tokens_per_class: int = 100  # distinct tokens per class, used in turn
    resamples: int = 2000  # for the permutation test and for the bootstrap, each
    seed: int = 1
    max_seconds: float = 90.0  # the measured rounds stop here, whatever `rounds` says
    postgres_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    keep: bool = False


# -- statistics ---------------------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else math.nan


def median_difference(a: Sequence[float], b: Sequence[float]) -> float:
    return median(a) - median(b)


def paired_permutation_p(
    a: Sequence[float], b: Sequence[float], resamples: int, rng: random.Random
) -> float:
    """Two-sided p-value of median(a) - median(b) when a[i] and b[i] were measured in the same
    round, in an order drawn at random: under "the class makes no difference" each round's two
    samples are exchangeable, so the labels are swapped within rounds at random. The p-value
    counts the observed arrangement ((k + 1) / (resamples + 1)), so it is never 0. The test is
    exact for any statistic; the median loses power only on heavily tied samples, which
    nanosecond latencies are not."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    if not a:
        return math.nan
    observed = abs(median_difference(a, b))
    pairs = list(zip(a, b, strict=True))
    at_least = 0
    for _ in range(resamples):
        bits = rng.getrandbits(len(pairs))
        left: list[float] = []
        right: list[float] = []
        for i, (x, y) in enumerate(pairs):
            swap = bits >> i & 1
            left.append(y if swap else x)
            right.append(x if swap else y)
        # A tolerance, so that ties with the observed value count as "at least as large".
        if abs(median_difference(left, right)) >= observed - 1e-12:
            at_least += 1
    return (at_least + 1) / (resamples + 1)


def bootstrap_interval(
    a: Sequence[float],
    b: Sequence[float],
    resamples: int,
    rng: random.Random,
    level: float = 0.95,
) -> tuple[float, float]:
    """A percentile bootstrap interval of median(a) - median(b), resampling whole rounds (a[i]
    and b[i] together), so that drift of the machine over the run stays paired."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    n = len(a)
    if n == 0:
        return math.nan, math.nan
    diffs = []
    for _ in range(resamples):
        idx = rng.choices(range(n), k=n)
        diffs.append(median_difference([a[i] for i in idx], [b[i] for i in idx]))
    diffs.sort()
    tail = (1 - level) / 2 * 100
    return percentile(diffs, tail), percentile(diffs, 100 - tail)


def compare(
    a: Sequence[float], b: Sequence[float], resamples: int, seed: int
) -> dict[str, float | bool]:
    """median(a) against median(b) (samples in µs): the difference, its share of median(b),
    a 95% interval and a p-value; `distinguishable` when p < ALPHA."""
    diff = median_difference(a, b)
    low, high = bootstrap_interval(a, b, resamples, random.Random(seed))
    p = paired_permutation_p(a, b, resamples, random.Random(seed + 1))
    return {
        "difference_us": diff,
        "difference_pct": diff / median(b) * 100 if median(b) else math.nan,
        "ci95_low_us": low,
        "ci95_high_us": high,
        "p_value": p,
        "distinguishable": p < ALPHA,
    }


# -- seeding ------------------------------------------------------------------------------------


def _metadata(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def _cards(rng: random.Random, n: int) -> list[token_service_pb2.TokenizeField]:
    return [
        token_service_pb2.TokenizeField(
            category="card_number",
            value=common_pb2.Value(text=sample_value(rng, "card_number")),
            token_format=token_service_pb2.TOKEN_FORMAT_OPAQUE,  # the unknown ones' shape
        )
        for _ in range(n)
    ]


def unknown_tokens(rng: random.Random, n: int) -> list[str]:
    """Well-formed opaque tokens, never issued (128 random bits each)."""
    return ["tok_" + "".join(rng.choice(_BASE32) for _ in range(26)) for _ in range(n)]


def seed_classes(server: PdvaultServer, n: int, rng: random.Random) -> dict[str, list[str]]:
    """The three classes' tokens, made through the API."""
    tag = f"{rng.getrandbits(32):08x}"
    with grpc.insecure_channel(server.addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        tokens = token_service_pb2_grpc.TokenServiceStub(channel)
        subjects = subject_service_pb2_grpc.SubjectServiceStub(channel)
        payment = _metadata(server.api_key("payment"))
        made: dict[str, list[str]] = {}
        for cls in ("forbidden", "shredded"):
            answer = tokens.Tokenize(
                token_service_pb2.TokenizeRequest(
                    subject=f"timing-{cls}-{tag}", fields=_cards(rng, n)
                ),
                metadata=payment,
                timeout=60,
            )
            made[cls] = [r.token for r in answer.results]
        subjects.ShredSubject(
            subject_service_pb2.ShredSubjectRequest(subject=f"timing-shredded-{tag}"),
            metadata=_metadata(server.api_key("ops")),
            timeout=60,
        )
        made["unknown"] = unknown_tokens(rng, n)
        _check_classes(tokens, payment, made)
    return made


def _check_classes(
    stub: token_service_pb2_grpc.TokenServiceStub,
    payment: tuple[tuple[str, str]],
    made: dict[str, list[str]],
) -> None:
    """As `payment` (who may read card numbers for `payment`), each class answers as it should:
    the forbidden tokens exist, the shredded ones belonged to a deleted subject, the unknown
    ones exist nowhere."""
    expected = {"forbidden": "value", "shredded": "SUBJECT_DELETED", "unknown": "TOKEN_REFUSED"}
    for cls, want in expected.items():
        answer = stub.Detokenize(
            token_service_pb2.DetokenizeRequest(tokens=made[cls], purpose="payment"),
            metadata=payment,
            timeout=60,
        )
        got = {_outcome(r) for r in answer.results}
        if got != {want}:
            raise BenchError(f"seeding: {cls} tokens answer {sorted(got)} to payment, not {want}")


def _outcome(result: token_service_pb2.DetokenizeResult) -> str:
    if not result.HasField("error"):
        return "value"
    return _reason(result.error) or status_code_name(result.error.code)


def _reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def status_code_name(code: int) -> str:
    for c in grpc.StatusCode:
        if c.value[0] == code:
            return str(c.name)
    return str(code)


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Samples:
    """Per class, one latency (ns) per round, and every raw answer."""

    ns: dict[str, list[int]]
    answers: dict[str, list[bytes]]
    rounds: int = 0
    stopped_early: bool = False


def measure(
    addr: str,
    api_key: str,
    made: dict[str, list[str]],
    opts: Options,
    progress: Callable[[str], None],
) -> Samples:
    rng = random.Random(opts.seed)
    bodies = {
        cls: [
            token_service_pb2.DetokenizeRequest(tokens=[t], purpose=PURPOSE).SerializeToString()
            for t in tokens
        ]
        for cls, tokens in made.items()
    }
    out = Samples(ns={c: [] for c in CLASSES}, answers={c: [] for c in CLASSES})
    metadata = _metadata(api_key)
    order = list(CLASSES)
    with grpc.insecure_channel(addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        call: Any = channel.unary_unary(DETOKENIZE)  # bytes in, bytes out
        gc.collect()
        gc.disable()  # no collector pause of the client lands on one class more than another
        try:
            deadline = time.monotonic() + opts.max_seconds
            for r in range(opts.warmup + opts.rounds):
                measured = r >= opts.warmup
                if measured and time.monotonic() > deadline:
                    out.stopped_early = True
                    break
                rng.shuffle(order)
                for cls in order:
                    body = bodies[cls][r % len(bodies[cls])]
                    t0 = time.perf_counter_ns()
                    answer = call(body, metadata=metadata, timeout=10)
                    t1 = time.perf_counter_ns()
                    if measured:
                        out.ns[cls].append(t1 - t0)
                        out.answers[cls].append(answer)
                if measured:
                    out.rounds += 1
                elif r == opts.warmup - 1:
                    progress(f"warmed up ({opts.warmup} rounds); measuring")
        finally:
            gc.enable()
    return out


def identical_errors(samples: Samples) -> dict[str, Any]:
    """Whether every refusal is the same bytes: the google.rpc.Status of each result, and the
    whole result with its token (the one thing that must differ) cleared."""
    statuses: dict[bytes, int] = {}
    results: set[bytes] = set()
    per_class: dict[str, int] = {}
    refused = 0
    for cls in CLASSES:
        mine: set[bytes] = set()
        for raw in samples.answers[cls]:
            answer = token_service_pb2.DetokenizeResponse.FromString(raw)
            for result in answer.results:
                if not result.HasField("error"):
                    continue
                refused += 1
                wire = result.error.SerializeToString()
                statuses[wire] = statuses.get(wire, 0) + 1
                mine.add(wire)
                result.ClearField("token")
                results.add(result.SerializeToString())
        per_class[cls] = len(mine)
    answers = sum(len(a) for a in samples.answers.values())
    one = next(iter(statuses)) if len(statuses) == 1 else b""
    status = status_pb2.Status.FromString(one) if one else None
    return {
        "identical": len(statuses) == 1 and len(results) == 1 and refused == answers,
        "answers": answers,
        "refused": refused,
        "distinct_statuses": len(statuses),
        "distinct_statuses_per_class": per_class,
        "distinct_results_without_token": len(results),
        "status_bytes": len(one),
        "status_hex": one.hex(),
        "code": status_code_name(status.code) if status else "",
        "reason": _reason(status) if status else "",
        "message": status.message if status else "",
    }


def summarize(samples: Samples, resamples: int, seed: int) -> dict[str, Any]:
    us = {c: [x / 1e3 for x in samples.ns[c]] for c in CLASSES}
    classes: dict[str, Any] = {}
    for i, cls in enumerate(CLASSES):
        ordered = sorted(us[cls])
        row: dict[str, Any] = {
            "count": len(ordered),
            "median_us": median(ordered),
            "p90_us": percentile(ordered, 90),
        }
        if cls != BASE:
            row[f"vs_{BASE}"] = compare(us[cls], us[BASE], resamples, seed + 10 * i)
        classes[cls] = row
    return classes


# -- the command --------------------------------------------------------------------------------


def run(opts: Options, say: Callable[[str], None]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="pdvault-timing-"))
    pg = None
    url = ""
    if opts.db == "postgresql":
        pg = PostgresDatabase(server=opts.postgres_url)
        pg.create()
        url = pg.url
    server = PdvaultServer(
        data_dir=workdir / "data",
        log_dir=workdir / "logs",
        database_url=url,
        kms="local",
        processes=1,
    )
    try:
        server.start()
        say(f"{opts.db}: pdvault serving on {server.addr} (pid {server.serving_pids[0]})")
        made = seed_classes(server, opts.tokens_per_class, random.Random(opts.seed))
        say(
            f"seeded {opts.tokens_per_class} tokens per class (forbidden, shredded, unknown); "
            "each answers payment as it should"
        )
        samples = measure(server.addr, server.api_key(CALLER), made, opts, say)
    finally:
        server.stop()
        if pg is not None:
            pg.drop()
        if opts.keep:
            say(f"kept logs and data in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    say(f"measured {samples.rounds} rounds; statistics ({opts.resamples} resamples)")
    return {
        "rounds": samples.rounds,
        "stopped_early": samples.stopped_early,
        "caller": CALLER,
        "purpose": PURPOSE,
        "classes": summarize(samples, opts.resamples, opts.seed),
        "errors": identical_errors(samples),
    }


def render(out: dict[str, Any]) -> str:
    o, meta = out["options"], out["meta"]
    lines = [
        f"pdvault detokenize timing by token class  {meta['started']}  commit {meta['commit']}"
        f"{' (dirty)' if meta['dirty'] else ''}  {o['db']}, 1 serving process, local key file",
        f"{out['rounds']} rounds of one call per class in random order"
        f"{' (stopped early at the time limit)' if out['stopped_early'] else ''}, "
        f"caller {out['caller']}, purpose {out['purpose']}; client-side latency",
        "",
        f"  {'class':<10} {'calls':>6} {'median us':>10} {'p90 us':>9} "
        f"{'vs unknown us':>14} {'%':>7} {'95% interval us':>18} {'p':>7}  verdict",
    ]
    for cls in CLASSES:
        c = out["classes"][cls]
        head = f"  {cls:<10} {c['count']:>6} {c['median_us']:>10.1f} {c['p90_us']:>9.1f} "
        v = c.get(f"vs_{BASE}")
        if v is None:
            lines.append(head + f"{'-':>14} {'-':>7} {'-':>18} {'-':>7}  (the reference)")
            continue
        interval = f"[{v['ci95_low_us']:+.1f}, {v['ci95_high_us']:+.1f}]"
        verdict = (
            f"distinguishable (p < {ALPHA:g})"
            if v["distinguishable"]
            else "not distinguishable from noise"
        )
        lines.append(
            head + f"{v['difference_us']:>+14.1f} {v['difference_pct']:>+6.1f}% {interval:>18} "
            f"{v['p_value']:>7.4f}  {verdict}"
        )
    e = out["errors"]
    lines.append("")
    if e["identical"]:
        lines.append(
            f"Error answers: byte-identical in all {e['answers']} calls: one google.rpc.Status "
            f"({e['status_bytes']} bytes, {e['code']} {e['reason']}), and one result once its "
            "token is cleared"
        )
    else:
        lines.append(
            f"Error answers DIFFER: {e['distinct_statuses']} distinct google.rpc.Status "
            f"(per class {e['distinct_statuses_per_class']}), "
            f"{e['distinct_results_without_token']} distinct results without their token, "
            f"{e['refused']} of {e['answers']} answers refused"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    d = Options()
    p = argparse.ArgumentParser(
        prog="python -m bench.timing",
        description="Time refused detokenizes of forbidden, shredded and unknown tokens "
        "(issue #8, item 9).",
    )
    p.add_argument("--db", choices=("sqlite", "postgresql"), default=d.db)
    p.add_argument("--rounds", type=int, default=d.rounds, help="measured rounds (3 calls each)")
    p.add_argument("--warmup", type=int, default=d.warmup, metavar="ROUNDS")
    p.add_argument("--tokens-per-class", type=int, default=d.tokens_per_class, metavar="N")
    p.add_argument("--resamples", type=int, default=d.resamples, metavar="N")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-seconds", type=float, default=d.max_seconds, metavar="S")
    p.add_argument("--postgres-url", default=d.postgres_url)
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    p.add_argument("--keep", action="store_true", help="keep the data and server log")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    opts = Options(
        db=args.db,
        rounds=args.rounds,
        warmup=args.warmup,
        tokens_per_class=args.tokens_per_class,
        resamples=args.resamples,
        seed=args.seed,
        max_seconds=args.max_seconds,
        postgres_url=args.postgres_url,
        keep=args.keep,
    )
    started = report.now()
    t0 = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {message}", file=sys.stderr, flush=True)

    try:
        out = run(opts, say)
    except BenchError as exc:
        print(f"bench.timing: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.timing: interrupted", file=sys.stderr)
        return 130
    out["meta"] = report.metadata(started)
    out["meta"]["seconds"] = round(time.monotonic() - t0, 1)
    out["options"] = asdict(opts)
    print(render(out))
    if args.json:
        report.write_json(out, args.json)
        print(f"\nJSON: {args.json}")
    return 0 if out["errors"]["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
