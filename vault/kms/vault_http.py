"""One call to HashiCorp Vault: its timeout, its retries, and what its failures mean.

Every HTTP request pdvault makes to HashiCorp Vault goes through `VaultHttp`. Invariants:

- One attempt is one HTTP request whose timeout travels with that request: hvac's public
  `Adapter.request(method, url, headers, raise_exception, **kwargs)` hands its keyword
  arguments, `timeout` among them, to `requests` for that call only. Nothing client-wide is
  changed between calls, and no token is kept on the client: it is a header of each request.
- `call` retries only the failures `STATUS_TABLE` / `NO_ANSWER_TABLE` mark transient, with
  exponential backoff and full jitter, and MUST give up by the request's deadline
  (`ctx.remaining()`) or the retry budget, whichever comes first: a worker thread waiting on
  an absent Vault serves nobody else. No attempt's timeout reaches past that point.
- A token Vault calls invalid leads to at most one fresh login per call (never a login storm).
- Failures are classified by ONE table keyed on the HTTP status (`STATUS_TABLE`), or, when
  there was no answer, on the `requests` exception (`NO_ANSWER_TABLE`). hvac's exception
  classes are one per status (`VaultError.from_status`); reading the status itself also tells
  apart 412, 413 or 504, which hvac lumps into `UnexpectedError`. Vault's own words are read
  only where its status is ambiguous (400, 401, 403), by the `Check`s in the same table.
- What a caller is told names the kind of failure, what to check and an error id; never the
  address, the mount, the key, a token or Vault's own words. The operator finds those (tokens
  excepted) in ONE log line carrying the same error id.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import requests
from hvac.adapters import RawAdapter

from vault.domain.context import RequestContext
from vault.errors import (
    ConfigurationError,
    FailedPrecondition,
    KeyServiceDenied,
    KeyServiceUnavailable,
    PdvaultError,
)

__all__ = [
    "KEY_MISSING",
    "LOGIN_REFUSED",
    "NOT_INITIALIZED",
    "NOT_PERMITTED",
    "NO_ANSWER_TABLE",
    "OPERATOR",
    "OVERLOADED",
    "REFUSED",
    "SEALED",
    "SERVICE",
    "STATUS_TABLE",
    "TLS_FAILED",
    "TOKEN_INVALID",
    "TOO_SLOW",
    "UNEXPECTED",
    "UNREACHABLE",
    "VERSION_RULE",
    "CallFailed",
    "Check",
    "Credential",
    "Failure",
    "Role",
    "Row",
    "VaultHttp",
    "classify",
    "classify_no_answer",
    "login_role",
]


log = logging.getLogger(__name__)

Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Role:
    """Whose credential a call carries: it decides which policy a refusal points to."""

    whose: str
    policy: str  # the policy in deploy/vault that grants what this credential needs
    login: str = ""  # the auth method, when the call is a login


SERVICE = Role("pdvault's own Vault token", "pdvault-service")
OPERATOR = Role("the operator's Vault token", "pdvault-ops")


def login_role(method: str) -> Role:
    return Role("pdvault's login", "pdvault-service", method)


@dataclass(frozen=True, slots=True)
class Row:
    """What a failure means: the error a caller gets, what it says, whether to retry."""

    kind: str
    error: type[PdvaultError]
    says: str  # for callers; {whose}, {policy} and {login} come from the call's `Role`
    transient: bool = False


SEALED = Row(
    "sealed",
    KeyServiceUnavailable,
    "HashiCorp Vault is sealed or unavailable (HTTP 503): unseal it or check its health",
    True,
)
OVERLOADED = Row(
    "overloaded",
    KeyServiceUnavailable,
    "HashiCorp Vault is overloaded or failing (HTTP {status}): retry later",
    True,
)
NOT_INITIALIZED = Row(
    "not initialized", KeyServiceUnavailable, "HashiCorp Vault is not initialized (HTTP 501)"
)
TOO_SLOW = Row(
    "too slow",
    KeyServiceUnavailable,
    "HashiCorp Vault is too slow: no answer within the request's deadline",
    True,
)
UNREACHABLE = Row(
    "unreachable",
    KeyServiceUnavailable,
    "HashiCorp Vault cannot be reached: check VAULT_ADDR and the network",
    True,
)
TLS_FAILED = Row(
    "tls", KeyServiceUnavailable, "TLS with HashiCorp Vault failed: check VAULT_CACERT"
)
TOKEN_INVALID = Row(
    "token invalid", KeyServiceDenied, "{whose} is invalid or expired: log in again"
)
NOT_PERMITTED = Row(
    "not permitted",
    KeyServiceDenied,
    "{whose} may not do this on the Transit key: attach the {policy} policy (deploy/vault)",
)
LOGIN_REFUSED = Row(
    "login refused",
    KeyServiceDenied,
    "HashiCorp Vault refused pdvault's {login} login: check the role and its credential",
)
KEY_MISSING = Row(
    "key missing",
    ConfigurationError,
    "the Transit key or its mount does not exist: run deploy/vault/bootstrap.sh",
)
VERSION_RULE = Row(
    "version rule",
    FailedPrecondition,
    "HashiCorp Vault refused: the key's version settings do not allow this",
)
REFUSED = Row(
    "refused", KeyServiceUnavailable, "HashiCorp Vault refused (HTTP {status}): see the server log"
)
UNEXPECTED = Row(
    "unexpected answer", KeyServiceUnavailable, "HashiCorp Vault gave an unexpected answer"
)


@dataclass(frozen=True, slots=True)
class Check:
    """Where a status means several things: `row` when one of Vault's error strings holds
    every one of `words`."""

    words: tuple[str, ...]
    row: Row


_TOKEN_CHECKS = (Check(("invalid token",), TOKEN_INVALID),)  # 403 answers both (reference §1)

# The error table: HTTP status -> (its meaning, the text checks where the status is ambiguous).
# Texts: shared/reference/vault-transit.md §1, §2.4-2.9; docs/vault-transit-hmac-sign.md.
STATUS_TABLE: dict[int, tuple[Row, tuple[Check, ...]]] = {
    400: (
        REFUSED,
        (
            # 400 is every handler's user error: a missing key ("encryption key not found",
            # "key not found", "signing key not found"; config: "no existing key named ...")...
            Check(("key not found",), KEY_MISSING),
            Check(("no existing key",), KEY_MISSING),
            # ... and the key ladder's rules ("cannot set min decryption version of ...",
            # "minimum available version cannot be greater than ...").
            Check(("min", "version"), VERSION_RULE),
        ),
    ),
    401: (NOT_PERMITTED, _TOKEN_CHECKS),
    403: (NOT_PERMITTED, _TOKEN_CHECKS),
    404: (KEY_MISSING, ()),  # a read of a missing key, or no such mount
    429: (OVERLOADED, ()),
    500: (OVERLOADED, ()),
    501: (NOT_INITIALIZED, ()),
    502: (OVERLOADED, ()),
    503: (SEALED, ()),
    504: (OVERLOADED, ()),
}
# No answer at all: the first matching class decides (ConnectTimeout is both a Timeout and a
# ConnectionError; SSLError is a ConnectionError).
NO_ANSWER_TABLE: tuple[tuple[type[requests.RequestException], Row], ...] = (
    (requests.Timeout, TOO_SLOW),
    (requests.exceptions.SSLError, TLS_FAILED),
    (requests.ConnectionError, UNREACHABLE),
    (requests.RequestException, UNREACHABLE),
)


def classify(status: int, vault_said: tuple[str, ...], role: Role) -> Row:
    """The meaning of an answer with this status and these error strings."""
    if role.login and status in (400, 401, 403):
        return LOGIN_REFUSED  # AppRole answers 400 to a wrong secret, Kubernetes 403
    row, checks = STATUS_TABLE.get(status, (OVERLOADED if status >= 500 else REFUSED, ()))
    for check in checks:
        if any(all(w in said for w in check.words) for said in vault_said):
            return check.row
    return row


def classify_no_answer(exc: requests.RequestException) -> Row:
    return next(row for cls, row in NO_ANSWER_TABLE if isinstance(exc, cls))


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, with what the operator needs to see (never a token)."""

    row: Row
    role: Role
    method: str
    path: str
    status: int | None = None
    vault_said: tuple[str, ...] = ()
    cause: str = ""  # the requests exception, when there was no answer


