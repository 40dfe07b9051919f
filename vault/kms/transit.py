"""HashiCorp Vault Transit as the key-encryption key: the `KeyProvider` port over hvac.

Data keys are generated locally (32 bytes from the OS) and wrapped with Transit `encrypt`; they
are unwrapped with `decrypt` and moved to the latest key version with `rewrap`, which happens
inside Vault: a rewrapped data key never leaves it.

Why no Transit associated data: `rewrap` cannot carry it, and we want server-side rewrap. The
binding that matters is local: each value's AES-GCM associated data names its token, subject and
category, so a wrapped key swapped to another subject decrypts nothing of that subject's.

Invariants:

- Every batch (wrap, unwrap, rewrap) is ONE HTTP call (`batch_input`), counted in `calls`
  however many attempts it takes; an item Vault cannot unwrap or rewrap is None, never an
  error of the whole batch. A wrap either wraps every key or raises.
- Key administration (rotate, config, trim) uses the operator's own token, handed in per call
  and never kept, so the service's own policy needs no such rights; without one it refuses
  with VAULT_ADMIN_TOKEN_REQUIRED before any call.
- Every call goes through `vault.kms.vault_http` (its per-call timeout, its retries bounded by
  the request's deadline, its one error table, the error ids that tie a caller's message to
  the operator's log line) with pdvault's own token from `vault.kms.vault_auth`.

`TransitSigner` adds Transit's `hmac` and Ed25519 `sign`/`verify` for the verifiable audit log.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vault.domain.context import RequestContext
from vault.domain.ports import KekStatus
from vault.domain.secrets import Secret
from vault.domain.types import SubjectId, WrappedKey
from vault.errors import FailedPrecondition, PdvaultError, Reason
from vault.kms.vault_auth import Login
from vault.kms.vault_http import (
    OPERATOR,
    SERVICE,
    UNEXPECTED,
    Body,
    Failure,
    VaultHttp,
)

__all__ = ["PROVIDER", "TransitSettings", "TransitSigner", "VaultTransitKeyProvider"]


PROVIDER = "vault-transit"


@dataclass(frozen=True)
class TransitSettings:
    """Where and how to reach Transit. What pdvault's settings decide (mount, key, auth, the
    service account token file, the timeout) has no default here: `vault.config.Settings`
    states each once, and the composition root passes them."""

    addr: str
    mount: str
    key: str
    auth: str  # token | approle | kubernetes
    k8s_jwt_file: Path
    request_timeout: float  # one HTTP call at most
    naming_key: str  # the Transit key whose `hmac` (version 1) is the naming secret
    namespace: str | None = None
    ca_cert: str | None = None
    token: Secret | None = field(default=None, repr=False)
    role_id: str | None = None
    secret_id: Secret | None = field(default=None, repr=False)
    approle_mount: str = "approle"  # HashiCorp Vault's own default mount paths
    k8s_role: str | None = None
    k8s_mount: str = "kubernetes"
    retry_budget: float = 4.0  # all attempts, when the request carries no deadline


NAMING_LABEL = b"pdvault.v1.naming-secret"
"""What the naming key MACs to give the naming secret (fixed forever)."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _version_of(ciphertext: object) -> int | None:
    # "vault:v<N>:<base64>"
    parts = ciphertext.split(":", 2) if isinstance(ciphertext, str) else []
    if len(parts) != 3 or parts[0] != "vault" or not parts[1].startswith("v"):
        return None
    try:
        return int(parts[1][1:])
    except ValueError:
        return None


class _OperatorToken:
    """An operator's own token, handed in for one administrative call and never kept."""

    role = OPERATOR

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "_OperatorToken(...)"

    def token(self, timeout: float) -> str:
        return self._token

    def invalid(self, token: str, timeout: float) -> bool:
        return False  # only its owner can log in again


