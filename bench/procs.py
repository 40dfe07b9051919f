"""The processes under test: pdvault as production runs it, the no-op server, the Transit
emulator, and a scratch PostgreSQL database. Everything listens on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import psycopg
from sqlalchemy.engine import make_url

from bench.procstat import descendants
from bench.workloads import CALLER
from transit_emulator import TransitEmulator
from vault.domain.policy_file import default_policy_text

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


class BenchError(Exception):
    """A setup step failed; the message says what to check."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def unrefused_policy(text: str, caller: str) -> str:
    """The policy with `caller`'s request rate and item quotas raised out of reach: the bench
    drives one caller far past any sensible limit, and measures the checks without refusals
    (they still run: the quota's count is on every detokenize)."""
    out: list[str] = []
    section = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip()
        kept = line
        if section in (f"[callers.{caller}]", f"[callers.{caller}.quotas]"):
            if kept.startswith("rate = "):
                kept = "rate = { per_second = 1000000, burst = 1000000 }"
            kept = re.sub(r"items = \d+", "items = 1000000000", kept)
        out.append(kept)
    return "\n".join(out) + "\n"


def python_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDV_", "VAULT_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])
    return env


def _listening_pids(
    proc: subprocess.Popen[bytes], log: Path, marker: bytes, timeout: float
) -> list[int]:
    """Wait for the server's one "listening on" line; the serving processes' pids it names
    ("... (2 processes: pid 123, pid 456)", or "... (port N, pid P)" from a single process)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in log.read_bytes().splitlines():
            if marker in line:
                pids = [int(p) for p in re.findall(rb"\bpid (\d+)", line)]
                if not pids:
                    raise BenchError(f"{log.name}: no pid in its listening line: {line!r}")
                return pids
        if proc.poll() is not None:
            raise BenchError(f"{log.name}: exited with {proc.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"{log.name}: not ready after {timeout:.0f} s:\n{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _stop(proc: subprocess.Popen[bytes], grace: float = 20) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@dataclass
class PdvaultServer:
    """`python -m pdvault_client.cli serve` (what `pdv serve` runs), configured by its environment.

    pdvault serves from `PDV_PROCESSES` processes on one port (default: one per core): a parent
    that prepares the database and spawns the serving children, which share the port through
    SO_REUSEPORT, each with its own data-key cache. `processes` sets it (0: pdvault's default).
    One `pdv serve` per address: pdvault refuses a port another instance already serves."""

    data_dir: Path
    log_dir: Path
    database_url: str = ""
    kms: str = "local"
    vault_addr: str = ""
    vault_token: str = ""
    max_workers: int = 16
    processes: int = 0
    addr: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = None
    _serving: list[int] = field(default_factory=list)
    _all: list[int] = field(default_factory=list)
    _starts: int = 0

    def env(self) -> dict[str, str]:
        env = python_env()
        env.update(
            PDV_ADDR=self.addr,
            PDV_DATA_DIR=str(self.data_dir),
            PDV_KMS=self.kms,
            PDV_MAX_WORKERS=str(self.max_workers),
            PDV_SHUTDOWN_PAUSE="0",  # no load balancer to wait for between runs
        )
        if self.processes:
            env["PDV_PROCESSES"] = str(self.processes)
        if self.database_url:
            env["PDV_DATABASE_URL"] = self.database_url
        if self.kms == "vault":
            env.update(VAULT_ADDR=self.vault_addr, VAULT_TOKEN=self.vault_token)
        env.update(self.extra_env)
        if "PDV_POLICY_FILE" not in env:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            policy = self.log_dir / "bench-policy.toml"
            policy.write_text(unrefused_policy(default_policy_text(), CALLER), encoding="utf-8")
            env["PDV_POLICY_FILE"] = str(policy)
        return env

    def start(self) -> None:
        if self._proc is not None:
            raise BenchError("pdvault is already running")
        if not self.addr:
            self.addr = f"{HOST}:{free_port()}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._starts += 1
        log = self.log_dir / f"pdvault-{self._starts}.log"
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "pdvault_client.cli", "serve"],
                env=self.env(),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            # One line once every serving process accepts calls, naming them all.
            self._serving = _listening_pids(self._proc, log, b"pdvault listening on", 90)
        except BaseException:
            self.stop()
            raise
        self._all = [self._proc.pid, *descendants(self._proc.pid)]

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None
        self._serving = []
        self._all = []

    def restart(self) -> None:
        """Fresh processes: same database and keys, empty data-key caches."""
        self.stop()
        self.start()

    @property
    def pids(self) -> tuple[int, ...]:
        """Every process of the server (the parents too): its CPU time is the server's."""
        return tuple(self._all)

    @property
    def serving_pids(self) -> tuple[int, ...]:
        """The processes that answer calls."""
        return tuple(self._serving)

    def api_key(self, caller: str) -> str:
        keys: dict[str, str] = json.loads((self.data_dir / "dev-credentials.json").read_text())
        return keys[caller]


@dataclass
class NoopServer:
    """`python -m bench.noop_server` in one server model (`aio`, pdvault's, or `threads`), with
    pdvault's process model (see PdvaultServer)."""

    log_dir: Path
    model: str = "aio"
    max_workers: int = 16
    processes: int = 0
    addr: str = ""
    _proc: subprocess.Popen[bytes] | None = None
    _all: list[int] = field(default_factory=list)
    _serving: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.addr = f"{HOST}:{free_port()}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"noop-{self.model}.log"
        processes = self.processes or max(1, os.cpu_count() or 1)
        with log.open("wb") as out:
            self._proc = subprocess.Popen(  # noqa: S603  (our own interpreter, fixed arguments)
                [
                    sys.executable,
                    "-m",
                    "bench.noop_server",
                    "--addr",
                    self.addr,
                    "--model",
                    self.model,
                    "--max-workers",
                    str(self.max_workers),
                    "--processes",
                    str(processes),
                ],
                env=python_env(),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            self._serving = _listening_pids(self._proc, log, b"noop server listening on", 60)
        except BaseException:
            self.stop()
            raise
        self._all = [self._proc.pid, *descendants(self._proc.pid)]

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc, grace=10)
            self._proc = None
            self._all = []
            self._serving = []

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(self._all)

    @property
    def serving_pids(self) -> tuple[int, ...]:
        return tuple(self._serving)


# -- HashiCorp Vault Transit, emulated ----------------------------------------------------------

_HCL_PATH = re.compile(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]', re.S)


def hcl_policy(name: str) -> dict[str, list[str]]:
    """The paths and capabilities of one of deploy/vault's policies."""
    text = (ROOT / "deploy" / "vault" / name).read_text()
    return {
        path: [c.strip().strip('"') for c in caps.split(",") if c.strip()]
        for path, caps in _HCL_PATH.findall(text)
    }


@dataclass
class Transit:
    """The Transit emulator of the tests, in this (the harness's) process so that its call
    counters can be read; its CPU time is this process's. pdvault gets a token with exactly
    the pdvault-service policy, as in production."""

    latency: float
    emulator: Any = None
    url: str = ""
    service_token: str = ""
    root_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    def start(self) -> None:
        self.emulator = TransitEmulator(root_token=self.root_token)
        self.url = self.emulator.start(HOST, 0)
        root: Any = hvac.Client(url=self.url, token=self.root_token)  # untyped transit API
        root.secrets.transit.create_key("pdvault", exportable=False)
        root.secrets.transit.update_key_configuration("pdvault", deletion_allowed=False)
        root.secrets.transit.create_key("pdvault-naming", exportable=False)  # the naming secret
        self.service_token = self.emulator.create_token(
            hcl_policy("pdvault-service.hcl"), ttl=24 * 3600
        )
        self.emulator.set_latency(self.latency)

    def stop(self) -> None:
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None

    def reset_calls(self) -> None:
        self.emulator.reset_calls()

    def calls(self) -> dict[str, int]:
        counted: dict[str, int] = dict(self.emulator.calls)
        return counted


# -- PostgreSQL ---------------------------------------------------------------------------------


@dataclass
class PostgresDatabase:
    """A database of our own on the local server, created for the run and dropped after it."""

    server: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    name: str = field(default_factory=lambda: f"pdvault_bench_{os.getpid()}")

    @property
    def url(self) -> str:
        return self.server.rsplit("/", 1)[0] + "/" + self.name

    def _admin(self) -> Any:
        u = make_url(self.server)
        return psycopg.connect(
            host=u.host or HOST,
            port=u.port or 5432,
            user=u.username or "postgres",
            password=u.password,
            dbname=u.database or "postgres",
            autocommit=True,
            connect_timeout=5,
        )

    def create(self) -> None:
        try:
            with self._admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{self.name}"')
        except Exception as exc:  # noqa: BLE001  (any driver error: say where we looked)
            raise BenchError(
                f"PostgreSQL at {self.server.split('@')[-1]} is not usable "
                f"({type(exc).__name__}); use --db sqlite or --postgres-url"
            ) from None

    def drop(self) -> None:
        with contextlib.suppress(Exception), self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@contextlib.contextmanager
def database_url(db: str, postgres_server: str, name: str) -> Iterator[str]:
    """The database URL pdvault is given for `db`: "" for SQLite (in its data directory), or
    a PostgreSQL database `name` on `postgres_server`, created for the run and dropped after."""
    if db == "sqlite":
        yield ""
        return
    pg = PostgresDatabase(server=postgres_server, name=name)
    pg.create()
    try:
        yield pg.url
    finally:
        pg.drop()
