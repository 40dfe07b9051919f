"""Server construction: one `grpc.aio` server per process, serving pdvault's services (see
`vault.transport.rpc` for how a call is served), health checking and reflection.

`start_server(app, addr)` builds and starts it on the running event loop; `ServerThread` runs
one on a loop of its own (tests start it on port 0); `serve` runs one until SIGTERM or SIGINT.
With `PDV_HEALTH_ADDR`, a second server beside it answers health checks only (`HealthPort`), in
clear, for probes that cannot speak TLS: the service `liveness` while the process runs, and
readiness (`""` and each pdvault service) while the database and the key provider answer.
`HealthPortThread` runs one alone, for the parent of several processes.
Why `grpc.aio` and not the thread-pool server: the thread-pool server hands each call to a
worker thread that then waits for the request message, so a client that opens calls and never
sends them holds every thread (48 such streams stalled health checks and every caller). On the
event loop a waiting call costs a coroutine, and pdvault reads the message itself, with a time
limit. It costs speed: in one `python -m bench --quick` run the aio no-op served 43-69% of the
thread-pool no-op's calls (about 0.2 ms more CPU per call: the hop to the thread pool and the
read's timer); docs/process-model.md has the figures and what could win it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pdvault.v1 import (
    approval_service_pb2,
    caller_service_pb2,
    document_service_pb2,
    key_service_pb2,
    policy_service_pb2,
    subject_service_pb2,
    token_service_pb2,
)

from vault.app import App, UseCases, request_rates, utc_now
from vault.config import Settings
from vault.crypto.svid import CertificateCache
from vault.domain.identity import Identification
from vault.domain.quotas import audit_rate_refusal
from vault.errors import ConfigurationError, PdvaultError
from vault.transport.approval_servicer import ApprovalServicer
from vault.transport.caller_servicer import CallerServicer
from vault.transport.document_servicer import DocumentServicer
from vault.transport.key_servicer import KeyServicer
from vault.transport.policy_servicer import PolicyServicer
from vault.transport.rpc import Gate, Limits, Method, ServiceHandler, StreamingMethod
from vault.transport.subject_servicer import SubjectServicer
from vault.transport.tls import TlsFiles, TlsReloader
from vault.transport.token_servicer import TokenServicer

if TYPE_CHECKING:
    from vault.observability.metrics import MetricsEndpoint

__all__ = [
    "APPROVAL_SERVICE",
    "CALLER_SERVICE",
    "DOCUMENT_SERVICE",
    "HEALTH_HEADROOM",
    "KEY_SERVICE",
    "LIVENESS",
    "LOOPBACK",
    "MAX_MESSAGE_BYTES",
    "POLICY_SERVICE",
    "SERVICE_NAMES",
    "SUBJECT_SERVICE",
    "TOKEN_SERVICE",
    "HealthPort",
    "HealthPortThread",
    "ServerThread",
    "Serving",
    "check_transport",
    "describe_error",
    "serve",
    "start_health_port",
    "start_metrics",
    "start_server",
    "stop_server",
]


log = logging.getLogger(__name__)

TOKEN_SERVICE = token_service_pb2.DESCRIPTOR.services_by_name["TokenService"]
KEY_SERVICE = key_service_pb2.DESCRIPTOR.services_by_name["KeyService"]
SUBJECT_SERVICE = subject_service_pb2.DESCRIPTOR.services_by_name["SubjectService"]
DOCUMENT_SERVICE = document_service_pb2.DESCRIPTOR.services_by_name["DocumentService"]
CALLER_SERVICE = caller_service_pb2.DESCRIPTOR.services_by_name["CallerService"]
APPROVAL_SERVICE = approval_service_pb2.DESCRIPTOR.services_by_name["ApprovalService"]
POLICY_SERVICE = policy_service_pb2.DESCRIPTOR.services_by_name["PolicyService"]
SERVICE_NAMES = (
    TOKEN_SERVICE.full_name,
    KEY_SERVICE.full_name,
    SUBJECT_SERVICE.full_name,
    DOCUMENT_SERVICE.full_name,
    CALLER_SERVICE.full_name,
    APPROVAL_SERVICE.full_name,
    POLICY_SERVICE.full_name,
)
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# Calls above pdvault's own cap that gRPC still accepts: room for health checks and reflection.
HEALTH_HEADROOM = 64
# The health port's service that says only whether the process runs (a liveness probe's).
LIVENESS = "liveness"
# The names whose status is readiness: the whole server and each of its services.
READINESS = ("", *SERVICE_NAMES)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class HealthPort:
    """The plaintext health-only server (PDV_HEALTH_ADDR): grpc.health.v1 and nothing else,
    no reflection, no pdvault service, so nothing but a status crosses it in clear."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def set_ready(self, ready: bool) -> None:
        for name in READINESS:
            await self.health.set(name, _SERVING if ready else _NOT_SERVING)

    async def stop(self) -> None:
        await self.server.stop(None)