class VaultTransitKeyProvider:
    """`KeyProvider` over HashiCorp Vault Transit. Thread-safe."""

    name = PROVIDER

    def __init__(self, settings: TransitSettings, sleep: Callable[[float], None] = time.sleep):
        self._s = settings
        self._http = VaultHttp(
            settings.addr,
            settings.namespace,
            settings.ca_cert,
            settings.request_timeout,
            settings.retry_budget,
            sleep,
        )
        self._login = Login(self._http, settings)
        self._calls_lock = threading.Lock()
        self.calls = 0  # HTTP calls made for data keys (wrap, unwrap, rewrap), for the benchmarks

    def __repr__(self) -> str:
        return f"VaultTransitKeyProvider(addr={self._s.addr!r}, mount={self._s.mount!r})"

    def signer(self, hmac_key: str, signing_key: str) -> TransitSigner:
        """`hmac` under `hmac_key` and Ed25519 signatures under `signing_key` (same mount and
        login as the data keys)."""
        return TransitSigner(self._http, self._login, self._s.mount, hmac_key, signing_key)

    # -- use ----------------------------------------------------------------------------------

    def wrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, Secret]]
    ) -> list[WrappedKey]:
        if not keys:
            return []
        batch = [{"plaintext": _b64(dek.reveal())} for _, dek in keys]
        results = self._batch(ctx, "encrypt", batch)
        out: list[WrappedKey] = []
        for item in results:
            ciphertext = item.get("ciphertext")
            version = _version_of(ciphertext)
            if version is None or not isinstance(ciphertext, str):
                said = str(item.get("error") or "no ciphertext")  # Vault's words, to the log
                path = f"{self._s.mount}/encrypt/{self._s.key}"
                raise _unexpected(self._http, ctx, path, said=said)
            out.append(WrappedKey(PROVIDER, version, ciphertext.encode("ascii")))
        return out

    def unwrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, WrappedKey]]
    ) -> list[Secret | None]:
        out: list[Secret | None] = [None] * len(keys)
        asked = [i for i, (_, w) in enumerate(keys) if w.provider == PROVIDER]
        if not asked:
            return out
        batch = [{"ciphertext": keys[i][1].blob.decode("ascii", "replace")} for i in asked]
        for i, item in zip(asked, self._batch(ctx, "decrypt", batch), strict=True):
            if not item.get("error") and item.get("plaintext"):
                try:
                    out[i] = Secret(base64.b64decode(item["plaintext"], validate=True))
                except ValueError:
                    out[i] = None
        return out

    def rewrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, WrappedKey]]
    ) -> list[WrappedKey | None]:
        out: list[WrappedKey | None] = [None] * len(keys)
        asked = [i for i, (_, w) in enumerate(keys) if w.provider == PROVIDER]
        if not asked:
            return out
        batch = [{"ciphertext": keys[i][1].blob.decode("ascii", "replace")} for i in asked]
        for i, item in zip(asked, self._batch(ctx, "rewrap", batch), strict=True):
            ciphertext = item.get("ciphertext")
            version = _version_of(ciphertext)
            if not item.get("error") and isinstance(ciphertext, str) and version is not None:
                out[i] = WrappedKey(PROVIDER, version, ciphertext.encode("ascii"))
        return out

    # -- administration -----------------------------------------------------------------------

    def naming_secret(self, ctx: RequestContext) -> Secret:
        """Transit `hmac` (sha2-256) of a fixed label under the naming key, pinned to its
        version 1: a rotation of that key never changes it (and trimming it, which would, is
        documented as never to be done). The secret is the MAC's 32 bytes."""
        path = f"{self._s.mount}/hmac/{self._s.naming_key}/sha2-256"
        body = {"input": _b64(NAMING_LABEL), "key_version": 1}
        answer = self._http.call(ctx, "POST", path, body, self._login)
        value = _data(answer).get("hmac")
        if not isinstance(value, str) or _version_of(value) != 1:
            raise _unexpected(self._http, ctx, path)
        try:
            raw = base64.b64decode(value.split(":", 2)[2], validate=True)
        except (ValueError, IndexError):
            raise _unexpected(self._http, ctx, path) from None
        if len(raw) != 32:
            raise _unexpected(self._http, ctx, path)
        return Secret(raw)

    def status(self, ctx: RequestContext) -> KekStatus:
        data = self._read_key(ctx)
        return KekStatus(
            PROVIDER,
            f"{self._s.mount}/keys/{self._s.key}",
            int(data["latest_version"]),
            int(data["min_decryption_version"]),
            int(data.get("min_available_version") or 0),
        )

    def rotate(self, ctx: RequestContext, admin: Secret | None) -> KekStatus:
        self._admin(ctx, admin, "rotate", {})
        return self.status(ctx)

    def set_min_decryption_version(
        self, ctx: RequestContext, version: int, admin: Secret | None
    ) -> KekStatus:
        # Vault wants min_encryption_version (when set) >= min_decryption_version.
        self._raise_min_encryption(ctx, version, admin)
        self._admin(ctx, admin, "config", {"min_decryption_version": version})
        return self.status(ctx)

    def trim(
        self, ctx: RequestContext, min_available_version: int, admin: Secret | None
    ) -> KekStatus:
        # Vault refuses to trim while min_encryption_version is 0 ("latest"): pin it first.
        self._raise_min_encryption(ctx, min_available_version, admin, even_from_zero=True)
        self._admin(ctx, admin, "trim", {"min_available_version": min_available_version})
        return self.status(ctx)

    def _raise_min_encryption(
        self, ctx: RequestContext, at_least: int, admin: Secret | None, even_from_zero: bool = False
    ) -> None:
        data = self._read_key(ctx)
        current = int(data.get("min_encryption_version") or 0)
        if (current == 0 and not even_from_zero) or current >= at_least:
            return
        # The latest version: encryption uses the latest anyway, so this changes nothing else.
        latest = int(data["latest_version"])
        self._admin(ctx, admin, "config", {"min_encryption_version": latest})

    def _admin(self, ctx: RequestContext, admin: Secret | None, step: str, body: Body) -> None:
        if admin is None:
            raise FailedPrecondition(
                "key administration on HashiCorp Vault needs the operator's own Vault token "
                "with the pdvault-ops policy: set VAULT_TOKEN where you run pdv keys",
                reason=Reason.VAULT_ADMIN_TOKEN_REQUIRED,
            )
        path = f"{self._s.mount}/keys/{self._s.key}/{step}"
        self._http.call(ctx, "POST", path, body, _OperatorToken(admin.reveal_text()))

    def _read_key(self, ctx: RequestContext) -> dict[str, Any]:
        path = f"{self._s.mount}/keys/{self._s.key}"
        data = _data(self._http.call(ctx, "GET", path, None, self._login))
        if "latest_version" not in data:
            raise _unexpected(self._http, ctx, path, "GET")
        return data

    # -- calls --------------------------------------------------------------------------------

    def _batch(self, ctx: RequestContext, op: str, batch: list[dict[str, str]]) -> list[Body]:
        """One data-key call; its per-item failures come back as items, not as an exception."""
        with self._calls_lock:
            self.calls += 1
        path = f"{self._s.mount}/{op}/{self._s.key}"
        answer = self._http.call(ctx, "POST", path, {"batch_input": batch}, self._login)
        results = _data(answer).get("batch_results")
        if not isinstance(results, list) or len(results) != len(batch):
            raise _unexpected(self._http, ctx, path)
        return [r if isinstance(r, dict) else {"error": "not an object"} for r in results]


