"""VaultTransitKeyProvider against the emulator: calls per batch, failures, authentication."""

from __future__ import annotations

import base64
import logging
import re
import time
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests

import vault
from tests.conftest import Transit, hcl_policy
from vault.domain.context import RequestContext
from vault.domain.secrets import Secret
from vault.domain.types import CallerName, SubjectId, WrappedKey
from vault.errors import (
    ConfigurationError,
    FailedPrecondition,
    KeyServiceDenied,
    KeyServiceUnavailable,
    PdvaultError,
)
from vault.kms.transit import TransitSigner, VaultTransitKeyProvider
from vault.kms.vault_http import (
    KEY_MISSING,
    LOGIN_REFUSED,
    REFUSED,
    SEALED,
    SERVICE,
    STATUS_TABLE,
    TOKEN_INVALID,
    classify,
    login_role,
)

CTX = RequestContext.system("test")


def keys(n: int) -> list[tuple[SubjectId, Secret]]:
    return [(SubjectId(f"s{i}"), Secret(bytes([i % 256]) * 32)) for i in range(n)]


def test_a_batch_costs_one_transit_call(transit: Transit) -> None:
    provider = transit.provider()
    provider.status(CTX)  # token lookup and key read happen once, up front
    transit.emulator.reset_calls()
    batch = keys(100)
    wrapped = provider.wrap(CTX, batch)
    assert transit.emulator.calls["encrypt"] == 1
    unwrapped = provider.unwrap(CTX, [(s, w) for (s, _), w in zip(batch, wrapped, strict=True)])
    assert transit.emulator.calls["decrypt"] == 1
    assert unwrapped == [k for _, k in batch]
    rewrapped = provider.rewrap(CTX, [(s, w) for (s, _), w in zip(batch, wrapped, strict=True)])
    assert transit.emulator.calls["rewrap"] == 1
    assert all(r is not None for r in rewrapped)
    assert provider.calls == 3
    assert set(transit.emulator.calls) <= {"encrypt", "decrypt", "rewrap"}


def test_wrapped_keys_look_like_transit_ciphertexts(transit: Transit) -> None:
    [w] = transit.provider().wrap(CTX, keys(1))
    assert w.provider == "vault-transit"
    assert w.kek_version == 1
    assert w.blob.startswith(b"vault:v1:")


def test_one_bad_item_does_not_fail_the_batch(transit: Transit) -> None:
    provider = transit.provider()
    [good] = provider.wrap(CTX, keys(1))
    bad = WrappedKey("vault-transit", 1, b"vault:v1:AAAA")
    foreign = WrappedKey("local", 1, b"\x01" * 49)
    out = provider.unwrap(
        CTX, [(SubjectId("a"), bad), (SubjectId("s0"), good), (SubjectId("b"), foreign)]
    )
    assert out[0] is None
    assert out[1] == Secret(bytes([0]) * 32)
    assert out[2] is None


def test_sealed_vault_is_unavailable_with_an_actionable_message(transit: Transit) -> None:
    provider = transit.provider(retry_budget=0.3)
    provider.status(CTX)
    transit.emulator.seal()
    with pytest.raises(KeyServiceUnavailable, match="sealed"):
        provider.wrap(CTX, keys(1))
    transit.emulator.unseal()
    assert len(provider.wrap(CTX, keys(1))) == 1


def test_unreachable_vault_is_unavailable(transit: Transit) -> None:
    provider = transit.provider(retry_budget=0.3)
    provider.status(CTX)
    transit.emulator.stop()
    with pytest.raises(KeyServiceUnavailable, match="cannot be reached"):
        provider.unwrap(CTX, [(SubjectId("s"), WrappedKey("vault-transit", 1, b"vault:v1:AAAA"))])


def test_a_slow_vault_gives_up_within_the_request_deadline(transit: Transit) -> None:
    provider = transit.provider(request_timeout=5.0, retry_budget=5.0)
    provider.status(CTX)
    transit.emulator.set_latency(3.0)
    with pytest.raises(KeyServiceUnavailable, match=r"slow|deadline"):
        provider.wrap(RequestContext.for_call(CallerName("test"), 0.4), keys(1))
    transit.emulator.set_latency(0.0)


def test_transient_errors_are_retried(transit: Transit) -> None:
    provider = transit.provider()
    provider.status(CTX)
    transit.emulator.fail_next(2, status=500, path_contains="encrypt")
    assert len(provider.wrap(CTX, keys(1))) == 1
    assert transit.emulator.calls["encrypt"] == 3


