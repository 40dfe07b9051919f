"""Server construction: `build_server(app, addr) -> (server, port)`; tests start it on port 0."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pdvault.v1 import (
    key_service_pb2,
    key_service_pb2_grpc,
    subject_service_pb2,
    subject_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)

from vault.app import App, build_app
from vault.config import Settings
from vault.errors import ConfigurationError
from vault.transport.interceptors import ServiceInterceptor
from vault.transport.servicers import KeyServicer, SubjectServicer, TokenServicer

log = logging.getLogger(__name__)

TOKEN_SERVICE = token_service_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name
KEY_SERVICE = key_service_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name
SUBJECT_SERVICE = subject_service_pb2.DESCRIPTOR.services_by_name["SubjectService"].full_name
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def build_server(
    app: App, addr: str, reuse_port: bool = False
) -> tuple[grpc.Server, int, health.HealthServicer]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=app.settings.max_workers, thread_name_prefix="rpc"),
        interceptors=[ServiceInterceptor(app.authenticator)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Several processes share one port (SO_REUSEPORT): the kernel spreads connections.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )
    token_service_pb2_grpc.add_TokenServiceServicer_to_server(TokenServicer(app.tokens), server)
    key_service_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(app.key_admin), server)
    subject_service_pb2_grpc.add_SubjectServiceServicer_to_server(
        SubjectServicer(app.subjects), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", TOKEN_SERVICE, KEY_SERVICE, SUBJECT_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (
            TOKEN_SERVICE,
            KEY_SERVICE,
            SUBJECT_SERVICE,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    try:
        port = _listen(server, app, addr)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigurationError(f"cannot listen on {addr}: is the address in use?")
    return server, port, health_servicer


LOOPBACK = ("127.", "localhost:", "[::1]:")


def _listen(server: grpc.Server, app: App, addr: str) -> int:
    settings = app.settings
    if settings.tls_cert and settings.tls_key:
        try:
            chain, key = settings.tls_cert.read_bytes(), settings.tls_key.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read the TLS certificate or key: {exc}") from None
        return server.add_secure_port(addr, grpc.ssl_server_credentials([(key, chain)]))
    if not addr.startswith(LOOPBACK) and not settings.allow_insecure:
        # API keys, values and operators' Vault tokens would cross the network in clear.
        raise ConfigurationError(
            f"refusing to serve {addr} without TLS: set PDV_TLS_CERT and PDV_TLS_KEY, or "
            "PDV_ALLOW_INSECURE=true behind a TLS-terminating proxy or mesh"
        )
    return server.add_insecure_port(addr)


def serve(app: App, addr: str, reuse_port: bool = False) -> None:
    """Run until SIGINT or SIGTERM, then stop taking calls and finish those under way."""
    server, port, health_servicer = build_server(app, addr, reuse_port)
    server.start()
    log.info("pdvault listening on %s (port %d, pid %d)", addr, port, os.getpid())
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: draining", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
    stop.wait()
    health_servicer.enter_graceful_shutdown()
    server.stop(grace=10).wait()
    app.close()


def _child(settings: Settings) -> None:
    """One serving process: its own application (engine, cache, listener) and gRPC server."""
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = build_app(dataclasses.replace(settings, auto_migrate=False, dev_credentials=False))
    serve(app, settings.addr, reuse_port=True)


def serve_processes(settings: Settings, processes: int) -> int:
    """Serve from `processes` processes on one port (gRPC's SO_REUSEPORT pattern: Python's
    gRPC server is bound by one core's GIL). The parent prepares the database once, starts the
    children (spawned, so no gRPC or database state crosses a fork), passes signals on, and
    stops them all if one dies: the orchestrator restarts the whole unit."""
    if settings.addr.endswith(":0"):
        raise ConfigurationError("several processes need a fixed port: set PDV_ADDR")
    prepared = build_app(settings)  # migrations, dev credentials, shred log, once
    prepared.close()
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(target=_child, args=(settings,), name=f"pdvault-{i}", daemon=False)
        for i in range(processes)
    ]
    for child in children:
        child.start()
    log.info("pdvault serving %s from %d processes", settings.addr, processes)
    stopping = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stopping.set()
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    status = 0
    while any(c.is_alive() for c in children):
        for child in children:
            child.join(timeout=0.5)
            if not child.is_alive() and child.exitcode not in (0, None) and not stopping.is_set():
                log.error(
                    "process %s exited with %s: stopping the others", child.name, child.exitcode
                )
                status = 1
                _stop(signal.SIGTERM, None)
    return status