class TransitSigner:
    """Transit `hmac` (a keyed digest, e.g. of subject ids) and Ed25519 signatures (e.g. of
    audit-log checkpoints), under pdvault's own token. Values come back in Transit's
    self-describing form `vault:v<N>:<base64>`: the key version is part of them.

    The signing key MUST be an `ed25519` key; the hmac key may be of any type (every Transit
    key version carries its own HMAC key, so a rotation changes the digests)."""

    def __init__(self, http: VaultHttp, login: Login, mount: str, hmac_key: str, signing_key: str):
        self._http = http
        self._login = login
        self._hmac_path = f"{mount}/hmac/{hmac_key}"
        self._sign_path = f"{mount}/sign/{signing_key}"
        self._verify_path = f"{mount}/verify/{signing_key}"
        self._key_path = f"{mount}/keys/{signing_key}"

    def hmac(self, ctx: RequestContext, message: bytes) -> bytes:
        """HMAC-SHA-256 of `message` under the latest version of the hmac key."""
        return self._one(ctx, self._hmac_path, {"input": _b64(message)}, "hmac")

    def sign(self, ctx: RequestContext, message: bytes) -> bytes:
        """A pure Ed25519 signature of `message` under the latest version of the signing key."""
        return self._one(ctx, self._sign_path, {"input": _b64(message)}, "signature")

    def public_key(self, ctx: RequestContext) -> bytes:
        """The raw Ed25519 public key of the signing key's latest version."""
        data = _data(self._http.call(ctx, "GET", self._key_path, None, self._login))
        keys = data.get("keys")
        latest = data.get("latest_version")
        entry = keys.get(str(latest)) if isinstance(keys, dict) else None
        encoded = entry.get("public_key") if isinstance(entry, dict) else None
        if data.get("type") != "ed25519" or not isinstance(encoded, str):
            raise _unexpected(self._http, ctx, self._key_path, "GET", "not an ed25519 key")
        return base64.b64decode(encoded)

    def verify(self, ctx: RequestContext, message: bytes, signature: bytes) -> bool:
        """Whether `signature` (as `sign` made it) is valid for `message`. A malformed or
        retired signature is not valid; a failure to ask Vault raises."""
        item = {"input": _b64(message), "signature": signature.decode("ascii", "replace")}
        # A batch of one: what is wrong with its item (a malformed signature) is an answer.
        answer = self._http.call(
            ctx, "POST", self._verify_path, {"batch_input": [item]}, self._login
        )
        results = _data(answer).get("batch_results")
        if not isinstance(results, list) or len(results) != 1 or not isinstance(results[0], dict):
            raise _unexpected(self._http, ctx, self._verify_path)
        return results[0].get("valid") is True and not results[0].get("error")

    def _one(self, ctx: RequestContext, path: str, body: Body, name: str) -> bytes:
        value = _data(self._http.call(ctx, "POST", path, body, self._login)).get(name)
        if not isinstance(value, str) or _version_of(value) is None:
            raise _unexpected(self._http, ctx, path)
        return value.encode("ascii")


def _data(answer: Body) -> dict[str, Any]:
    data = answer.get("data")
    return data if isinstance(data, dict) else {}


def _unexpected(
    http: VaultHttp, ctx: RequestContext, path: str, method: str = "POST", said: str = ""
) -> PdvaultError:
    failure = Failure(UNEXPECTED, SERVICE, method, path, 200, (said,) if said else ())
    return http.report(ctx, failure)
