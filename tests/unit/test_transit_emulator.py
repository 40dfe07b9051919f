"""The Vault Transit emulator, driven through the real ``hvac`` client (and raw HTTP where the
exact status, headers or body matter)."""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
import requests

from tests.transit_emulator import ERR_TOO_OLD, TransitEmulator

ROOT = "root-token"
ENVELOPE_KEYS = {
    "request_id",
    "lease_id",
    "renewable",
    "lease_duration",
    "data",
    "wrap_info",
    "warnings",
    "auth",
    "mount_type",
}
CIPHERTEXT = re.compile(r"vault:v(\d+):([A-Za-z0-9+/]+=*)")
INVALID_TOKEN = ["2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"]
PERMISSION_DENIED = ["1 error occurred:\n\t* permission denied\n\n"]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def emu() -> Iterator[TransitEmulator]:
    with TransitEmulator(root_token=ROOT) as emulator:
        yield emulator


def vault(emu: TransitEmulator, token: str | None = ROOT, **kwargs: Any) -> Any:
    """A real hvac client. Typed ``Any``: the hvac stubs leave most methods untyped."""
    return hvac.Client(url=emu.url, token=token, **kwargs)


@pytest.fixture
def client(emu: TransitEmulator) -> Any:
    return vault(emu)


def raw(emu: TransitEmulator, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(
        method,
        f"{emu.url}/v1/{path}",
        json=body,
        timeout=5,
        headers={"X-Vault-Token": ROOT},
    )


def test_key_lifecycle_create_read_list_delete(client: Any) -> None:
    transit = client.secrets.transit
    created = transit.create_key("app")
    assert isinstance(created, dict)  # current Vault: 200 + key data, not 204
    assert created["data"]["latest_version"] == 1
    again = transit.create_key("app", derived=True)  # idempotent, new params ignored
    assert again["warnings"] == ["key app already existed"]
    assert again["data"]["derived"] is False

    data = transit.read_key("app")["data"]
    assert data["type"] == "aes256-gcm96"
    assert (data["min_decryption_version"], data["min_encryption_version"]) == (1, 0)
    assert isinstance(data["auto_rotate_period"], int)
    assert list(data["keys"]) == ["1"]
    assert isinstance(data["keys"]["1"], int)
    assert {"imported_key", "supports_derivation", "min_available_version"} <= set(data)
    transit.create_key("zeta")
    assert transit.list_keys()["data"]["keys"] == ["app", "zeta"]

    with pytest.raises(hvac.exceptions.InvalidRequest) as refused:
        transit.delete_key("app")
    assert refused.value.errors == [
        "error deleting policy app: deletion is not allowed for this key"
    ]
    transit.update_key_configuration("app", deletion_allowed=True)
    deleted = transit.delete_key("app")
    assert isinstance(deleted, requests.Response)
    assert deleted.status_code == 204
    with pytest.raises(hvac.exceptions.InvalidPath) as missing:
        transit.read_key("app")
    assert missing.value.errors == []


def test_an_empty_list_is_404_and_get_list_true_also_lists(emu: TransitEmulator) -> None:
    with pytest.raises(hvac.exceptions.InvalidPath):
        vault(emu).secrets.transit.list_keys()
    raw(emu, "POST", "transit/keys/k")
    listed = requests.get(
        f"{emu.url}/v1/transit/keys?list=true", headers={"X-Vault-Token": ROOT}, timeout=5
    )
    assert listed.json()["data"] == {"keys": ["k"]}


def test_unknown_key_type_is_refused(client: Any) -> None:
    with pytest.raises(hvac.exceptions.InvalidRequest) as refused:
        client.secrets.transit.create_key("x", key_type="ed25519")
    assert refused.value.errors == ["unknown key type ed25519"]


def test_datakey_plaintext_and_wrapped_unwrap_by_decrypt(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("dek")
    minted = transit.generate_data_key("dek", key_type="plaintext")["data"]
    assert set(minted) == {"ciphertext", "key_version", "plaintext"}
    assert len(base64.b64decode(minted["plaintext"])) == 32
    unwrapped = transit.decrypt_data("dek", ciphertext=minted["ciphertext"])["data"]
    assert unwrapped["plaintext"] == minted["plaintext"]

    wrapped = transit.generate_data_key("dek", key_type="wrapped", bits=512)["data"]
    assert set(wrapped) == {"ciphertext", "key_version"}
    plain = transit.decrypt_data("dek", ciphertext=wrapped["ciphertext"])["data"]["plaintext"]
    assert len(base64.b64decode(plain)) == 64

    with pytest.raises(hvac.exceptions.InvalidRequest) as missing:
        transit.generate_data_key("nope", key_type="wrapped")
    assert missing.value.errors == ["encryption key not found"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        transit.read_key("nope")  # datakey never upserts


def test_encrypt_decrypt_with_and_without_associated_data(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("pii")
    secret = b"4111 1111 1111 1111"
    plain = transit.encrypt_data("pii", plaintext=b64(secret))["data"]
    match = CIPHERTEXT.fullmatch(plain["ciphertext"])
    assert match is not None
    assert match.group(1) == "1"
    assert plain["key_version"] == 1
    assert len(base64.b64decode(match.group(2))) == 12 + len(secret) + 16
    decrypted = transit.decrypt_data("pii", ciphertext=plain["ciphertext"])["data"]
    assert base64.b64decode(decrypted["plaintext"]) == secret

    aad = b64(b"row-42")
    bound = transit.encrypt_data("pii", plaintext=b64(secret), associated_data=aad)["data"]
    result = transit.decrypt_data("pii", ciphertext=bound["ciphertext"], associated_data=aad)
    assert base64.b64decode(result["data"]["plaintext"]) == secret
    for other in (None, b64(b"row-43")):
        with pytest.raises(hvac.exceptions.InvalidRequest) as failed:
            transit.decrypt_data("pii", ciphertext=bound["ciphertext"], associated_data=other)
        assert failed.value.errors == ["cipher: message authentication failed"]


def test_encrypt_upserts_but_decrypt_does_not(client: Any) -> None:
    transit = client.secrets.transit
    made = transit.encrypt_data("fresh", plaintext=b64(b"x"))["data"]
    assert made["ciphertext"].startswith("vault:v1:")
    assert transit.read_key("fresh")["data"]["latest_version"] == 1
    with pytest.raises(hvac.exceptions.InvalidRequest) as missing:
        transit.decrypt_data("other", ciphertext=made["ciphertext"])
    assert missing.value.errors == ["encryption key not found"]


def test_ciphertext_and_plaintext_errors_match_vault(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("k")
    cases = {
        "garbage": "invalid ciphertext: no prefix",
        "vault:v1": "invalid ciphertext: wrong number of fields",
        "vault:vX:AAAA": "invalid ciphertext: version number could not be decoded",
        "vault:v9:AAAA": "invalid ciphertext: version is too new",
        "vault:v1:***": "invalid ciphertext: could not decode base64",
        "vault:v1:AAAA": "invalid ciphertext length",
    }
    for ciphertext, message in cases.items():
        with pytest.raises(hvac.exceptions.InvalidRequest) as failed:
            transit.decrypt_data("k", ciphertext=ciphertext)
        assert failed.value.errors == [message], ciphertext
    with pytest.raises(hvac.exceptions.InvalidRequest) as bad:
        transit.encrypt_data("k", plaintext="not base64!")
    assert bad.value.errors == ["illegal base64 data at input byte 3"]


def test_derived_keys_need_the_same_context(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("tenant", derived=True)
    assert transit.read_key("tenant")["data"]["kdf"] == "hkdf_sha256"
    with pytest.raises(hvac.exceptions.InvalidRequest) as no_context:
        transit.encrypt_data("tenant", plaintext=b64(b"x"))
    assert str(no_context.value).startswith("missing 'context' for key derivation")
    sealed = transit.encrypt_data("tenant", plaintext=b64(b"x"), context=b64(b"t1"))["data"]
    opened = transit.decrypt_data("tenant", ciphertext=sealed["ciphertext"], context=b64(b"t1"))
    assert opened["data"]["plaintext"] == b64(b"x")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        transit.decrypt_data("tenant", ciphertext=sealed["ciphertext"], context=b64(b"t2"))


def test_convergent_chacha_and_config_warning(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("conv", derived=True, convergent_encryption=True)
    args = {"plaintext": b64(b"same"), "context": b64(b"ctx")}
    first = transit.encrypt_data("conv", **args)["data"]["ciphertext"]
    assert transit.encrypt_data("conv", **args)["data"]["ciphertext"] == first  # deterministic
    transit.create_key("cha", key_type="chacha20-poly1305")
    sealed = transit.encrypt_data("cha", plaintext=b64(b"x"))["data"]["ciphertext"]
    assert transit.decrypt_data("cha", ciphertext=sealed)["data"]["plaintext"] == b64(b"x")
    forced = transit.update_key_configuration("cha", min_decryption_version=0)
    assert forced["warnings"] == [
        "since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1"
    ]


def test_batch_encrypt_decrypt_and_partial_failure(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("b")
    batch = [{"plaintext": b64(f"item {i}".encode()), "reference": f"r{i}"} for i in range(3)]
    results = transit.encrypt_data("b", batch_input=batch)["data"]["batch_results"]
    assert [r["reference"] for r in results] == ["r0", "r1", "r2"]
    assert all(set(r) == {"ciphertext", "key_version", "reference"} for r in results)

    to_decrypt = [{"ciphertext": r["ciphertext"]} for r in results] + [{"ciphertext": "bad"}]
    with pytest.raises(hvac.exceptions.InvalidRequest) as partial:
        transit.decrypt_data("b", batch_input=to_decrypt)
    assert partial.value.errors is None  # not an {"errors": ...} body
    body = partial.value.json
    assert isinstance(body, dict)
    assert set(body) == ENVELOPE_KEYS
    assert body["mount_type"] == ""
    items = body["data"]["batch_results"]
    assert [base64.b64decode(i["plaintext"]) for i in items[:3]] == [
        b"item 0",
        b"item 1",
        b"item 2",
    ]
    assert items[0] == {"plaintext": b64(b"item 0"), "reference": ""}
    assert items[3] == {
        "plaintext": "",
        "error": "invalid ciphertext: no prefix",
        "reference": "",
    }


def test_partial_failure_response_code_and_batch_parse_errors(emu: TransitEmulator) -> None:
    raw(emu, "POST", "transit/keys/b")
    body = {
        "batch_input": [{"plaintext": b64(b"ok")}, {"plaintext": "%%"}],
        "partial_failure_response_code": 207,
    }
    answer = raw(emu, "POST", "transit/encrypt/b", body)
    assert answer.status_code == 207
    results = answer.json()["data"]["batch_results"]
    assert results[1] == {"error": "illegal base64 data at input byte 0", "reference": ""}
    all_failed = raw(
        emu, "POST", "transit/encrypt/b", {**body, "batch_input": [{"plaintext": "%"}]}
    )
    assert all_failed.status_code == 400  # the override needs one success

    parse_error = raw(emu, "POST", "transit/encrypt/b", {"batch_input": [{"context": "x"}]})
    assert parse_error.status_code == 500
    assert parse_error.json()["errors"] == [
        "1 error occurred:\n\t* failed to parse batch input: 1 error(s) decoding:\n\n"
        "* '[0].plaintext' missing plaintext to encrypt\n\n"
    ]


def test_rotate_then_old_ciphertext_still_decrypts_and_rewrap_moves_it(
    client: Any,
) -> None:
    transit = client.secrets.transit
    transit.create_key("r")
    old = [
        transit.encrypt_data("r", plaintext=b64(f"v{i}".encode()))["data"]["ciphertext"]
        for i in range(2)
    ]
    rotated = transit.rotate_key("r")
    assert rotated["data"]["latest_version"] == 2
    assert set(rotated["data"]["keys"]) == {"1", "2"}
    assert transit.decrypt_data("r", ciphertext=old[0])["data"]["plaintext"] == b64(b"v0")
    assert transit.encrypt_data("r", plaintext=b64(b"n"))["data"]["key_version"] == 2

    single = transit.rewrap_data("r", ciphertext=old[0])["data"]
    assert single["key_version"] == 2
    assert single["ciphertext"].startswith("vault:v2:")
    batch = [{"ciphertext": c, "reference": str(i)} for i, c in enumerate(old)]
    batch.append({"ciphertext": "vault:v1:%%"})
    rewrapped = transit.rewrap_data("r", None, batch_input=batch)["data"]["batch_results"]
    assert [r["key_version"] for r in rewrapped[:2]] == [2, 2]
    assert rewrapped[2] == {"error": "invalid ciphertext: could not decode base64", "reference": ""}
    plain = transit.decrypt_data("r", ciphertext=rewrapped[1]["ciphertext"])["data"]["plaintext"]
    assert plain == b64(b"v1")


def test_min_decryption_version_refuses_old_ciphertext_until_lowered(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("m")
    old = transit.encrypt_data("m", plaintext=b64(b"x"))["data"]["ciphertext"]
    transit.rotate_key("m")
    config = transit.update_key_configuration("m", min_decryption_version=2)
    assert list(config["data"]["keys"]) == ["2"]  # version 1 archived
    with pytest.raises(hvac.exceptions.InvalidRequest) as too_old:
        transit.decrypt_data("m", ciphertext=old)
    assert too_old.value.errors == [ERR_TOO_OLD]
    assert ERR_TOO_OLD == "ciphertext or signature version is disallowed by policy (too old)"
    with pytest.raises(hvac.exceptions.InvalidRequest) as too_high:
        transit.update_key_configuration("m", min_decryption_version=3)
    assert too_high.value.errors == [
        "cannot set min decryption version of 3, latest key version is 2"
    ]
    transit.update_key_configuration("m", min_decryption_version=1)  # reversible: no erasure
    assert transit.decrypt_data("m", ciphertext=old)["data"]["plaintext"] == b64(b"x")


def test_trim_deletes_versions_for_good(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("t")
    old = transit.encrypt_data("t", plaintext=b64(b"x"))["data"]["ciphertext"]
    transit.rotate_key("t")
    with pytest.raises(hvac.exceptions.InvalidRequest) as early:
        transit.trim_key("t", min_version=2)
    assert early.value.errors == [
        "minimum available version cannot be set when minimum encryption version is not set"
    ]
    transit.update_key_configuration("t", min_encryption_version=2)
    with pytest.raises(hvac.exceptions.InvalidRequest) as above_dec:
        transit.trim_key("t", min_version=2)
    assert "greater than minimum decryption version" in str(above_dec.value)
    transit.update_key_configuration("t", min_decryption_version=2)
    trimmed = transit.trim_key("t", min_version=2)["data"]
    assert trimmed["min_available_version"] == 2
    with pytest.raises(hvac.exceptions.InvalidRequest) as gone:
        transit.update_key_configuration("t", min_decryption_version=1)
    assert gone.value.errors == [
        "min decryption version should not be less then min available version"
    ]
    with pytest.raises(hvac.exceptions.InvalidRequest):
        transit.decrypt_data("t", ciphertext=old)


def test_sealed_vault_answers_503(emu: TransitEmulator, client: Any) -> None:
    client.secrets.transit.create_key("s")
    emu.seal()
    assert client.sys.is_sealed() is True
    assert client.sys.read_health_status().status_code == 503
    with pytest.raises(hvac.exceptions.VaultDown) as down:
        client.secrets.transit.encrypt_data("s", plaintext=b64(b"x"))
    assert down.value.errors == ["Vault is sealed"]
    emu.unseal()
    assert client.sys.read_health_status(method="GET")["sealed"] is False
    assert client.secrets.transit.encrypt_data("s", plaintext=b64(b"x"))["data"]["key_version"] == 1


def test_policies_map_post_to_update_and_upsert_to_create(
    emu: TransitEmulator, client: Any
) -> None:
    client.secrets.transit.create_key("app")
    token = emu.create_token({"transit/decrypt/app": ["update"], "transit/encrypt/*": ["update"]})
    limited = vault(emu, token)
    assert limited.secrets.transit.encrypt_data("app", plaintext=b64(b"x"))["data"]
    with pytest.raises(hvac.exceptions.Forbidden) as denied:
        limited.secrets.transit.generate_data_key("app", key_type="plaintext")
    assert denied.value.errors == PERMISSION_DENIED
    with pytest.raises(hvac.exceptions.Forbidden):  # upsert needs `create`
        limited.secrets.transit.encrypt_data("new-key", plaintext=b64(b"x"))
    creator = vault(emu, emu.create_token({"transit/keys/*": ["create"]}))
    with pytest.raises(hvac.exceptions.Forbidden):  # `create` alone cannot create keys/:name
        creator.secrets.transit.create_key("z")
    upserter = vault(emu, emu.create_token({"transit/encrypt/*": ["create"]}))
    assert upserter.secrets.transit.encrypt_data("new-key", plaintext=b64(b"x"))["data"]
    assert limited.lookup_token()["data"]["policies"] == ["default", "emulated-1"]  # default policy


def test_expired_and_revoked_tokens_are_invalid(emu: TransitEmulator) -> None:
    token = emu.create_token({"transit/*": ["read"]}, ttl=60)
    client = vault(emu, token)
    assert client.is_authenticated()
    assert 0 < client.lookup_token()["data"]["ttl"] <= 60
    emu.advance_clock(61)
    with pytest.raises(hvac.exceptions.Forbidden) as expired:
        client.lookup_token()
    assert expired.value.errors == INVALID_TOKEN
    other = emu.create_token()
    emu.revoke_token(other)
    assert not vault(emu, other).is_authenticated()
    no_token = requests.get(f"{emu.url}/v1/auth/token/lookup-self", timeout=5)
    assert no_token.status_code == 403


def test_approle_and_kubernetes_login(emu: TransitEmulator) -> None:
    policies = {"transit/encrypt/app": ["create", "update"]}
    emu.add_approle("role-1", "secret-1", policies, token_ttl=600, role_name="pdvault")
    emu.add_kubernetes_role("pdvault", "jwt-1", policies, namespace="pd", service_account="api")

    client = vault(emu, None)
    login = client.auth.approle.login("role-1", "secret-1")
    assert login["data"] is None
    auth = login["auth"]
    assert client.token == auth["client_token"]
    assert auth["client_token"].startswith("hvs.")
    assert (auth["lease_duration"], auth["renewable"], auth["metadata"]) == (
        600,
        True,
        {"role_name": "pdvault"},
    )
    assert auth["policies"] == ["default", "pdvault"]
    assert client.secrets.transit.encrypt_data("app", plaintext=b64(b"x"))["data"]
    with pytest.raises(hvac.exceptions.InvalidRequest) as bad:
        vault(emu, None).auth.approle.login("role-1", "wrong")
    assert bad.value.errors == ["invalid role or secret ID"]

    k8s = vault(emu, None)
    meta = k8s.auth.kubernetes.login("pdvault", "jwt-1")["auth"]["metadata"]
    assert meta["service_account_namespace"] == "pd"
    assert k8s.lookup_token()["data"]["display_name"] == "kubernetes-pd-api"
    with pytest.raises(hvac.exceptions.InvalidRequest) as unknown:
        k8s.auth.kubernetes.login("nobody", "jwt-1")
    assert unknown.value.errors == ['invalid role name "nobody"']
    with pytest.raises(hvac.exceptions.Forbidden):
        k8s.auth.kubernetes.login("pdvault", "forged")
    assert emu.calls["login"] == 5


def test_renew_self(emu: TransitEmulator, client: Any) -> None:
    limited = vault(emu, emu.create_token(ttl=60))
    renewed = limited.auth.token.renew_self(increment="2h")["auth"]
    assert renewed["lease_duration"] == 7200
    assert limited.lookup_token()["data"]["ttl"] > 3600
    with pytest.raises(hvac.exceptions.InvalidRequest):  # root: not renewable [?]
        client.auth.token.renew_self()
    assert emu.calls["renew"] == 2


def test_exact_envelope_headers_and_bodies(emu: TransitEmulator) -> None:
    created = raw(emu, "POST", "transit/keys/k", {"bogus": 1})
    assert created.status_code == 200
    assert created.headers["Content-Type"] == "application/json"
    assert created.headers["Cache-Control"] == "no-store"
    assert created.text.endswith("}\n")
    body = created.json()
    assert set(body) == ENVELOPE_KEYS
    assert (body["lease_id"], body["renewable"], body["lease_duration"]) == ("", False, 0)
    assert (body["wrap_info"], body["auth"], body["mount_type"]) == (None, None, "transit")
    assert body["warnings"] == ["Endpoint ignored these unrecognized parameters: [bogus]"]

    encrypted = raw(emu, "POST", "transit/encrypt/k", {"plaintext": b64(b"x")}).json()
    assert encrypted["warnings"] is None
    assert set(encrypted["data"]) == {"ciphertext", "key_version"}

    error = raw(emu, "POST", "transit/decrypt/k", {"ciphertext": "nope"})
    assert (error.status_code, error.text) == (
        400,
        '{"errors":["invalid ciphertext: no prefix"]}\n',
    )
    assert error.headers["Content-Type"] == "application/json"

    raw(emu, "POST", "transit/keys/k/config", {"deletion_allowed": True})
    deleted = raw(emu, "DELETE", "transit/keys/k")
    assert (deleted.status_code, deleted.content) == (204, b"")
    unknown = raw(emu, "POST", "nowhere/encrypt/x", {})
    assert unknown.status_code == 404
    assert unknown.json()["errors"] == [
        'no handler for route "nowhere/encrypt/x". route entry not found.'
    ]
    assert raw(emu, "GET", "transit/encrypt/k").status_code == 405


def test_sys_endpoints_and_extra_mounts(emu: TransitEmulator, client: Any) -> None:
    assert client.sys.is_initialized() is True
    health = client.sys.read_health_status()  # HEAD: status only
    assert (health.status_code, health.content) == (200, b"")
    enabled = client.sys.enable_secrets_engine("transit", path="transit-b")
    assert enabled.status_code == 204
    mounts = client.sys.list_mounted_secrets_engines()
    assert mounts["data"]["transit-b/"]["type"] == "transit"
    assert mounts["transit-b/"] == mounts["data"]["transit-b/"]  # legacy top-level copy
    with pytest.raises(hvac.exceptions.InvalidRequest) as in_use:
        client.sys.enable_secrets_engine("transit", path="transit-b")
    assert in_use.value.errors == ["path is already in use at transit-b/"]
    client.secrets.transit.create_key("k", mount_point="transit-b")
    assert client.secrets.transit.list_keys(mount_point="transit-b")["data"]["keys"] == ["k"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.transit.read_key("k")  # separate key store per mount
    namespaced = vault(emu, namespace="team-a")
    assert namespaced.secrets.transit.read_key("k", mount_point="transit-b")["data"]["name"] == "k"


def test_counters_latency_and_injected_failures(emu: TransitEmulator, client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("c")
    ciphertext = transit.encrypt_data("c", plaintext=b64(b"x"))["data"]["ciphertext"]
    transit.decrypt_data("c", ciphertext=ciphertext)
    transit.generate_data_key("c", key_type="wrapped")
    transit.rotate_key("c")
    transit.read_key("c")
    assert {k: emu.calls[k] for k in ("create_key", "encrypt", "decrypt", "datakey", "rotate")} == {
        "create_key": 1,
        "encrypt": 1,
        "decrypt": 1,
        "datakey": 1,
        "rotate": 1,
    }
    assert emu.calls["read_key"] == 1
    emu.reset_calls()
    assert not emu.calls

    emu.set_latency(0.05)
    started = time.monotonic()
    transit.read_key("c")
    assert time.monotonic() - started >= 0.05
    emu.set_latency(0)

    emu.fail_next(1, 502, path_contains="decrypt")
    transit.read_key("c")  # does not match the filter
    with pytest.raises(hvac.exceptions.BadGateway):
        transit.decrypt_data("c", ciphertext=ciphertext)
    assert transit.decrypt_data("c", ciphertext=ciphertext)["data"]["plaintext"] == b64(b"x")
    assert emu.calls["decrypt"] == 2


def test_standalone_cli_serves_until_killed() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(__file__).resolve().parents[1] / "transit_emulator.py"
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port), "--root-token", "cli-root"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
        health = requests.get(f"http://127.0.0.1:{port}/v1/sys/health", timeout=5)
        assert health.status_code == 200
        assert json.loads(health.text)["sealed"] is False
        client: Any = hvac.Client(url=f"http://127.0.0.1:{port}", token="cli-root")
        assert client.secrets.transit.create_key("k")["data"]["name"] == "k"
    finally:
        process.kill()
        process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
