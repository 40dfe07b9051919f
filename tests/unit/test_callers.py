"""Caller authentication by API key, against a tiny in-memory store."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import cast

import pytest

from vault.domain.callers import Authenticator, issue_api_key
from vault.domain.policy import load_policy
from vault.domain.ports import ApiKeyRecord, ApiKeyStore, Store
from vault.domain.types import (
    AuditEvent,
    CallerName,
    IdempotencyRecord,
    StoredDataKey,
    StoredValue,
    SubjectId,
    Token,
    WrappedKey,
)
from vault.errors import Unauthenticated

POLICY = load_policy()
KEY_SHAPE = re.compile(r"pdv_([a-z2-7]{16})_([A-Za-z0-9_-]{43})")
MESSAGE = "missing or invalid API key (metadata 'authorization: Bearer <key>')"


class FakeStore:
    """Only the API-key part of the Store protocol; everything else is out of scope here.

    The signatures mirror `vault.domain.ports.Store`, so mypy checks that this is a Store.
    """

    def __init__(self) -> None:
        self.keys: dict[str, ApiKeyRecord] = {}
        self.lookups: list[str] = []

    def api_key(self, key_id: str) -> ApiKeyRecord | None:
        self.lookups.append(key_id)
        return self.keys.get(key_id)

    def add_api_key(self, record: ApiKeyRecord) -> None:
        self.keys[record.key_id] = record

    def callers_with_keys(self) -> set[CallerName]:
        return {r.caller for r in self.keys.values()}

    def data_keys(self, subjects: Collection[SubjectId]) -> dict[SubjectId, StoredDataKey]:
        raise NotImplementedError

    def values_and_keys(
        self, tokens: Collection[Token]
    ) -> tuple[dict[Token, StoredValue], dict[SubjectId, StoredDataKey]]:
        raise NotImplementedError

    def save_tokenized(
        self,
        *,
        subject: SubjectId,
        new_key: WrappedKey | None,
        encryption_limit: int,
        values: Sequence[StoredValue],
        audit: Sequence[AuditEvent],
        idempotency: IdempotencyRecord | None,
        now: datetime,
    ) -> None:
        raise NotImplementedError

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        raise NotImplementedError

    def idempotency(self, caller: CallerName, request_id: str) -> IdempotencyRecord | None:
        raise NotImplementedError

    def kek_version_counts(self) -> dict[tuple[str, int], int]:
        raise NotImplementedError

    def data_keys_to_rewrap(
        self, provider: str, below_version: int, limit: int
    ) -> list[StoredDataKey]:
        raise NotImplementedError

    def replace_wrapped_keys(
        self, updates: Sequence[tuple[StoredDataKey, WrappedKey]], audit: Sequence[AuditEvent]
    ) -> int:
        raise NotImplementedError


def _store_is_a_store(store: FakeStore) -> Store:
    return cast(Store, store)  # the full Store is more than authentication needs


def _fake_serves_authentication(store: FakeStore) -> ApiKeyStore:
    return store  # mypy checks that FakeStore satisfies what Authenticator needs


def _issue(store: FakeStore, caller: str) -> str:
    key, record = issue_api_key(CallerName(caller))
    store.add_api_key(record)
    return key


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def auth(store: FakeStore) -> Authenticator:
    return Authenticator(_store_is_a_store(store), POLICY)


# -- issue_api_key --------------------------------------------------------------------------------


def test_issue_api_key_shape_and_record() -> None:
    key, record = issue_api_key(CallerName("payment"))
    m = KEY_SHAPE.fullmatch(key)
    assert m is not None
    key_id, secret = m.groups()
    assert len(base64.b32decode(key_id.upper())) == 10
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert record == ApiKeyRecord(
        key_id=key_id,
        caller=CallerName("payment"),
        key_hash=hashlib.sha256(secret.encode("ascii")).digest(),
        revoked=False,
    )


def test_the_record_holds_only_a_hash() -> None:
    key, record = issue_api_key(CallerName("payment"))
    secret = key[21:]  # after "pdv_", the 16-character key id and "_"
    assert len(secret) == 43
    assert secret.encode() not in record.key_hash
    assert secret not in repr(record)
    assert len(record.key_hash) == 32


def test_issued_keys_are_distinct() -> None:
    issued = [issue_api_key(CallerName("payment")) for _ in range(200)]
    assert len({k for k, _ in issued}) == 200
    assert len({r.key_id for _, r in issued}) == 200


# -- Authenticator --------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["payment", "shipping", "support", "kyc", "ops"])
def test_valid_key_authenticates_its_caller(
    store: FakeStore, auth: Authenticator, caller: str
) -> None:
    key = _issue(store, caller)
    assert auth.authenticate(key) == caller


def test_each_key_maps_to_its_own_caller(store: FakeStore, auth: Authenticator) -> None:
    payment = _issue(store, "payment")
    support = _issue(store, "support")
    assert auth.authenticate(payment) == "payment"
    assert auth.authenticate(support) == "support"


def _refused(auth: Authenticator, presented: str | None) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as excinfo:
        auth.authenticate(presented)
    error = excinfo.value
    assert error.message == MESSAGE
    assert str(error) == MESSAGE
    assert error.reason == "UNAUTHENTICATED"
    return error


def _other_secret(key: str) -> str:
    head, secret = key[:21], key[21:]
    flipped = ("B" if secret[0] == "A" else "A") + secret[1:]
    return head + flipped


def test_wrong_secret(store: FakeStore, auth: Authenticator) -> None:
    key = _issue(store, "payment")
    _refused(auth, _other_secret(key))
    _refused(auth, _other_secret(_issue(FakeStore(), "payment")))


def test_unknown_key_id(store: FakeStore, auth: Authenticator) -> None:
    _issue(store, "payment")
    other, _ = issue_api_key(CallerName("payment"))  # never stored
    _refused(auth, other)
    assert store.lookups == [other[4:20]]  # the key id was looked up, and not found


def test_revoked_key(store: FakeStore, auth: Authenticator) -> None:
    key, record = issue_api_key(CallerName("payment"))
    store.add_api_key(ApiKeyRecord(record.key_id, record.caller, record.key_hash, revoked=True))
    _refused(auth, key)


def test_caller_not_in_policy(store: FakeStore, auth: Authenticator) -> None:
    key = _issue(store, "retired_service")
    _refused(auth, key)


@pytest.mark.parametrize(
    "presented",
    [
        pytest.param("", id="empty"),
        pytest.param(None, id="none"),
        pytest.param("pdv_", id="prefix-only"),
        pytest.param("not-a-key", id="garbage"),
        pytest.param("Bearer {key}", id="with-bearer"),
        pytest.param("{key} ", id="trailing-space"),
        pytest.param("{key}\n", id="trailing-newline"),
        pytest.param(" {key}", id="leading-space"),
        pytest.param("{key}A", id="secret-too-long"),
        pytest.param("{key_minus_one}", id="secret-too-short"),
        pytest.param("{upper_id}", id="upper-case-key-id"),
        pytest.param("PDV_{rest}", id="upper-case-prefix"),
        pytest.param("pdv-{rest}", id="wrong-separator"),
        pytest.param("{bad_char}", id="secret-with-non-url-safe-char"),
    ],
)
def test_malformed_keys(store: FakeStore, auth: Authenticator, presented: str | None) -> None:
    key = _issue(store, "payment")
    if presented is not None:
        key_id = key[4:20]
        presented = presented.format(
            key=key,
            key_minus_one=key[:-1],
            upper_id=f"pdv_{key_id.upper()}_{key[21:]}",
            rest=key[4:],
            bad_char=key[:-1] + "+",
        )
    _refused(auth, presented)
    assert store.lookups == []  # a malformed key is refused before any lookup


def test_every_failure_has_the_same_message(store: FakeStore, auth: Authenticator) -> None:
    valid = _issue(store, "payment")
    revoked, record = issue_api_key(CallerName("payment"))
    store.add_api_key(ApiKeyRecord(record.key_id, record.caller, record.key_hash, revoked=True))
    ghost = _issue(store, "ghost")
    unknown, _ = issue_api_key(CallerName("payment"))
    failures = [_other_secret(valid), unknown, "pdv_nope", "", None, revoked, ghost]
    messages = {_refused(auth, presented).message for presented in failures}
    assert messages == {MESSAGE}
    for presented in (valid, revoked, ghost, unknown):
        assert presented[4:20] not in MESSAGE
        assert presented[21:] not in MESSAGE


def test_refusals_do_not_chain_the_cause(store: FakeStore, auth: Authenticator) -> None:
    key = _issue(store, "payment")
    error = _refused(auth, _other_secret(key))
    assert error.__cause__ is None


def test_valid_keys_are_remembered_for_a_while_and_revocation_then_holds(
    store: FakeStore,
) -> None:
    now = [0.0]
    auth = Authenticator(store, POLICY, cache_seconds=30, clock=lambda: now[0])
    key, record = issue_api_key(CallerName("payment"))
    store.add_api_key(record)
    assert auth.authenticate(key) == "payment"
    store.add_api_key(ApiKeyRecord(record.key_id, record.caller, record.key_hash, revoked=True))
    now[0] = 29.0
    assert auth.authenticate(key) == "payment"  # within the documented window
    now[0] = 31.0
    _refused(auth, key)
    # A wrong secret for a remembered key id is still refused.
    now[0] = 0.0
    other, rec2 = issue_api_key(CallerName("kyc"))
    store.add_api_key(rec2)
    assert auth.authenticate(other) == "kyc"
    _refused(auth, other[:-1] + ("A" if other[-1] != "A" else "B"))
