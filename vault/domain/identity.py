"""Who calls: a verified client certificate (a SPIFFE workload identity), an API key, or both.

The identity of a certificate is read only from the certificate the TLS handshake verified
against PDV_TLS_CLIENT_CA (gRPC's auth context), never from anything the caller sends in the
call. `vault.crypto.svid` reads it and checks the X509-SVID rules; the policy maps its SPIFFE
ID to a caller, deny by default (`spiffe_id` in `[callers.<name>]`).

When a call presents both a certificate and an API key, both must be valid and name the same
caller: a credential that is presented is never ignored, so a sidecar or a library that adds
another caller's key fails loudly instead of acting as one caller or the other.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from vault.domain.callers import Authenticator
from vault.domain.policy import Policy
from vault.domain.ports import Clock
from vault.domain.stores import AuditLog
from vault.domain.types import Action, AuditEvent, CallerName, Outcome
from vault.errors import PdvaultError, PermissionDenied, Reason, Unauthenticated

__all__ = [
    "SPIFFE_ID_MAX_BYTES",
    "UNIDENTIFIED",
    "Identification",
    "PeerCertificate",
    "spiffe_id_problem",
]


# SPIFFE-ID.md §2: "spiffe://" trust-domain path; §2.1 the trust domain's characters, §2.2 the
# path's (segments never empty, "." or ".."), no query, fragment, port or user info; §2.3 at
# most 2048 bytes. X509-SVID.md §2: a workload's SVID has a path (never the bare trust domain).
SPIFFE_ID_MAX_BYTES = 2048
_SPIFFE_ID = re.compile(r"spiffe://([a-z0-9._-]{1,255})((?:/[A-Za-z0-9._-]+)*)")
# The audit's caller for a certificate that names no caller (its SPIFFE ID is in `detail`);
# the colon keeps it apart from every caller name of a policy (NAME_RE).
UNIDENTIFIED = CallerName("mtls:unidentified")
_DETAIL_MAX = 256  # audit_events.detail


def spiffe_id_problem(text: str) -> str | None:
    """Why `text` is not a workload's SPIFFE ID, in words; None when it is one."""
    if len(text.encode("utf-8")) > SPIFFE_ID_MAX_BYTES:
        return f"a SPIFFE ID has at most {SPIFFE_ID_MAX_BYTES} bytes"
    m = _SPIFFE_ID.fullmatch(text)
    if m is None:
        return (
            "not a SPIFFE ID: spiffe://<trust domain>/<path>, the trust domain in lower-case "
            "letters, digits, '.', '-' and '_', path segments of letters, digits, '.', '-' and '_'"
        )
    path = m.group(2)
    if not path:
        return "a workload's SPIFFE ID has a path after its trust domain"
    if any(segment in {".", ".."} for segment in path.split("/")):
        return "a SPIFFE ID's path has no '.' or '..' segments"
    return None


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What a verified client certificate says, as `vault.crypto.svid` read it.

    `problem` says, in words, why the certificate is not an X509-SVID pdvault accepts (its
    counts and rules, never its text); `spiffe_id` is set only when there is none.
    """

    fingerprint: str  # SHA-256, hex
    spiffe_id: str | None
    problem: str | None
    not_after: datetime


class _Refused(Exception):
    """A refusal that is audited before the caller hears it."""

    def __init__(self, error: PdvaultError, event: AuditEvent) -> None:
        super().__init__(error.message)
        self.error = error
        self.event = event


KeyCheck = Callable[[str | None], CallerName | None]


class Identification:
    """Turns what a call presents into the caller it is.

    - A certificate alone: the caller whose `spiffe_id` is the certificate's SPIFFE ID. A
      certificate that is not an X509-SVID (no URI SAN, two, a CA ...) or that has expired
      since the handshake is UNAUTHENTICATED; an identity the policy does not name is
      PERMISSION_DENIED. Both are audited.
    - An API key alone: its caller (`Authenticator`), unless the policy says `require_mtls`
      for that caller: then UNAUTHENTICATED, audited.
    - Both: both valid and the same caller, else UNAUTHENTICATED (audited when they disagree).

    A missing or invalid API key without a certificate is UNAUTHENTICATED and not audited: a
    stranger's flood of made-up keys must cost no write. Only holders of a certificate from
    the client CA can cause the audited refusals.
    """

    def __init__(self, keys: Authenticator, policy: Policy, audit: AuditLog, clock: Clock) -> None:
        self._keys = keys
        self._policy = policy
        self._audit = audit
        self._clock = clock

    def __repr__(self) -> str:
        return f"Identification({self._keys!r})"

    def check(self, peer: PeerCertificate | None, presented: str | None) -> CallerName | None:
        """The caller, from memory (an event loop calls this). None when the answer needs
        I/O: the key table must be read, or a refusal must be audited (`authenticate`)."""
        try:
            return self._identify(peer, presented, self._keys.check)
        except _Refused:
            return None

    def authenticate(self, peer: PeerCertificate | None, presented: str | None) -> CallerName:
        """The caller; may read the key table and write the audit log (off the event loop).
        An audited refusal MUST be committed before it is raised."""
        try:
            caller = self._identify(peer, presented, self._keys.authenticate)
        except _Refused as refused:
            self._audit.append([refused.event])
            raise refused.error from None
        if caller is None:  # `Authenticator.authenticate` never answers None
            raise AssertionError("no caller and no refusal")
        return caller

    def _identify(
        self, peer: PeerCertificate | None, presented: str | None, keys: KeyCheck
    ) -> CallerName | None:
        if peer is None:
            caller = keys(presented)
            rule = self._policy.callers.get(caller) if caller is not None else None
            if caller is not None and rule is not None and rule.require_mtls:
                raise self._refused(
                    Unauthenticated(
                        f"caller '{caller}' must call with its client certificate (the policy "
                        "says require_mtls); its API key alone is refused",
                        reason=Reason.MTLS_REQUIRED,
                    ),
                    caller,
                    f"caller:{caller}:require_mtls",
                    "an API key without a client certificate",
                )
            return caller
        by_certificate = self._workload(peer)
        if presented is None:
            return by_certificate
        by_key = keys(presented)
        if by_key is None:
            return None
        if by_key != by_certificate:
            raise self._refused(
                Unauthenticated(
                    "the client certificate and the API key name different callers",
                    reason=Reason.CREDENTIALS_DISAGREE,
                ),
                by_certificate,
                "identity:credentials:agree",
                f"the certificate {_short(peer)} names caller '{by_certificate}', the API key "
                f"caller '{by_key}'",
            )
        return by_certificate

    def _workload(self, peer: PeerCertificate) -> CallerName:
        if peer.problem is not None or peer.spiffe_id is None:
            problem = peer.problem or "no SPIFFE ID"
            raise self._refused(
                Unauthenticated(
                    f"the client certificate is refused: {problem}",
                    reason=Reason.CERTIFICATE_REFUSED,
                ),
                UNIDENTIFIED,
                "identity:certificate:x509_svid",
                f"certificate {_short(peer)}: {problem}",
            )
        if peer.not_after <= self._clock():
            # The handshake checked it; a connection may outlive it (PDV_MAX_CONNECTION_AGE).
            raise self._refused(
                Unauthenticated(
                    "the client certificate has expired: reconnect with a current one",
                    reason=Reason.CERTIFICATE_REFUSED,
                ),
                UNIDENTIFIED,
                "identity:certificate:expired",
                f"certificate {_short(peer)} of {peer.spiffe_id}: expired",
            )
        caller = self._policy.caller_of_workload(peer.spiffe_id)
        if caller is None:
            raise self._refused(
                PermissionDenied(
                    f"the SPIFFE ID {peer.spiffe_id} is no caller's in the policy",
                    rule="identity:spiffe_id:unknown",
                    reason=Reason.IDENTITY_UNKNOWN,
                ),
                UNIDENTIFIED,
                "identity:spiffe_id:unknown",
                f"certificate {_short(peer)} of {peer.spiffe_id}",
            )
        return caller

    def _refused(self, error: PdvaultError, caller: CallerName, rule: str, detail: str) -> _Refused:
        if len(detail) > _DETAIL_MAX:
            detail = detail[: _DETAIL_MAX - 3] + "..."
        event = AuditEvent(
            occurred_at=self._clock(),
            caller=caller,
            action=Action.AUTHENTICATE,
            outcome=Outcome.REFUSED,
            rule=rule,
            detail=detail,
        )
        return _Refused(error, event)


def _short(peer: PeerCertificate) -> str:
    return f"sha256:{peer.fingerprint[:16]}"
