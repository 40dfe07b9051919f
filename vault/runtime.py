"""Process supervision: serving one port from several processes (`PDV_PROCESSES`).

Python's gRPC server is bound by one core's GIL, so pdvault serves from one process per core on
one port (SO_REUSEPORT: the kernel spreads connections). The parent:

1. validates everything a child would trip on, once, before spawning any (the database and its
   migrations, the key-encryption key against the data keys, the TLS files, the shred log's
   re-application, the demo credentials): a mistake is one line, not a traceback per child;
2. claims the port for this instance: a plain bind tells whether anything listens there already,
   and a guard socket (bound with SO_REUSEPORT, never listening) stays bound for the instance's
   life, so a second `pdv serve` on the same port fails instead of silently sharing it;
3. spawns the children (spawn, not fork: no gRPC or database state crosses a fork), waits until
   every one accepts calls, and only then logs that it is listening;
4. passes SIGTERM and SIGINT on, and stops them all if one dies: the orchestrator restarts the
   whole unit.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from vault.app import build_app
from vault.config import Settings
from vault.errors import ConfigurationError, PdvaultError
from vault.logs import configure_logging
from vault.transport.server import check_transport, describe_error, serve

__all__ = ["READY_TIMEOUT", "PortClaim", "serve_processes"]


log = logging.getLogger(__name__)

READY_TIMEOUT = 120.0


class PortClaim:
    """This instance's hold on HOST:PORT for as long as it serves."""

    def __init__(self, addr: str) -> None:
        host, _, port = addr.rpartition(":")
        host = host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise ConfigurationError(f"cannot resolve the address {addr}") from None
        self._guards: list[socket.socket] = []
        try:
            places = {(family, kind, proto, where) for family, kind, proto, _n, where in infos}
            for family, kind, proto, where in places:
                with socket.socket(family, kind, proto) as probe:
                    # REUSEADDR: a port with connections of an earlier run in TIME_WAIT is
                    # free; one with a listener is not, which is what this asks.
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        probe.bind(where)
                    except OSError:
                        raise ConfigurationError(
                            f"{addr} is already served (another pdv serve, or another program): "
                            "stop it, or set PDV_ADDR to another port"
                        ) from None
                guard = socket.socket(family, kind, proto)
                guard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                guard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                guard.bind(where)
                self._guards.append(guard)
        except BaseException:
            self.release()
            raise

    def __repr__(self) -> str:
        return f"PortClaim({len(self._guards)} sockets)"

    def release(self) -> None:
        for guard in self._guards:
            guard.close()
        self._guards = []


def _child(settings: Settings, name: str, ready: Any) -> None:
    """One serving process: its own application (engine, cache, listener) and gRPC server."""
    configure_logging(settings.log_level)
    # What the user can fix is reported to the parent as one line; anything else is a bug,
    # which crashes this child with its traceback, and the parent names the child that died.
    try:
        app = build_app(settings, primary=False)
    except (PdvaultError, OSError) as exc:
        ready.put(("failed", name, describe_error(exc)))
        return
    try:
        serve(
            app,
            settings.addr,
            reuse_port=True,
            on_ready=lambda port: ready.put(("ready", name, os.getpid())),
        )
    except (PdvaultError, OSError) as exc:
        ready.put(("failed", name, describe_error(exc)))


def serve_processes(settings: Settings, processes: int) -> int:
    """Serve `settings.addr` from `processes` processes until stopped; the exit status."""
    if settings.addr.endswith(":0") or settings.mtls_addr.endswith(":0"):
        raise ConfigurationError(
            "several processes need a fixed port: set PDV_ADDR (and PDV_MTLS_ADDR)"
        )
    check_transport(settings)  # TLS files and the plaintext rule, before anything else
    build_app(settings).close()  # migrations, key checks, shred log, credentials: once
    claim = PortClaim(settings.addr)
    try:
        mtls_claim = PortClaim(settings.mtls_addr) if settings.mtls_addr else None
    except BaseException:
        claim.release()
        raise
    child_settings = dataclasses.replace(settings, auto_migrate=False, dev_credentials=False)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    children = [
        ctx.Process(
            target=_child, args=(child_settings, f"pdvault-{i}", ready), name=f"pdvault-{i}"
        )
        for i in range(processes)
    ]
    stopping = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stopping.set()
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        for child in children:
            child.start()
        pids = _await_ready(children, ready, stopping)
        log.info(
            "pdvault listening on %s (%d processes: pid %s)%s",
            settings.addr,
            len(pids),
            ", pid ".join(str(p) for p in pids),
            f"; client certificates on {settings.mtls_addr}" if settings.mtls_addr else "",
        )
        return _supervise(children, stopping, _stop)
    except PdvaultError:
        _stop(signal.SIGTERM, None)
        for child in children:
            child.join(timeout=15)
        raise
    finally:
        claim.release()
        if mtls_claim is not None:
            mtls_claim.release()


def _await_ready(
    children: Sequence[multiprocessing.process.BaseProcess], ready: Any, stopping: threading.Event
) -> list[int]:
    pids: list[int] = []
    deadline = time.monotonic() + READY_TIMEOUT
    while len(pids) < len(children):
        if stopping.is_set():
            raise ConfigurationError("stopped before every process was ready")
        try:
            kind, name, detail = ready.get(timeout=0.5)
        except queue.Empty:
            dead = [c.name for c in children if c.exitcode not in (None, 0)]
            if dead:
                raise ConfigurationError(f"process {dead[0]} exited while starting") from None
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the serving processes were not ready within {READY_TIMEOUT:g} s"
                ) from None
            continue
        if kind == "failed":
            raise ConfigurationError(f"{detail} (in {name})")
        pids.append(int(detail))
    return pids


def _supervise(
    children: Sequence[multiprocessing.process.BaseProcess],
    stopping: threading.Event,
    stop: Any,
) -> int:
    status = 0
    while any(c.is_alive() for c in children):
        for child in children:
            child.join(timeout=0.5)
            if not child.is_alive() and child.exitcode not in (0, None) and not stopping.is_set():
                log.error(
                    "process %s exited with %s: stopping the others", child.name, child.exitcode
                )
                status = 1
                stop(signal.SIGTERM, None)
    log.info("pdvault stopped")
    return status
