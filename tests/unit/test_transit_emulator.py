"""The Transit emulator's key lifecycle and data plane, driven through the real ``hvac`` client
(and raw HTTP where the exact status or body matters). Auth, sys and the server itself:
``test_transit_emulator_server.py``; hmac, sign and verify: ``test_transit_emulator_signing.py``.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import hvac
import hvac.exceptions
import pytest
import requests

from tests.transit_helpers import ENVELOPE_KEYS, ROOT, b64, raw, vault
from transit_emulator import ERR_TOO_OLD, TransitEmulator
from transit_emulator.errors import ERR_NOT_EMULATED_DERIVED

CIPHERTEXT = re.compile(r"vault:v(\d+):([A-Za-z0-9+/]+=*)")


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


def test_key_types_other_than_aes256_gcm96_and_ed25519_are_refused(client: Any) -> None:
    """Vault has them; pdvault does not use them, so the emulator answers as Vault does for a
    type it does not know."""
    for key_type in ("chacha20-poly1305", "rsa-2048", "ecdsa-p256"):
        with pytest.raises(hvac.exceptions.InvalidRequest) as refused:
            client.secrets.transit.create_key("x", key_type=key_type)
        assert refused.value.errors == [f"unknown key type {key_type}"]
    assert client.secrets.transit.create_key("x", key_type="ed25519")["data"]["type"] == "ed25519"


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


def test_derived_and_convergent_keys_are_refused_clearly(client: Any) -> None:
    transit = client.secrets.transit
    with pytest.raises(hvac.exceptions.InvalidRequest) as derived:
        transit.create_key("tenant", derived=True)
    assert derived.value.errors == [ERR_NOT_EMULATED_DERIVED]
    with pytest.raises(hvac.exceptions.InvalidRequest) as upsert:
        transit.encrypt_data("tenant", plaintext=b64(b"x"), context=b64(b"t1"))
    assert upsert.value.errors == [ERR_NOT_EMULATED_DERIVED]  # an upsert would derive
    with pytest.raises(hvac.exceptions.InvalidRequest) as convergent:
        transit.encrypt_data("tenant", plaintext=b64(b"x"), convergent_encryption=True)
    assert convergent.value.errors == [
        "convergent encryption requires derivation to be enabled, so context is required"
    ]
    with pytest.raises(hvac.exceptions.InvalidPath):
        transit.read_key("tenant")  # nothing was created


def test_context_on_a_key_that_is_not_derived_is_checked_then_ignored(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("plain")
    sealed = transit.encrypt_data("plain", plaintext=b64(b"x"), context=b64(b"t1"))["data"]
    opened = transit.decrypt_data("plain", ciphertext=sealed["ciphertext"], context=b64(b"t2"))
    assert opened["data"]["plaintext"] == b64(b"x")
    with pytest.raises(hvac.exceptions.InvalidRequest) as bad:
        transit.encrypt_data("plain", plaintext=b64(b"x"), context="%%")
    assert bad.value.errors == ["illegal base64 data at input byte 0"]
    forced = transit.update_key_configuration("plain", min_decryption_version=0)
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
