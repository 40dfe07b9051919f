"""The embedded default key provider: a versioned key-encryption key in a local file (mode 0600).

It answers to the same `KeyProvider` port as HashiCorp Vault Transit, with the same key ladder:
rotate adds a version, `min_decryption_version` retires old ones (reversible), trim destroys them
(permanent: their key material is removed from the file). The file is the root of trust of an
embedded install: whoever holds it and a copy of the database can read the data, so keep it off
the database's backups (it lives in the data directory only because the embedded default has
nowhere else to put it).

The file also holds the naming secret (`naming_secret`, 32 random bytes, never rotated), which
keys the digests that name shredded subjects (vault.domain.naming); a file from before gets
one added, atomically, by the first process that opens it.

Several processes may read the file; changes (rotate, trim) are made by one process and the
others pick them up when they next meet a version they do not know, or on `status()`.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import stat
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vault.crypto.aead import random_key, unwrap_key, wrap_key, wrapped_key_version
from vault.domain.context import RequestContext
from vault.domain.ports import KekStatus
from vault.domain.secrets import Secret
from vault.domain.types import SubjectId, WrappedKey
from vault.errors import ConfigurationError, FailedPrecondition

__all__ = ["FILE_FORMAT", "PROVIDER", "LocalKeyFileProvider"]


FILE_FORMAT = "pdvault-local-kek/1"
PROVIDER = "local"


@dataclass
class _KeyRing:
    versions: dict[int, tuple[Secret, str]]  # version -> (key, created_at)
    latest: int
    min_decryption: int
    min_available: int
    mtime_ns: int = 0
    naming: Secret | None = None  # the naming secret (vault.domain.naming); never rotated


class LocalKeyFileProvider:
    """`KeyProvider` over a local key file. Thread-safe; makes no remote call at all."""

    name = PROVIDER

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        if not path.exists():
            self._create()
        self._ring = self._load()
        if self._ring.naming is None:
            self._add_naming_secret()

    def __repr__(self) -> str:
        return f"LocalKeyFileProvider(path={str(self._path)!r}, latest_version={self._ring.latest})"

    # -- use ------------------------------------------------------------------------------------

    def wrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, Secret]]
    ) -> list[WrappedKey]:
        ring = self._reload()  # another process may have rotated: wrap under the latest
        kek = ring.versions[ring.latest][0]
        return [
            WrappedKey(PROVIDER, ring.latest, wrap_key(kek, ring.latest, s, dek)) for s, dek in keys
        ]

    def unwrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, WrappedKey]]
    ) -> list[Secret | None]:
        return [self._unwrap_one(subject, wrapped) for subject, wrapped in keys]

    def rewrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, WrappedKey]]
    ) -> list[WrappedKey | None]:
        out: list[WrappedKey | None] = []
        for subject, wrapped in keys:
            dek = self._unwrap_one(subject, wrapped)
            if dek is None:
                out.append(None)
                continue
            out.append(self.wrap(ctx, [(subject, dek)])[0])
            dek.wipe()
        return out

    def _unwrap_one(self, subject: SubjectId, wrapped: WrappedKey) -> Secret | None:
        version = wrapped_key_version(wrapped.blob)
        if wrapped.provider != PROVIDER or version is None:
            return None
        ring = self._reload()  # another process may have retired versions: obey at once
        entry = ring.versions.get(version)
        if entry is None or version < ring.min_decryption:
            return None
        return unwrap_key(entry[0], subject, wrapped.blob)

    # -- administration (the `admin` credential is for providers that need one) ---------------

    def naming_secret(self, ctx: RequestContext) -> Secret:
        naming = self._reload().naming
        if naming is None:  # (added by __init__; a file replaced since without one)
            raise ConfigurationError(f"key file {self._path} holds no naming secret")
        return naming

    def status(self, ctx: RequestContext) -> KekStatus:
        ring = self._reload()
        return KekStatus(
            PROVIDER, str(self._path.name), ring.latest, ring.min_decryption, ring.min_available
        )

    def rotate(self, ctx: RequestContext, admin: Secret | None = None) -> KekStatus:
        with self._lock, self._file_lock():
            ring = self._load()
            new = ring.latest + 1
            ring.versions[new] = (random_key(), _now())
            ring.latest = new
            self._save(ring)
        return self.status(ctx)

    def set_min_decryption_version(
        self, ctx: RequestContext, version: int, admin: Secret | None = None
    ) -> KekStatus:
        with self._lock, self._file_lock():
            ring = self._load()
            if not max(1, ring.min_available) <= version <= ring.latest:
                raise FailedPrecondition(
                    f"min_decryption_version must be from {max(1, ring.min_available)} to the "
                    f"latest version {ring.latest}"
                )
            ring.min_decryption = version
            self._save(ring)
        return self.status(ctx)

    def trim(
        self, ctx: RequestContext, min_available_version: int, admin: Secret | None = None
    ) -> KekStatus:
        with self._lock, self._file_lock():
            ring = self._load()
            if min_available_version > ring.min_decryption:
                raise FailedPrecondition(
                    "cannot trim above min_decryption_version "
                    f"({ring.min_decryption}); raise it first"
                )
            for v in [v for v in ring.versions if v < min_available_version]:
                ring.versions.pop(v)[0].wipe()
            ring.min_available = max(ring.min_available, min_available_version)
            self._save(ring)
        return self.status(ctx)

    # -- the file ---------------------------------------------------------------------------

    def _create(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        ring = _KeyRing({1: (random_key(), _now())}, 1, 1, 0, naming=random_key())
        try:
            # O_EXCL: two processes starting at once cannot both create (and one overwrite) it.
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_document(ring), f, indent=2)
            f.flush()
            os.fsync(f.fileno())

    def _add_naming_secret(self) -> None:
        """A key file from before naming secrets gets one, atomically and once (another
        process may be adding it too: the file lock, then a fresh read)."""
        try:
            with self._lock, self._file_lock():
                ring = self._load()
                if ring.naming is None:
                    ring.naming = random_key()
                    self._save(ring)
                else:
                    self._ring = ring
        except OSError as exc:
            raise ConfigurationError(
                f"key file {self._path} has no naming secret and one could not be added "
                f"({exc.strerror or type(exc).__name__}): make the file and its directory "
                "writable by pdvault once"
            ) from None

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Serialize changes between processes (an advisory lock on a sibling file)."""
        fd = os.open(self._path.with_name(self._path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _save(self, ring: _KeyRing) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=self._path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp creates it 0600
                json.dump(_document(ring), f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)  # atomic: readers see the old file or the new one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._ring = self._load()

    def _reload(self) -> _KeyRing:
        # One stat per call: cheap next to the AES-GCM work, and it makes a rotation or a
        # retirement by another process take effect here at once.
        if self._path.stat().st_mtime_ns != self._ring.mtime_ns:
            with self._lock:
                self._ring = self._load()
        return self._ring

    def _load(self) -> _KeyRing:
        st = self._path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"key file {self._path} is readable by others; run: chmod 600 {self._path}"
            )
        try:
            doc = json.loads(self._path.read_text("utf-8"))
            if doc.get("format") != FILE_FORMAT:
                raise ValueError("unknown format")
            versions = {
                int(v): (
                    Secret(base64.b64decode(body["key"], validate=True)),
                    str(body.get("created_at", "")),
                )
                for v, body in doc["versions"].items()
            }
            ring = _KeyRing(
                versions,
                int(doc["latest_version"]),
                int(doc["min_decryption_version"]),
                int(doc.get("min_available_version", 0)),
                st.st_mtime_ns,
                Secret(base64.b64decode(doc["naming_secret"], validate=True))
                if "naming_secret" in doc
                else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            # Never echo the file's content: it holds key material.
            raise ConfigurationError(f"key file {self._path} is not a pdvault key file") from None
        if (
            ring.latest not in versions
            or any(len(k) != 32 for k, _ in versions.values())
            or (ring.naming is not None and len(ring.naming) != 32)
        ):
            raise ConfigurationError(f"key file {self._path} is damaged")
        return ring


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _document(ring: _KeyRing) -> dict[str, object]:
    naming = {} if ring.naming is None else {"naming_secret": _b64(ring.naming)}
    return {
        **naming,
        "format": FILE_FORMAT,
        "latest_version": ring.latest,
        "min_decryption_version": ring.min_decryption,
        "min_available_version": ring.min_available,
        "versions": {
            str(v): {"key": base64.b64encode(k.reveal()).decode("ascii"), "created_at": created}
            for v, (k, created) in sorted(ring.versions.items())
        },
    }


def _b64(secret: Secret) -> str:
    return base64.b64encode(secret.reveal()).decode("ascii")