def test_a_missing_capability_is_denied_naming_the_policy(transit: Transit) -> None:
    # A token without decrypt: pdvault's own token, misconfigured.
    policy = {p: c for p, c in hcl_policy("pdvault-service.hcl").items() if "decrypt" not in p}
    provider = transit.provider(token=Secret(transit.emulator.create_token(policy).encode()))
    [w] = provider.wrap(CTX, keys(1))
    with pytest.raises(KeyServiceDenied, match="pdvault-service"):
        provider.unwrap(CTX, [(SubjectId("s0"), w)])


def test_the_service_policy_cannot_create_a_key(transit: Transit) -> None:
    provider = transit.provider(key="other")
    with pytest.raises(KeyServiceDenied):
        provider.wrap(CTX, keys(1))  # encrypt on a missing key would upsert it: needs `create`


def test_a_missing_key_says_how_to_bootstrap(transit: Transit) -> None:
    provider = transit.provider(key="missing", token=Secret(b"root"))
    with pytest.raises(ConfigurationError, match="bootstrap"):
        provider.status(CTX)


def test_an_expired_static_token_is_denied(transit: Transit) -> None:
    token = transit.emulator.create_token(hcl_policy("pdvault-service.hcl"), ttl=60)
    provider = transit.provider(token=Secret(token.encode()))
    provider.wrap(CTX, keys(1))
    transit.emulator.advance_clock(120)
    with pytest.raises(KeyServiceDenied, match="invalid or expired"):
        provider.wrap(CTX, keys(1))


def test_approle_logs_in_and_logs_in_again_when_the_token_expires(transit: Transit) -> None:
    transit.emulator.add_approle(
        "role-1", "secret-1", hcl_policy("pdvault-service.hcl"), token_ttl=60
    )
    provider = transit.provider(
        auth="approle", token=None, role_id="role-1", secret_id=Secret(b"secret-1")
    )
    [w] = provider.wrap(CTX, keys(1))
    assert transit.emulator.calls["login"] == 1
    transit.emulator.advance_clock(120)  # the token expired inside Vault
    assert provider.unwrap(CTX, [(SubjectId("s0"), w)]) == [Secret(bytes([0]) * 32)]
    assert transit.emulator.calls["login"] == 2


def test_tokens_are_renewed_before_they_expire(transit: Transit) -> None:
    transit.emulator.add_approle(
        "role-1", "secret-1", hcl_policy("pdvault-service.hcl"), token_ttl=90
    )
    provider = transit.provider(
        auth="approle", token=None, role_id="role-1", secret_id=Secret(b"secret-1")
    )
    provider.wrap(CTX, keys(1))
    provider._login._obtained -= 70  # two thirds of the TTL have passed
    provider._login._next_check = 0
    provider.wrap(CTX, keys(1))
    assert transit.emulator.calls["renew"] == 1
    assert transit.emulator.calls["login"] == 1


def test_wrong_approle_credentials_are_denied(transit: Transit) -> None:
    transit.emulator.add_approle("role-1", "secret-1", hcl_policy("pdvault-service.hcl"))
    provider = transit.provider(
        auth="approle", token=None, role_id="role-1", secret_id=Secret(b"wrong")
    )
    with pytest.raises(KeyServiceDenied, match="approle login"):
        provider.wrap(CTX, keys(1))


def test_kubernetes_login(transit: Transit, tmp_path: Path) -> None:
    jwt = tmp_path / "token"
    jwt.write_text("eyJhbGciOi.fake.jwt\n")
    transit.emulator.add_kubernetes_role(
        "pdvault", "eyJhbGciOi.fake.jwt", hcl_policy("pdvault-service.hcl")
    )
    provider = transit.provider(auth="kubernetes", token=None, k8s_role="pdvault", k8s_jwt_file=jwt)
    assert len(provider.wrap(CTX, keys(2))) == 2
    missing = transit.provider(
        auth="kubernetes", token=None, k8s_role="pdvault", k8s_jwt_file=tmp_path / "none"
    )
    with pytest.raises(ConfigurationError, match="service account token"):
        missing.wrap(CTX, keys(1))


def _ttl_known(provider: VaultTransitKeyProvider) -> bool:
    return provider._login._known


