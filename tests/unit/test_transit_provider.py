"""VaultTransitKeyProvider against the emulator: calls per batch, failures, authentication."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Transit, hcl_policy
from vault.domain.context import RequestContext
from vault.domain.secrets import Secret
from vault.domain.types import CallerName, SubjectId, WrappedKey
from vault.errors import (
    ConfigurationError,
    KeyServiceDenied,
    KeyServiceUnavailable,
)
from vault.kms.transit import VaultTransitKeyProvider

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
