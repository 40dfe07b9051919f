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
from vault.domain.stores import ApiKeyRecord, CredentialStore
from vault.domain.types import CallerName
from vault.errors import Unauthenticated

__all__ = ["Authenticator", "issue_api_key"]


_KEY_RE = re.compile(r"pdv_([a-z2-7]{16})_([A-Za-z0-9_-]{43})")


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def issue_api_key(caller: CallerName) -> tuple[str, ApiKeyRecord]:
    """A new key for `caller`: the key itself (shown once) and the record to store."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
    secret = secrets.token_urlsafe(32)
    return f"pdv_{key_id}_{secret}", ApiKeyRecord(key_id, caller, _hash(secret), revoked=False)


class Authenticator:
    """Turns a presented bearer key into the caller it belongs to, from memory.

    Every key record (id, caller, hash, revoked) is held in memory; the table is read again
    when it is older than `refresh_seconds` (so a revocation made elsewhere holds within that
    time), and when a key id it does not know is presented, at most once per
    `min_refresh_seconds`: a flood of made-up keys costs at most one lookup a second, never
    one each. `check` never does I/O (an event loop calls it); `authenticate` may refresh.
    """

    def __init__(
        self,
        store: CredentialStore,
        policy: Policy,
        refresh_seconds: float = 30.0,
        min_refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._policy = policy
        self._ttl = refresh_seconds
        self._min_interval = min_refresh_seconds
        self._clock = clock
        self._records: dict[str, ApiKeyRecord] = {}
        self._loaded_at: float | None = None
        self._lock = threading.Lock()
        # key id -> when it last authenticated a call (epoch seconds), written out by `drain`
        self._used: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"Authenticator(keys={len(self._records)})"

    def use_policy(self, policy: Policy) -> None:
        """Accept the callers of `policy` from now on (a reload; one assignment)."""
        self._policy = policy

    def invalidate(self) -> None:
        """Read the table again at the next check (a key was added or revoked elsewhere)."""
        self._loaded_at = None

    def refresh(self) -> None:
        """Read every key record again (I/O: call it off the event loop)."""
        with self._lock:
            now = self._clock()
            if self._loaded_at is not None and now - self._loaded_at < self._min_interval:
                return  # another thread just did
            records = {r.key_id: r for r in self._store.api_keys()}
            self._records, self._loaded_at = records, now

    def check(self, presented: str | None) -> CallerName | None:
        """The caller, from memory; None when the table must be read first (stale, or an
        unknown key id and no read in the last `min_refresh_seconds`). Raises
        Unauthenticated for every failure, with one message."""
        key_id, secret = _parse(presented)
        now = self._clock()
        loaded = self._loaded_at
        if loaded is None or now - loaded >= self._ttl:
            return None
        record = self._records.get(key_id)
        if record is None and now - loaded >= self._min_interval:
            return None
        return self._verify(record, secret)

    def authenticate(self, presented: str | None) -> CallerName:
        caller = self.check(presented)
        if caller is None:
            self.refresh()
            key_id, secret = _parse(presented)
            caller = self._verify(self._records.get(key_id), secret)
        return caller

    def _verify(self, record: ApiKeyRecord | None, secret: str) -> CallerName:
        expected = record.key_hash if record else _DUMMY_HASH
        ok = hmac.compare_digest(expected, _hash(secret))
        if record is None or not ok or record.revoked or record.caller not in self._policy.callers:
            raise _failure()
        self._used[record.key_id] = time.time()
        return record.caller

    def drain_used(self) -> dict[str, float]:
        """When each key last authenticated a call since the last drain (epoch seconds)."""
        used, self._used = self._used, {}
        return used


_DUMMY_HASH = _hash("no-such-key-but-take-the-same-time")


def _failure() -> Unauthenticated:
    # One message for every failure: which part was wrong is of no use to a caller.
    return Unauthenticated("missing or invalid API key (metadata 'authorization: Bearer <key>')")


def _parse(presented: str | None) -> tuple[str, str]:
    m = _KEY_RE.fullmatch(presented) if presented else None
    if m is None:
        raise _failure()
    return m.group(1), m.group(2)
