"""The load generator: gRPC asyncio clients in their own processes.

Two modes, both over one shared HTTP/2 channel per process with pre-encoded requests:

- closed loop: `concurrency` requests in flight; each completion sends the next at once. Its
  throughput is the maximum the server sustains (at that concurrency).
- open loop: requests are *scheduled* at a fixed rate, whether or not earlier ones have
  answered, and each latency is measured from the scheduled send time, not the actual one, so
  a stalled server or generator is charged for the wait (no coordinated omission). How late the
  generator itself sent (`send lag`) is reported beside it.

A job runs in a process of its own (see `bench.suite`), so its CPU time is the client's alone,
and it reads the CPU time of the server (and database, and key service) processes from /proc at
the exact edges of its measurement window.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import grpc
import grpc.aio
from pdvault.v1 import token_service_pb2

from bench.conns import own_sockets, server_of
from bench.procstat import CpuSnapshot, rss_bytes, snapshot
from bench.workloads import DETOKENIZE, TOKENIZE, Dataset, Exhausted, RequestSource, Workload

Mode = Literal["closed", "open"]


@dataclass(frozen=True)
class Job:
    addr: str
    api_key: str
    workload: Workload
    data: Dataset
    mode: Mode
    concurrency: int = 16
    rate: float = 0.0  # open loop: requests per second, for this process
    warmup: float = 1.0
    duration: float = 5.0
    start_at: float = 0.0  # time.time() to begin at, so that several processes start together
    server_pids: tuple[int, ...] = ()  # every process of the server (for its CPU time)
    serving_pids: tuple[int, ...] = ()  # those that answer calls (to balance connections)
    channels_per_process: int = 4  # connections per serving process, round-robin
    db_process: str | None = None  # command name of the database's processes ("postgres")
    kms_pid: int = 0  # the process serving the key service (the emulator), if any
    seed: int = 0
    tag: str = "0"
    timeline: bool = False  # keep every sample's scheduled time (soak windows)
    timeout: float = 10.0  # per-call deadline
    max_inflight: int = 4096


@dataclass
class JobResult:
    ok: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    token_errors: int = 0  # per-field/token failures inside answered calls
    fields: int = 0  # fields or tokens in the measured, successful calls
    window: float = 0.0  # seconds measured
    latencies: bytes = b""  # array('d') of seconds
    send_lag: bytes = b""  # open loop: array('d') of seconds
    offsets: bytes = b""  # timeline: array('d') of scheduled times from the window's start
    cpu: CpuSnapshot | None = None  # CPU seconds over the window (differences)
    server_rss: int = 0  # bytes, at the end
    dropped: int = 0  # open loop: scheduled calls never sent (the run's hard stop)
    exhausted: bool = False  # the cold-token supply ran out before the duration
    sent: int = 0  # every call answered, warm-up included (to divide Transit calls by)
    connections: dict[str, int] = field(default_factory=dict)  # per serving process


class _Recorder:
    def __init__(self) -> None:
        self.latencies = array("d")
        self.send_lag = array("d")
        self.offsets = array("d")
        self.errors: Counter[str] = Counter()
        self.ok = 0
        self.token_errors = 0
        self.fields = 0
        self.sent = 0

    def record(self, error: str | None, bad: int, n: int, latency: float) -> bool:
        """Count one measured call; True if it succeeded (its latency is kept)."""
        if error is not None:
            self.errors[error] += 1
            return False
        self.ok += 1
        self.token_errors += bad
        self.fields += n
        self.latencies.append(latency)
        return True


class _Window:
    """The measurement window's edges: when, and the CPU times there."""

    def __init__(self, job: Job, begin: float, end: float) -> None:
        self.job = job
        self.begin = begin
        self.end = end
        self.edges: dict[str, tuple[float, CpuSnapshot]] = {}

    def mark(self, edge: str) -> None:
        self.edges.setdefault(edge, (time.perf_counter(), _snap(self.job)))

    async def keep(self) -> None:
        await asyncio.sleep(max(0.0, self.begin - time.perf_counter()))
        self.mark("from")
        await asyncio.sleep(max(0.0, self.end - time.perf_counter()))
        self.mark("to")

    def span(self) -> tuple[float, CpuSnapshot]:
        (t_from, cpu_from), (t_to, cpu_to) = self.edges["from"], self.edges["to"]
        return max(t_to - t_from, 1e-9), cpu_to.minus(cpu_from)


Call = Callable[..., Awaitable[object]]


def run_job(job: Job) -> JobResult:
    """Entry point in a load-generator process."""
    # The generator's own pauses must not pass for the server's: what exists now is never
    # collected, and collections of what comes are rare (reference counting frees the rest).
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, 50, 1000)
    try:
        pause = job.start_at - time.time()
        if pause > 0:
            time.sleep(pause)
        return asyncio.run(_run(job))
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def _run(job: Job) -> JobResult:
    source = RequestSource(job.workload, job.data, job.seed, job.tag)
    channels, spread = await _open_channels(job)
    try:
        per_channel: list[dict[str, Call]] = [
            {
                TOKENIZE: ch.unary_unary(
                    TOKENIZE,
                    response_deserializer=token_service_pb2.TokenizeResponse.FromString,
                ),
                DETOKENIZE: ch.unary_unary(
                    DETOKENIZE,
                    response_deserializer=token_service_pb2.DetokenizeResponse.FromString,
                ),
            }
            for ch in channels
        ]
        rotation = itertools.cycle(per_channel)
        if job.mode == "closed":
            result = await _closed(job, source, rotation)
        else:
            result = await _open(job, source, rotation)
    finally:
        for ch in channels:
            await ch.close()
    result.connections = spread
    return result