def test_a_static_token_is_looked_up_again_after_a_failed_first_lookup(transit: Transit) -> None:
    token = transit.emulator.create_token(hcl_policy("pdvault-service.hcl"), ttl=90)
    provider = transit.provider(token=Secret(token.encode()))
    transit.emulator.fail_next(1, status=500, path_contains="lookup-self")
    provider.wrap(CTX, keys(1))  # works, TTL unknown
    assert not _ttl_known(provider)
    provider._login._next_check = 0
    provider.wrap(CTX, keys(1))
    assert _ttl_known(provider)
    provider._login._obtained -= 70
    provider._login._next_check = 0
    provider.wrap(CTX, keys(1))
    assert transit.emulator.calls["renew"] == 1


def test_an_invalid_token_leads_to_one_login_per_call_at_most(transit: Transit) -> None:
    transit.emulator.add_approle("role-1", "secret-1", hcl_policy("pdvault-service.hcl"))
    provider = transit.provider(
        auth="approle", token=None, role_id="role-1", secret_id=Secret(b"secret-1")
    )
    provider.wrap(CTX, keys(1))
    transit.emulator.fail_next(5, status=403, message="invalid token", path_contains="encrypt")
    with pytest.raises(KeyServiceDenied):
        provider.wrap(CTX, keys(1))
    assert transit.emulator.calls["login"] == 2


def test_without_a_request_deadline_retries_stop_at_the_budget(transit: Transit) -> None:
    provider = transit.provider(retry_budget=0.3)
    provider.status(CTX)
    transit.emulator.seal()
    no_deadline = RequestContext.for_call(CallerName("test"), 10**10)  # gRPC's "no deadline"
    with pytest.raises(KeyServiceUnavailable):
        provider.wrap(no_deadline, keys(1))
    transit.emulator.unseal()


def test_no_secret_in_reprs(transit: Transit) -> None:
    provider = transit.provider()
    assert transit.service_token not in repr(provider)
    assert transit.service_token not in repr(transit.settings())


# -- one error table, error ids, and what callers and operators see ------------------------------

MOUNT, KEY = "kms-zq7", "kek-zq7"  # distinctive, so that a message naming them cannot hide


@pytest.fixture
def own(transit: Transit) -> VaultTransitKeyProvider:
    """A provider on a mount and key of its own, with a token for exactly that key."""
    root: Any = hvac.Client(url=transit.url, token="root")  # transit methods are untyped
    root.sys.enable_secrets_engine("transit", path=MOUNT)
    root.secrets.transit.create_key(KEY, mount_point=MOUNT)
    policy = {f"{MOUNT}/{op}/{KEY}": ["update"] for op in ("encrypt", "decrypt", "rewrap")}
    policy[f"{MOUNT}/keys/{KEY}"] = ["read"]
    token = transit.emulator.create_token(policy)
    settings = transit.settings(mount=MOUNT, key=KEY, token=Secret(token.encode()))
    return VaultTransitKeyProvider(settings, sleep=time.sleep)  # real pauses: few retries


def the_log_line(caplog: pytest.LogCaptureFixture, error: PdvaultError) -> str:
    """The one log line that `error`'s id points to; checks the caller's message on the way."""
    found = re.search(r"\(error id ([0-9a-f]{12})\)$", error.message)
    assert found, error.message
    lines = [r.getMessage() for r in caplog.records if found.group(1) in r.getMessage()]
    assert len(lines) == 1, lines
    for secret_or_place in (MOUNT, KEY, "127.0.0.1", "http://"):
        assert secret_or_place not in error.message
    return lines[0]