async def start_health_port(addr: str, ready: bool = False) -> HealthPort:
    """Serve health checks on `addr`: `liveness` SERVING from now on, readiness as `ready`."""
    server = grpc.aio.server(
        maximum_concurrent_rpcs=HEALTH_HEADROOM,  # unauthenticated: a flood gets refused
        options=[
            # Unlike the API port, never shared: a second pdvault on it is refused.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 1024),
            ("grpc.max_connection_idle_ms", 300_000),
        ],
    )
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(addr)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigurationError(f"cannot listen on PDV_HEALTH_ADDR={addr}: is the address in use?")
    await server.start()
    await servicer.set(LIVENESS, _SERVING)
    probes = HealthPort(server, port, servicer)
    await probes.set_ready(ready)
    return probes


@dataclass
class Serving:
    """A started server and what belongs to it in this process."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    gate: Gate
    executor: ThreadPoolExecutor
    monitor: asyncio.Task[None] | None = None
    probes: HealthPort | None = None  # the health-only port, where this process serves one
    # Told of each change of readiness (a child of several processes tells its parent).
    on_readiness: Callable[[bool], None] | None = None
    stopping: bool = False
    # With PDV_TLS_CLIENT_AUTH=optional: the port that requires client certificates.
    mtls_port: int | None = None
    tls: TlsReloader | None = None
    unfollow: Callable[[], None] | None = None  # stop following policy reloads


def _methods(
    app: App, uses: UseCases
) -> list[tuple[str, dict[str, Method[Any, Any] | StreamingMethod]]]:
    """Every service's methods, served by the use cases of one policy (`uses`)."""
    documents = DocumentServicer(uses.documents, uses.sweeper, app.settings.upload_timeout)
    if app.policies is None:
        raise AssertionError("the application has no PolicyService (not built by build_app)")
    services: list[tuple[Any, dict[str, Method[Any, Any] | StreamingMethod]]] = [
        (TOKEN_SERVICE, dict(TokenServicer(uses.tokens).methods())),
        (KEY_SERVICE, dict(KeyServicer(uses.key_admin).methods())),
        (SUBJECT_SERVICE, dict(SubjectServicer(uses.subjects).methods())),
        (DOCUMENT_SERVICE, documents.methods()),
        (CALLER_SERVICE, dict(CallerServicer(uses.callers).methods())),
        (APPROVAL_SERVICE, dict(ApprovalServicer(uses.dual_control).methods())),
        (POLICY_SERVICE, dict(PolicyServicer(app.policies).methods())),
    ]
    for descriptor, methods in services:
        missing = set(descriptor.methods_by_name) - set(methods)
        if missing:  # fail at start-up, not with UNIMPLEMENTED in production
            raise AssertionError(f"{descriptor.full_name} lacks {sorted(missing)}")
    return [(d.full_name, m) for d, m in services]


