"""HashiCorp Vault Transit as the key-encryption key, through hvac.

Data keys are generated locally (32 bytes from the OS) and wrapped with Transit `encrypt`; they
are unwrapped with `decrypt` and moved to the latest key version with `rewrap`, which happens
inside Vault: a rewrapped data key never leaves it. Every batch is one HTTP call (`batch_input`).

Why no Transit associated data: `rewrap` cannot carry it, and we want server-side rewrap. The
binding that matters is local: each value's AES-GCM associated data names its token, subject and
category, so a wrapped key swapped to another subject decrypts nothing of that subject's.

Authentication: a token (`VAULT_TOKEN`), AppRole or a Kubernetes service account. Tokens are
renewed when a third of their TTL is left, and a failed renewal or a token Vault calls invalid
leads to a fresh login (AppRole, Kubernetes). Key administration (rotate, config, trim) uses the
operator's own token, handed in per call, so the service's own policy needs no such rights.

Failures: sealed, unreachable, slow (past the request's deadline), 5xx and 429 answers are
retried with exponential backoff and full jitter while the deadline allows, then surface as
KeyServiceUnavailable (UNAVAILABLE); a 403 on pdvault's own token is KeyServiceDenied
(PERMISSION_DENIED) with the path to check. hvac has no per-call timeout, so each thread has its
own client whose timeout is set to what is left of the deadline before each call.
"""

from __future__ import annotations

import base64
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import hvac
import requests
from hvac import exceptions as hv

from vault.domain.context import RequestContext
from vault.domain.ports import KekStatus
from vault.domain.secrets import Secret
from vault.domain.types import SubjectId, WrappedKey
from vault.errors import (
    ConfigurationError,
    FailedPrecondition,
    KeyServiceDenied,
    KeyServiceUnavailable,
    PdvaultError,
    Reason,
)

log = logging.getLogger(__name__)

PROVIDER = "vault-transit"
T = TypeVar("T")
_RETRYABLE = (hv.InternalServerError, hv.BadGateway, hv.VaultDown, hv.RateLimitExceeded)
K8S_JWT_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@dataclass(frozen=True)
class TransitSettings:
    addr: str
    mount: str = "transit"
    key: str = "pdvault"
    namespace: str | None = None
    ca_cert: str | None = None
    auth: str = "token"  # token | approle | kubernetes
    token: Secret | None = field(default=None, repr=False)
    role_id: str | None = None
    secret_id: Secret | None = field(default=None, repr=False)
    approle_mount: str = "approle"
    k8s_role: str | None = None
    k8s_jwt_file: Path = K8S_JWT_FILE
    k8s_mount: str = "kubernetes"
    request_timeout: float = 5.0  # one HTTP call at most
    retry_budget: float = 4.0  # all attempts, when the request carries no deadline


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _version_of(ciphertext: str) -> int | None:
    # "vault:v<N>:<base64>"
    parts = ciphertext.split(":", 2)
    if len(parts) != 3 or parts[0] != "vault" or not parts[1].startswith("v"):
        return None
    try:
        return int(parts[1][1:])
    except ValueError:
        return None


