"""What an orchestrator sees of `pdv serve` (issue #13 §3), through the real entry point: the
plaintext health-only port (PDV_HEALTH_ADDR) with liveness and readiness, readiness following
the key provider, SIGTERM under load (readiness off at once, the pause, the drain, exit 0 and a
last log line), and the process count the cgroup allows."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdvault_client import Client, Field, UnavailableError
from pdvault_client.convert import tokenize_request
from tests.conftest import Transit, free_port, pdv_env, spawn_serve
from vault.config import available_cpus

pytestmark = pytest.mark.slow

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TOKENIZE = "/pdvault.v1.TokenService/Tokenize"


def status(addr: str, service: str = "") -> int:
    with grpc.insecure_channel(addr) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # the stubs package types it loosely
        answer: int = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        return answer


def eventually(check: Callable[[], bool], within: float = 60.0) -> None:
    """Wait for `check` (a bound, not a measurement: nothing here asserts how long it took)."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "Traceback" not in text, text
    return text


@pytest.fixture(params=[1, 2], ids=["1-process", "2-processes"])
def processes(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_health_port_serves_liveness_and_readiness_only(tmp_path: Path, processes: str) -> None:
    health = f"127.0.0.1:{free_port()}"
    proc, addr, log = spawn_serve(tmp_path, PDV_PROCESSES=processes, PDV_HEALTH_ADDR=health)
    try:
        [line] = [ln for ln in log.read_text().splitlines() if "listening on" in ln]
        assert f"health checks on port {health.rpartition(':')[2]}" in line
        for service in ("liveness", "", "pdvault.v1.TokenService", "pdvault.v1.KeyService"):
            assert status(health, service) == SERVING, service
        with pytest.raises(grpc.RpcError) as unknown:
            status(health, "no.such.Service")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        with grpc.insecure_channel(health) as channel:
            # No pdvault service and no reflection on the plaintext port.
            for method in (
                TOKENIZE,
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            ):
                call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                    method, request_serializer=lambda b: b, response_deserializer=lambda b: b
                )
                with pytest.raises(grpc.RpcError) as refused:
                    call(b"", timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED, method
        # The API port still answers its own health checks and the calls.
        assert status(addr) == SERVING
        creds = json.loads((tmp_path / ".pdvault" / "dev-credentials.json").read_text())
        with Client(addr, creds["kyc"]) as kyc:
            kyc.tokenize("u-1", [Field("name", "Ann Lee")])
    finally:
        text = stop(proc, log)
    assert text.rstrip().splitlines()[-1].endswith("pdvault stopped")


def test_a_health_port_in_use_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "pdvault_client.cli", "serve"],
            cwd=tmp_path,
            env=pdv_env(
                PDV_PROCESSES="1",
                PDV_ADDR=f"127.0.0.1:{free_port()}",
                PDV_HEALTH_ADDR=f"127.0.0.1:{port}",
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert out.returncode == 2, out.stderr
    assert f"cannot listen on PDV_HEALTH_ADDR=127.0.0.1:{port}" in out.stderr


def test_readiness_follows_the_key_provider(
    tmp_path: Path, transit: Transit, processes: str
) -> None:
    """NOT_SERVING while HashiCorp Vault is sealed, SERVING again when it is back; liveness
    stays SERVING throughout (the process is fine: restarting it would not help)."""
    token_file = tmp_path / "vault-token"
    token_file.write_text(transit.service_token + "\n")
    health = f"127.0.0.1:{free_port()}"
    proc, _addr, log = spawn_serve(
        tmp_path,
        PDV_PROCESSES=processes,
        PDV_HEALTH_ADDR=health,
        PDV_HEALTH_INTERVAL="0.2",
        PDV_KMS="vault",
        VAULT_ADDR=transit.url,
        VAULT_TOKEN_FILE=str(token_file),
    )
    try:
        assert status(health) == SERVING
        transit.emulator.seal()
        eventually(lambda: status(health) == NOT_SERVING)
        assert status(health, "pdvault.v1.TokenService") == NOT_SERVING
        assert status(health, "liveness") == SERVING
        transit.emulator.unseal()
        eventually(lambda: status(health) == SERVING)
        assert status(health, "liveness") == SERVING
    finally:
        text = stop(proc, log)
    assert "not ready: the key provider does not answer" in text
    assert "ready again" in text


class HeldCall:
    """A Tokenize whose metadata has gone out and whose request message waits for `release`:
    a call the server holds in flight for as long as the test likes."""

    def __init__(self, addr: str, key: str) -> None:
        self._release = threading.Event()
        self._channel = grpc.insecure_channel(addr)
        method: grpc.StreamUnaryMultiCallable[bytes, bytes] = self._channel.stream_unary(
            TOKENIZE, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        request = tokenize_request("held-1", [Field("name", "Held Call")], None)
        self.call = method.future(
            self._messages(request.SerializeToString()),
            metadata=(("authorization", f"Bearer {key}"),),
            timeout=60,
        )

    def _messages(self, request: bytes) -> Iterator[bytes]:
        self._release.wait()
        yield request

    def release(self) -> None:
        self._release.set()

    def result(self) -> bytes:
        try:
            answer: bytes = self.call.result(timeout=60)
            return answer
        finally:
            self._channel.close()


class Load:
    """Threads of tokenize calls, as a load balancer sends them: until it sees the server not
    ready (`stop`). Each outcome is kept."""

    def __init__(self, addr: str, key: str, threads: int = 3) -> None:
        self.stopped = threading.Event()
        self.outcomes: list[str] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(addr, key, i)) for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def _run(self, addr: str, key: str, i: int) -> None:
        with Client(addr, key, timeout=30) as client:
            n = 0
            while not self.stopped.is_set():
                try:
                    client.tokenize(f"load-{i}-{n}", [Field("name", f"Name {n}")])
                    outcome = "OK"
                except Exception as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self.outcomes.append(outcome)
                n += 1

    def stop(self) -> list[str]:
        self.stopped.set()
        for t in self._threads:
            t.join(timeout=60)
        return self.outcomes


def _lines(log: Path, text: str) -> int:
    return log.read_text().count(text)


def test_sigterm_under_load_fails_no_call_in_flight(tmp_path: Path, processes: str) -> None:
    """Readiness turns NOT_SERVING at once and calls are still served during the pause; then
    new calls are refused (UNAVAILABLE, which clients retry elsewhere) while the calls under
    way finish; then exit 0 with a last line."""
    health = f"127.0.0.1:{free_port()}"
    proc, addr, log = spawn_serve(
        tmp_path,
        PDV_PROCESSES=processes,
        PDV_HEALTH_ADDR=health,
        PDV_SHUTDOWN_PAUSE="3",
        PDV_SHUTDOWN_GRACE="60",
        PDV_REQUEST_READ_TIMEOUT="300",  # the held call's message may wait that long
    )
    creds = json.loads((tmp_path / ".pdvault" / "dev-credentials.json").read_text())
    load = Load(addr, creds["kyc"])
    held = HeldCall(addr, creds["kyc"])
    try:
        eventually(lambda: len(load.outcomes) >= 12)  # under load, the held call long open
        proc.send_signal(signal.SIGTERM)
        # Readiness off from the signal on, while the process (liveness) is alive.
        eventually(lambda: status(health) == NOT_SERVING)
        assert status(health, "liveness") == SERVING
        outcomes = load.stop()  # the load balancer sends no more
        assert outcomes
        assert set(outcomes) == {"OK"}, outcomes  # every call sent until then was served
        # After the pause: draining. A new call is refused, and retryable.
        eventually(lambda: _lines(log, "draining: ") == int(processes))
        with (
            Client(addr, creds["kyc"], timeout=2) as late,
            pytest.raises(UnavailableError),
        ):
            late.tokenize("late-1", [Field("name", "Too Late")])
        assert proc.poll() is None  # still draining: the held call is under way
        held.release()
        assert held.result()  # the call under way when the signal came completes
        proc.wait(timeout=60)
    finally:
        held.release()
        load.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text
    assert (
        "stopping: not ready; serving 3 s more for load balancers to notice, then up to 60 s"
        in text
    )
    assert "draining: 1 calls under way" in text  # the held call, in whichever process
    assert text.rstrip().splitlines()[-1].endswith("pdvault stopped")


def test_the_default_process_count_is_the_cpus_the_cgroup_allows(tmp_path: Path) -> None:
    """No PDV_PROCESSES: as many processes as this machine's cgroup allows CPUs (the test runs
    in the same cgroup as the server it starts)."""
    expected = available_cpus()
    proc, _addr, log = spawn_serve(tmp_path)
    try:
        [line] = [ln for ln in log.read_text().splitlines() if "listening on" in ln]
    finally:
        stop(proc, log)
    if expected > 1:
        assert f"({expected} processes: pid" in line
    else:
        assert f", pid {proc.pid})" in line  # one process: pdv serve serves itself
