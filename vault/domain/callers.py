"""Caller authentication by API key.

A key reads `pdv_<key id>_<secret>`: the id finds the record, the secret (256 random bits) is
checked against its SHA-256 in constant time. A fast hash is right here: the secret is random and
long, so there is nothing to brute-force that a slow hash would protect. Only hashes are stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable

from vault.domain.policy import Policy
from vault.domain.ports import ApiKeyRecord, ApiKeyStore
from vault.domain.types import CallerName
from vault.errors import Unauthenticated

_KEY_RE = re.compile(r"pdv_([a-z2-7]{16})_([A-Za-z0-9_-]{43})")


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def issue_api_key(caller: CallerName) -> tuple[str, ApiKeyRecord]:
    """A new key for `caller`: the key itself (shown once) and the record to store."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
    secret = secrets.token_urlsafe(32)
    return f"pdv_{key_id}_{secret}", ApiKeyRecord(key_id, caller, _hash(secret), revoked=False)


class Authenticator:
    """Turns a presented bearer key into the caller it belongs to.

    Records of valid keys are remembered for `cache_seconds` (a database round trip saved on
    every call), so a revoked key keeps working for at most that long in each process. Unknown
    or invalid keys are never remembered: a guess always costs a lookup.
    """

    def __init__(
        self,
        store: ApiKeyStore,
        policy: Policy,
        cache_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._policy = policy
        self._ttl = cache_seconds
        self._clock = clock
        self._known: dict[str, tuple[ApiKeyRecord, float]] = {}
        self._lock = threading.Lock()

    def _record(self, key_id: str) -> ApiKeyRecord | None:
        now = self._clock()
        with self._lock:
            hit = self._known.get(key_id)
        if hit is not None and now - hit[1] < self._ttl:
            return hit[0]
        record = self._store.api_key(key_id)
        if record is not None and not record.revoked and self._ttl > 0:
            with self._lock:
                if len(self._known) > 10_000:
                    self._known.clear()
                self._known[key_id] = (record, now)
        return record

    def authenticate(self, presented: str | None) -> CallerName:
        # One message for every failure: which part was wrong is of no use to a caller.
        failure = Unauthenticated(
            "missing or invalid API key (metadata 'authorization: Bearer <key>')"
        )
        if not presented:
            raise failure
        m = _KEY_RE.fullmatch(presented)
        if not m:
            raise failure
        record = self._record(m.group(1))
        expected = record.key_hash if record else _hash("no-such-key-but-take-the-same-time")
        ok = hmac.compare_digest(expected, _hash(m.group(2)))
        if record is None or not ok or record.revoked:
            raise failure
        if record.caller not in self._policy.callers:
            raise failure
        return record.caller