@pytest.mark.parametrize(
    ("status", "said", "error", "says"),
    [
        (503, "Vault is sealed", KeyServiceUnavailable, "sealed"),
        (429, "rate limited", KeyServiceUnavailable, "overloaded"),
        (500, "1 error occurred:\n\t* internal\n\n", KeyServiceUnavailable, "HTTP 500"),
        (502, "bad gateway", KeyServiceUnavailable, "HTTP 502"),
        (504, "gateway timeout", KeyServiceUnavailable, "HTTP 504"),
        (501, "Vault is not initialized", KeyServiceUnavailable, "not initialized"),
        (403, "1 error occurred:\n\t* permission denied\n\n", KeyServiceDenied, "pdvault-service"),
        (403, "permission denied; invalid token", KeyServiceDenied, "invalid or expired"),
        (401, "unauthorized", KeyServiceDenied, "pdvault-service"),
        (404, "", ConfigurationError, "bootstrap"),
        (400, "encryption key not found", ConfigurationError, "bootstrap"),
        (400, "no existing key named x could be found", ConfigurationError, "bootstrap"),
        (400, "cannot set min decryption version of 3", FailedPrecondition, "version settings"),
        (400, "missing batch input to process", KeyServiceUnavailable, "refused (HTTP 400)"),
        (413, "request too large", KeyServiceUnavailable, "refused (HTTP 413)"),
    ],
)
def test_each_status_becomes_one_error_with_its_detail_in_one_log_line(
    own: VaultTransitKeyProvider,
    transit: Transit,
    caplog: pytest.LogCaptureFixture,
    status: int,
    said: str,
    error: type[PdvaultError],
    says: str,
) -> None:
    own.status(CTX)
    transit.emulator.fail_next(50, status=status, message=said, path_contains="encrypt")
    with caplog.at_level(logging.INFO), pytest.raises(error, match=re.escape(says)) as raised:
        own.wrap(RequestContext.for_call(CallerName("test"), 0.6), keys(1))
    line = the_log_line(caplog, raised.value)
    assert f"{transit.url}/v1/{MOUNT}/encrypt/{KEY}" in line  # where, for the operator
    assert f"HTTP {status}" in line
    assert said.partition("\n")[0] in line  # Vault's own words
    assert transit.service_token not in line


def test_the_table_reads_vaults_words_only_where_the_status_is_ambiguous() -> None:
    assert classify(503, ("key not found", "invalid token"), SERVICE) is SEALED
    assert classify(404, ("invalid token",), SERVICE) is KEY_MISSING
    assert classify(400, ("whatever",), SERVICE) is REFUSED
    invalid = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"
    assert classify(403, (invalid,), SERVICE) is TOKEN_INVALID
    assert classify(400, ("invalid role or secret ID",), login_role("approle")) is LOGIN_REFUSED
    assert classify(503, ("Vault is sealed",), login_role("approle")) is SEALED
    assert classify(507, (), SERVICE).transient  # an unlisted 5xx is Vault failing
    assert not classify(418, (), SERVICE).transient  # an unlisted 4xx is a refusal
    for row, _checks in STATUS_TABLE.values():
        assert "{" not in row.says.format(whose="w", policy="p", login="l", status=1)


def test_an_unreachable_vault_is_named_in_the_log_not_to_the_caller(
    own: VaultTransitKeyProvider, transit: Transit, caplog: pytest.LogCaptureFixture
) -> None:
    own.status(CTX)
    transit.emulator.stop()
    with caplog.at_level(logging.INFO), pytest.raises(KeyServiceUnavailable) as raised:
        own.wrap(RequestContext.for_call(CallerName("test"), 0.4), keys(1))
    assert "cannot be reached: check VAULT_ADDR" in raised.value.message
    line = the_log_line(caplog, raised.value)
    assert transit.url in line
    assert "ConnectionError" in line


def test_a_login_failure_and_a_missing_key_say_what_to_fix_without_naming_them(
    transit: Transit, caplog: pytest.LogCaptureFixture
) -> None:
    transit.emulator.add_approle("role-1", "secret-1", hcl_policy("pdvault-service.hcl"))
    wrong = transit.provider(
        auth="approle", token=None, role_id="role-1", secret_id=Secret(b"wrong")
    )
    with caplog.at_level(logging.INFO), pytest.raises(KeyServiceDenied) as denied:
        wrong.wrap(CTX, keys(1))
    assert "approle/login" in the_log_line(caplog, denied.value)
    assert "wrong" not in caplog.text  # the secret id is never logged
    missing = transit.provider(mount=MOUNT, key=KEY, token=Secret(b"root"))
    with caplog.at_level(logging.INFO), pytest.raises(ConfigurationError) as gone:
        missing.status(CTX)
    assert f"/v1/{MOUNT}/keys/{KEY}" in the_log_line(caplog, gone.value)


def test_a_key_that_cannot_wrap_is_an_unexpected_answer_with_an_error_id(
    own: VaultTransitKeyProvider, transit: Transit, caplog: pytest.LogCaptureFixture
) -> None:
    root: Any = hvac.Client(url=transit.url, token="root")  # transit methods are untyped
    root.secrets.transit.create_key(KEY, key_type="ed25519", mount_point="transit")
    signing_only = transit.provider(key=KEY, token=Secret(b"root"))
    # Vault answers 400 with the batch, its item saying why: an answer, not a refusal.
    with caplog.at_level(logging.INFO), pytest.raises(KeyServiceUnavailable) as raised:
        signing_only.wrap(CTX, keys(2))
    assert "unexpected answer" in raised.value.message
    assert "encryption not supported" in the_log_line(caplog, raised.value)


