"""``hmac``, ``sign`` and ``verify`` on the Transit emulator, through the real ``hvac`` client
(raw HTTP for what hvac cannot send: hmac batches, values hvac refuses client-side).
Facts and sources: docs/vault-transit-hmac-sign.md."""

from __future__ import annotations

import base64
import re
from typing import Any

import hvac
import hvac.exceptions
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.transit_helpers import b64, raw, vault
from transit_emulator import ERR_TOO_OLD, TransitEmulator

HMAC = re.compile(r"vault:v(\d+):([A-Za-z0-9+/]+=*)")
PURE = "failed to parse batch item: only Pure Ed25519 signatures supported, "


def _bytes(output: str) -> tuple[int, bytes]:
    version, encoded = output[len("vault:v") :].split(":", 1)
    return int(version), base64.b64decode(encoded)


def test_hmac_is_versioned_and_verifies_through_verify(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("digest")
    made = transit.generate_hmac("digest", b64(b"subject-42"))["data"]
    assert set(made) == {"hmac"}
    match = HMAC.fullmatch(made["hmac"])
    assert match is not None
    assert match.group(1) == "1"
    assert len(base64.b64decode(match.group(2))) == 32  # sha2-256 by default
    assert transit.generate_hmac("digest", b64(b"subject-42"))["data"] == made  # deterministic
    wide = transit.generate_hmac("digest", b64(b"subject-42"), algorithm="sha2-512")["data"]
    assert len(_bytes(wide["hmac"])[1]) == 64

    check = transit.verify_signed_data
    assert check("digest", b64(b"subject-42"), hmac=made["hmac"])["data"] == {"valid": True}
    assert check("digest", b64(b"subject-43"), hmac=made["hmac"])["data"]["valid"] is False
    assert check("digest", b64(b"subject-42"), hmac=wide["hmac"])["data"]["valid"] is False
    same = check("digest", b64(b"subject-42"), hmac=wide["hmac"], hash_algorithm="sha2-512")
    assert same["data"]["valid"] is True


def test_hmac_keys_are_per_version_and_follow_the_minimum_versions(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("digest", key_type="ed25519")  # every key type has HMAC keys
    first = transit.generate_hmac("digest", b64(b"x"))["data"]["hmac"]
    transit.rotate_key("digest")
    second = transit.generate_hmac("digest", b64(b"x"))["data"]["hmac"]
    assert (_bytes(first)[0], _bytes(second)[0]) == (1, 2)
    assert _bytes(first)[1] != _bytes(second)[1]
    again = transit.generate_hmac("digest", b64(b"x"), key_version=1)["data"]["hmac"]
    assert again == first

    with pytest.raises(hvac.exceptions.InvalidRequest) as too_new:
        transit.generate_hmac("digest", b64(b"x"), key_version=3)
    assert too_new.value.errors == ["key version does not exist; latest key version is 2"]
    transit.update_key_configuration("digest", min_decryption_version=2)
    transit.update_key_configuration("digest", min_encryption_version=2)  # hvac: one at a time
    with pytest.raises(hvac.exceptions.InvalidRequest) as old_key:
        transit.generate_hmac("digest", b64(b"x"), key_version=1)
    assert old_key.value.errors == [
        "cannot generate HMAC: version is too old (disallowed by policy)"
    ]
    with pytest.raises(hvac.exceptions.InvalidRequest) as old_hmac:
        transit.verify_signed_data("digest", b64(b"x"), hmac=first)
    assert old_hmac.value.errors == [
        "cannot verify HMAC: version is too old (disallowed by policy)"
    ]
    assert transit.verify_signed_data("digest", b64(b"x"), hmac=second)["data"]["valid"] is True


def test_hmac_errors_match_vault(emu: TransitEmulator, client: Any) -> None:
    transit = client.secrets.transit
    with pytest.raises(hvac.exceptions.InvalidRequest) as missing:
        transit.generate_hmac("nope", b64(b"x"))
    assert missing.value.errors == ["encryption key not found"]
    transit.create_key("digest")
    with pytest.raises(hvac.exceptions.InvalidRequest) as bad_input:
        transit.generate_hmac("digest", "not base64!")
    assert bad_input.value.errors == [
        "unable to decode input as base64: illegal base64 data at input byte 3"
    ]
    unknown = raw(emu, "POST", "transit/hmac/digest/md5", {"input": b64(b"x")})
    assert (unknown.status_code, unknown.json()["errors"]) == (
        400,
        ["unsupported algorithm '\\x00'"],
    )
    no_input = raw(emu, "POST", "transit/hmac/digest", {})
    assert no_input.json()["errors"] == ["missing input for HMAC"]
    cases = {
        "garbage": "invalid HMAC to verify: no prefix",
        "vault:v1": "invalid HMAC: wrong number of fields",
        "vault:vX:AAAA": "invalid HMAC: version number could not be decoded",
        "vault:v1:***": "unable to decode verification HMAC as base64: "
        "illegal base64 data at input byte 0",
        "vault:v9:AAAA": "invalid HMAC: version is too new",
    }
    for given, message in cases.items():
        with pytest.raises(hvac.exceptions.InvalidRequest) as failed:
            transit.verify_signed_data("digest", b64(b"x"), hmac=given)
        assert failed.value.errors == [message], given


def test_hmac_batches_answer_200_with_per_item_errors(emu: TransitEmulator) -> None:
    raw(emu, "POST", "transit/keys/digest")
    body = {"batch_input": [{"input": b64(b"a"), "reference": "r0"}, {"input": "%%"}, {}]}
    made = raw(emu, "POST", "transit/hmac/digest/sha2-384", body)
    assert made.status_code == 200
    results = made.json()["data"]["batch_results"]
    assert set(results[0]) == {"hmac", "valid", "reference"}  # valid is never omitted
    assert (results[0]["valid"], results[0]["reference"]) == (False, "r0")
    assert len(_bytes(results[0]["hmac"])[1]) == 48
    assert results[1] == {
        "valid": False,
        "error": "unable to decode input as base64: illegal base64 data at input byte 0",
        "reference": "",
    }
    assert results[2] == {"valid": False, "error": "missing input for HMAC", "reference": ""}

    checks = [
        {"input": b64(b"a"), "hmac": results[0]["hmac"], "reference": "ok"},
        {"input": b64(b"b"), "hmac": results[0]["hmac"]},
        {"input": b64(b"a"), "hmac": "nope"},
    ]
    verified = raw(emu, "POST", "transit/verify/digest/sha2-384", {"batch_input": checks})
    assert verified.status_code == 200
    assert verified.json()["data"]["batch_results"] == [
        {"valid": True, "reference": "ok"},
        {"valid": False, "reference": ""},
        {"valid": False, "error": "invalid HMAC to verify: no prefix", "reference": ""},
    ]


def test_ed25519_keys_show_a_public_key_per_version(client: Any) -> None:
    transit = client.secrets.transit
    created = transit.create_key("audit", key_type="ed25519")["data"]
    assert created["type"] == "ed25519"
    flags = ("supports_signing", "supports_encryption", "supports_decryption")
    assert [created[f] for f in flags] == [True, False, False]
    transit.rotate_key("audit")
    keys = transit.read_key("audit")["data"]["keys"]
    assert list(keys) == ["1", "2"]
    assert set(keys["1"]) == {"certificate_chain", "creation_time", "name", "public_key"}
    assert keys["1"]["name"] == "ed25519"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", keys["1"]["creation_time"])
    assert len(base64.b64decode(keys["1"]["public_key"])) == 32
    assert keys["1"]["public_key"] != keys["2"]["public_key"]
    transit.update_key_configuration("audit", min_decryption_version=2)
    assert list(transit.read_key("audit")["data"]["keys"]) == ["2"]


def test_sign_verify_with_ed25519_is_real_ed25519(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("audit", key_type="ed25519")
    message = b"checkpoint 17: 9f86d081884c7d65"
    signed = transit.sign_data("audit", b64(message))["data"]
    assert signed["key_version"] == 1
    version, signature = _bytes(signed["signature"])
    assert (version, len(signature)) == (1, 64)
    public = transit.read_key("audit")["data"]["keys"]["1"]["public_key"]
    Ed25519PublicKey.from_public_bytes(base64.b64decode(public)).verify(signature, message)

    check = transit.verify_signed_data
    assert check("audit", b64(message), signature=signed["signature"])["data"] == {"valid": True}
    assert check("audit", b64(message + b"!"), signature=signed["signature"])["data"] == {
        "valid": False
    }
    jws = transit.sign_data("audit", b64(message), marshaling_algorithm="jws")["data"]
    assert re.fullmatch(r"vault:v1:[A-Za-z0-9_-]{86}", jws["signature"])  # URL-safe, no padding
    valid = check("audit", b64(message), signature=jws["signature"], marshaling_algorithm="jws")
    assert valid["data"]["valid"] is True
    with pytest.raises(hvac.exceptions.InvalidRequest) as asn1:
        check("audit", b64(message), signature=jws["signature"])
    assert asn1.value.errors == ["invalid base64 signature value"]


def test_signature_versions_follow_rotation_and_the_minimum_versions(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("audit", key_type="ed25519")
    old = transit.sign_data("audit", b64(b"m"))["data"]["signature"]
    transit.rotate_key("audit")
    new = transit.sign_data("audit", b64(b"m"))["data"]
    assert (new["key_version"], new["signature"][:9]) == (2, "vault:v2:")
    pinned = transit.sign_data("audit", b64(b"m"), key_version=1)["data"]
    assert pinned["key_version"] == 1
    assert transit.verify_signed_data("audit", b64(b"m"), signature=old)["data"]["valid"]

    transit.update_key_configuration("audit", min_decryption_version=2)
    transit.update_key_configuration("audit", min_encryption_version=2)  # hvac: one at a time
    with pytest.raises(hvac.exceptions.InvalidRequest) as too_old:
        transit.verify_signed_data("audit", b64(b"m"), signature=old)
    assert too_old.value.errors == [ERR_TOO_OLD]
    # A refused key version is returned as a bare error: 500 (hashicorp/vault#20713).
    with pytest.raises(hvac.exceptions.InternalServerError) as below_min:
        transit.sign_data("audit", b64(b"m"), key_version=1)
    assert below_min.value.errors == [
        "1 error occurred:\n\t* requested version for signing is less than the minimum "
        "encryption key version\n\n"
    ]
    with pytest.raises(hvac.exceptions.InternalServerError):
        transit.sign_data("audit", b64(b"m"), key_version=3)


def test_sign_and_verify_refusals_match_vault_ce(emu: TransitEmulator, client: Any) -> None:
    transit = client.secrets.transit
    with pytest.raises(hvac.exceptions.InvalidRequest) as no_key:
        transit.sign_data("nope", b64(b"m"))
    assert no_key.value.errors == ["signing key not found"]
    with pytest.raises(hvac.exceptions.InvalidRequest) as no_key_to_verify:
        transit.verify_signed_data("nope", b64(b"m"), signature="vault:v1:AAAA")
    assert no_key_to_verify.value.errors == ["signature verification key not found"]
    transit.create_key("aes")
    with pytest.raises(hvac.exceptions.InvalidRequest) as aes:
        transit.sign_data("aes", b64(b"m"))
    assert aes.value.errors == ["key type aes256-gcm96 does not support signing"]

    transit.create_key("audit", key_type="ed25519")
    refusals: dict[str, tuple[dict[str, Any], str]] = {
        "prehashed": ({"prehashed": True}, PURE + "prehashed must be false"),
        "sha2-512": ({"hash_algorithm": "sha2-512"}, PURE + "hash_alogithm should not be set"),
    }
    for case, (options, message) in refusals.items():
        with pytest.raises(hvac.exceptions.InvalidRequest) as refused:
            transit.sign_data("audit", b64(b"m"), **options)
        assert refused.value.errors == [message], case
    with pytest.raises(hvac.exceptions.InvalidRequest) as encrypt:
        transit.encrypt_data("audit", plaintext=b64(b"m"))
    assert encrypt.value.errors == ["message encryption not supported for key type ed25519"]
    unknown = raw(emu, "POST", "transit/sign/audit", {"input": "", "hash_algorithm": "md5"})
    assert unknown.json()["errors"] == ['invalid hash algorithm "md5"']
    neither = raw(emu, "POST", "transit/verify/audit", {"input": ""})
    assert neither.json()["errors"] == [
        "missing one of 'signature', 'hmac' or 'cmac' arguments to verify"
    ]


def test_sign_and_verify_batches(emu: TransitEmulator, client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("audit", key_type="ed25519")
    batch = [{"input": b64(b"a"), "reference": "a"}, {"input": "%%", "reference": "b"}]
    signed = transit.sign_data("audit", batch_input=batch)["data"]["batch_results"]
    assert set(signed[0]) == {"signature", "key_version", "reference"}
    assert signed[1] == {
        "key_version": 0,
        "error": "unable to decode input: illegal base64 data at input byte 0",
        "reference": "b",
    }
    checks = [
        {"input": b64(b"a"), "signature": signed[0]["signature"], "reference": "a"},
        {"input": b64(b"z"), "signature": signed[0]["signature"]},
        {"input": b64(b"a"), "signature": "vault:v7:AAAA"},
    ]
    verified = raw(emu, "POST", "transit/verify/audit", {"batch_input": checks})
    assert verified.status_code == 200
    assert verified.json()["data"]["batch_results"] == [
        {"valid": True, "reference": "a"},
        {"valid": False, "reference": ""},
        {"valid": False, "error": "invalid signature: version is too new", "reference": ""},
    ]
    mixed = [checks[0], {"input": b64(b"a"), "hmac": "vault:v1:AAAA"}]
    refused = raw(emu, "POST", "transit/verify/audit", {"batch_input": mixed})
    assert (refused.status_code, refused.json()["errors"]) == (
        400,
        ["elements of batch_input must all provide either 'signature', 'hmac' or 'cmac'"],
    )


def test_policies_apply_to_sign_and_verify_paths(emu: TransitEmulator, client: Any) -> None:
    client.secrets.transit.create_key("audit", key_type="ed25519")
    signer = vault(emu, emu.create_token({"transit/sign/audit": ["update"]}))
    signature = signer.secrets.transit.sign_data("audit", b64(b"m"))["data"]["signature"]
    with pytest.raises(hvac.exceptions.Forbidden):
        signer.secrets.transit.verify_signed_data("audit", b64(b"m"), signature=signature)
    assert emu.calls["sign"] == 1
    assert emu.calls["verify"] == 1
