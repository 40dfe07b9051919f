"""The embedded default key provider: a versioned key-encryption key in a local file (mode 0600).

It answers to the same `KeyProvider` port as HashiCorp Vault Transit. The file is the root of
trust of an embedded install: whoever holds it and a copy of the database can read the data, so
keep it off the database's backups (it lives in the data directory, beside the database, only
because the embedded default has nowhere else to put it).
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from vault.crypto.aead import random_key, unwrap_key, wrap_key, wrapped_key_version
from vault.domain.secrets import Secret
from vault.domain.types import SubjectId, WrappedKey
from vault.errors import ConfigurationError

FILE_FORMAT = "pdvault-local-kek/1"
PROVIDER = "local"


class LocalKeyFileProvider:
    """`KeyProvider` over a local key file. Thread-safe; makes no remote call at all."""

    name = PROVIDER

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._versions: dict[int, Secret] = {}
        self._latest = 0
        self._min_decryption = 1
        if not path.exists():
            self._create()
        self._load()

    def __repr__(self) -> str:
        return f"LocalKeyFileProvider(path={str(self._path)!r}, latest_version={self._latest})"

    @property
    def latest_version(self) -> int:
        return self._latest

    def wrap(self, keys: Sequence[tuple[SubjectId, Secret]]) -> list[WrappedKey]:
        version = self._latest
        kek = self._versions[version]
        return [WrappedKey(PROVIDER, version, wrap_key(kek, version, s, dek)) for s, dek in keys]

    def unwrap(self, keys: Sequence[tuple[SubjectId, WrappedKey]]) -> list[Secret | None]:
        out: list[Secret | None] = []
        for subject, wrapped in keys:
            version = wrapped_key_version(wrapped.blob)
            kek = self._versions.get(version) if version is not None else None
            if (
                wrapped.provider != PROVIDER
                or version is None
                or kek is None
                or version < self._min_decryption
            ):
                out.append(None)
                continue
            out.append(unwrap_key(kek, subject, wrapped.blob))
        return out

    # -- the file ---------------------------------------------------------------------------

    def _create(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = random_key()
        doc = {
            "format": FILE_FORMAT,
            "latest_version": 1,
            "min_decryption_version": 1,
            "versions": {
                "1": {
                    "key": base64.b64encode(key.reveal()).decode("ascii"),
                    "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            },
        }
        key.wipe()
        try:
            # O_EXCL: two processes starting at once cannot both create (and one overwrite) it.
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.flush()
            os.fsync(f.fileno())

    def _load(self) -> None:
        mode = self._path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"key file {self._path} is readable by others; run: chmod 600 {self._path}"
            )
        try:
            doc = json.loads(self._path.read_text("utf-8"))
            if doc.get("format") != FILE_FORMAT:
                raise ValueError("unknown format")
            versions = {
                int(v): Secret(base64.b64decode(body["key"], validate=True))
                for v, body in doc["versions"].items()
            }
            latest = int(doc["latest_version"])
            min_decryption = int(doc["min_decryption_version"])
        except (ValueError, KeyError, TypeError):
            # Never echo the file's content: it holds key material.
            raise ConfigurationError(f"key file {self._path} is not a pdvault key file") from None
        if latest not in versions or any(len(k) != 32 for k in versions.values()):
            raise ConfigurationError(f"key file {self._path} is damaged")
        with self._lock:
            self._versions, self._latest, self._min_decryption = versions, latest, min_decryption
