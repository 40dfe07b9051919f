"""Issue #8, item 2: unauthenticated (or any) clients must not be able to stall the service by
opening calls and never sending the request message; made-up API keys are answered from memory."""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pdvault.v1 import token_service_pb2, token_service_pb2_grpc
from sqlalchemy import event

from pdvault_client import Client, Field, RetryPolicy
from tests.conftest import RunningServer
from tests.integration.attack_support import serving

DETOKENIZE = "/pdvault.v1.TokenService/Detokenize"
WORKERS = 16  # PDV_MAX_WORKERS, the default
PROBES = 4  # health checks and detokenize calls, each on a new connection
PROBE_DEADLINE = 5.0  # seconds; generous: an idle server answers in milliseconds


def fresh_channel(addr: str) -> grpc.Channel:
    """A channel with its own connection (channels to one target share one by default)."""
    return grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])


def made_up_key() -> str:
    key_id = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    return f"pdv_{key_id}_{secrets.token_urlsafe(32)}"


def never_sent(release: threading.Event) -> Iterator[bytes]:
    """A request stream that sends nothing until released (headers only on the wire)."""
    release.wait(120)
    yield from ()


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_stalled_calls_do_not_stall_health_or_callers(tmp_path: Path, processes: int) -> None:
    """issue #8 item 2: 3 x PDV_MAX_WORKERS calls per process send their headers (no key, a
    made-up key, or a valid key of `support`) and never the request message; meanwhile health
    checks and an authenticated Detokenize (of `shipping`, another caller, on new connections)
    must answer within a few seconds."""
    with serving(
        tmp_path, "serve", tmp_path / "data", PDV_PROCESSES=str(processes), PDV_MAX_WORKERS="16"
    ) as srv:
        creds = srv.creds()
        with srv.client("kyc") as kyc:
            [tok] = kyc.tokenize("user-1", [Field("name", "Ann Lee")])
        stalls = 3 * WORKERS * processes
        # Many connections, so that the kernel spreads them over every serving process.
        channels = [fresh_channel(srv.addr) for _ in range(12 * processes)]
        metadata: list[tuple[tuple[str, str], ...]] = [
            (),
            (("authorization", f"Bearer {made_up_key()}"),),
            (("authorization", f"Bearer {creds['support']}"),),
        ]
        release = threading.Event()
        held: list[Any] = []
        answered: list[str] = []
        try:
            for i in range(stalls):
                call = channels[i % len(channels)].stream_unary(
                    DETOKENIZE,
                    request_serializer=lambda b: b,
                    response_deserializer=lambda b: b,
                )
                held.append(call.future(never_sent(release), metadata=metadata[i % 3], timeout=120))
            for _ in range(PROBES):
                answered.append(probe_health(srv.addr))
                answered.append(probe_detokenize(srv.addr, creds["shipping"], tok.token))
                if answered[-2:] != ["SERVING", "Ann Lee"]:
                    break  # one failed probe says it; more would only take longer
        finally:
            release.set()
            for f in held:
                f.cancel()
            for ch in channels:
                ch.close()
    assert answered == ["SERVING", "Ann Lee"] * PROBES


def probe_health(addr: str) -> str:
    with fresh_channel(addr) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # typed loosely by its stubs package
        try:
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=PROBE_DEADLINE)
        except grpc.RpcError as err:
            return f"health: {err.code().name}"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def probe_detokenize(addr: str, key: str, token: str) -> str:
    with Client(
        addr,
        key,
        timeout=PROBE_DEADLINE,
        retry=RetryPolicy(attempts=1),
        channel=fresh_channel(addr),
    ) as client:
        try:
            [got] = client.detokenize([token], "product_shipping")
        except Exception as exc:
            return f"detokenize: {exc}"
    return str(got.value) if got.error is None else f"detokenize: {got.error}"


GUESSES = 50


def test_made_up_keys_are_answered_from_memory(server: RunningServer) -> None:
    """issue #8 item 2: a flood of made-up API keys must not cost a database round trip each
    (today every guess looks its key id up)."""
    lookups: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "api_keys" in statement:
            lookups.append(statement)

    with server.channel() as channel:
        stub = token_service_pb2_grpc.TokenServiceStub(channel)
        request = token_service_pb2.DetokenizeRequest(tokens=["tok_" + "a" * 26], purpose="payment")
        event.listen(server.app.engine, "before_cursor_execute", count)
        try:
            codes = []
            for _ in range(GUESSES):
                try:
                    stub.Detokenize(
                        request,
                        metadata=(("authorization", f"Bearer {made_up_key()}"),),
                        timeout=10,
                    )
                except grpc.RpcError as err:
                    codes.append(err.code())
        finally:
            event.remove(server.app.engine, "before_cursor_execute", count)
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * GUESSES
    assert len(lookups) <= 2, f"{len(lookups)} API-key lookups for {GUESSES} made-up keys"
