"""Typed settings from the environment (PDV_*), optionally from a TOML file (PDV_CONFIG).

Each setting is stated once, as a field of `Settings`: its default, and in its metadata (`Var`)
the variable that sets it, its range or choices and its line in `pdv --help`. `load_settings`
reads and checks every field from there, `environment()` gives `pdv --help` its table, and
tests/integration/test_cli_help.py checks the README's table against `defaults()`.

The environment wins over the file. Secret fields (the database URL may carry a password) are
kept out of repr; `describe()` gives a safe summary for the start-up log line.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from vault.errors import ConfigurationError

__all__ = [
    "CLIENT_AUTH_CHOICES",
    "CONFIG_FILE",
    "KMS_CHOICES",
    "LOG_LEVELS",
    "SERVER",
    "TRANSIT",
    "VAULT_AUTH_CHOICES",
    "Settings",
    "Var",
    "defaults",
    "environment",
    "load_settings",
    "setting",
]


KMS_CHOICES = ("local", "vault")
CLIENT_AUTH_CHOICES = ("require", "optional")
VAULT_AUTH_CHOICES = ("token", "approle", "kubernetes")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

SERVER = "server (`pdv serve`, `pdv db upgrade`)"
TRANSIT = "HashiCorp Vault Transit (PDV_KMS=vault)"
T = TypeVar("T")
CONFIG_FILE = ("PDV_CONFIG", "a TOML file with the settings below, in lower case without PDV_")


@dataclass(frozen=True)
class Var:
    """How a setting is read and described: the variable, its meaning for `pdv --help`, and
    what values it takes (numbers from `low` to `high`, or one of `choices`)."""

    name: str
    meaning: str
    section: str = SERVER
    shown: str = ""  # the default in words, where the literal does not say it ("one per core")
    note: str = ""  # said after the default in `pdv --help`
    low: float = 0
    high: float = 0
    choices: tuple[str, ...] = ()
    fold_case: bool = False  # `debug` is DEBUG


def setting(default: T, name: str, meaning: str, *, secret: bool = False, **how: Any) -> T:
    """A field of Settings: its default, and the variable `name` that sets it (`Var`).
    Secret fields stay out of repr."""
    return field(default=default, repr=not secret, metadata={"var": Var(name, meaning, **how)})


@dataclass(frozen=True)
class Settings:
    addr: str = setting("127.0.0.1:50051", "PDV_ADDR", "where the server listens")
    data_dir: Path = setting(
        Path(".pdvault"), "PDV_DATA_DIR", "SQLite database, local key file, dev credentials"
    )
    database_url: str = setting(
        "",
        "PDV_DATABASE_URL",
        "e.g. postgresql+psycopg://user@host/pdvault",
        shown="SQLite in the data dir",
        secret=True,  # it may carry a password
    )
    kms: str = setting(
        "local",
        "PDV_KMS",
        "the key provider: local for the key file, vault for HashiCorp Vault",
        choices=KMS_CHOICES,
    )
    key_file: Path | None = setting(
        None, "PDV_KEY_FILE", "the local key-encryption key file", shown="<data dir>/kek.json"
    )
    policy_file: Path | None = setting(None, "PDV_POLICY", "a policy file", shown="shipped default")
    max_workers: int = setting(
        16, "PDV_MAX_WORKERS", "threads per process running the use cases", low=1, high=1024
    )
    # Serving processes sharing the port (SO_REUSEPORT).
    processes: int = setting(
        0, "PDV_PROCESSES", "serving processes sharing the port", shown="one per core", high=256
    )
    log_level: str = setting(
        "INFO",
        "PDV_LOG_LEVEL",
        "DEBUG, INFO, WARNING or ERROR",
        note="--log-level wins",
        choices=LOG_LEVELS,
        fold_case=True,
    )
    # On first start, create API keys for the policy's callers and write them to
    # <data dir>/dev-credentials.json. Meant for the embedded default; turn off in production.
    dev_credentials: bool = setting(
        True, "PDV_DEV_CREDENTIALS", "create the demo callers' API keys on first start"
    )
    auto_migrate: bool = setting(
        True, "PDV_AUTO_MIGRATE", "run the database migrations at start-up"
    )
    # The record of shredded subjects, outside the database.
    shred_log: Path | None = setting(
        None, "PDV_SHRED_LOG", "the shred log, outside the database", shown="beside the key file"
    )
    # TLS for the gRPC port: a PEM certificate chain and its key. Without them pdvault serves
    # in clear only on a loopback address, unless allow_insecure says otherwise.
    tls_cert: Path | None = setting(
        None, "PDV_TLS_CERT", "the server's TLS certificate chain (PEM); with PDV_TLS_KEY"
    )
    tls_key: Path | None = setting(None, "PDV_TLS_KEY", "the key of PDV_TLS_CERT (PEM)")
    # mTLS: callers identified by client certificates (X509-SVIDs) that this CA bundle signs.
    # The three files reload when they change, for new connections (see vault.transport.tls).
    tls_client_ca: Path | None = setting(
        None,
        "PDV_TLS_CLIENT_CA",
        "the CA bundle that signs client certificates (PEM); turns mTLS on",
    )
    tls_client_auth: str = setting(
        "require",
        "PDV_TLS_CLIENT_AUTH",
        "with PDV_TLS_CLIENT_CA, require: no connection without a client certificate; "
        "optional: API keys on PDV_ADDR, certificates on PDV_MTLS_ADDR",
        choices=CLIENT_AUTH_CHOICES,
    )
    mtls_addr: str = setting(
        "",
        "PDV_MTLS_ADDR",
        "with PDV_TLS_CLIENT_AUTH=optional: the port that requires client certificates",
    )
    allow_insecure: bool = setting(
        False, "PDV_ALLOW_INSECURE", "allow a plaintext port off loopback"
    )
    # The data-key cache.
    cache_max_entries: int = setting(
        10_000,
        "PDV_KEY_CACHE_MAX_ENTRIES",
        "data keys cached per process",
        note="0: no cache",
        high=10**7,
    )
    cache_max_age: float = setting(
        300.0, "PDV_KEY_CACHE_MAX_AGE", "seconds a cached data key serves", high=86_400
    )
    cache_max_uses: int = setting(
        100_000, "PDV_KEY_CACHE_MAX_USES", "unwraps a cached data key answers", low=1, high=2**32
    )
    # Defences against slow and greedy clients (see vault.transport.rpc).
    request_read_timeout: float = setting(
        10.0,
        "PDV_REQUEST_READ_TIMEOUT",
        "seconds a call may take to send its request",
        low=0.1,
        high=600,
    )
    max_calls: int = setting(
        256, "PDV_MAX_CALLS", "calls in flight per process, health checks aside", low=1, high=10**5
    )
    max_calls_per_caller: int = setting(
        128,
        "PDV_MAX_CALLS_PER_CALLER",
        "calls in flight per caller, per process",
        low=1,
        high=10**5,
    )
    max_streams_per_connection: int = setting(  # HTTP/2 streams
        100,
        "PDV_MAX_STREAMS_PER_CONNECTION",
        "calls in flight on one connection",
        low=1,
        high=10**4,
    )
    max_connection_age: float = setting(
        1800.0,
        "PDV_MAX_CONNECTION_AGE",
        "seconds before a client must reconnect",
        low=1,
        high=86_400 * 7,
    )
    health_interval: float = setting(
        5.0,
        "PDV_HEALTH_INTERVAL",
        "seconds between readiness checks of database and keys",
        low=0.1,
        high=3600,
    )
    # Documents (DocumentService).
    upload_timeout: float = setting(
        120.0,
        "PDV_UPLOAD_TIMEOUT",
        "seconds a whole document upload may take",
        low=1,
        high=3600,
    )
    max_transfers: int = setting(
        8,
        "PDV_MAX_TRANSFERS",
        "document uploads and downloads in flight per process",
        low=1,
        high=1024,
    )
    clamd: str = setting(
        "",
        "PDV_CLAMD",
        "ClamAV's clamd for malware scans: a socket path, or tcp://host:port",
        shown="no scan",
    )
    retention_sweep_interval: float = setting(
        3600.0,
        "PDV_RETENTION_SWEEP_INTERVAL",
        "seconds between retention sweeps inside the server (0: none)",
        low=0,
        high=86_400 * 7,
    )
    # HashiCorp Vault Transit (PDV_KMS=vault), configured as Vault's own tools are.
    vault_addr: str = setting(
        "http://127.0.0.1:8200", "VAULT_ADDR", "the Vault server", section=TRANSIT
    )
    vault_token: str = setting(
        "",
        "VAULT_TOKEN",
        "pdvault's token (token auth); for `pdv keys`: the operator's own",
        section=TRANSIT,
        secret=True,
    )
    vault_cacert: str = setting(
        "", "VAULT_CACERT", "the CA that signed Vault's certificate", section=TRANSIT
    )
    vault_namespace: str = setting(
        "", "VAULT_NAMESPACE", "the Vault Enterprise namespace", section=TRANSIT
    )
    vault_auth: str = setting(
        "token",
        "PDV_VAULT_AUTH",
        "token, approle or kubernetes",
        section=TRANSIT,
        choices=VAULT_AUTH_CHOICES,
    )
    vault_role_id: str = setting("", "VAULT_ROLE_ID", "AppRole: the role id", section=TRANSIT)
    vault_secret_id: str = setting(
        "", "VAULT_SECRET_ID", "AppRole: the secret id", section=TRANSIT, secret=True
    )
    vault_k8s_role: str = setting(
        "", "PDV_VAULT_K8S_ROLE", "Kubernetes auth: the role", section=TRANSIT
    )
    vault_k8s_jwt_file: Path = setting(
        Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        "PDV_VAULT_K8S_JWT_FILE",
        "Kubernetes auth: the service account token file",
        section=TRANSIT,
    )
    vault_mount: str = setting("transit", "PDV_VAULT_MOUNT", "the Transit mount", section=TRANSIT)
    vault_key: str = setting("pdvault", "PDV_VAULT_KEY", "the Transit key", section=TRANSIT)
    vault_timeout: float = setting(
        5.0,
        "PDV_VAULT_TIMEOUT",
        "seconds one HTTP call to Vault may take",
        section=TRANSIT,
        low=0.1,
        high=120,
    )

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'pdvault.db'}"

    @property
    def effective_key_file(self) -> Path:
        return self.key_file or self.data_dir / "kek.json"

    @property
    def effective_processes(self) -> int:
        return self.processes or max(1, os.cpu_count() or 1)

    @property
    def effective_shred_log(self) -> Path:
        if self.shred_log is not None:
            return self.shred_log
        if self.kms == "local":
            return self.effective_key_file.parent / "shred-log.jsonl"
        return self.data_dir / "shred-log.jsonl"

    @property
    def client_auth(self) -> str:
        """`require` or `optional` when client certificates are asked for (PDV_TLS_CLIENT_CA
        set), else "". Require by default: a client CA says the operator means mTLS, and
        with require a connection without a certificate ends in the handshake, before any
        of pdvault's code runs; optional is the explicit step for a fleet still on keys."""
        return "" if self.tls_client_ca is None else self.tls_client_auth

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "dev-credentials.json"

    @property
    def uses_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    def describe(self) -> str:
        db = "sqlite" if self.uses_sqlite else self.effective_database_url.split(":", 1)[0]
        kms = self.kms
        if kms == "vault":
            kms += (
                f" ({self.vault_addr} {self.vault_mount}/keys/{self.vault_key}, {self.vault_auth})"
            )
        tls = "off" if self.tls_cert is None else "on"
        if self.client_auth:
            tls += ", client certificates " + (
                "required" if self.client_auth == "require" else "optional"
            )
            if self.mtls_addr:
                tls += f" on {self.mtls_addr}"
        return f"addr={self.addr} data_dir={self.data_dir} database={db} kms={kms} tls={tls}"


