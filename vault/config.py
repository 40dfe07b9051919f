"""Typed settings from the environment (PDV_*), optionally from a TOML file (PDV_CONFIG).

Each setting is stated once, as a field of `Settings`: its default, and in its metadata (`Var`)
the variable that sets it, its range or choices and its line in `pdv --help`. `load_settings`
reads and checks every field from there, `environment()` gives `pdv --help` its table, and
tests/integration/test_cli_help.py checks the README's table against `defaults()`.

The environment wins over the file. Secret fields (the database URL may carry a password) are
kept out of repr; `describe()` gives a safe summary for the start-up log line. Each secret field
can also be read from a file: `NAME_FILE` names it (a Kubernetes Secret mounted as a file), the
way Docker's official images do it, so the value never sits in the environment.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from vault.errors import ConfigurationError

__all__ = [
    "CLIENT_AUTH_CHOICES",
    "CONFIG_FILE",
    "KMS_CHOICES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "SERVER",
    "TRANSIT",
    "VAULT_AUTH_CHOICES",
    "Settings",
    "Var",
    "available_cpus",
    "cgroup_cpu_limit",
    "defaults",
    "environment",
    "load_settings",
    "setting",
]


KMS_CHOICES = ("local", "vault")
CLIENT_AUTH_CHOICES = ("require", "optional")
VAULT_AUTH_CHOICES = ("token", "approle", "kubernetes")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")

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
    secret: bool = False  # kept out of repr, and also read from the file NAME_FILE names

    @property
    def file_name(self) -> str:
        """The variable naming a file that holds a secret setting's value ("" for the others)."""
        return f"{self.name}_FILE" if self.secret else ""


def setting(default: T, name: str, meaning: str, *, secret: bool = False, **how: Any) -> T:
    """A field of Settings: its default, and the variable `name` that sets it (`Var`).
    Secret fields stay out of repr, and `NAME_FILE` may name a file holding their value."""
    var = Var(name, meaning, secret=secret, **how)
    return field(default=default, repr=not secret, metadata={"var": var})


