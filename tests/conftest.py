"""Shared fixtures: databases (SQLite and PostgreSQL), a wired application, a running server.

PostgreSQL: tests marked `postgres` (and every `database_url`-parametrized test's postgresql
case) run against a fresh database created for the session on PDV_TEST_POSTGRES_URL (default:
the local server, user postgres). Without a reachable server they skip with the reason, except
under CI=true, where an unreachable database fails the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import hvac
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from pdvault_client import Client
from transit_emulator import TransitEmulator
from vault.app import App, build_app, transit_settings
from vault.config import Settings
from vault.domain.policy_file import default_policy_text
from vault.domain.secrets import Secret
from vault.kms.transit import TransitSettings, VaultTransitKeyProvider
from vault.transport.server import ServerThread

ADMIN_URL = os.environ.get(
    "PDV_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ROOT = Path(__file__).resolve().parents[1]


def _libpq(url: str) -> str:
    u = make_url(url)
    parts = [f"host={u.host or '127.0.0.1'}", f"port={u.port or 5432}", f"dbname={u.database}"]
    if u.username:
        parts.append(f"user={u.username}")
    if u.password:
        parts.append(f"password={u.password}")
    return " ".join(parts) + " connect_timeout=5"


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session; dropped afterwards."""
    name = f"pdvault_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = psycopg.connect(_libpq(ADMIN_URL), autocommit=True)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL unreachable at {make_url(ADMIN_URL).render_as_string()}: {exc}"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _reset_postgres(url: str) -> None:
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture
def database_url_sqlite(tmp_path: Path) -> str:
    """An empty SQLite database file."""
    return f"sqlite:///{tmp_path / 'pdvault.db'}"


@pytest.fixture
def database_url_postgresql(postgres_server_url: str) -> str:
    """The session's PostgreSQL database, wiped clean."""
    _reset_postgres(postgres_server_url)
    return postgres_server_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database: a SQLite file, or the session's PostgreSQL database wiped clean."""
    url: str = request.getfixturevalue(f"database_url_{request.param}")
    return url


# The default policy has no category of kind binary (identity documents go through the
# DocumentService); the tests of binary values add this one.
ATTACHMENT_CATEGORY = """
[categories.attachment]
text = "A binary attachment (tests only)"
kind = "binary"
max_bytes = 1048576
mask = "redacted"
purposes = ["identity_verification"]
"""


def attachment_policy(directory: Path) -> Path:
    """The default policy plus the binary category `attachment`, as a file in `directory`."""
    path = directory / "policy-with-attachment.toml"
    path.write_text(default_policy_text() + ATTACHMENT_CATEGORY, encoding="utf-8")
    return path


def policy_with(**callers: str) -> str:
    """The default policy with extra lines at the top of some `[callers.<name>]` tables
    (`spiffe_id = ...` for the mTLS tests)."""
    text = default_policy_text()
    for name, lines in callers.items():
        header = f"[callers.{name}]\n"
        assert header in text
        text = text.replace(header, header + lines + "\n", 1)
    return text


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        addr="127.0.0.1:0",
        data_dir=tmp_path / "data",
        database_url=database_url,
        max_workers=8,
        policy_file=attachment_policy(tmp_path),
        retention_sweep_interval=0,
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[App]:
    application = build_app(settings)
    try:
        yield application
    finally:
        application.close()


@dataclass
class RunningServer:
    app: App
    addr: str
    port: int

    def credentials(self) -> dict[str, str]:
        data: dict[str, str] = json.loads(self.app.settings.credentials_file.read_text())
        return data

    def client(self, caller: str, timeout: float = 10.0) -> Client:
        return Client(self.addr, self.credentials()[caller], timeout=timeout)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.addr)


@contextmanager
def running(app: App, close: bool = False) -> Iterator[RunningServer]:
    """Serve `app` on a free loopback port for the block (closing the app after, if asked)."""
    srv = ServerThread(app, "127.0.0.1:0")
    try:
        yield RunningServer(app, f"127.0.0.1:{srv.port}", srv.port)
    finally:
        srv.stop(grace=None)
        if close:
            app.close()


@pytest.fixture
def server(app: App) -> Iterator[RunningServer]:
    with running(app) as srv:
        yield srv


def spawn_serve(
    cwd: Path, name: str = "serve", **env_vars: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start `pdv serve` as a new process, as a user would; wait until it listens. No load
    balancer waits for its readiness to drop, so a SIGTERM stops it without a pause."""
    addr = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDV_", "VAULT_"))}
    env.update(
        PDV_ADDR=addr,
        PDV_SHUTDOWN_PAUSE="0",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")]),
    )
    env.update(env_vars)
    log = cwd / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pdvault_client.cli", "serve"],
        cwd=cwd,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while b"listening" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(log.read_text())
        time.sleep(0.1)
    return proc, addr, log


def pdv_env(**env_vars: str) -> dict[str, str]:
    """This process's environment without pdvault's or Vault's settings, plus `env_vars`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDV_", "VAULT_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])
    env.update(env_vars)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- HashiCorp Vault Transit ------------------------------------------------------------------

DEPLOY_VAULT = ROOT / "deploy" / "vault"
_HCL_PATH = re.compile(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}', re.S)


def hcl_policy(name: str) -> dict[str, list[str]]:
    """The paths and capabilities of one of deploy/vault's policies, for the emulator."""
    text = (DEPLOY_VAULT / name).read_text()
    return {
        path: [c.strip().strip('"') for c in caps.split(",") if c.strip()]
        for path, caps in _HCL_PATH.findall(text)
    }


@dataclass
class Transit:
    """A Transit emulator with pdvault's key bootstrapped as deploy/vault/bootstrap.sh does,
    a service token with the pdvault-service policy and an operator token with pdvault-ops."""

    emulator: TransitEmulator
    url: str
    service_token: str
    ops_token: str

    def settings(self, **overrides: Any) -> TransitSettings:
        base: dict[str, Any] = {
            "addr": self.url,
            "token": Secret(self.service_token.encode()),
            "request_timeout": 2.0,
            "retry_budget": 2.0,
        }
        base.update(overrides)
        return dataclasses.replace(transit_settings(Settings()), **base)

    def provider(self, **overrides: Any) -> VaultTransitKeyProvider:
        return VaultTransitKeyProvider(self.settings(**overrides), sleep=lambda _s: None)

    def ops(self) -> Secret:
        return Secret(self.ops_token.encode())


@pytest.fixture
def transit() -> Iterator[Transit]:
    with TransitEmulator(root_token="root") as emulator:
        root: Any = hvac.Client(url=emulator.url, token="root")  # transit methods are untyped
        root.secrets.transit.create_key("pdvault", exportable=False)
        root.secrets.transit.update_key_configuration("pdvault", deletion_allowed=False)
        root.secrets.transit.create_key("pdvault-naming", exportable=False)  # the naming secret
        yield Transit(
            emulator,
            emulator.url,
            emulator.create_token(hcl_policy("pdvault-service.hcl"), ttl=3600),
            emulator.create_token(hcl_policy("pdvault-ops.hcl"), ttl=3600),
        )