async def start_server(
    app: App,
    addr: str,
    reuse_port: bool = False,
    *,
    health_addr: str = "",
    on_readiness: Callable[[bool], None] | None = None,
) -> Serving:
    """Start serving `addr` (and, given `health_addr`, the health-only port) on this loop."""
    settings = app.settings
    limits = Limits(
        settings.request_read_timeout,
        settings.max_calls,
        settings.max_calls_per_caller,
        settings.max_transfers,
    )
    executor = app.executor  # the runtime's: this server only borrows it
    uses = app.uses  # one snapshot: the policy in force and its use cases
    identification = Identification(app.authenticator, uses.policy, app.stores.audit, utc_now)
    certificates = CertificateCache() if settings.client_auth else None
    gate = Gate(
        identification,
        certificates,
        executor,
        limits,
        rates=request_rates(uses.policy),  # this process's buckets
        audit_refusal=audit_rate_refusal(app.stores.audit, utc_now),
    )
    server = grpc.aio.server(
        maximum_concurrent_rpcs=limits.max_calls + HEALTH_HEADROOM,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Several processes of one instance share the port: the kernel spreads connections.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            # Streams in flight per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
            ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
            # Connections end after an age (with a grace for calls under way), so a client
            # cannot hold a stream for ever, and rotated certificates take effect.
            ("grpc.max_connection_age_ms", int(settings.max_connection_age * 1000)),
            (
                "grpc.max_connection_age_grace_ms",
                int(min(30.0, settings.max_connection_age) * 1000),
            ),
            ("grpc.max_connection_idle_ms", 300_000),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 2),
        ],
    )
    handlers = [
        ServiceHandler(name, methods, gate, executor, app.observability)
        for name, methods in _methods(app, uses)
    ]
    server.add_generic_rpc_handlers(handlers)

    def follow_policy(new: UseCases) -> None:
        # A reloaded policy: each service's methods and the identities the policy maps, swapped
        # together per service; a call authenticates and runs with one policy's pair. The
        # request rates are the new policy's from the next call on (their buckets start full).
        ident = Identification(app.authenticator, new.policy, app.stores.audit, utc_now)
        tables = dict(_methods(app, new))
        for handler in handlers:
            handler.use(tables[handler.name], ident)
        gate.identification = ident
        gate.rates = request_rates(new.policy)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    tls = check_transport(dataclasses.replace(settings, addr=addr))
    port, mtls_port = _listen(server, settings, addr, tls)
    probes = await start_health_port(health_addr) if health_addr else None
    try:
        await server.start()
        # The key table, read once before the first call (every later read is off the loop).
        await asyncio.get_running_loop().run_in_executor(executor, app.authenticator.refresh)
    except BaseException:
        if probes is not None:
            await probes.stop()
        raise
    serving = Serving(
        server,
        port,
        health_servicer,
        gate,
        executor,
        None,
        probes,
        on_readiness,
        mtls_port=mtls_port,
        tls=tls,
    )
    app.on_policy.append(follow_policy)
    serving.unfollow = lambda: app.on_policy.remove(follow_policy)
    await _set_ready(serving, True)
    serving.monitor = asyncio.create_task(_watch(app, serving))
    return serving


async def stop_taking_calls(serving: Serving) -> None:
    """The first step of a shutdown: readiness NOT_SERVING for good (liveness stays SERVING:
    the process is alive, draining), so load balancers stop sending new calls."""
    if serving.stopping:
        return
    serving.stopping = True
    if serving.monitor is not None:
        serving.monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving.monitor
        serving.monitor = None
    await serving.health.enter_graceful_shutdown()
    if serving.probes is not None:
        await serving.probes.set_ready(False)
    if serving.on_readiness is not None:
        serving.on_readiness(False)


async def stop_server(serving: Serving, grace: float | None) -> None:
    """Stop: readiness off, new calls refused, calls under way given `grace` seconds."""
    await stop_taking_calls(serving)
    if serving.unfollow is not None:
        serving.unfollow()
        serving.unfollow = None
    await serving.server.stop(grace)
    if serving.probes is not None:
        await serving.probes.stop()


