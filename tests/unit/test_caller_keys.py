"""Caller authentication by API key, against a tiny in-memory store."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from vault.domain.callers import Authenticator, issue_api_key
from vault.domain.policy_file import load_policy
from vault.domain.stores import ApiKeyRecord, CredentialStore
from vault.domain.types import CallerName
from vault.errors import Reason, Unauthenticated
from vault.storage.memory import MemoryCredentialStore, MemoryState

POLICY = load_policy()
KEY_SHAPE = re.compile(r"pdv_([a-z2-7]{16})_([A-Za-z0-9_-]{43})")
MESSAGE = "missing or invalid API key (metadata 'authorization: Bearer <key>')"


class FakeKeyStore(MemoryCredentialStore):
    """A `CredentialStore` in memory that counts how often the key table was read."""

    def __init__(self) -> None:
        super().__init__(MemoryState())
        self.reads = 0

    @property
    def keys(self) -> dict[str, ApiKeyRecord]:
        return self._s.api_keys

    def api_keys(self) -> list[ApiKeyRecord]:
        self.reads += 1
        return super().api_keys()


def _fake_is_a_credential_store(store: FakeKeyStore) -> CredentialStore:
    return store  # mypy checks that the fake is a CredentialStore, without a cast


def _issue(store: FakeKeyStore, caller: str) -> str:
    key, record = issue_api_key(CallerName(caller))
    store.add_api_key(record)
    return key


@pytest.fixture
def store() -> FakeKeyStore:
    return FakeKeyStore()


@pytest.fixture
def auth(store: FakeKeyStore) -> Authenticator:
    return Authenticator(store, POLICY)


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
    store: FakeKeyStore, auth: Authenticator, caller: str
) -> None:
    key = _issue(store, caller)
    assert auth.authenticate(key) == caller


def test_each_key_maps_to_its_own_caller(store: FakeKeyStore, auth: Authenticator) -> None:
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
    assert error.reason is Reason.UNAUTHENTICATED
    return error


def _other_secret(key: str) -> str:
    head, secret = key[:21], key[21:]
    flipped = ("B" if secret[0] == "A" else "A") + secret[1:]
    return head + flipped


def test_wrong_secret(store: FakeKeyStore, auth: Authenticator) -> None:
    key = _issue(store, "payment")
    _refused(auth, _other_secret(key))
    _refused(auth, _other_secret(_issue(FakeKeyStore(), "payment")))


def test_unknown_key_id(store: FakeKeyStore, auth: Authenticator) -> None:
    _issue(store, "payment")
    other, _ = issue_api_key(CallerName("payment"))  # never stored
    _refused(auth, other)
    assert store.reads == 1  # the table was read, and the key id is not in it


def test_a_flood_of_made_up_keys_is_answered_from_memory(store: FakeKeyStore) -> None:
    """Issue #8 item 2: an unknown key id must not cost a database round trip each time."""
    now = [0.0]
    auth = Authenticator(store, POLICY, clock=lambda: now[0])
    valid = _issue(store, "payment")
    assert auth.authenticate(valid) == "payment"
    for _ in range(1000):
        _refused(auth, issue_api_key(CallerName("payment"))[0])
    assert store.reads == 1  # within the same second: no more reads
    now[0] = 1.5
    for _ in range(1000):
        _refused(auth, issue_api_key(CallerName("payment"))[0])
    assert store.reads == 2  # at most one read a second
    # A key added elsewhere is found by that read.
    added = _issue(store, "kyc")
    now[0] = 3.0
    assert auth.check(added) is None  # unknown in memory: a read is due
    assert auth.authenticate(added) == "kyc"


def test_check_never_reads_the_store(store: FakeKeyStore, auth: Authenticator) -> None:
    key = _issue(store, "payment")
    assert auth.check(key) is None  # nothing loaded yet: the caller must refresh off the loop
    assert store.reads == 0
    auth.refresh()
    assert auth.check(key) == "payment"
    assert store.reads == 1


def test_revoked_key(store: FakeKeyStore, auth: Authenticator) -> None:
    key, record = issue_api_key(CallerName("payment"))
    store.add_api_key(ApiKeyRecord(record.key_id, record.caller, record.key_hash, revoked=True))
    _refused(auth, key)


def test_caller_not_in_policy(store: FakeKeyStore, auth: Authenticator) -> None:
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
def test_malformed_keys(store: FakeKeyStore, auth: Authenticator, presented: str | None) -> None:
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
    assert store.reads == 0  # a malformed key is refused before any lookup


def test_every_failure_has_the_same_message(store: FakeKeyStore, auth: Authenticator) -> None:
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


def test_refusals_do_not_chain_the_cause(store: FakeKeyStore, auth: Authenticator) -> None:
    key = _issue(store, "payment")
    error = _refused(auth, _other_secret(key))
    assert error.__cause__ is None


def test_valid_keys_are_remembered_for_a_while_and_revocation_then_holds(
    store: FakeKeyStore,
) -> None:
    now = [0.0]
    auth = Authenticator(store, POLICY, refresh_seconds=30, clock=lambda: now[0])
    key, record = issue_api_key(CallerName("payment"))
    store.add_api_key(record)
    assert auth.authenticate(key) == "payment"
    store.keys[record.key_id] = ApiKeyRecord(record.key_id, record.caller, record.key_hash, True)
    now[0] = 29.0
    assert auth.authenticate(key) == "payment"  # within the documented window
    now[0] = 31.0
    _refused(auth, key)
    # A wrong secret for a remembered key id is still refused.
    now[0] = 62.0
    other, rec2 = issue_api_key(CallerName("kyc"))
    store.add_api_key(rec2)
    assert auth.authenticate(other) == "kyc"
    _refused(auth, other[:-1] + ("A" if other[-1] != "A" else "B"))
