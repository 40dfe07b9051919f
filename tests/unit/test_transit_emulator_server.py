"""The Transit emulator as a server: sealing, tokens and policies, AppRole and Kubernetes login,
the exact envelope and headers, ``sys`` endpoints, test controls and the standalone command."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
import requests

from tests.transit_helpers import (
    ENVELOPE_KEYS,
    INVALID_TOKEN,
    PERMISSION_DENIED,
    ROOT,
    b64,
    raw,
    vault,
)
from transit_emulator import TransitEmulator

REPOSITORY = Path(__file__).resolve().parents[2]


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

    emu.fail_next(1, 502, path_contains="decrypt")
    transit.read_key("c")  # does not match the filter
    with pytest.raises(hvac.exceptions.BadGateway):
        transit.decrypt_data("c", ciphertext=ciphertext)
    assert transit.decrypt_data("c", ciphertext=ciphertext)["data"]["plaintext"] == b64(b"x")
    assert emu.calls["decrypt"] == 2


def test_injected_latency_waits_before_every_answer() -> None:
    """bench/ injects a network hop this way; the wait is observed, not timed."""
    waits: list[float] = []
    with TransitEmulator(root_token=ROOT, latency=0.25, sleep=waits.append) as emulator:
        vault(emulator).secrets.transit.create_key("k")
        emulator.set_latency(0.5)
        vault(emulator).secrets.transit.read_key("k")
        emulator.set_latency(0)
        vault(emulator).secrets.transit.read_key("k")
    assert waits == [0.25, 0.5]


def test_standalone_module_serves_until_terminated() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "transit_emulator", "--port", str(port), "--root-token", "cli-root"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPOSITORY,
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
        process.terminate()  # SIGTERM: a clean stop
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
