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
   whole unit; passes SIGHUP on (each child reads the policy file again);
5. serves the metrics (PDV_METRICS_ADDR), the children do not: with metrics on, it makes an
   empty directory and names it in PROMETHEUS_MULTIPROC_DIR before it spawns them; each child
   writes its samples there (prometheus_client's multiprocess mode) and each scrape of the
   parent's endpoint sums them; the directory is removed when the parent stops;
6. serves the health-only port (PDV_HEALTH_ADDR), the children do not: `liveness` while it
   runs, and readiness as the children report it. Each child checks the database and the key
   provider every PDV_HEALTH_INTERVAL (`App.dependency_problems`, as one process does) and tells
   the parent when its readiness changes: the pod is ready while every child is, and not ready
   from the moment a SIGTERM comes (each child then pauses and drains on its own).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vault.app import build_app
from vault.config import Settings
from vault.errors import ConfigurationError, PdvaultError
from vault.logs import configure_logging
from vault.transport.server import (
    HealthPortThread,
    check_transport,
    describe_error,
    serve,
    start_metrics,
)

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
    configure_logging(settings.log_level, settings.log_format)
    # A SIGHUP (a policy reload) before this process serves must not end it; it reads the
    # policy file as it starts anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
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
            name=name,
            on_readiness=lambda ok: ready.put(("readiness", name, ok)),
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
    with _metrics(settings):
        return _serve_processes(settings, processes)


def _serve_processes(settings: Settings, processes: int) -> int:
    claim = PortClaim(settings.addr)
    try:
        mtls_claim = PortClaim(settings.mtls_addr) if settings.mtls_addr else None
    except BaseException:
        claim.release()
        raise
    try:
        probes = HealthPortThread(settings.health_addr) if settings.health_addr else None
    except BaseException:
        claim.release()
        if mtls_claim is not None:
            mtls_claim.release()
        raise
    child_settings = dataclasses.replace(
        settings, auto_migrate=False, dev_credentials=False, health_addr=""
    )
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    children = [
        ctx.Process(
            target=_child, args=(child_settings, f"pdvault-{i}", ready), name=f"pdvault-{i}"
        )
        for i in range(processes)
    ]
    family = _Family(children, ready, probes)

    def _stop(signum: int, _frame: object) -> None:
        family.stop()

    def _hangup(_signum: int, _frame: object) -> None:
        family.hangup()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _hangup)
    try:
        for child in children:
            child.start()
        pids = family.await_ready()
        health = f"; health checks on port {probes.port}" if probes is not None else ""
        log.info(
            "pdvault listening on %s (%d processes: pid %s)%s%s",
            settings.addr,
            len(pids),
            ", pid ".join(str(p) for p in pids),
            health,
            f"; client certificates on {settings.mtls_addr}" if settings.mtls_addr else "",
        )
        return family.supervise()
    except PdvaultError:
        family.stop()
        for child in children:
            child.join(timeout=15)
        raise
    finally:
        if probes is not None:
            probes.stop()
        claim.release()
        if mtls_claim is not None:
            mtls_claim.release()


@contextlib.contextmanager
def _metrics(settings: Settings) -> Iterator[None]:
    """With metrics on, for as long as the processes serve: the children's directory, named in
    the environment they inherit (empty, this run's own: stale files of an earlier run would be
    summed too), and the endpoint summing it."""
    if not settings.metrics_addr:
        yield
        return
    directory = Path(tempfile.mkdtemp(prefix="pdvault-metrics-"))
    try:
        os.environ.update({"PROMETHEUS_MULTIPROC_DIR": str(directory)})
        endpoint = start_metrics(settings.metrics_addr, directory)
        try:
            yield
        finally:
            if endpoint is not None:
                endpoint.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class _Family:
    """The parent's view of its children: alive or not, ready or not, and their stop."""

    def __init__(
        self,
        children: Sequence[multiprocessing.process.BaseProcess],
        messages: Any,
        probes: HealthPortThread | None,
    ) -> None:
        self.children = children
        self.messages = messages
        self.probes = probes
        self.stopping = threading.Event()
        self.ready: dict[str, bool] = {}

    def stop(self) -> None:
        """Readiness off at once, and SIGTERM to every child (each pauses, then drains)."""
        self.stopping.set()
        if self.probes is not None:
            self.probes.set_ready(False)
        for child in self.children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    def hangup(self) -> None:
        """SIGHUP to every child: each reads the policy file again (and validates it)."""
        for child in self.children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGHUP)

    def _heard(self, kind: str, name: str, detail: Any) -> None:
        if kind == "failed":
            raise ConfigurationError(f"{detail} (in {name})")
        self.ready[name] = kind == "ready" or bool(detail)
        if self.probes is not None and len(self.ready) == len(self.children):
            self.probes.set_ready(all(self.ready.values()) and not self.stopping.is_set())

    def await_ready(self) -> list[int]:
        pids: list[int] = []
        deadline = time.monotonic() + READY_TIMEOUT
        while len(pids) < len(self.children):
            if self.stopping.is_set():
                raise ConfigurationError("stopped before every process was ready")
            try:
                kind, name, detail = self.messages.get(timeout=0.5)
            except queue.Empty:
                dead = [c.name for c in self.children if c.exitcode not in (None, 0)]
                if dead:
                    raise ConfigurationError(f"process {dead[0]} exited while starting") from None
                if time.monotonic() > deadline:
                    raise ConfigurationError(
                        f"the serving processes were not ready within {READY_TIMEOUT:g} s"
                    ) from None
                continue
            if kind == "ready":
                pids.append(int(detail))
            self._heard(kind, name, detail)
        return pids

    def supervise(self) -> int:
        status = 0
        while any(c.is_alive() for c in self.children):
            try:
                kind, name, detail = self.messages.get(timeout=0.5)
            except queue.Empty:
                pass
            else:
                if kind == "readiness":
                    self._heard(kind, name, detail)
            for child in self.children:
                died = not child.is_alive() and child.exitcode not in (0, None)
                if died and not self.stopping.is_set():
                    log.error(
                        "process %s exited with %s: stopping the others", child.name, child.exitcode
                    )
                    status = 1
                    self.stop()
        for child in self.children:
            child.join()
        log.info("pdvault stopped")
        return status