class CallFailed(Exception):
    """One attempt failed; `VaultHttp.call` decides whether to retry and what callers hear."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.row.kind)
        self.failure = failure


class Credential(Protocol):
    """Where a call's token comes from (pdvault's login, or an operator's own token)."""

    @property
    def role(self) -> Role: ...

    def token(self, timeout: float) -> str:
        """The token to send; MAY call Vault (login, renewal) within `timeout`, raising
        `CallFailed` when that fails."""
        ...

    def invalid(self, token: str, timeout: float) -> bool:
        """Vault called `token` invalid: replace it if possible. Whether to try again."""
        ...


class VaultHttp:
    """Calls to one HashiCorp Vault server. Thread-safe: each thread has its own session."""

    def __init__(
        self,
        addr: str,
        namespace: str | None,
        ca_cert: str | None,
        request_timeout: float,
        retry_budget: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.addr = addr
        self._namespace = namespace
        self._verify: bool | str = ca_cert or True
        self._request_timeout = request_timeout
        self._retry_budget = retry_budget
        self._sleep = sleep
        self._local = threading.local()

    def _adapter(self) -> RawAdapter:
        adapter: RawAdapter | None = getattr(self._local, "adapter", None)
        if adapter is None:
            session = requests.Session()
            session.verify = self._verify  # the adapter takes TLS settings from its session
            adapter = RawAdapter(base_uri=self.addr, namespace=self._namespace, session=session)
            self._local.adapter = adapter
        return adapter

    def send(
        self,
        method: str,
        path: str,
        body: Body | None,
        token: str | None,
        timeout: float,
        role: Role,
    ) -> Body:
        """One HTTP request to `/v1/<path>`, given up after `timeout` seconds. Returns the JSON
        answer (`{}` for 204); raises `CallFailed`. A batch whose items failed (400 with the
        whole envelope, reference §2.10) is an answer: its items say which failed."""
        headers = {"X-Vault-Token": token} if token else {}
        try:
            # hvac's public signature: keyword arguments go to requests for this call only.
            response = self._adapter().request(
                method, f"/v1/{path}", headers, raise_exception=False, json=body, timeout=timeout
            )
        except requests.RequestException as exc:
            row = classify_no_answer(exc)
            raise CallFailed(Failure(row, role, method, path, cause=type(exc).__name__)) from None
        answer = _json(response)
        status = response.status_code
        if response.ok or (status == 400 and _is_batch(answer)):
            if answer is None and status != 204:
                raise CallFailed(Failure(UNEXPECTED, role, method, path, status))
            return answer or {}
        errors = answer.get("errors") if answer else None
        said = tuple(str(e) for e in errors) if isinstance(errors, list) else ()
        row = classify(status, said, role)
        raise CallFailed(Failure(row, role, method, path, status, said))

    def call(
        self, ctx: RequestContext, method: str, path: str, body: Body | None, cred: Credential
    ) -> Body:
        """`send`, retried while the request's deadline and the retry budget allow. Raises the
        `PdvaultError` of the last failure, logged once with its error id."""
        remaining = ctx.remaining()
        # Never longer than the retry budget, even under a long deadline.
        spend = self._retry_budget if remaining is None else min(remaining, self._retry_budget)
        deadline = time.monotonic() + spend
        relogged = False
        backoff = 0.05
        attempts = 0
        last: Failure | None = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                # Say what went wrong last, not merely that time ran out.
                raise self.report(ctx, last or Failure(TOO_SLOW, cred.role, method, path), attempts)
            attempts += 1
            timeout = min(self._request_timeout, max(left, 0.01))
            try:
                token = cred.token(timeout)
                try:
                    return self.send(method, path, body, token, timeout, cred.role)
                except CallFailed as failed:
                    if failed.failure.row is not TOKEN_INVALID or relogged:
                        raise
                    # One fresh login per call at most: a token Vault keeps calling invalid is
                    # an operator's problem, not something to hammer Vault about.
                    relogged = True
                    if cred.invalid(token, timeout):
                        continue
                    raise
            except CallFailed as failed:
                last = failed.failure
            pause = random.uniform(0, backoff)  # noqa: S311  (jitter, not a secret)
            if not last.row.transient or time.monotonic() + pause >= deadline:
                raise self.report(ctx, last, attempts)
            log.info("HashiCorp Vault call failed (%s); retry %d", last.row.kind, attempts)
            self._sleep(pause)
            backoff = min(backoff * 2, 1.0)

    def report(self, ctx: RequestContext, failure: Failure, attempts: int = 1) -> PdvaultError:
        """The caller's error for `failure`, after ONE log line with the detail and its id."""
        error_id = uuid.uuid4().hex[:12]
        log.warning(
            "HashiCorp Vault failure, error id %s (call %s): %s after %d attempt(s): %s %s/v1/%s "
            "with %s -> %s; Vault said: %s",
            error_id,
            ctx.call_id,
            failure.row.kind,
            attempts,
            failure.method,
            self.addr,
            failure.path,
            failure.role.whose,
            f"HTTP {failure.status}"
            if failure.status is not None
            else f"no answer ({failure.cause or 'deadline passed'})",
            "; ".join(failure.vault_said) or "-",
        )
        says = failure.row.says.format(
            whose=failure.role.whose,
            policy=failure.role.policy,
            login=failure.role.login,
            status=failure.status,
        )
        return failure.row.error(f"{says} (error id {error_id})")


def _json(response: requests.Response) -> Body | None:
    try:
        answer = response.json()
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _is_batch(answer: Body | None) -> bool:
    data = answer.get("data") if answer and "errors" not in answer else None
    return isinstance(data, dict) and isinstance(data.get("batch_results"), list)
