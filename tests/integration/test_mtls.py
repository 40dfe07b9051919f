"""mTLS with workload identities (issue #12 §1, "Bad input and faults"): a server in this process
on TLS with client certificates, clients with certificates made in memory (tests/pki.py).

What `pdv serve` does with each setting, and that no key reaches its log, is
test_mtls_serve.py's; the reading of certificates and the rules of identification are
tests/unit/test_identity.py's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from pdvault_client import (
    Client,
    Field,
    PdvaultError,
    PermissionDeniedError,
    RetryPolicy,
    UnauthenticatedError,
    UnavailableError,
)
from tests.conftest import policy_with
from tests.pki import Authority, Issued
from vault.app import App, build_app
from vault.config import Settings
from vault.transport.server import ServerThread

PAYMENTS = "spiffe://example.org/ns/payments/sa/api"
KYC = "spiffe://example.org/ns/kyc/sa/api"
CARD = "4111111111111111"


@dataclass
class Pki:
    ca: Authority
    foreign: Authority
    server: Issued
    dir: Path

    def settings(self, tmp: Path, **overrides: object) -> Settings:
        cert, key = self.server.write(self.dir, "server")
        policy = tmp / "policy.toml"
        policy.write_text(
            policy_with(
                payment=f'spiffe_id = "{PAYMENTS}"',
                kyc=f'spiffe_id = "{KYC}"\nrequire_mtls = true',
            )
        )
        base = Settings(
            addr="127.0.0.1:0",
            data_dir=tmp / "data",
            database_url=f"sqlite:///{tmp / 'pdvault.db'}",
            max_workers=4,
            policy_file=policy,
            retention_sweep_interval=0,
            tls_cert=cert,
            tls_key=key,
            tls_client_ca=self.ca.write(self.dir / "clients-ca.pem"),
        )
        return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = Authority()
    return Pki(ca, Authority("someone else's CA"), ca.server(), tmp_path_factory.mktemp("pki"))


@dataclass
class Running:
    app: App
    port: int
    mtls_port: int | None
    pki: Pki

    def keys(self) -> dict[str, str]:
        keys: dict[str, str] = json.loads(self.app.settings.credentials_file.read_text())
        return keys

    def client(
        self, cert: Issued | None = None, key: str | None = None, *, mtls_port: bool = False
    ) -> Client:
        """A client that does not retry, so that a refused handshake shows at once."""
        port = self.mtls_port if mtls_port else self.port
        return Client(
            f"localhost:{port}",
            key,
            tls_ca=self.pki.ca.pem,
            tls_cert=cert.cert if cert else None,
            tls_key=cert.key if cert else None,
            timeout=5.0,
            retry=RetryPolicy(attempts=1),
        )

    def refusals(self) -> list[tuple[str, str, str, str | None]]:
        with self.app.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT caller, outcome, rule, detail FROM audit_events "
                    "WHERE action = 'authenticate' ORDER BY id"
                )
            ).all()
        return [(r[0], r[1], r[2], r[3]) for r in rows]


@contextmanager
def running(settings: Settings, pki: Pki) -> Iterator[Running]:
    app = build_app(settings)
    try:
        srv = ServerThread(app, settings.addr)
        try:
            yield Running(app, srv.port, srv.mtls_port, pki)
        finally:
            srv.stop(grace=None)
    finally:
        app.close()


@pytest.fixture(scope="module")
def required(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """PDV_TLS_CLIENT_AUTH=require (the default with a client CA)."""
    tmp = tmp_path_factory.mktemp("required")
    with running(pki.settings(tmp), pki) as srv:
        yield srv


def roundtrip(client: Client) -> str | bytes | None:
    [tok] = client.tokenize("user-1", [Field("card_number", CARD)])
    [got] = client.detokenize([tok.token], "payment")
    return got.value


# -- require ----------------------------------------------------------------------------------


def test_a_mapped_certificate_calls_without_an_api_key(required: Running) -> None:
    with required.client(required.pki.ca.client(PAYMENTS)) as payment:
        assert roundtrip(payment) == CARD


@pytest.mark.parametrize(
    "cert",
    [
        pytest.param(lambda pki: None, id="no certificate"),
        pytest.param(lambda pki: pki.foreign.client(PAYMENTS), id="a foreign CA"),
        pytest.param(lambda pki: pki.ca.client(PAYMENTS, expired=True), id="expired"),
    ],
)
def test_the_handshake_refuses(required: Running, cert: object) -> None:
    assert callable(cert)
    # Not even a valid API key helps: no handler runs, so nothing is audited either.
    before = required.refusals()
    with (
        required.client(cert(required.pki), required.keys()["payment"]) as client,
        pytest.raises(UnavailableError),
    ):
        roundtrip(client)
    assert required.refusals() == before


def test_a_certificate_with_two_uri_sans_is_unauthenticated_and_audited(
    required: Running,
) -> None:
    two = required.pki.ca.client(PAYMENTS, "spiffe://example.org/ns/other/sa/x")
    with required.client(two) as client, pytest.raises(UnauthenticatedError) as err:
        roundtrip(client)
    assert err.value.reason == "CERTIFICATE_REFUSED"
    assert "2 URI SANs" in err.value.message
    caller, outcome, rule, detail = required.refusals()[-1]
    assert (caller, outcome, rule) == (
        "mtls:unidentified",
        "refused",
        "identity:certificate:x509_svid",
    )
    assert detail is not None
    assert "2 URI SANs" in detail


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda ca: ca.client(dns=("payments.internal",)), "0 URI SANs"),
        (lambda ca: ca.client("https://example.org/ns/payments"), "not a SPIFFE ID"),
        (lambda ca: ca.client(PAYMENTS, ca=True), "a CA certificate"),
    ],
)
def test_certificates_that_are_not_svids_are_unauthenticated(
    required: Running, make: object, says: str
) -> None:
    assert callable(make)
    with required.client(make(required.pki.ca)) as client, pytest.raises(UnauthenticatedError) as e:
        roundtrip(client)
    assert e.value.reason == "CERTIFICATE_REFUSED"
    assert says in e.value.message
    assert required.refusals()[-1][2] == "identity:certificate:x509_svid"


@pytest.mark.parametrize(
    "spiffe_id",
    ["spiffe://example.org/ns/payments/sa/other", "spiffe://evil.example/ns/payments/sa/api"],
)
def test_an_unknown_identity_is_denied_and_audited(required: Running, spiffe_id: str) -> None:
    with (
        required.client(required.pki.ca.client(spiffe_id)) as client,
        pytest.raises(PermissionDeniedError) as err,
    ):
        roundtrip(client)
    assert err.value.reason == "IDENTITY_UNKNOWN"
    assert err.value.metadata.get("rule") == "identity:spiffe_id:unknown"
    caller, outcome, rule, detail = required.refusals()[-1]
    assert (caller, outcome, rule) == ("mtls:unidentified", "refused", "identity:spiffe_id:unknown")
    assert detail is not None
    assert spiffe_id in detail


def test_a_certificate_and_a_key_must_name_the_same_caller(required: Running) -> None:
    payments = required.pki.ca.client(PAYMENTS)
    keys = required.keys()
    with required.client(payments, keys["payment"]) as both:
        assert roundtrip(both) == CARD
    with (
        required.client(payments, keys["shipping"]) as mixed,
        pytest.raises(UnauthenticatedError) as err,
    ):
        roundtrip(mixed)
    assert err.value.reason == "CREDENTIALS_DISAGREE"
    caller, _outcome, rule, detail = required.refusals()[-1]
    assert (caller, rule) == ("payment", "identity:credentials:agree")
    assert detail is not None
    assert keys["shipping"] not in detail


def test_no_key_or_certificate_private_part_reaches_a_log_or_an_error(
    required: Running, caplog: pytest.LogCaptureFixture
) -> None:
    keys = required.keys()
    certs = [
        required.pki.ca.client(PAYMENTS),
        required.pki.ca.client(PAYMENTS, KYC),
        required.pki.ca.client("spiffe://example.org/ns/nobody/sa/x"),
        required.pki.foreign.client(PAYMENTS),
    ]
    said: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for cert in certs:
            for key in (None, keys["shipping"], "pdv_" + "a" * 16 + "_" + "b" * 43):
                with required.client(cert, key) as client:
                    try:
                        roundtrip(client)
                    except PdvaultError as exc:
                        said.append(f"{exc.code.name} {exc.reason} {exc.message} {exc.metadata}")
    secrets = [c.key_body() for c in [*certs, required.pki.server]]
    secrets += [k[len("pdv_") + 17 :] for k in keys.values()]
    audit = "\n".join(str(r) for r in required.refusals())
    for secret in secrets:
        assert secret not in caplog.text
        assert secret not in audit
        assert not any(secret in s for s in said)
    assert len(said) >= 9  # the refusals happened, and were looked at


# -- optional: two ports ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def optional(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("optional")
    settings = pki.settings(tmp, tls_client_auth="optional", mtls_addr="127.0.0.1:0")
    with running(settings, pki) as srv:
        assert srv.mtls_port is not None
        assert srv.mtls_port != srv.port
        yield srv


def test_optional_api_key_callers_still_work(optional: Running) -> None:
    with optional.client(None, optional.keys()["payment"]) as payment:
        assert roundtrip(payment) == CARD


def test_optional_certificates_are_read_on_the_mtls_port(optional: Running) -> None:
    cert = optional.pki.ca.client(PAYMENTS)
    with optional.client(cert, mtls_port=True) as payment:
        assert roundtrip(payment) == CARD
    with optional.client(None, mtls_port=True) as nobody, pytest.raises(UnavailableError):
        roundtrip(nobody)
    # PDV_ADDR asks for no certificate: one sent there says nothing, and a key is needed.
    with optional.client(cert) as unasked, pytest.raises(UnauthenticatedError) as err:
        roundtrip(unasked)
    assert err.value.reason == "UNAUTHENTICATED"


def test_a_caller_that_requires_mtls_is_refused_with_its_key_alone(optional: Running) -> None:
    key = optional.keys()["kyc"]
    with optional.client(None, key) as kyc, pytest.raises(UnauthenticatedError) as err:
        kyc.tokenize("user-2", [Field("name", "Ann Lee")])
    assert err.value.reason == "MTLS_REQUIRED"
    assert key not in err.value.message
    caller, outcome, rule, _detail = optional.refusals()[-1]
    assert (caller, outcome, rule) == ("kyc", "refused", "caller:kyc:require_mtls")
    with optional.client(optional.pki.ca.client(KYC), key, mtls_port=True) as kyc:
        [tok] = kyc.tokenize("user-2", [Field("name", "Ann Lee")])
    assert tok.token.startswith("tok_")


# -- reloading --------------------------------------------------------------------------------


def _replace(path: Path, data: bytes) -> None:
    new = path.with_suffix(".new")
    new.write_bytes(data)
    os.replace(new, path)


def test_a_new_client_ca_is_used_for_new_connections(pki: Pki, tmp_path: Path) -> None:
    with running(pki.settings(tmp_path), pki) as srv:
        old_ca, new_ca = pki.ca, Authority("the next client CA")
        held = srv.client(old_ca.client(PAYMENTS))  # connected before the rotation
        assert roundtrip(held) == CARD
        ca_file = srv.app.settings.tls_client_ca
        assert ca_file is not None
        _replace(ca_file, new_ca.pem)
        # The files are read again at the next connection's handshake.
        with srv.client(new_ca.client(PAYMENTS)) as fresh:
            assert roundtrip(fresh) == CARD
        with srv.client(old_ca.client(PAYMENTS)) as stale, pytest.raises(UnavailableError):
            roundtrip(stale)
        # A connection made before keeps its handshake until PDV_MAX_CONNECTION_AGE ends it
        # (test_mtls_serve.py shows that end).
        assert roundtrip(held) == CARD
        held.close()