@dataclass(frozen=True)
class Settings:
    addr: str = setting("127.0.0.1:50051", "PDV_ADDR", "where the server listens")
    # Kubelet gRPC probes cannot present a client certificate or speak TLS with verification,
    # so probes get a port of their own: plaintext, serving grpc.health.v1 and nothing else.
    health_addr: str = setting(
        "",
        "PDV_HEALTH_ADDR",
        "HOST:PORT of a plaintext port answering only health checks, for probes",
        shown="off",
    )
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
        0,
        "PDV_PROCESSES",
        "serving processes sharing the port",
        shown="the CPUs the cgroup allows",
        high=256,
    )
    log_level: str = setting(
        "INFO",
        "PDV_LOG_LEVEL",
        "DEBUG, INFO, WARNING or ERROR",
        note="--log-level wins",
        choices=LOG_LEVELS,
        fold_case=True,
    )
    log_format: str = setting(
        "text",
        "PDV_LOG_FORMAT",
        "text, or json: one JSON object per line",
        choices=LOG_FORMATS,
    )
    # Observability (README "Observability"): both off by default.
    metrics_addr: str = setting(
        "",
        "PDV_METRICS_ADDR",
        "HOST:PORT of a plaintext HTTP port serving Prometheus metrics on /metrics",
        shown="off",
    )
    otlp_endpoint: str = setting(
        "",
        "PDV_OTLP_ENDPOINT",
        "an OTLP/gRPC collector to send traces to, e.g. http://otel-collector:4317",
        shown="off",
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
        "seconds a call may take to send its request (a download's client, to take a message)",
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
    # The audit log (a Merkle log with signed checkpoints).
    audit_origin: str = setting(
        "pdvault.local/audit",
        "PDV_AUDIT_ORIGIN",
        "the audit log's name in its signed checkpoints",
    )
    audit_signer: str = setting(
        "file",
        "PDV_AUDIT_SIGNER",
        "who signs audit checkpoints: file (PDV_AUDIT_SIGNING_KEY) or transit",
        choices=("file", "transit"),
    )
    audit_signing_key: Path | None = setting(
        None,
        "PDV_AUDIT_SIGNING_KEY",
        "the checkpoint signing key file (made on first start)",
        shown="beside the key file",
    )
    audit_checkpoints: Path | None = setting(
        None,
        "PDV_AUDIT_CHECKPOINTS",
        "the file signed checkpoints are appended to, outside the database",
        shown="beside the key file",
    )
    audit_checkpoint_interval: float = setting(
        60.0,
        "PDV_AUDIT_CHECKPOINT_INTERVAL",
        "seconds between signed checkpoints of the audit log (0: none)",
        low=0,
        high=86_400,
    )
    audit_sink: str = setting(
        "",
        "PDV_AUDIT_SINK",
        "also write audit entries as JSON lines: stdout, or a file",
        shown="none",
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
    # SIGTERM: readiness turns NOT_SERVING at once, the server keeps serving for the pause (load
    # balancers and kube-proxy take a moment to stop sending), then drains within the grace.
    shutdown_pause: float = setting(
        5.0,
        "PDV_SHUTDOWN_PAUSE",
        "seconds on SIGTERM between readiness off and the drain",
        high=300,
    )
    shutdown_grace: float = setting(
        10.0,
        "PDV_SHUTDOWN_GRACE",
        "seconds on SIGTERM for calls under way to finish",
        high=3600,
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
    vault_audit_key: str = setting(
        "pdvault-audit",
        "PDV_VAULT_AUDIT_KEY",
        "the Transit ed25519 key signing audit checkpoints (PDV_AUDIT_SIGNER=transit)",
        section=TRANSIT,
    )
    vault_naming_key: str = setting(
        "pdvault-naming",
        "PDV_VAULT_NAMING_KEY",
        "the Transit key whose hmac (version 1) keys the digests of shredded subject ids",
        section=TRANSIT,
    )
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
        return self.processes or available_cpus()

    @property
    def effective_shred_log(self) -> Path:
        if self.shred_log is not None:
            return self.shred_log
        if self.kms == "local":
            return self.effective_key_file.parent / "shred-log.jsonl"
        return self.data_dir / "shred-log.jsonl"

    @property
    def effective_audit_signing_key(self) -> Path:
        return self.audit_signing_key or self._beside_keys("audit-signing.key")

    @property
    def effective_audit_checkpoints(self) -> Path:
        return self.audit_checkpoints or self._beside_keys("audit-checkpoints.jsonl")

    def _beside_keys(self, name: str) -> Path:
        if self.kms == "local":
            return self.effective_key_file.parent / name
        return self.data_dir / name

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
    shown = {}
    for f in fields(Settings):
        v = _var(f)
        shown[v.name] = _shown(f)
        if v.secret:
            shown[v.file_name] = ""
    return shown


def environment() -> list[tuple[str, list[tuple[str, str]]]]:
    """The variables by section for `pdv --help`: (name, what it does (default); note)."""
    sections: dict[str, list[tuple[str, str]]] = {SERVER: [CONFIG_FILE], TRANSIT: []}
    for f in fields(Settings):
        v, default = _var(f), _shown(f)
        text = v.meaning + (f" ({default})" if default else "") + (f"; {v.note}" if v.note else "")
        sections[v.section].append((v.name, text))
        if v.secret:
            sections[v.section].append((v.file_name, f"a file holding {v.name}, instead of it"))
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
    for f in fields(Settings):
        v = _var(f)
        if v.secret and env.get(v.file_name):
            if env.get(v.name):
                raise ConfigurationError(f"{v.name} and {v.file_name} are both set: use one")
            raw[f.name] = _read_secret_file(v.file_name, env[v.file_name])
        elif v.name in env:
            raw[f.name] = env[v.name]
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
    _check_address("PDV_ADDR", s.addr, Settings.addr)
    if s.health_addr:
        _check_address("PDV_HEALTH_ADDR", s.health_addr, "0.0.0.0:8081")
        port = s.health_addr.rpartition(":")[2]
        if port != "0" and port == s.addr.rpartition(":")[2]:
            raise ConfigurationError(
                f"PDV_HEALTH_ADDR={s.health_addr} and PDV_ADDR={s.addr}: the health port must "
                "be another port than the API's"
            )
    if s.metrics_addr:
        _check_address("PDV_METRICS_ADDR", s.metrics_addr, "0.0.0.0:9464")
        taken = {s.addr.rpartition(":")[2], s.health_addr.rpartition(":")[2]}
        port = s.metrics_addr.rpartition(":")[2]
        if port != "0" and port in taken:
            raise ConfigurationError(
                f"PDV_METRICS_ADDR={s.metrics_addr}: the metrics port must be another port than "
                "the API's and the health port's"
            )
    if s.otlp_endpoint and not s.otlp_endpoint.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"PDV_OTLP_ENDPOINT={s.otlp_endpoint!r}: expected a URL, e.g. http://otel-collector:4317"
        )
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


def _check_address(name: str, addr: str, example: str) -> None:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"{name}={addr!r}: expected HOST:PORT, e.g. {example}")


def _read_secret_file(name: str, path: str) -> str:
    """A secret setting's value from the file `name` names, without its trailing newline (as
    `kubectl create secret --from-file` and editors leave one)."""
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{name}={path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{name}={path}: not UTF-8 text") from None
    return text.rstrip("\r\n")


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
        _check_address("PDV_MTLS_ADDR", s.mtls_addr, "0.0.0.0:50052")
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


# -- how many processes: the CPUs this process may use ---------------------------------------


def available_cpus(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> int:
    """The CPUs this process may use, at least 1: the cgroup's CPU quota rounded up (a pod
    limited to one CPU gets 1, to 1.5 CPUs 2), else the CPUs it may be scheduled on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, cpus)


def cgroup_cpu_limit(cgroup_root: Path, proc_cgroup: Path) -> int | None:
    """The CPU quota of this process's cgroup and its ancestors, rounded up; None without one.

    cgroup v2: `cpu.max` ("max 100000", or "150000 100000": 1.5 CPUs). cgroup v1:
    `cpu.cfs_quota_us` (-1 for none) over `cpu.cfs_period_us`, in the `cpu` hierarchy. The
    process's own path comes from /proc/self/cgroup; inside a container the cgroup file system
    is usually mounted at the container's own cgroup, so where that path does not exist under
    the mount, the mount's root is the process's cgroup.
    """
    try:
        lines = proc_cgroup.read_text("utf-8").splitlines()
    except OSError:
        return None
    paths: dict[str, str] = {}
    for line in lines:
        _id, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    if (cgroup_root / "cgroup.controllers").exists() and "" in paths:  # v2, unified
        return _tightest(cgroup_root, paths[""], _v2_quota)
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):  # v1: where the cpu hierarchy is
        if "cpu" in paths and (cgroup_root / mount / "cpu.cfs_quota_us").exists():
            return _tightest(cgroup_root / mount, paths["cpu"], _v1_quota)
    return None


def _tightest(mount: Path, own: str, quota: Callable[[Path], int | None]) -> int | None:
    """The smallest quota from the process's cgroup up to the mount's root."""
    here = mount / own.lstrip("/")
    if not here.is_dir():
        here = mount
    limits = []
    while True:
        found = quota(here)
        if found is not None:
            limits.append(found)
        if here == mount or mount not in here.parents:
            break
        here = here.parent
    return min(limits) if limits else None


def _v2_quota(directory: Path) -> int | None:
    try:
        quota, _, period = (directory / "cpu.max").read_text("ascii").strip().partition(" ")
        return None if quota == "max" else math.ceil(int(quota) / int(period or "100000"))
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_quota(directory: Path) -> int | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text("ascii"))
        period = int((directory / "cpu.cfs_period_us").read_text("ascii"))
        return None if quota <= 0 else math.ceil(quota / period)
    except (OSError, ValueError, ZeroDivisionError):
        return None