async def _set_ready(serving: Serving, ready: bool) -> None:
    for name in READINESS:
        await serving.health.set(name, _SERVING if ready else _NOT_SERVING)
    if serving.probes is not None:
        await serving.probes.set_ready(ready)
    if serving.on_readiness is not None:
        serving.on_readiness(ready)


async def _watch(app: App, serving: Serving) -> None:
    """Readiness: NOT_SERVING while the database or the key provider does not answer."""
    loop = asyncio.get_running_loop()
    healthy = True
    while True:
        await asyncio.sleep(app.settings.health_interval)
        problems = await loop.run_in_executor(serving.executor, app.dependency_problems)
        if problems and healthy:
            log.error("not ready: %s", "; ".join(problems))
            await _set_ready(serving, False)
        elif not problems and not healthy:
            log.warning("ready again: the database and the key provider answer")
            await _set_ready(serving, True)
        healthy = not problems


LOOPBACK = ("127.", "localhost:", "[::1]:")


def check_transport(settings: Settings) -> TlsReloader | None:
    """The TLS files to serve with (reloaded when they change), or None for plaintext, after
    the rules: a key readable by others is refused, so are files that do not parse or do not
    belong together, and plaintext off loopback unless allowed. Run by the parent of several
    processes before it spawns them, and by each server."""
    if settings.tls_cert and settings.tls_key:
        return TlsReloader(TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca))
    if not settings.addr.startswith(LOOPBACK) and not settings.allow_insecure:
        # API keys, values and operators' Vault tokens would cross the network in clear.
        raise ConfigurationError(
            f"refusing to serve {settings.addr} without TLS: set PDV_TLS_CERT and PDV_TLS_KEY, "
            "or PDV_ALLOW_INSECURE=true behind a TLS-terminating proxy or mesh"
        )
    return None


def _listen(
    server: grpc.aio.Server, settings: Settings, addr: str, tls: TlsReloader | None
) -> tuple[int, int | None]:
    """The port serving `addr` and, with PDV_TLS_CLIENT_AUTH=optional, the one serving
    PDV_MTLS_ADDR (see vault.transport.tls for why optional takes two)."""
    if tls is None:
        return _bind(addr, lambda: server.add_insecure_port(addr)), None
    mode = settings.client_auth
    main = tls.credentials(require_client_certificate=mode == "require")
    port = _bind(addr, lambda: server.add_secure_port(addr, main))
    if mode != "optional":
        return port, None
    mtls = tls.credentials(require_client_certificate=True)
    mtls_addr = settings.mtls_addr
    return port, _bind(mtls_addr, lambda: server.add_secure_port(mtls_addr, mtls))


def _bind(addr: str, add: Callable[[], int]) -> int:
    try:
        port = add()
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigurationError(f"cannot listen on {addr}: is the address in use?")
    return port


