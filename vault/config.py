"""Typed settings from the environment (PDV_*), optionally from a TOML file (PDV_CONFIG).

The environment wins over the file. Secret fields (the database URL may carry a password) are
kept out of repr; `describe()` gives a safe summary for the start-up log line.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vault.errors import ConfigurationError

DEFAULT_ADDR = "127.0.0.1:50051"
DEFAULT_DATA_DIR = ".pdvault"
KMS_CHOICES = ("local", "vault")
VAULT_AUTH_CHOICES = ("token", "approle", "kubernetes")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class Settings:
    addr: str = DEFAULT_ADDR
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    database_url: str = field(default="", repr=False)
    kms: str = "local"
    key_file: Path | None = None
    policy_file: Path | None = None
    max_workers: int = 16
    # Serving processes sharing the port (SO_REUSEPORT); default: one per core.
    processes: int = 0
    log_level: str = "INFO"
    # On first start, create API keys for the policy's callers and write them to
    # <data dir>/dev-credentials.json. Meant for the embedded default; turn off in production.
    dev_credentials: bool = True
    auto_migrate: bool = True
    # HashiCorp Vault Transit (PDV_KMS=vault), configured as Vault's own tools are.
    vault_addr: str = "http://127.0.0.1:8200"
    vault_token: str = field(default="", repr=False)
    vault_cacert: str = ""
    vault_namespace: str = ""
    vault_mount: str = "transit"
    vault_key: str = "pdvault"
    vault_auth: str = "token"
    vault_role_id: str = ""
    vault_secret_id: str = field(default="", repr=False)
    vault_k8s_role: str = ""
    vault_k8s_jwt_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    vault_timeout: float = 5.0
    # TLS for the gRPC port: a PEM certificate chain and its key. Without them pdvault serves
    # in clear only on a loopback address, unless allow_insecure says otherwise.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_insecure: bool = False
    # The record of shredded subjects outside the database (default: beside the key file).
    shred_log: Path | None = None
    # The data-key cache (0 entries: no cache).
    cache_max_entries: int = 10_000
    cache_max_age: float = 300.0
    cache_max_uses: int = 100_000
    # Defences against slow and greedy clients (see vault.transport.rpc).
    request_read_timeout: float = 10.0  # seconds a call may take to deliver its request
    max_calls: int = 256  # calls in flight per process (health checks not counted)
    max_calls_per_caller: int = 128  # ... and per caller, per process
    max_streams_per_connection: int = 100  # HTTP/2 streams in flight on one connection
    max_connection_age: float = 1800.0  # seconds; then the client reconnects
    health_interval: float = 5.0  # seconds between readiness checks of the database and keys

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
        return f"addr={self.addr} data_dir={self.data_dir} database={db} kms={kms}"


_ENV = {
    "PDV_ADDR": "addr",
    "PDV_DATA_DIR": "data_dir",
    "PDV_DATABASE_URL": "database_url",
    "PDV_KMS": "kms",
    "PDV_KEY_FILE": "key_file",
    "PDV_POLICY": "policy_file",
    "PDV_MAX_WORKERS": "max_workers",
    "PDV_PROCESSES": "processes",
    "PDV_LOG_LEVEL": "log_level",
    "PDV_DEV_CREDENTIALS": "dev_credentials",
    "PDV_AUTO_MIGRATE": "auto_migrate",
    "VAULT_ADDR": "vault_addr",
    "VAULT_TOKEN": "vault_token",
    "VAULT_CACERT": "vault_cacert",
    "VAULT_NAMESPACE": "vault_namespace",
    "PDV_VAULT_MOUNT": "vault_mount",
    "PDV_VAULT_KEY": "vault_key",
    "PDV_VAULT_AUTH": "vault_auth",
    "VAULT_ROLE_ID": "vault_role_id",
    "VAULT_SECRET_ID": "vault_secret_id",
    "PDV_VAULT_K8S_ROLE": "vault_k8s_role",
    "PDV_VAULT_K8S_JWT_FILE": "vault_k8s_jwt_file",
    "PDV_VAULT_TIMEOUT": "vault_timeout",
    "PDV_SHRED_LOG": "shred_log",
    "PDV_TLS_CERT": "tls_cert",
    "PDV_TLS_KEY": "tls_key",
    "PDV_ALLOW_INSECURE": "allow_insecure",
    "PDV_KEY_CACHE_MAX_ENTRIES": "cache_max_entries",
    "PDV_KEY_CACHE_MAX_AGE": "cache_max_age",
    "PDV_KEY_CACHE_MAX_USES": "cache_max_uses",
    "PDV_REQUEST_READ_TIMEOUT": "request_read_timeout",
    "PDV_MAX_CALLS": "max_calls",
    "PDV_MAX_CALLS_PER_CALLER": "max_calls_per_caller",
    "PDV_MAX_STREAMS_PER_CONNECTION": "max_streams_per_connection",
    "PDV_MAX_CONNECTION_AGE": "max_connection_age",
    "PDV_HEALTH_INTERVAL": "health_interval",
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    config_file = env.get("PDV_CONFIG")
    if config_file:
        try:
            raw.update(tomllib.loads(Path(config_file).read_text("utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"PDV_CONFIG={config_file}: cannot read it ({exc})") from None
    for var, name in _ENV.items():
        if var in env:
            raw[name] = env[var]
    unknown = set(raw) - set(_ENV.values())
    if unknown:
        raise ConfigurationError(f"unknown settings: {', '.join(sorted(unknown))}")
    return _build(raw)


def _build(raw: Mapping[str, object]) -> Settings:
    def text(name: str, default: str) -> str:
        return str(raw.get(name, default))

    def path(name: str) -> Path | None:
        value = raw.get(name)
        return Path(str(value)) if value else None

    def flag(name: str, default: bool) -> bool:
        value = raw.get(name, default)
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigurationError(f"{name}: expected true or false")

    addr = text("addr", DEFAULT_ADDR)
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"PDV_ADDR={addr!r}: expected HOST:PORT, e.g. {DEFAULT_ADDR}")
    kms = text("kms", "local")
    if kms not in KMS_CHOICES:
        raise ConfigurationError(f"PDV_KMS={kms!r}: expected one of {', '.join(KMS_CHOICES)}")

    def number(name: str, var: str, default: float, low: float, high: float) -> float:
        try:
            value = float(text(name, str(default)))
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ConfigurationError(f"{var}: expected a number from {low:g} to {high:g}")
        return value

    def whole(name: str, var: str, default: int, low: int, high: int) -> int:
        try:
            value = int(text(name, str(default)))
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ConfigurationError(f"{var}: expected a whole number from {low} to {high}")
        return value

    log_level = text("log_level", "INFO").strip().upper()
    if log_level not in LOG_LEVELS:
        raise ConfigurationError(
            f"PDV_LOG_LEVEL={text('log_level', '')!r}: expected one of {', '.join(LOG_LEVELS)}"
        )
    workers = whole("max_workers", "PDV_MAX_WORKERS", 16, 1, 1024)
    if bool(raw.get("tls_cert")) != bool(raw.get("tls_key")):
        raise ConfigurationError("PDV_TLS_CERT and PDV_TLS_KEY go together")
    auth = text("vault_auth", "token")
    if auth not in VAULT_AUTH_CHOICES:
        raise ConfigurationError(
            f"PDV_VAULT_AUTH={auth!r}: expected one of {', '.join(VAULT_AUTH_CHOICES)}"
        )
    if kms == "vault" and auth == "token" and not text("vault_token", ""):
        raise ConfigurationError("PDV_KMS=vault with token auth needs VAULT_TOKEN")
    url = text("database_url", "")
    if url and not url.startswith(("sqlite", "postgresql")):
        raise ConfigurationError(
            "PDV_DATABASE_URL: expected a sqlite:// or postgresql+psycopg:// URL"
        )
    return Settings(
        addr=addr,
        data_dir=path("data_dir") or Path(DEFAULT_DATA_DIR),
        database_url=url,
        kms=kms,
        key_file=path("key_file"),
        policy_file=path("policy_file"),
        max_workers=workers,
        processes=whole("processes", "PDV_PROCESSES", 0, 0, 256),
        log_level=log_level,
        dev_credentials=flag("dev_credentials", True),
        auto_migrate=flag("auto_migrate", True),
        vault_addr=text("vault_addr", "http://127.0.0.1:8200"),
        vault_token=text("vault_token", ""),
        vault_cacert=text("vault_cacert", ""),
        vault_namespace=text("vault_namespace", ""),
        vault_mount=text("vault_mount", "transit"),
        vault_key=text("vault_key", "pdvault"),
        vault_auth=auth,
        vault_role_id=text("vault_role_id", ""),
        vault_secret_id=text("vault_secret_id", ""),
        vault_k8s_role=text("vault_k8s_role", ""),
        vault_k8s_jwt_file=text(
            "vault_k8s_jwt_file", "/var/run/secrets/kubernetes.io/serviceaccount/token"
        ),
        shred_log=path("shred_log"),
        tls_cert=path("tls_cert"),
        tls_key=path("tls_key"),
        allow_insecure=flag("allow_insecure", False),
        vault_timeout=number("vault_timeout", "PDV_VAULT_TIMEOUT", 5.0, 0.1, 120),
        cache_max_entries=whole("cache_max_entries", "PDV_KEY_CACHE_MAX_ENTRIES", 10_000, 0, 10**7),
        cache_max_age=number("cache_max_age", "PDV_KEY_CACHE_MAX_AGE", 300.0, 0, 86_400),
        cache_max_uses=whole("cache_max_uses", "PDV_KEY_CACHE_MAX_USES", 100_000, 1, 2**32),
        request_read_timeout=number(
            "request_read_timeout", "PDV_REQUEST_READ_TIMEOUT", 10.0, 0.1, 600
        ),
        max_calls=whole("max_calls", "PDV_MAX_CALLS", 256, 1, 100_000),
        max_calls_per_caller=whole(
            "max_calls_per_caller", "PDV_MAX_CALLS_PER_CALLER", 128, 1, 100_000
        ),
        max_streams_per_connection=whole(
            "max_streams_per_connection", "PDV_MAX_STREAMS_PER_CONNECTION", 100, 1, 10_000
        ),
        max_connection_age=number(
            "max_connection_age", "PDV_MAX_CONNECTION_AGE", 1800.0, 1, 86_400 * 7
        ),
        health_interval=number("health_interval", "PDV_HEALTH_INTERVAL", 5.0, 0.1, 3600),
    )
