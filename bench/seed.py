"""Put data into pdvault through its API before measuring, and warm its data-key cache."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from pdvault.v1 import token_service_pb2, token_service_pb2_grpc

from bench.conns import own_sockets, server_of
from bench.procs import BenchError
from bench.workloads import PURPOSE, Dataset, sample_fields

COLD_SUBJECTS_PER_REQUEST = 10
COLD_TOKENS_PER_SUBJECT = 10


@dataclass(frozen=True)
class SeedPlan:
    known_subjects: int = 500
    fields_per_subject: int = 20
    cold_requests: int = 200  # detokenize batches of 100 over 10 never-cached subjects each


def _stub(addr: str) -> tuple[grpc.Channel, token_service_pb2_grpc.TokenServiceStub]:
    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=30)
    return channel, token_service_pb2_grpc.TokenServiceStub(channel)


def seed(
    addr: str,
    api_key: str,
    plan: SeedPlan,
    tag: str,
    progress: Callable[[str], None] = lambda _m: None,
    threads: int = 8,
) -> Dataset:
    """Known subjects with `fields_per_subject` values each, and the cold pool: subjects whose
    keys the server will not have cached once it is restarted and only the known ones warmed."""
    rng = random.Random(1)
    metadata = (("authorization", f"Bearer {api_key}"),)
    channel, stub = _stub(addr)

    def tokenize(subject: str, n: int) -> list[str]:
        request = token_service_pb2.TokenizeRequest(
            subject=subject, fields=sample_fields(random.Random(subject), n)
        )
        answer = stub.Tokenize(request, metadata=metadata, timeout=60)
        return [r.token for r in answer.results]

    try:
        started = time.monotonic()
        known = [f"known-{tag}-{i}" for i in range(plan.known_subjects)]
        cold = [f"cold-{tag}-{i}" for i in range(plan.cold_requests * COLD_SUBJECTS_PER_REQUEST)]
        with ThreadPoolExecutor(threads) as pool:
            known_tokens = list(pool.map(lambda s: tokenize(s, plan.fields_per_subject), known))
            cold_tokens = list(pool.map(lambda s: tokenize(s, COLD_TOKENS_PER_SUBJECT), cold))
        groups = []
        for i in range(plan.cold_requests):
            chunk = cold_tokens[i * COLD_SUBJECTS_PER_REQUEST : (i + 1) * COLD_SUBJECTS_PER_REQUEST]
            group = [t for per_subject in chunk for t in per_subject]
            rng.shuffle(group)
            groups.append(tuple(group))
        progress(
            f"seeded {len(known)} known subjects x {plan.fields_per_subject} fields and "
            f"{len(cold)} cold subjects x {COLD_TOKENS_PER_SUBJECT} in "
            f"{time.monotonic() - started:.1f} s"
        )
    finally:
        channel.close()
    return Dataset(
        subjects=tuple(known),
        tokens=tuple(t for ts in known_tokens for t in ts),
        cold_groups=tuple(groups),
    )


def warm(
    addr: str,
    api_key: str,
    tokens: Sequence[str],
    serving_pids: tuple[int, ...],
    batch: int = 1000,
) -> int:
    """Detokenize every known token once in every serving process: each has a cache of its own,
    and a connection reaches one process, so connect until each process had a full pass.
    Returns the passes made."""
    metadata = (("authorization", f"Bearer {api_key}"),)
    warmed: set[int] = set()
    passes = unknown = 0
    while len(warmed) < len(serving_pids) and passes < 20 * max(1, len(serving_pids)):
        before = own_sockets()
        channel = grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
            if len(serving_pids) == 1:
                owner: int | None = serving_pids[0]
            else:
                owner = server_of(own_sockets() - before, serving_pids)
            if owner in warmed:
                continue
            passes += 1
            stub = token_service_pb2_grpc.TokenServiceStub(channel)
            for i in range(0, len(tokens), batch):
                request = token_service_pb2.DetokenizeRequest(
                    tokens=list(tokens[i : i + batch]), purpose=PURPOSE
                )
                answer = stub.Detokenize(request, metadata=metadata, timeout=60)
                failed = sum(1 for r in answer.results if r.HasField("error"))
                if failed:
                    raise BenchError(f"warming: {failed} tokens were refused; policy changed?")
            if owner is None:  # cannot tell which process: enough passes to reach all
                unknown += 1
                if unknown >= 4 * len(serving_pids):
                    break
            else:
                warmed.add(owner)
        finally:
            channel.close()
    return passes