class _Login:
    """pdvault's own Vault token: obtained, renewed before expiry, replaced when it fails."""

    def __init__(self, settings: TransitSettings, client_factory: Callable[[], Any]):
        self._s = settings
        self._new_client = client_factory
        self._lock = threading.Lock()
        self._token: str | None = None
        self._ttl = 0.0
        self._renewable = False
        self._obtained = 0.0
        self._known = False  # whether the TTL of the current token is known
        self._next_check = 0.0  # when to look at the TTL again

    def token(self) -> str:
        with self._lock:
            now = time.monotonic()
            if self._token is None:
                self._login()
            elif now >= self._next_check:
                self._maintain(now)
            if self._token is None:
                raise KeyServiceUnavailable("no HashiCorp Vault token; login failed")
            return self._token

    def _maintain(self, now: float) -> None:
        """Learn the token's TTL if unknown; renew it once a third of it is left. Failures are
        retried after a pause (never on every call), and never throw away a token that is
        still valid."""
        if not self._known:
            self._look_up()
            return
        if not self._renewable or self._ttl <= 0:
            self._next_check = float("inf")
            return
        left = self._ttl - (now - self._obtained)
        if left >= self._ttl / 3:
            self._next_check = self._obtained + self._ttl * 2 / 3
            return
        try:
            self._renew()
        except (hv.VaultError, requests.RequestException, PdvaultError) as exc:
            log.warning("token renewal failed (%s)", type(exc).__name__)
            if self._s.auth != "token" and left <= 0:
                self._token = None  # expired: the next call logs in afresh
            self._next_check = now + min(30.0, max(1.0, self._ttl / 10))

    def invalid(self, token: str) -> bool:
        """Vault called `token` invalid: log in again if we can. Returns whether to retry."""
        with self._lock:
            if self._token != token:
                return True  # another thread already replaced it
            if self._s.auth == "token":
                return False
            self._token = None
            self._login()
            return True

    def _renew(self) -> None:
        client = self._new_client()
        client.token = self._token
        try:
            answer = client.auth.token.renew_self()
        except hv.VaultError:
            if self._s.auth == "token":
                raise
            # A token that cannot be renewed (max TTL reached): log in again, keeping the
            # current token if that fails.
            current = self._token
            try:
                self._login()
            except PdvaultError:
                self._token = current
                raise
            return
        self._adopt(answer["auth"])
        log.info("renewed pdvault's HashiCorp Vault token")

    def _look_up(self) -> None:
        client = self._new_client()
        client.token = self._token
        try:
            data = client.auth.token.lookup_self()["data"]
        except (hv.VaultError, requests.RequestException) as exc:
            log.warning("token lookup failed (%s); will retry", type(exc).__name__)
            self._next_check = time.monotonic() + 5.0
            return
        self._ttl = float(data.get("ttl") or 0)
        self._renewable = bool(data.get("renewable"))
        self._obtained = time.monotonic()
        self._known = True
        self._next_check = self._obtained + self._ttl * 2 / 3 if self._ttl > 0 else float("inf")

    def _login(self) -> None:
        client = self._new_client()
        s = self._s
        call: Callable[[], Any]
        if s.auth == "token":
            if s.token is None:
                raise ConfigurationError("PDV_VAULT_AUTH=token needs VAULT_TOKEN")
            self._token = s.token.reveal_text()
            self._known = False
            self._look_up()
            return
        if s.auth == "approle":
            if not s.role_id or s.secret_id is None:
                raise ConfigurationError(
                    "PDV_VAULT_AUTH=approle needs VAULT_ROLE_ID and VAULT_SECRET_ID"
                )
            call = lambda: client.auth.approle.login(  # noqa: E731
                s.role_id,
                s.secret_id.reveal_text() if s.secret_id else None,
                mount_point=s.approle_mount,
            )
        elif s.auth == "kubernetes":
            if not s.k8s_role:
                raise ConfigurationError("PDV_VAULT_AUTH=kubernetes needs PDV_VAULT_K8S_ROLE")
            try:
                jwt = s.k8s_jwt_file.read_text("utf-8").strip()
            except OSError:
                raise ConfigurationError(
                    f"cannot read the service account token {s.k8s_jwt_file}"
                ) from None
            call = lambda: client.auth.kubernetes.login(s.k8s_role, jwt, mount_point=s.k8s_mount)  # noqa: E731
        else:
            raise ConfigurationError(
                f"PDV_VAULT_AUTH={s.auth!r}: expected token, approle or kubernetes"
            )
        try:
            answer = call()
        except hv.InvalidRequest:
            raise KeyServiceDenied(
                f"HashiCorp Vault refused pdvault's {s.auth} login: check the role and its secret"
            ) from None
        except hv.Forbidden:
            raise KeyServiceDenied(f"HashiCorp Vault refused pdvault's {s.auth} login") from None
        except (hv.VaultError, requests.RequestException) as exc:
            raise KeyServiceUnavailable(
                f"HashiCorp Vault login failed ({type(exc).__name__}): is it reachable, unsealed?"
            ) from None
        self._adopt(answer["auth"])
        log.info("logged in to HashiCorp Vault with %s", s.auth)

    def _adopt(self, auth: dict[str, Any]) -> None:
        self._token = str(auth["client_token"])
        self._ttl = float(auth.get("lease_duration") or 0)
        self._renewable = bool(auth.get("renewable"))
        self._obtained = time.monotonic()
        self._known = True
        self._next_check = self._obtained + self._ttl * 2 / 3 if self._ttl > 0 else float("inf")


