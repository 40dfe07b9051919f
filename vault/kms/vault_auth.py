"""pdvault's own HashiCorp Vault token: obtained, renewed before expiry, replaced when it fails.

Three ways to get it: a token (`VAULT_TOKEN`), AppRole or a Kubernetes service account.
Invariants:

- A token is renewed once a third of its TTL is left (checked when it is next used, never by a
  thread of its own). A failed renewal or TTL lookup is tried again after a pause, never on
  every call, and never throws away a token that is still valid; an AppRole or Kubernetes
  token that has expired is dropped, and the next call logs in afresh.
- When Vault calls the token invalid, `invalid` logs in again once, unless another thread
  already did; a static token cannot be replaced. `VaultHttp.call` asks at most once per call,
  so a token Vault keeps refusing never becomes a login storm.
- Every call to Vault goes through `VaultHttp.send` with the timeout the caller passes (what is
  left of its request's deadline); a login failure is a `CallFailed` that the caller's retry
  loop classifies and reports. No token or secret is logged or put in an error.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Protocol

from vault.domain.secrets import Secret
from vault.errors import ConfigurationError, PdvaultError
from vault.kms.vault_http import (
    SERVICE,
    UNEXPECTED,
    Body,
    CallFailed,
    Failure,
    Role,
    VaultHttp,
    login_role,
)

__all__ = ["Login", "LoginSettings"]


log = logging.getLogger(__name__)


class LoginSettings(Protocol):
    """What a login reads of `vault.kms.transit.TransitSettings`."""

    @property
    def auth(self) -> str: ...  # token | approle | kubernetes
    @property
    def token(self) -> Secret | None: ...
    @property
    def role_id(self) -> str | None: ...
    @property
    def secret_id(self) -> Secret | None: ...
    @property
    def approle_mount(self) -> str: ...
    @property
    def k8s_role(self) -> str | None: ...
    @property
    def k8s_jwt_file(self) -> Path: ...
    @property
    def k8s_mount(self) -> str: ...


class Login:
    """A `vault.kms.vault_http.Credential`: pdvault's own token. Thread-safe (one lock)."""

    role: Role = SERVICE

    def __init__(self, http: VaultHttp, settings: LoginSettings) -> None:
        self._http = http
        self._s = settings
        self._lock = threading.Lock()
        self._token: str | None = None
        self._ttl = 0.0
        self._renewable = False
        self._obtained = 0.0
        self._known = False  # whether the TTL of the current token is known
        self._next_check = 0.0  # when to look at the TTL again

    def __repr__(self) -> str:
        return f"Login(auth={self._s.auth!r})"

    def token(self, timeout: float) -> str:
        with self._lock:
            if self._token is not None and time.monotonic() >= self._next_check:
                self._maintain(time.monotonic(), timeout)
            return self._token if self._token is not None else self._login(timeout)

    def invalid(self, token: str, timeout: float) -> bool:
        """Vault called `token` invalid: log in again if we can. Returns whether to retry."""
        with self._lock:
            if self._token != token:
                return True  # another thread already replaced it
            if self._s.auth == "token":
                return False
            self._token = None
            self._login(timeout)
            return True

    def _maintain(self, now: float, timeout: float) -> None:
        """Learn the token's TTL if unknown; renew it once a third of it is left."""
        if not self._known:
            self._look_up(timeout)
            return
        if not self._renewable or self._ttl <= 0:
            self._next_check = float("inf")
            return
        left = self._ttl - (now - self._obtained)
        if left >= self._ttl / 3:
            self._next_check = self._obtained + self._ttl * 2 / 3
            return
        try:
            self._renew(timeout)
        except (CallFailed, PdvaultError) as exc:
            log.warning("token renewal failed (%s)", _why(exc))
            if self._s.auth != "token" and left <= 0:
                self._token = None  # expired: this call logs in afresh
            self._next_check = now + min(30.0, max(1.0, self._ttl / 10))

    def _renew(self, timeout: float) -> None:
        path = "auth/token/renew-self"
        try:
            answer = self._http.send("POST", path, {}, self._token, timeout, SERVICE)
        except CallFailed as failed:
            if self._s.auth == "token" or failed.failure.status is None:
                raise
            # Vault answered no (max TTL reached, not renewable): log in again, keeping the
            # current token if that fails.
            current = self._token
            try:
                self._login(timeout)
            except (CallFailed, PdvaultError):
                self._token = current
                raise
            return
        self._adopt(answer, path, SERVICE)
        log.info("renewed pdvault's HashiCorp Vault token")

    def _look_up(self, timeout: float) -> None:
        path = "auth/token/lookup-self"
        try:
            data = self._http.send("GET", path, None, self._token, timeout, SERVICE).get("data")
            if not isinstance(data, dict):
                raise CallFailed(Failure(UNEXPECTED, SERVICE, "GET", path, 200))
        except CallFailed as failed:
            log.warning("token lookup failed (%s); will retry", failed.failure.row.kind)
            self._next_check = time.monotonic() + 5.0
            return
        self._ttl = float(data.get("ttl") or 0)
        self._renewable = bool(data.get("renewable"))
        self._obtained = time.monotonic()
        self._known = True
        self._next_check = self._obtained + self._ttl * 2 / 3 if self._ttl > 0 else float("inf")

    def _login(self, timeout: float) -> str:
        s = self._s
        if s.auth == "token":
            if s.token is None:
                raise ConfigurationError("PDV_VAULT_AUTH=token needs VAULT_TOKEN")
            self._token = s.token.reveal_text()
            self._known = False
            self._look_up(timeout)
            return self._token
        if s.auth == "approle":
            if not s.role_id or s.secret_id is None:
                raise ConfigurationError(
                    "PDV_VAULT_AUTH=approle needs VAULT_ROLE_ID and VAULT_SECRET_ID"
                )
            mount = s.approle_mount
            body: Body = {"role_id": s.role_id, "secret_id": s.secret_id.reveal_text()}
        elif s.auth == "kubernetes":
            if not s.k8s_role:
                raise ConfigurationError("PDV_VAULT_AUTH=kubernetes needs PDV_VAULT_K8S_ROLE")
            mount = s.k8s_mount
            body = {"role": s.k8s_role, "jwt": self._service_account_token()}
        else:
            raise ConfigurationError(
                f"PDV_VAULT_AUTH={s.auth!r}: expected token, approle or kubernetes"
            )
        path, role = f"auth/{mount}/login", login_role(s.auth)
        # No token on a login: the request stands on its own credential.
        token = self._adopt(self._http.send("POST", path, body, None, timeout, role), path, role)
        log.info("logged in to HashiCorp Vault with %s", s.auth)
        return token

    def _service_account_token(self) -> str:
        path = self._s.k8s_jwt_file
        try:
            return path.read_text("utf-8").strip()
        except OSError as exc:
            error_id = uuid.uuid4().hex[:12]
            log.warning(
                "error id %s: cannot read the service account token %s (%s)",
                error_id,
                path,
                type(exc).__name__,
            )
            raise ConfigurationError(
                "cannot read the Kubernetes service account token (PDV_VAULT_K8S_JWT_FILE) "
                f"(error id {error_id})"
            ) from None

    def _adopt(self, answer: Body, path: str, role: Role) -> str:
        auth = answer.get("auth")
        token = auth.get("client_token") if isinstance(auth, dict) else None
        if not isinstance(auth, dict) or not isinstance(token, str):
            raise CallFailed(Failure(UNEXPECTED, role, "POST", path, 200))
        self._token = token
        self._ttl = float(auth.get("lease_duration") or 0)
        self._renewable = bool(auth.get("renewable"))
        self._obtained = time.monotonic()
        self._known = True
        self._next_check = self._obtained + self._ttl * 2 / 3 if self._ttl > 0 else float("inf")
        return token


def _why(exc: Exception) -> str:
    return exc.failure.row.kind if isinstance(exc, CallFailed) else type(exc).__name__
