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
KMS_CHOICES = ("local",)


@dataclass(frozen=True)
class Settings:
    addr: str = DEFAULT_ADDR
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    database_url: str = field(default="", repr=False)
    kms: str = "local"
    key_file: Path | None = None
    policy_file: Path | None = None
    max_workers: int = 16
    log_level: str = "INFO"
    # On first start, create API keys for the policy's callers and write them to
    # <data dir>/dev-credentials.json. Meant for the embedded default; turn off in production.
    dev_credentials: bool = True
    auto_migrate: bool = True

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'pdvault.db'}"

    @property
    def effective_key_file(self) -> Path:
        return self.key_file or self.data_dir / "kek.json"

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "dev-credentials.json"

    @property
    def uses_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    def describe(self) -> str:
        db = "sqlite" if self.uses_sqlite else self.effective_database_url.split(":", 1)[0]
        return f"addr={self.addr} data_dir={self.data_dir} database={db} kms={self.kms}"


_ENV = {
    "PDV_ADDR": "addr",
    "PDV_DATA_DIR": "data_dir",
    "PDV_DATABASE_URL": "database_url",
    "PDV_KMS": "kms",
    "PDV_KEY_FILE": "key_file",
    "PDV_POLICY": "policy_file",
    "PDV_MAX_WORKERS": "max_workers",
    "PDV_LOG_LEVEL": "log_level",
    "PDV_DEV_CREDENTIALS": "dev_credentials",
    "PDV_AUTO_MIGRATE": "auto_migrate",
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
    try:
        workers = int(text("max_workers", "16"))
    except ValueError:
        workers = 0
    if not 1 <= workers <= 1024:
        raise ConfigurationError("PDV_MAX_WORKERS: expected a whole number from 1 to 1024")
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
        log_level=text("log_level", "INFO").upper(),
        dev_credentials=flag("dev_credentials", True),
        auto_migrate=flag("auto_migrate", True),
    )
