"""TLS for the gRPC ports: the server's certificate chain and key, and the CA bundle that signs
client certificates, read from their files and read again when they change, with no restart.

gRPC asks `grpc.dynamic_ssl_server_credentials`'s fetcher before every new connection's
handshake; ours compares the files' stat signatures (mtime, size, inode, mode: a Kubernetes
Secret swaps a symlink, `mv` replaces the inode, `chmod` fixes an open key) with the last ones
read, so a connection costs three `stat` calls and no read. Changed files are read and checked
together (certificates parse, the key is the first certificate's, the key file is for its owner
only) before they are served: a rotation caught half-way (the certificate written, not yet its
key) keeps the previous files in service, with a warning, until the set is whole again.

What is served applies to new connections; existing ones keep theirs until
PDV_MAX_CONNECTION_AGE ends them, which is what makes a rotated CA take effect for every client.
(A SPIFFE ID removed from the policy needs no new connection: each call is mapped afresh.)

Client certificates: grpcio's Python API either requires a client certificate (verified
against the CA in the handshake) or never asks for one; it cannot ask for an optional one. So
`PDV_TLS_CLIENT_AUTH=require` serves PDV_ADDR requiring them, and `optional` serves two ports:
PDV_ADDR asking for none (API keys), PDV_MTLS_ADDR requiring one.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import grpc

from vault.crypto.svid import tls_files_problem
from vault.errors import ConfigurationError

__all__ = ["TlsFiles", "TlsMaterial", "TlsReloader", "read_material"]


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None

    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.cert, self.key, self.client_ca) if p is not None)


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    chain: bytes
    key: bytes = field(repr=False)
    client_ca: bytes | None = None


def read_material(files: TlsFiles) -> TlsMaterial:
    """The files' contents, checked: a key readable by others, an unreadable file, PEM that
    does not parse or a key that is not the certificate's are refused (one line, no key
    material in it)."""
    try:
        info = os.stat(files.key)
        mode = info.st_mode
        chain, key = files.cert.read_bytes(), files.key.read_bytes()
        client_ca = files.client_ca.read_bytes() if files.client_ca is not None else None
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the TLS files: {exc.strerror}: {exc.filename}"
        ) from None
    # PostgreSQL's rule for its own key (src/backend/libpq/be-secure-common.c): a key owned by
    # root may be read by its group. A Kubernetes Secret mounted with defaultMode 0400 and an
    # fsGroup arrives so (root's, the pod's group, 0440); without the group's read bit the
    # pod's non-root user could not read it at all.
    allowed = stat.S_IRGRP if info.st_uid == 0 else 0
    if mode & (stat.S_IRWXG | stat.S_IRWXO) & ~allowed:
        raise ConfigurationError(
            f"PDV_TLS_KEY {files.key} is readable by others (mode {stat.S_IMODE(mode):04o}): "
            f"run chmod 600 on it (on Kubernetes, mount the Secret with defaultMode: 0400)"
        )
    problem = tls_files_problem(chain, key, client_ca)
    if problem is not None:
        names = f"PDV_TLS_CERT {files.cert}, PDV_TLS_KEY {files.key}"
        if files.client_ca is not None:
            names += f", PDV_TLS_CLIENT_CA {files.client_ca}"
        raise ConfigurationError(f"TLS files ({names}): {problem}")
    return TlsMaterial(chain, key, client_ca)


Signature = tuple[tuple[int, int, int, int, int], ...]
_MISSING: Signature = ()  # a file could not be stat'ed (mid-rotation, or removed)


class TlsReloader:
    """The TLS files of this process, served to one or two ports and reloaded on change.
    The fetchers run on gRPC's threads: the state is behind a lock."""

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._signature = self._stat()
        self._material = read_material(files)
        self._version = 0
        self._refused: Signature | None = None  # a change already warned about

    def __repr__(self) -> str:
        return f"TlsReloader(version={self._version})"

    @property
    def version(self) -> int:
        """How many times the files were reloaded."""
        return self._version

    def credentials(self, require_client_certificate: bool) -> grpc.ServerCredentials:
        """Credentials for one port: requiring a client certificate signed by the client CA,
        or asking for none (then the client CA is not given to gRPC at all)."""
        if require_client_certificate and self._files.client_ca is None:
            raise ConfigurationError("client certificates need PDV_TLS_CLIENT_CA")
        with self._lock:
            initial = self._configuration(require_client_certificate)
        # types-grpcio says the fetcher returns a configuration; grpc's own docs: "None ...
        # keeps the current one", which is what a connection with unchanged files gets.
        fetch = cast(
            "Callable[[], grpc.ServerCertificateConfiguration]",
            self.fetcher(require_client_certificate),
        )
        return grpc.dynamic_ssl_server_credentials(
            initial, fetch, require_client_authentication=require_client_certificate
        )

    def fetcher(
        self, with_client_ca: bool
    ) -> Callable[[], grpc.ServerCertificateConfiguration | None]:
        """One port's fetcher: a new configuration when the files changed since this port
        last got one, else None (gRPC keeps what the port serves)."""
        served = [self._version]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Before every new connection's handshake. An exception here would fail the
            # handshake, so none escapes.
            try:
                self._reload_if_changed()
                with self._lock:
                    if served[0] == self._version:
                        return None
                    served[0] = self._version
                    return self._configuration(with_client_ca)
            except Exception:
                log.exception("checking the TLS files failed; the previous ones stay in service")
                return None

        return fetch

    def _configuration(self, with_client_ca: bool) -> grpc.ServerCertificateConfiguration:
        m = self._material
        return grpc.ssl_server_certificate_configuration(
            [(m.key, m.chain)], root_certificates=m.client_ca if with_client_ca else None
        )

    def _stat(self) -> Signature:
        try:
            stats = [os.stat(p) for p in self._files.paths()]
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the TLS files: {exc.strerror}: {exc.filename}"
            ) from None
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino, s.st_dev, s.st_mode) for s in stats)

    def _reload_if_changed(self) -> None:
        try:
            signature = self._stat()
        except ConfigurationError as exc:
            self._refuse(_MISSING, exc.message)
            return
        with self._lock:
            if signature in (self._signature, self._refused):
                return
        try:
            material = read_material(self._files)
        except ConfigurationError as exc:
            self._refuse(signature, exc.message)
            return
        with self._lock:
            self._material, self._signature = material, signature
            self._version += 1
            self._refused = None
        log.info(
            "TLS files reloaded (%s): new connections use them; existing ones keep the previous "
            "ones until PDV_MAX_CONNECTION_AGE ends them",
            ", ".join(str(p) for p in self._files.paths()),
        )

    def _refuse(self, signature: Signature, message: str) -> None:
        with self._lock:
            if signature == self._refused:
                return  # said once per change
            self._refused = signature
        log.warning("%s; the previous TLS files stay in service", message)