async def _open_channels(job: Job) -> tuple[list[grpc.aio.Channel], dict[str, int]]:
    """`channels_per_process` connections to each serving process (see bench.conns)."""
    serving = job.serving_pids
    want = max(1, job.channels_per_process)
    total = want * max(1, len(serving))
    kept: list[grpc.aio.Channel] = []
    spread: Counter[str] = Counter()
    tries = 0
    while len(kept) < total:
        tries += 1
        before = own_sockets()
        channel = grpc.aio.insecure_channel(
            job.addr, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        await asyncio.wait_for(channel.channel_ready(), timeout=30)
        if len(serving) <= 1:
            owner: int | None = serving[0] if serving else None
        else:
            owner = server_of(own_sockets() - before, serving)
        if owner is None or spread[str(owner)] < want or tries > 20 * total:
            spread[str(owner) if owner is not None else "unknown"] += 1
            kept.append(channel)
        else:
            await channel.close()
    return kept, dict(spread)


def _snap(job: Job) -> CpuSnapshot:
    return snapshot(job.server_pids, job.db_process, job.kms_pid)


async def _call(
    job: Job, rotation: Iterator[dict[str, Call]], method: str, body: bytes
) -> tuple[str | None, int, int]:
    """(error code or None, failed fields, fields) of one call, on the next connection."""
    metadata = (("authorization", f"Bearer {job.api_key}"),)
    try:
        answer = await next(rotation)[method](body, timeout=job.timeout, metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, 0, 0
    if isinstance(answer, token_service_pb2.DetokenizeResponse):
        bad = sum(1 for r in answer.results if r.HasField("error"))
        return None, bad, len(answer.results)
    if isinstance(answer, token_service_pb2.TokenizeResponse):
        return None, 0, len(answer.results)
    return "BAD_ANSWER", 0, 0


def _result(job: Job, rec: _Recorder, window: float, cpu: CpuSnapshot) -> JobResult:
    return JobResult(
        ok=rec.ok,
        failed=sum(rec.errors.values()),
        errors=dict(rec.errors),
        token_errors=rec.token_errors,
        fields=rec.fields,
        window=window,
        latencies=rec.latencies.tobytes(),
        send_lag=rec.send_lag.tobytes(),
        offsets=rec.offsets.tobytes(),
        cpu=cpu,
        server_rss=sum(rss_bytes(p) for p in job.server_pids),
        sent=rec.sent,
    )


async def _closed(
    job: Job, source: RequestSource, rotation: Iterator[dict[str, Call]]
) -> JobResult:
    rec = _Recorder()
    start = time.perf_counter()
    window = _Window(job, start + job.warmup, start + job.warmup + job.duration)
    exhausted = False
    if job.warmup <= 0:
        window.mark("from")

    async def worker() -> None:
        nonlocal exhausted
        while time.perf_counter() < window.end:
            try:
                method, body = source.next()
            except Exhausted:
                exhausted = True
                return
            t0 = time.perf_counter()
            error, bad, n = await _call(job, rotation, method, body)
            t1 = time.perf_counter()
            rec.sent += 1
            if window.begin <= t1 <= window.end:  # completions in the window count
                rec.record(error, bad, n, t1 - t0)

    keeper = asyncio.create_task(window.keep())
    await asyncio.gather(*(worker() for _ in range(job.concurrency)))
    if "to" not in window.edges:  # the cold supply ran out first: the window ends now
        keeper.cancel()
        window.mark("from")
        window.mark("to")
    else:
        await keeper
    result = _result(job, rec, *window.span())
    result.exhausted = exhausted
    return result


async def _open(job: Job, source: RequestSource, rotation: Iterator[dict[str, Call]]) -> JobResult:
    rec = _Recorder()
    interval = 1.0 / job.rate
    start = time.perf_counter() + 0.01
    window = _Window(job, start + job.warmup, start + job.warmup + job.duration)
    total = int((job.warmup + job.duration) * job.rate)
    hard_stop = window.end + max(2.0, job.duration / 2)  # bounded even when overloaded
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float, method: str, body: bytes) -> None:
        sent = time.perf_counter()
        error, bad, n = await _call(job, rotation, method, body)
        done = time.perf_counter()
        rec.sent += 1
        # Calls scheduled in the window count, with their latency from the scheduled time.
        if window.begin <= scheduled < window.end and rec.record(error, bad, n, done - scheduled):
            rec.send_lag.append(sent - scheduled)
            if job.timeline:
                rec.offsets.append(scheduled - window.begin)

    keeper = asyncio.create_task(window.keep())
    i = 0
    dropped = 0
    while i < total:
        now = time.perf_counter()
        if now > hard_stop:
            dropped = total - i
            break
        while i < total and start + i * interval <= now and len(tasks) < job.max_inflight:
            try:
                method, body = source.next()
            except Exhausted:
                dropped, total = total - i, i
                break
            task = asyncio.create_task(one(start + i * interval, method, body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
    await keeper
    if tasks:
        await asyncio.wait(tasks, timeout=job.timeout + 1)
    result = _result(job, rec, *window.span())
    result.dropped = dropped
    return result