class ServerThread:
    """A server on an event loop of its own thread: for tests and tools that are not async."""

    def __init__(
        self, app: App, addr: str, reuse_port: bool = False, *, health_addr: str = ""
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-loop")
        self._thread.start()
        try:
            self.serving = self._call(start_server(app, addr, reuse_port, health_addr=health_addr))
        except BaseException:
            self._end()
            raise
        self.port = self.serving.port
        self.mtls_port = self.serving.mtls_port

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def stop(self, grace: float | None = None) -> None:
        try:
            self._call(stop_server(self.serving, grace))
        finally:
            self._end()

    def _end(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class HealthPortThread:
    """A health-only port on an event loop of its own thread: the parent of several serving
    processes serves it (they do not), with readiness as its children report it."""

    def __init__(self, addr: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="health-port")
        self._thread.start()
        try:
            self.probes: HealthPort = asyncio.run_coroutine_threadsafe(
                start_health_port(addr), self._loop
            ).result()
        except BaseException:
            self._end()
            raise
        self.port = self.probes.port

    def set_ready(self, ready: bool) -> None:
        """Set readiness, without waiting (a signal handler calls this)."""
        asyncio.run_coroutine_threadsafe(self.probes.set_ready(ready), self._loop)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.probes.stop(), self._loop).result()
        finally:
            self._end()

    def _end(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def serve(
    app: App,
    addr: str,
    reuse_port: bool = False,
    on_ready: Callable[[int], None] | None = None,
    *,
    name: str = "pdvault",
    on_readiness: Callable[[bool], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM. Then readiness turns NOT_SERVING at once; calls are still
    taken for PDV_SHUTDOWN_PAUSE seconds, while load balancers notice; then new calls are
    refused and those under way have PDV_SHUTDOWN_GRACE seconds to finish; then the runtime
    stops (the audit queue committed) and a last line says so. With `on_ready`, the process
    serves as one of several: its parent serves the health port and logs for all."""
    settings = app.settings
    health_addr = settings.health_addr if on_ready is None else ""
    # One process serves its own metrics; the parent of several serves theirs (vault.runtime).
    try:
        metrics = start_metrics(settings.metrics_addr) if on_ready is None else None
    except BaseException:
        app.close()
        raise

    async def main() -> None:
        serving = await start_server(
            app, addr, reuse_port, health_addr=health_addr, on_readiness=on_readiness
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        # SIGHUP: read the policy file again (this process only; the parent of several passes
        # it to each). Off the loop: it reads a file and builds the use cases.
        loop.add_signal_handler(
            signal.SIGHUP,
            lambda: loop.run_in_executor(app.executor, app.reload_policy, "system:sighup"),
        )
        if on_ready is None:
            health_port = f"; health checks on port {serving.probes.port}" if serving.probes else ""
            log.info(
                "pdvault listening on %s (port %d, pid %d)%s",
                addr,
                serving.port,
                os.getpid(),
                health_port,
            )
            if serving.mtls_port is not None:
                log.info(
                    "client certificates on %s (port %d)", app.settings.mtls_addr, serving.mtls_port
                )
        else:
            on_ready(serving.port)
        await stop.wait()
        log.info(
            "%s stopping: not ready; serving %g s more for load balancers to notice, then up "
            "to %g s for calls under way",
            name,
            settings.shutdown_pause,
            settings.shutdown_grace,
        )
        await stop_taking_calls(serving)
        await asyncio.sleep(settings.shutdown_pause)
        # gRPC answers new calls no more (clients on a connection get GOAWAY and reconnect
        # elsewhere); those under way have the grace to finish.
        log.info(
            "%s draining: %d calls under way, up to %g s",
            name,
            serving.gate.in_flight,
            settings.shutdown_grace,
        )
        await stop_server(serving, settings.shutdown_grace)

    try:
        asyncio.run(main())
    finally:
        # The loop's handlers are gone with it: a late SIGHUP must not end the shutdown.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        app.close()
        if metrics is not None:
            metrics.stop()
    log.info("%s stopped", name)


def start_metrics(addr: str, directory: Path | None = None) -> MetricsEndpoint | None:
    """The Prometheus endpoint on `addr` ("" for none): this process's metrics, or, given the
    multiprocess `directory`, the sum of those its processes write there."""
    if not addr:
        return None
    # Imported only now: in multiprocess mode the variable naming the directory must be set
    # before prometheus_client is first imported (vault.observability.metrics).
    from vault.observability.metrics import (  # noqa: PLC0415
        MetricsEndpoint,
        multiprocess_registry,
    )

    registry = multiprocess_registry(directory) if directory is not None else None
    endpoint = MetricsEndpoint(addr, registry)
    log.info("metrics on http://%s/metrics (port %d)", addr, endpoint.port)
    return endpoint


def describe_error(exc: PdvaultError | OSError) -> str:
    """One line for a start-up failure the user can fix."""
    if isinstance(exc, PdvaultError):
        return exc.message
    return f"{exc.strerror or type(exc).__name__}: {exc.filename}" if exc.filename else str(exc)
