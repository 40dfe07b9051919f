"""The defences against slow, greedy and stalled clients, each setting through `pdv serve` as a
user sets it (issue #8 item 2): PDV_REQUEST_READ_TIMEOUT, PDV_MAX_CALLS,
PDV_MAX_CALLS_PER_CALLER, PDV_MAX_STREAMS_PER_CONNECTION, PDV_MAX_CONNECTION_AGE and
PDV_HEALTH_INTERVAL. No assertion on elapsed time: each waits for an outcome, with a generous
bound only so that a regression fails instead of hanging."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import hvac
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from pdvault_client import Client, Field, ResourceExhaustedError
from tests.conftest import DEPLOY_VAULT, hcl_policy, spawn_serve
from transit_emulator import TransitEmulator

pytestmark = pytest.mark.slow

DETOKENIZE = "/pdvault.v1.TokenService/Detokenize"


@contextmanager
def serve(tmp_path: Path, **env: str) -> Iterator[tuple[str, dict[str, str]]]:
    proc, addr, log = spawn_serve(tmp_path, PDV_PROCESSES="1", **env)
    try:
        creds = json.loads((tmp_path / ".pdvault" / "dev-credentials.json").read_text())
        yield addr, creds
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "Traceback" not in text, text


class Stalled:
    """Calls that open, send their metadata, and never send the request message."""

    def __init__(self) -> None:
        self._release = threading.Event()
        self.calls: list[grpc.Future[bytes]] = []

    def _never(self) -> Iterator[bytes]:
        self._release.wait()
        yield from ()  # a generator that ends without ever sending a message

    def open(self, channel: grpc.Channel, key: str | None) -> grpc.Future[bytes]:
        method = channel.stream_unary(
            DETOKENIZE, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        md = (("authorization", f"Bearer {key}"),) if key else ()
        call = method.future(self._never(), metadata=md)
        self.calls.append(call)
        return call

    def release(self) -> None:
        self._release.set()


def _ended(call: grpc.Future[bytes], within: float = 30.0) -> grpc.StatusCode:
    deadline = time.monotonic() + within
    while not call.done():
        assert time.monotonic() < deadline, "the server never ended the stalled call"
        time.sleep(0.05)
    exc = call.exception()
    assert isinstance(exc, grpc.RpcError)
    code: grpc.StatusCode = exc.code()
    return code


def _eventually(check: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _health(addr: str) -> int:
    with grpc.insecure_channel(addr) as ch:
        health: Any = health_pb2_grpc.HealthStub(ch)  # the stubs package types it loosely
        status: int = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        return status


def test_a_call_that_never_sends_its_request_is_ended(tmp_path: Path) -> None:
    stalled = Stalled()
    with serve(tmp_path, PDV_REQUEST_READ_TIMEOUT="0.5") as (addr, creds):
        with grpc.insecure_channel(addr) as ch:
            authenticated = stalled.open(ch, creds["kyc"])
            stranger = stalled.open(ch, None)
            assert _ended(stranger) is grpc.StatusCode.UNAUTHENTICATED
            assert _ended(authenticated) is grpc.StatusCode.DEADLINE_EXCEEDED
        stalled.release()


def test_calls_in_flight_are_capped_per_caller_and_per_process(tmp_path: Path) -> None:
    stalled = Stalled()
    env = {"PDV_MAX_CALLS": "3", "PDV_MAX_CALLS_PER_CALLER": "2", "PDV_REQUEST_READ_TIMEOUT": "60"}
    with serve(tmp_path, **env) as (addr, creds), grpc.insecure_channel(addr) as ch:
        try:
            stalled.open(ch, creds["kyc"])
            stalled.open(ch, creds["kyc"])
            time.sleep(0.5)  # let the server admit both (not an assertion on time)
            with Client(addr, creds["kyc"], timeout=5) as kyc:
                with pytest.raises(ResourceExhaustedError) as err:
                    kyc.tokenize("u1", [Field("name", "Ann")])
                assert err.value.reason == "TOO_MANY_CALLS"
                assert err.value.retry_delay is not None
            with Client(addr, creds["payment"], timeout=5) as payment:
                payment.tokenize("u2", [Field("name", "Bo")])  # another caller: served
            stalled.open(ch, creds["shipping"])  # the process's third call in flight
            time.sleep(0.5)
            with Client(addr, creds["payment"], timeout=5) as payment:
                with pytest.raises(ResourceExhaustedError) as err:
                    payment.tokenize("u3", [Field("name", "Cy")])
                assert err.value.reason == "TOO_MANY_CALLS"
            assert _health(addr) == health_pb2.HealthCheckResponse.SERVING  # not counted
        finally:
            stalled.release()


def test_streams_per_connection_are_capped(tmp_path: Path) -> None:
    stalled = Stalled()
    env = {"PDV_MAX_STREAMS_PER_CONNECTION": "1", "PDV_REQUEST_READ_TIMEOUT": "60"}
    with serve(tmp_path, **env) as (addr, creds):
        one = grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            stalled.open(one, creds["kyc"])
            time.sleep(0.5)
            second = stalled.open(one, creds["kyc"])
            # The second stream cannot start on this connection: it waits for a slot.
            with pytest.raises(grpc.FutureTimeoutError):
                second.result(timeout=1.0)
            assert not second.done()
            # Another connection is served.
            with Client(addr, creds["kyc"], timeout=5) as kyc:
                kyc.tokenize("u1", [Field("name", "Ann")])
        finally:
            stalled.release()
            one.close()


def test_connections_end_at_their_maximum_age(tmp_path: Path) -> None:
    stalled = Stalled()
    env = {"PDV_MAX_CONNECTION_AGE": "1", "PDV_REQUEST_READ_TIMEOUT": "600"}
    with serve(tmp_path, **env) as (addr, creds), grpc.insecure_channel(addr) as ch:
        call = stalled.open(ch, creds["kyc"])
        # Neither the read timeout (10 minutes) nor the client ends it: the connection's age.
        assert _ended(call, within=60) in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.CANCELLED,
            grpc.StatusCode.INTERNAL,
        )
        stalled.release()


def test_readiness_follows_the_key_provider(tmp_path: Path) -> None:
    with TransitEmulator(root_token="root") as emulator:
        root: Any = hvac.Client(url=emulator.url, token="root")
        root.secrets.transit.create_key("pdvault", exportable=False)
        root.secrets.transit.create_key("pdvault-naming", exportable=False)
        token = emulator.create_token(hcl_policy("pdvault-service.hcl"), ttl=3600)
        assert (DEPLOY_VAULT / "pdvault-service.hcl").exists()
        env = {
            "PDV_KMS": "vault",
            "VAULT_ADDR": emulator.url,
            "VAULT_TOKEN": token,
            "PDV_HEALTH_INTERVAL": "0.2",
            "PDV_VAULT_TIMEOUT": "1",
        }
        with serve(tmp_path, **env) as (addr, _creds):
            assert _health(addr) == health_pb2.HealthCheckResponse.SERVING
            emulator.seal()
            _eventually(lambda: _health(addr) == health_pb2.HealthCheckResponse.NOT_SERVING)
            emulator.unseal()
            _eventually(lambda: _health(addr) == health_pb2.HealthCheckResponse.SERVING)


def test_retry_info_on_resource_exhausted_is_decodable() -> None:
    """The status the caps send carries RetryInfo (checked on the wire, not via the client)."""
    from google.rpc import status_pb2

    from vault.errors import Reason, ResourceExhausted
    from vault.transport.status import to_status_proto

    busy = ResourceExhausted("busy", reason=Reason.TOO_MANY_CALLS, retry_after=0.1)
    status = rpc_status.to_status(to_status_proto(busy))
    assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    [(_, raw)] = [m for m in status.trailing_metadata if m[0] == "grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    decoded = status_pb2.Status.FromString(raw)
    kinds = {d.type_url.rsplit("/", 1)[-1] for d in decoded.details}
    assert "google.rpc.RetryInfo" in kinds
    retry = error_details_pb2.RetryInfo()
    [packed] = [d for d in decoded.details if d.type_url.endswith("RetryInfo")]
    packed.Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 100
