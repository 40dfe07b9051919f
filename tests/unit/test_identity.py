"""Workload identities: SPIFFE IDs in the policy, client certificates read as X509-SVIDs, and how
a certificate and an API key together name one caller (vault.domain.identity, vault.crypto.svid)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.conftest import policy_with
from tests.pki import Authority
from vault.crypto.svid import CertificateCache, read_peer_certificate, tls_files_problem
from vault.domain.callers import Authenticator, issue_api_key
from vault.domain.identity import (
    UNIDENTIFIED,
    Identification,
    PeerCertificate,
    spiffe_id_problem,
)
from vault.domain.policy import Policy
from vault.domain.policy_file import default_policy_text, parse_policy
from vault.domain.types import Action, CallerName, Outcome
from vault.errors import ConfigurationError, PermissionDenied, Reason, Unauthenticated
from vault.storage.memory import MemoryState, memory_stores

PAYMENTS = "spiffe://example.org/ns/payments/sa/api"
PAYMENTS_BATCH = "spiffe://example.org/ns/payments/sa/batch"
KYC = "spiffe://example.org/ns/kyc/sa/api"


POLICY = parse_policy(
    policy_with(
        payment=f'spiffe_id = ["{PAYMENTS}", "{PAYMENTS_BATCH}"]',
        kyc=f'spiffe_id = "{KYC}"\nrequire_mtls = true',
    )
)


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority()


# -- SPIFFE IDs and the policy --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [PAYMENTS, "spiffe://td/a", "spiffe://my-domain.example_1/a.b/c-d/e_f"],
)
def test_workload_spiffe_ids(text: str) -> None:
    assert spiffe_id_problem(text) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("spiffe://example.org", "has a path"),
        ("spiffe://example.org/", "not a SPIFFE ID"),
        ("spiffe://example.org/a//b", "not a SPIFFE ID"),
        ("spiffe://example.org/a/", "not a SPIFFE ID"),
        ("spiffe://example.org/a/../b", "'.' or '..'"),
        ("spiffe://example.org/./b", "'.' or '..'"),
        ("spiffe://Example.org/a", "not a SPIFFE ID"),
        ("spiffe://example.org:8443/a", "not a SPIFFE ID"),
        ("spiffe://user@example.org/a", "not a SPIFFE ID"),
        ("spiffe://example.org/a?b=c", "not a SPIFFE ID"),
        ("spiffe://example.org/a#b", "not a SPIFFE ID"),
        ("spiffe://example.org/a%20b", "not a SPIFFE ID"),
        ("SPIFFE://example.org/a", "not a SPIFFE ID"),
        ("https://example.org/a", "not a SPIFFE ID"),
        ("spiffe://example.org/" + "a" * 2100, "at most 2048 bytes"),
    ],
)
def test_not_workload_spiffe_ids(text: str, says: str) -> None:
    problem = spiffe_id_problem(text)
    assert problem is not None
    assert says in problem


def test_the_policy_maps_spiffe_ids_to_callers() -> None:
    assert POLICY.caller_of_workload(PAYMENTS) == "payment"
    assert POLICY.caller_of_workload(PAYMENTS_BATCH) == "payment"
    assert POLICY.caller_of_workload(KYC) == "kyc"
    assert POLICY.caller_of_workload("spiffe://example.org/ns/other/sa/api") is None
    assert POLICY.callers[CallerName("kyc")].require_mtls
    assert not POLICY.callers[CallerName("payment")].require_mtls
    assert POLICY.callers[CallerName("payment")].spiffe_ids == {PAYMENTS, PAYMENTS_BATCH}


def test_the_default_policy_maps_no_workload() -> None:
    default = parse_policy(default_policy_text())
    assert all(not c.spiffe_ids and not c.require_mtls for c in default.callers.values())


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ('spiffe_id = "spiffe://example.org"', "callers.ops.spiffe_id: 'spiffe://example.org'"),
        ("spiffe_id = 3", "callers.ops.spiffe_id: must be a SPIFFE ID or a list of them"),
        ('spiffe_id = ["spiffe://a/b", 3]', "must be a SPIFFE ID or a list of them"),
        ("require_mtls = true", "callers.ops.require_mtls: this caller could never call"),
        ('require_mtls = "yes"', "callers.ops.require_mtls: must be true or false"),
        (f'spiffe_id = "{PAYMENTS}"', "is already the identity of caller"),
    ],
)
def test_policy_mistakes_about_workloads(lines: str, says: str) -> None:
    text = policy_with(ops=lines, payment=f'spiffe_id = "{PAYMENTS}"')
    with pytest.raises(ConfigurationError) as err:
        parse_policy(text)
    assert says in err.value.message


# -- client certificates as X509-SVIDs ------------------------------------------------------------


def test_an_svid_says_its_spiffe_id(ca: Authority) -> None:
    peer = read_peer_certificate(ca.client(PAYMENTS, dns=("payments.internal",)).cert)
    assert peer.problem is None
    assert peer.spiffe_id == PAYMENTS
    assert len(peer.fingerprint) == 64
    assert peer.not_after > datetime.now(UTC)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda ca: ca.client(), "it has 0 URI SANs; an X509-SVID has exactly one"),
        (lambda ca: ca.client(dns=("a.internal",)), "it has 0 URI SANs"),
        (lambda ca: ca.client(PAYMENTS, KYC), "it has 2 URI SANs"),
        (lambda ca: ca.client("https://example.org/a"), "its URI SAN: not a SPIFFE ID"),
        (lambda ca: ca.client("spiffe://example.org"), "its URI SAN: a workload's SPIFFE ID"),
        (lambda ca: ca.client(PAYMENTS, ca=True), "it is a CA certificate"),
        (
            lambda ca: ca.client(PAYMENTS, eku=ExtendedKeyUsageOID.SERVER_AUTH),
            "does not allow clientAuth",
        ),
    ],
)
def test_what_is_not_an_svid(ca: Authority, make: object, says: str) -> None:
    assert callable(make)
    peer = read_peer_certificate(make(ca).cert)
    assert peer.spiffe_id is None
    assert peer.problem is not None
    assert says in peer.problem
    assert "example.org" not in peer.problem  # the certificate's text is never echoed


def test_garbage_is_not_a_certificate() -> None:
    peer = read_peer_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert peer.spiffe_id is None
    assert peer.problem == "it cannot be read"


def test_certificates_are_read_once(ca: Authority, monkeypatch: pytest.MonkeyPatch) -> None:
    from vault.crypto import svid

    reads: list[bytes] = []
    real = svid.read_peer_certificate

    def counting(pem: bytes) -> PeerCertificate:
        reads.append(pem)
        return real(pem)

    monkeypatch.setattr(svid, "read_peer_certificate", counting)
    cache = CertificateCache(max_entries=2)
    one, two, three = (ca.client(f"spiffe://example.org/w{i}").cert for i in range(3))
    assert cache.read(one) is cache.read(one)
    assert len(reads) == 1
    cache.read(two)
    cache.read(one)  # the most recently used now
    cache.read(three)  # forgets two
    assert len(cache) == 2
    cache.read(one)
    assert len(reads) == 3
    cache.read(two)
    assert len(reads) == 4


def test_tls_files_that_do_not_belong_together(ca: Authority) -> None:
    server, other = ca.server(), ca.server()
    assert tls_files_problem(server.cert, server.key, ca.pem) is None
    assert tls_files_problem(server.cert, server.key, None) is None
    mismatch = tls_files_problem(server.cert, other.key, None)
    assert mismatch == "the key is not the key of the certificate file's first certificate"
    assert tls_files_problem(b"junk", server.key, None) == (
        "the certificate file holds no PEM certificate"
    )
    assert tls_files_problem(server.cert, b"junk", None) == (
        "the key file holds no unencrypted PEM private key"
    )
    assert tls_files_problem(server.cert, server.key, b"junk") == (
        "the client CA file holds no PEM certificate"
    )


# -- a certificate, a key, or both ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclasses.dataclass
class World:
    ident: Identification
    state: MemoryState
    keys: dict[str, str]
    clock: Clock


def world(policy: Policy = POLICY) -> World:
    state = MemoryState()
    stores = memory_stores(state)
    keys = {}
    for name in ("payment", "kyc", "shipping"):
        key, record = issue_api_key(CallerName(name))
        stores.credentials.add_api_key(record)
        keys[name] = key
    auth = Authenticator(stores.credentials, policy)
    auth.refresh()
    clock = Clock()
    return World(Identification(auth, policy, stores.audit, clock), state, keys, clock)


def peer(spiffe_id: str | None, problem: str | None = None) -> PeerCertificate:
    return PeerCertificate("ab" * 32, spiffe_id, problem, datetime.now(UTC) + timedelta(hours=1))


def test_a_certificate_alone_names_its_caller() -> None:
    w = world()
    assert w.ident.check(peer(PAYMENTS), None) == "payment"
    assert w.ident.check(peer(PAYMENTS_BATCH), None) == "payment"
    assert w.ident.authenticate(peer(KYC), None) == "kyc"
    assert w.state.audit == []


def test_an_api_key_alone_names_its_caller_unless_mtls_is_required() -> None:
    w = world()
    assert w.ident.check(None, w.keys["payment"]) == "payment"
    assert w.ident.check(None, w.keys["kyc"]) is None  # a refusal to audit: off the loop
    with pytest.raises(Unauthenticated) as err:
        w.ident.authenticate(None, w.keys["kyc"])
    assert err.value.reason is Reason.MTLS_REQUIRED
    assert w.keys["kyc"] not in err.value.message
    [event] = w.state.audit
    assert (event.caller, event.action, event.outcome) == (
        "kyc",
        Action.AUTHENTICATE,
        Outcome.REFUSED,
    )
    assert event.rule == "caller:kyc:require_mtls"
    assert w.keys["kyc"] not in repr(event)


def test_a_bad_key_without_a_certificate_is_not_audited() -> None:
    w = world()
    for presented in (None, "pdv_nope", w.keys["payment"][:-1] + "x"):
        with pytest.raises(Unauthenticated) as err:
            w.ident.authenticate(None, presented)
        assert err.value.reason is Reason.UNAUTHENTICATED
    assert w.state.audit == []


def test_an_unknown_identity_is_denied_and_audited() -> None:
    w = world()
    stranger = "spiffe://evil.example/ns/payments/sa/api"
    assert w.ident.check(peer(stranger), None) is None
    with pytest.raises(PermissionDenied) as err:
        w.ident.authenticate(peer(stranger), None)
    assert err.value.reason is Reason.IDENTITY_UNKNOWN
    assert err.value.rule == "identity:spiffe_id:unknown"
    [event] = w.state.audit
    assert event.caller == UNIDENTIFIED
    assert event.rule == "identity:spiffe_id:unknown"
    assert event.detail is not None
    assert stranger in event.detail
    assert "sha256:abababab" in event.detail


def test_a_certificate_that_is_not_an_svid_is_unauthenticated_and_audited() -> None:
    w = world()
    bad = peer(None, "it has 2 URI SANs; an X509-SVID has exactly one")
    assert w.ident.check(bad, w.keys["payment"]) is None
    with pytest.raises(Unauthenticated) as err:
        w.ident.authenticate(bad, w.keys["payment"])  # a valid key does not rescue it
    assert err.value.reason is Reason.CERTIFICATE_REFUSED
    assert "2 URI SANs" in err.value.message
    [event] = w.state.audit
    assert event.rule == "identity:certificate:x509_svid"


def test_a_certificate_that_expired_since_the_handshake_is_refused() -> None:
    w = world()
    good = peer(PAYMENTS)
    w.clock.now = good.not_after
    with pytest.raises(Unauthenticated) as err:
        w.ident.authenticate(good, None)
    assert err.value.reason is Reason.CERTIFICATE_REFUSED
    assert "expired" in err.value.message
    [event] = w.state.audit
    assert event.rule == "identity:certificate:expired"


def test_a_certificate_and_a_key_must_name_the_same_caller() -> None:
    w = world()
    assert w.ident.check(peer(PAYMENTS), w.keys["payment"]) == "payment"
    assert w.ident.check(peer(KYC), w.keys["kyc"]) == "kyc"  # require_mtls: a certificate is there
    assert w.state.audit == []
    assert w.ident.check(peer(PAYMENTS), w.keys["shipping"]) is None
    with pytest.raises(Unauthenticated) as err:
        w.ident.authenticate(peer(PAYMENTS), w.keys["shipping"])
    assert err.value.reason is Reason.CREDENTIALS_DISAGREE
    assert "shipping" not in err.value.message
    [event] = w.state.audit
    assert event.caller == "payment"
    assert event.rule == "identity:credentials:agree"
    assert event.detail is not None
    assert "'shipping'" in event.detail
    assert w.keys["shipping"] not in event.detail


def test_a_bad_key_beside_a_good_certificate_is_refused() -> None:
    w = world()
    with pytest.raises(Unauthenticated) as err:
        w.ident.authenticate(peer(PAYMENTS), "pdv_made_up")
    assert err.value.reason is Reason.UNAUTHENTICATED


def test_audit_details_fit_their_column() -> None:
    w = world()
    long_id = "spiffe://example.org/" + "/".join(["segment"] * 200)
    with pytest.raises(PermissionDenied):
        w.ident.authenticate(peer(long_id), None)
    [event] = w.state.audit
    assert event.detail is not None
    assert len(event.detail) == 256
    assert event.detail.endswith("...")