class VaultTransitKeyProvider:
    """`KeyProvider` over HashiCorp Vault Transit. Thread-safe (a client per thread)."""

    name = PROVIDER

    def __init__(self, settings: TransitSettings, sleep: Callable[[float], None] = time.sleep):
        self._s = settings
        self._local = threading.local()
        self._sleep = sleep
        self._login = _Login(settings, self._make_client)
        self._calls_lock = threading.Lock()
        self.calls = 0  # HTTP calls made for data keys (wrap, unwrap, rewrap), for the benchmarks

    def __repr__(self) -> str:
        return f"VaultTransitKeyProvider(addr={self._s.addr!r}, mount={self._s.mount!r})"

    def _make_client(self) -> Any:
        # Any: types-hvac leaves the transit methods untyped; our wrappers type what we use.
        return hvac.Client(
            url=self._s.addr,
            namespace=self._s.namespace,
            verify=self._s.ca_cert or True,
            timeout=self._s.request_timeout,  # type: ignore[arg-type]  # requests takes floats
        )

    def _client(self) -> Any:
        client: Any = getattr(self._local, "client", None)
        if client is None:
            client = self._make_client()
            self._local.client = client
        return client

    # -- use ----------------------------------------------------------------------------------

    def wrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, Secret]]
    ) -> list[WrappedKey]:
        if not keys:
            return []
        batch = [{"plaintext": _b64(dek.reveal())} for _, dek in keys]
        results = self._batch(
            ctx,
            lambda c: c.secrets.transit.encrypt_data(
                self._s.key, batch_input=batch, mount_point=self._s.mount
            ),
        )
        if len(results) != len(keys):
            raise KeyServiceUnavailable("HashiCorp Vault answered a different number of keys")
        out: list[WrappedKey] = []
        for item in results:
            ciphertext = item.get("ciphertext")
            version = _version_of(ciphertext) if isinstance(ciphertext, str) else None
            if version is None or not isinstance(ciphertext, str):
                raise KeyServiceUnavailable("HashiCorp Vault did not wrap a data key; retry")
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
        results = self._batch(
            ctx,
            lambda c: c.secrets.transit.decrypt_data(
                self._s.key, batch_input=batch, mount_point=self._s.mount
            ),
        )
        for i, item in zip(asked, results, strict=True):
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
        results = self._batch(
            ctx,
            lambda c: c.secrets.transit.rewrap_data(
                self._s.key, None, batch_input=batch, mount_point=self._s.mount
            ),
        )
        for i, item in zip(asked, results, strict=True):
            ciphertext = item.get("ciphertext")
            version = _version_of(ciphertext) if isinstance(ciphertext, str) else None
            if not item.get("error") and isinstance(ciphertext, str) and version is not None:
                out[i] = WrappedKey(PROVIDER, version, ciphertext.encode("ascii"))
        return out

    # -- administration -----------------------------------------------------------------------

    def status(self, ctx: RequestContext) -> KekStatus:
        return self._status_of(self._read_key(ctx))

    def rotate(self, ctx: RequestContext, admin: Secret | None) -> KekStatus:
        self._admin_call(
            ctx,
            admin,
            lambda c: c.secrets.transit.rotate_key(self._s.key, mount_point=self._s.mount),
        )
        return self.status(ctx)

    def set_min_decryption_version(
        self, ctx: RequestContext, version: int, admin: Secret | None
    ) -> KekStatus:
        # Vault wants min_encryption_version (when set) >= min_decryption_version.
        self._raise_min_encryption(ctx, version, admin)
        self._configure(ctx, admin, min_decryption_version=version)
        return self.status(ctx)

    def trim(
        self, ctx: RequestContext, min_available_version: int, admin: Secret | None
    ) -> KekStatus:
        # Vault refuses to trim while min_encryption_version is 0 ("latest"): pin it first.
        self._raise_min_encryption(ctx, min_available_version, admin, even_from_zero=True)
        self._admin_call(
            ctx,
            admin,
            lambda c: c.secrets.transit.trim_key(
                self._s.key, min_available_version, mount_point=self._s.mount
            ),
        )
        return self.status(ctx)

    def _raise_min_encryption(
        self, ctx: RequestContext, at_least: int, admin: Secret | None, even_from_zero: bool = False
    ) -> None:
        data = self._read_key(ctx)["data"]
        current = int(data.get("min_encryption_version") or 0)
        if (current == 0 and not even_from_zero) or current >= at_least:
            return
        # The latest version: encryption uses the latest anyway, so this changes nothing else.
        # (Set alone: hvac refuses min_encryption == min_decryption in one call; Vault allows it.)
        self._configure(ctx, admin, min_encryption_version=int(data["latest_version"]))

    def _configure(self, ctx: RequestContext, admin: Secret | None, **config: int) -> None:
        self._admin_call(
            ctx,
            admin,
            lambda c: c.secrets.transit.update_key_configuration(
                self._s.key, mount_point=self._s.mount, **config
            ),
        )

    def _read_key(self, ctx: RequestContext) -> dict[str, Any]:
        answer: dict[str, Any] = self._data_call(
            ctx,
            lambda c: c.secrets.transit.read_key(self._s.key, mount_point=self._s.mount),
            counted=False,
        )
        return answer

    def _status_of(self, answer: dict[str, Any]) -> KekStatus:
        data = answer["data"]
        return KekStatus(
            PROVIDER,
            f"{self._s.mount}/keys/{self._s.key}",
            int(data["latest_version"]),
            int(data["min_decryption_version"]),
            int(data.get("min_available_version") or 0),
        )

    # -- calls --------------------------------------------------------------------------------

    def _batch(self, ctx: RequestContext, fn: Callable[[Any], Any]) -> list[dict[str, Any]]:
        """A batch call whose per-item failures come back as items, not as an exception."""
        try:
            answer = self._data_call(ctx, fn)
        except _PartialFailure as partial:
            return partial.results
        try:
            results: list[dict[str, Any]] = list(answer["data"]["batch_results"])
        except (KeyError, TypeError):
            raise KeyServiceUnavailable("HashiCorp Vault gave an unexpected answer") from None
        return results

    def _data_call(self, ctx: RequestContext, fn: Callable[[Any], T], counted: bool = True) -> T:
        if counted:
            with self._calls_lock:
                self.calls += 1
        return self._with_retries(ctx, fn, admin=None)

    def _admin_call(self, ctx: RequestContext, admin: Secret | None, fn: Callable[[Any], T]) -> T:
        if admin is None:
            raise FailedPrecondition(
                "key administration on HashiCorp Vault needs the operator's own Vault token "
                "with the pdvault-ops policy: set VAULT_TOKEN where you run pdv keys",
                reason=Reason.VAULT_ADMIN_TOKEN_REQUIRED,
            )
        return self._with_retries(ctx, fn, admin=admin)

    def _with_retries(self, ctx: RequestContext, fn: Callable[[Any], T], admin: Secret | None) -> T:
        budget = ctx.remaining()
        # Never longer than the retry budget, even under a long deadline: a worker thread
        # waiting on an absent Vault is a worker not serving anyone else.
        spend = self._s.retry_budget if budget is None else min(budget, self._s.retry_budget)
        deadline = time.monotonic() + spend
        relogged = False
        backoff = 0.05
        attempt = 0
        failure: PdvaultError | None = None
        while True:
            attempt += 1
            left = deadline - time.monotonic()
            if left <= 0:
                # Say what went wrong last, not merely that time ran out.
                raise failure or KeyServiceUnavailable(
                    "HashiCorp Vault did not answer within the request's deadline"
                )
            client = self._client()
            token = admin.reveal_text() if admin is not None else self._login.token()
            client.token = token
            # hvac has no per-call timeout: set this thread's client's for this call.
            client.adapter._kwargs["timeout"] = min(self._s.request_timeout, max(left, 0.01))
            try:
                return fn(client)
            except hv.InvalidRequest as exc:
                results = _batch_results(exc)
                if results is not None:
                    raise _PartialFailure(results) from None
                raise self._refused(exc) from None
            except hv.Forbidden as exc:
                # One fresh login per call at most: a token Vault keeps calling invalid is an
                # operator's problem, not something to hammer Vault about.
                if admin is None and _invalid_token(exc) and not relogged:
                    relogged = True
                    if self._login.invalid(token):
                        continue
                raise self._denied(exc, admin is not None) from None
            except hv.InvalidPath as exc:
                raise self._refused(exc) from None
            except (*_RETRYABLE, requests.ConnectionError, requests.Timeout) as exc:
                failure = self._unavailable(exc)
            except hv.VaultError as exc:
                raise self._refused(exc) from None
            finally:
                if admin is not None:
                    client.token = None  # the operator's token is not kept on the client
            pause = random.uniform(0, backoff)  # noqa: S311  (jitter, not a secret)
            if time.monotonic() + pause >= deadline:
                raise failure from None
            log.warning("HashiCorp Vault call failed (%s); retry %d", failure.message, attempt)
            self._sleep(pause)
            backoff = min(backoff * 2, 1.0)

    def _unavailable(self, exc: Exception) -> PdvaultError:
        if isinstance(exc, hv.VaultDown):
            return KeyServiceUnavailable(
                "HashiCorp Vault is sealed or unavailable (HTTP 503): unseal it or check its health"
            )
        if isinstance(exc, requests.Timeout):
            return KeyServiceUnavailable(
                "HashiCorp Vault is too slow: no answer within the deadline"
            )
        if isinstance(exc, requests.ConnectionError):
            return KeyServiceUnavailable(
                f"HashiCorp Vault at {self._s.addr} cannot be reached: check VAULT_ADDR"
            )
        return KeyServiceUnavailable(
            f"HashiCorp Vault answered {type(exc).__name__}; it may be overloaded, retry later"
        )

    def _denied(self, exc: hv.Forbidden, admin: bool) -> PdvaultError:
        whose = "the operator's Vault token" if admin else "pdvault's own Vault token"
        policy = "pdvault-ops" if admin else "pdvault-service"
        if _invalid_token(exc):
            return KeyServiceDenied(f"{whose} is invalid or expired: log in again")
        return KeyServiceDenied(
            f"{whose} may not use {self._s.mount}/.../{self._s.key}: attach the {policy} policy "
            "(deploy/vault)"
        )

    def _refused(self, exc: hv.VaultError) -> PdvaultError:
        # Vault's own words name the rule (never key material); operators see them in the log.
        log.warning("HashiCorp Vault refused a request: %s", "; ".join(exc.errors or []))
        missing = isinstance(exc, hv.InvalidPath) or any(
            "key not found" in e or "no existing key" in e for e in exc.errors or []
        )
        if missing:
            return ConfigurationError(
                f"the Transit key {self._s.key} does not exist on mount {self._s.mount}: run "
                "deploy/vault/bootstrap.sh"
            )
        if exc.errors and any("min" in e and "version" in e for e in exc.errors):
            return FailedPrecondition("HashiCorp Vault refused: " + "; ".join(exc.errors))
        return KeyServiceUnavailable(
            f"HashiCorp Vault refused the request ({type(exc).__name__}); see the server log"
        )


class _PartialFailure(Exception):
    def __init__(self, results: list[dict[str, Any]]) -> None:
        super().__init__("partial batch failure")
        self.results = results


def _batch_results(exc: hv.VaultError) -> list[dict[str, Any]] | None:
    # A batch with failed items answers 400 with the full envelope (no "errors"): hvac raises
    # InvalidRequest with errors None and the results in exc.json.
    body = getattr(exc, "json", None)
    if exc.errors is None and isinstance(body, dict):
        data = body.get("data")
        if isinstance(data, dict) and isinstance(data.get("batch_results"), list):
            results: list[dict[str, Any]] = data["batch_results"]
            return results
    return None


def _invalid_token(exc: hv.VaultError) -> bool:
    return any("invalid token" in e for e in (exc.errors or []))
