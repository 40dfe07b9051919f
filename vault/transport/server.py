"""Server construction: `build_server(app, addr) -> (server, port)`; tests start it on port 0."""

from __future__ import annotations

import logging
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

from vault.app import App
from vault.errors import ConfigurationError
from vault.transport.interceptors import ServiceInterceptor
from vault.transport.servicers import KeyServicer, SubjectServicer, TokenServicer

log = logging.getLogger(__name__)

TOKEN_SERVICE = token_service_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name
KEY_SERVICE = key_service_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name
SUBJECT_SERVICE = subject_service_pb2.DESCRIPTOR.services_by_name["SubjectService"].full_name
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def build_server(app: App, addr: str) -> tuple[grpc.Server, int, health.HealthServicer]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=app.settings.max_workers, thread_name_prefix="rpc"),
        interceptors=[ServiceInterceptor(app.authenticator)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
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


def serve(app: App, addr: str, ready: threading.Event | None = None) -> None:
    """Run until SIGINT or SIGTERM, then stop taking calls and finish those under way."""
    server, port, health_servicer = build_server(app, addr)
    server.start()
    log.info("pdvault listening on %s (port %d)", addr, port)
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: draining", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
    if ready is not None:
        ready.set()
    stop.wait()
    health_servicer.enter_graceful_shutdown()
    server.stop(grace=10).wait()
    app.close()