def _var(f: Field[Any]) -> Var:
    v: Var = f.metadata["var"]
    return v


def _shown(f: Field[Any]) -> str:
    """A field's default as `pdv --help` and the README say it."""
    v, default = _var(f), f.default
    if v.shown:
        return v.shown
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, Path) and not default.is_absolute():
        return f"./{default}"
    return "" if default is None else str(default)


# variable -> setting name, in the order of the fields
_ENV = {_var(f).name: f.name for f in fields(Settings)}


def defaults() -> dict[str, str]:
    """Every variable's default, as `pdv --help` shows it ("" where there is none)."""
    return {_var(f).name: _shown(f) for f in fields(Settings)}


def environment() -> list[tuple[str, list[tuple[str, str]]]]:
    """The variables by section for `pdv --help`: (name, what it does (default); note)."""
    sections: dict[str, list[tuple[str, str]]] = {SERVER: [CONFIG_FILE], TRANSIT: []}
    for f in fields(Settings):
        v, default = _var(f), _shown(f)
        text = v.meaning + (f" ({default})" if default else "") + (f"; {v.note}" if v.note else "")
        sections[v.section].append((v.name, text))
    return list(sections.items())


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    config_file = env.get("PDV_CONFIG")
    if config_file:
        try:
            raw.update(tomllib.loads(Path(config_file).read_text("utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"PDV_CONFIG={config_file}: cannot read it ({exc})") from None
    for name, setting in _ENV.items():
        if name in env:
            raw[setting] = env[name]
    unknown = set(raw) - set(_ENV.values())
    if unknown:
        raise ConfigurationError(f"unknown settings: {', '.join(sorted(unknown))}")
    return _build(raw)


def _build(raw: Mapping[str, object]) -> Settings:
    types = get_type_hints(Settings)
    given = {
        f.name: _parse(f, types[f.name], raw[f.name]) for f in fields(Settings) if f.name in raw
    }
    s = Settings(**given)
    _check_addr("PDV_ADDR", s.addr)
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigurationError("PDV_TLS_CERT and PDV_TLS_KEY go together")
    _check_client_auth(s, explicit="tls_client_auth" in raw)
    if s.kms == "vault" and s.vault_auth == "token" and not s.vault_token:
        raise ConfigurationError("PDV_KMS=vault with token auth needs VAULT_TOKEN")
    if s.database_url and not s.database_url.startswith(("sqlite", "postgresql")):
        raise ConfigurationError(
            "PDV_DATABASE_URL: expected a sqlite:// or postgresql+psycopg:// URL"
        )
    return s


def _check_addr(name: str, addr: str) -> None:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        example = Settings.addr
        raise ConfigurationError(f"{name}={addr!r}: expected HOST:PORT, e.g. {example}")


def _check_client_auth(s: Settings, explicit: bool) -> None:
    """mTLS settings that cannot work together stop the start, one line each."""
    if s.tls_client_ca and not s.tls_cert:
        raise ConfigurationError(
            "PDV_TLS_CLIENT_CA needs PDV_TLS_CERT and PDV_TLS_KEY: client certificates are "
            "asked for in the server's TLS handshake"
        )
    if explicit and not s.tls_client_ca:
        raise ConfigurationError(
            f"PDV_TLS_CLIENT_AUTH={s.tls_client_auth} needs PDV_TLS_CLIENT_CA, the CA bundle "
            "that signs client certificates"
        )
    if s.client_auth == "optional" and not s.mtls_addr:
        # grpcio's Python API asks for a client certificate only by requiring it: a port
        # either requires one or never asks, so "optional" takes a port of each kind.
        raise ConfigurationError(
            "PDV_TLS_CLIENT_AUTH=optional needs PDV_MTLS_ADDR: PDV_ADDR then asks for no "
            "certificate (API keys) and PDV_MTLS_ADDR requires one (grpcio cannot ask for an "
            "optional client certificate on one port)"
        )
    if s.mtls_addr:
        if s.client_auth != "optional":
            raise ConfigurationError(
                "PDV_MTLS_ADDR is for PDV_TLS_CLIENT_AUTH=optional (with require, PDV_ADDR "
                "itself requires client certificates)"
            )
        _check_addr("PDV_MTLS_ADDR", s.mtls_addr)
        if s.mtls_addr == s.addr:
            raise ConfigurationError("PDV_MTLS_ADDR must differ from PDV_ADDR")


def _parse(f: Field[Any], kind: object, value: object) -> Any:
    """One setting's value from the file or the environment, checked against its field."""
    v = _var(f)
    if kind is bool:
        return _flag(f.name, value)
    if kind is int or kind is float:
        try:
            number = int(str(value)) if kind is int else float(str(value))
        except ValueError:
            number = v.low - 1
        if not v.low <= number <= v.high:
            if kind is int:
                raise ConfigurationError(
                    f"{v.name}: expected a whole number from {v.low:.0f} to {v.high:.0f}"
                )
            raise ConfigurationError(f"{v.name}: expected a number from {v.low:g} to {v.high:g}")
        return number
    text = str(value)
    if kind is str:
        chosen = text.strip().upper() if v.fold_case else text
        if v.choices and chosen not in v.choices:
            raise ConfigurationError(f"{v.name}={text!r}: expected one of {', '.join(v.choices)}")
        return chosen
    # A path: empty means the default.
    return Path(text) if text else f.default


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name}: expected true or false")