# -- the per-call timeout ---------------------------------------------------------------------


def test_no_private_attribute_of_hvac_is_written() -> None:
    sources = Path(vault.__file__).parent.rglob("*.py")
    assert not [p for p in sources if re.search(r"\._kwargs\b", p.read_text("utf-8"))]


def test_each_call_carries_its_own_timeout_bounded_by_the_deadline(
    transit: Transit, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = transit.provider(request_timeout=5.0, retry_budget=30.0)
    provider.status(CTX)
    seen: list[object] = []
    send = requests.Session.request

    def spy(self: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
        seen.append(kwargs.get("timeout"))
        return send(self, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    provider.wrap(RequestContext.for_call(CallerName("test"), 2.0), keys(1))
    provider.wrap(CTX, keys(1))  # no deadline: one call's own limit
    [bounded, unbounded] = seen
    assert isinstance(bounded, float)
    assert 0 < bounded < 2.0  # what was left of the deadline, not hvac's default of 30
    assert unbounded == 5.0


def test_a_call_slower_than_its_timeout_is_given_up(transit: Transit) -> None:
    # Without the per-call timeout, each call would simply wait for the slow answer and succeed.
    provider = transit.provider(request_timeout=0.2, retry_budget=10.0)
    provider.status(CTX)
    transit.emulator.set_latency(1.0)
    with pytest.raises(KeyServiceUnavailable, match="too slow"):
        provider.wrap(RequestContext.for_call(CallerName("test"), 1.5), keys(1))
    transit.emulator.set_latency(0.0)
    assert len(provider.wrap(CTX, keys(1))) == 1


# -- hmac and Ed25519 signatures, for the verifiable audit log -----------------------------------


@pytest.fixture
def signer(transit: Transit) -> TransitSigner:
    root: Any = hvac.Client(url=transit.url, token="root")  # transit methods are untyped
    root.secrets.transit.create_key("audit-digest")
    root.secrets.transit.create_key("audit-sign", key_type="ed25519")
    policy = {
        "transit/hmac/audit-digest": ["update"],
        "transit/sign/audit-sign": ["update"],
        "transit/verify/audit-sign": ["update"],
    }
    token = Secret(transit.emulator.create_token(policy).encode())
    return transit.provider(token=token).signer("audit-digest", "audit-sign")


def test_hmac_is_a_versioned_keyed_digest_that_vault_verifies(
    signer: TransitSigner, transit: Transit
) -> None:
    digest = signer.hmac(CTX, b"subject-1")
    assert digest.startswith(b"vault:v1:")
    assert signer.hmac(CTX, b"subject-1") == digest
    assert signer.hmac(CTX, b"subject-2") != digest
    root: Any = hvac.Client(url=transit.url, token="root")
    answer = root.secrets.transit.verify_signed_data(
        "audit-digest", base64.b64encode(b"subject-1").decode(), hmac=digest.decode()
    )
    assert answer["data"]["valid"] is True


def test_ed25519_signatures_verify_and_survive_a_rotation(
    signer: TransitSigner, transit: Transit
) -> None:
    signature = signer.sign(CTX, b"checkpoint 7")
    assert signature.startswith(b"vault:v1:")
    assert signer.verify(CTX, b"checkpoint 7", signature)
    assert not signer.verify(CTX, b"checkpoint 8", signature)
    assert not signer.verify(CTX, b"checkpoint 7", b"vault:v1:AAAA")
    assert not signer.verify(CTX, b"checkpoint 7", b"not a signature")
    root: Any = hvac.Client(url=transit.url, token="root")
    root.secrets.transit.rotate_key("audit-sign")
    assert signer.sign(CTX, b"checkpoint 8").startswith(b"vault:v2:")
    assert signer.verify(CTX, b"checkpoint 7", signature)


def test_signing_failures_go_through_the_same_table(
    transit: Transit, caplog: pytest.LogCaptureFixture
) -> None:
    service = transit.provider().signer("pdvault", "pdvault")  # the service policy has neither
    with pytest.raises(KeyServiceDenied, match="pdvault-service"):
        service.hmac(CTX, b"x")
    missing = transit.provider(token=Secret(b"root")).signer(KEY, KEY)
    with caplog.at_level(logging.INFO), pytest.raises(ConfigurationError) as raised:
        missing.sign(CTX, b"x")
    assert f"/v1/transit/sign/{KEY}" in the_log_line(caplog, raised.value)
