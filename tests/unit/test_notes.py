"""vault.crypto.notes: Go's sumdb/note and sum.golang.org's checkpoints as known answers, round
trips, tampering, key encodings, and a callable signer (HashiCorp Vault Transit's shape)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.transit_helpers import b64
from tests.vectors import load_vectors
from vault.crypto.notes import (
    MAX_SIGNATURES,
    Checkpoint,
    format_checkpoint,
    generate_signer,
    key_id,
    parse_checkpoint,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
    verifier_key,
    verify_note,
)
from vault.domain.merkle import EMPTY_ROOT, leaf_hash
from vault.errors import ConfigurationError, IntegrityError

VECTORS = load_vectors("signed_note_go.json")
ORIGIN = "pdvault.example/audit"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key().public_bytes_raw()
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
ROOT = leaf_hash(b"some entry")


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["name"])
def test_notes_signed_by_gos_note_package_and_sum_golang_org(v: dict[str, Any]) -> None:
    verifier = parse_verifier_key(v["verifier_key"])
    assert str(verifier) == v["verifier_key"]
    if v["text"] is None:
        with pytest.raises(IntegrityError):
            verify_note(v["note"], verifier.name, verifier.public_key)
        return
    assert verify_note(v["note"], verifier.name, verifier.public_key) == v["text"]
    if "signer_key" in v:
        # Ed25519 is deterministic (RFC 8032): our note is Go's, byte for byte.
        signer = parse_signer_key(v["signer_key"])
        assert str(signer.verifier()) == v["verifier_key"]
        assert sign_note(v["text"], signer.name, signer.private_key) == v["note"]
    if "checkpoint" in v:
        want = v["checkpoint"]
        assert parse_checkpoint(v["text"]) == Checkpoint(
            want["origin"], want["size"], base64.b64decode(want["root"])
        )


def test_the_key_id_is_the_specs() -> None:
    go = parse_verifier_key("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
    assert key_id(go.name, go.public_key).hex() == "c74f20a3"


def test_generated_keys_parse_sign_and_verify() -> None:
    signer_text, verifier_text = generate_signer(ORIGIN)
    signer = parse_signer_key(signer_text)
    verifier = parse_verifier_key(verifier_text)
    assert signer.verifier() == verifier
    assert verifier.name == ORIGIN
    assert verifier_key(ORIGIN, verifier.public_key) == verifier_text
    assert signer_text not in repr(signer)
    note = sign_note("hello\n", signer.name, signer.private_key)
    assert verify_note(note, verifier.name, verifier.public_key) == "hello\n"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong hash
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # not Go's hex
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW==",
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",  # Go's
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # Go's: algorithm
    ],
)
def test_malformed_verifier_keys_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="key"):
        parse_verifier_key(text)


def test_every_mangling_of_a_key_is_refused() -> None:
    # As Go's TestNewVerifier and TestNewSigner: every proper substring, every changed byte.
    parsers: list[tuple[str, Callable[[str], object]]] = [
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", parse_verifier_key),
        (
            "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
            parse_signer_key,
        ),
    ]
    for good, parse in parsers:
        parse(good)
        bad = [good[i:j] for i in range(len(good)) for j in range(i + 1, len(good) + 1)]
        bad += [good[:i] + chr(ord(good[i]) + 1) + good[i + 1 :] for i in range(len(good))]
        for text in bad:
            if text == good:
                continue
            with pytest.raises(ValueError, match="key"):
                parse(text)


def test_a_signer_key_error_never_repeats_the_key() -> None:
    secret = "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    with pytest.raises(ValueError, match="hash") as caught:
        parse_signer_key(secret)
    assert "AYEKFALV" not in str(caught.value)


# -- round trip and tampering ---------------------------------------------------------------------

NOTE_TEXT = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"]) | st.just("\n"), max_size=200
).map(lambda t: t + "\n")


@settings(max_examples=100)
@given(NOTE_TEXT)
def test_round_trip(text: str) -> None:
    note = sign_note(text, ORIGIN, KEY)
    assert verify_note(note, ORIGIN, PUBLIC) == text


@settings(max_examples=100)
@given(NOTE_TEXT, st.data())
def test_a_changed_body_fails(text: str, data: st.DataObject) -> None:
    note = sign_note(text, ORIGIN, KEY)
    i = data.draw(st.integers(min_value=0, max_value=len(text) - 1), label="position")
    changed = "X" if text[i] != "X" else "Y"
    tampered = text[:i] + changed + text[i + 1 :] + note[len(text) :]
    with pytest.raises(IntegrityError):
        verify_note(tampered, ORIGIN, PUBLIC)


@settings(max_examples=100)
@given(st.integers(min_value=4, max_value=67), st.integers(min_value=0, max_value=7))
def test_a_changed_signature_fails(byte: int, bit: int) -> None:
    text = format_checkpoint(ORIGIN, 7, ROOT)
    note = sign_note(text, ORIGIN, KEY)
    head, encoded = note.rsplit(" ", 1)
    blob = bytearray(base64.b64decode(encoded))
    blob[byte] ^= 1 << bit
    tampered = f"{head} {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_note(tampered, ORIGIN, PUBLIC)


def test_the_wrong_key_or_name_fails() -> None:
    note = sign_note(format_checkpoint(ORIGIN, 7, ROOT), ORIGIN, KEY)
    other_public = OTHER.public_key().public_bytes_raw()
    with pytest.raises(IntegrityError, match="no signature"):
        verify_note(note, ORIGIN, other_public)
    with pytest.raises(IntegrityError, match="no signature"):
        verify_note(note, "pdvault.example/other", PUBLIC)
    # A signature by another key that claims our key's name and ID is verified, and fails.
    forged = sign_note(format_checkpoint(ORIGIN, 7, ROOT), ORIGIN, OTHER)
    ours = key_id(ORIGIN, PUBLIC)
    head, encoded = forged.rsplit(" ", 1)
    blob = ours + base64.b64decode(encoded)[4:]
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_note(f"{head} {base64.b64encode(blob).decode()}\n", ORIGIN, PUBLIC)


def test_a_missing_signature_line_fails() -> None:
    text = format_checkpoint(ORIGIN, 7, ROOT)
    note = sign_note(text, ORIGIN, KEY)
    for tampered in [text, text + "\n", note[:-1], note.replace("\n\n", "\n")]:
        with pytest.raises(IntegrityError):
            verify_note(tampered, ORIGIN, PUBLIC)


@pytest.mark.parametrize(
    "line",
    [
        "— pdvault.example/audit\n",  # no signature
        "— pdvault.example/audit \n",
        "— pdvault.example/audit AAAAAA==\n",  # four bytes: a key ID, no signature
        "— pdvault.example/audit not base64!\n",
        "— pdvault.example/audit AAAAAAA=\n\n",
        "-- pdvault.example/audit AAAAAAA=\n",  # not an em dash
        "— pdvault example AAAAAAA=\n",
    ],
)
def test_a_malformed_signature_line_rejects_the_note(line: str) -> None:
    text = format_checkpoint(ORIGIN, 7, ROOT)
    ours = sign_note(text, ORIGIN, KEY)[len(text) + 1 :]
    with pytest.raises(IntegrityError, match="malformed"):
        verify_note(text + "\n" + ours + line, ORIGIN, PUBLIC)


def test_other_signatures_are_ignored_and_ours_is_found_among_them() -> None:
    text = format_checkpoint(ORIGIN, 7, ROOT)
    ours = sign_note(text, ORIGIN, KEY)[len(text) + 1 :]
    witness = sign_note(text, "witness.example", OTHER)[len(text) + 1 :]
    for lines in [witness + ours, ours + witness, witness * 20 + ours]:
        assert verify_note(text + "\n" + lines, ORIGIN, PUBLIC) == text
    with pytest.raises(IntegrityError, match="no signature"):
        verify_note(text + "\n" + witness, ORIGIN, PUBLIC)
    with pytest.raises(IntegrityError, match="malformed"):
        verify_note(text + "\n" + witness * MAX_SIGNATURES + ours, ORIGIN, PUBLIC)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\u00a0b", "a\nb", "lone \ud800"])
def test_a_key_name_is_checked_everywhere(name: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: generate_signer(name),
        lambda: verifier_key(name, PUBLIC),
        lambda: verify_note("text\n\n— x AAAAAAA=\n", name, PUBLIC),
        lambda: sign_note("text\n", name, KEY),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="key name"):
            call()


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("no final newline", ORIGIN),
        ("a control \x07 character\n", ORIGIN),
        ("a lone \ud800 surrogate\n", ORIGIN),
        ("fine\n", "a name with spaces"),
        ("fine\n", "a+plus"),
        ("fine\n", ""),
    ],
)
def test_what_cannot_be_signed_is_refused(text: str, name: str) -> None:
    with pytest.raises(ValueError, match=r"name|text"):
        sign_note(text, name, KEY)


# -- a signer that keeps its key elsewhere (HashiCorp Vault Transit) ------------------------------


def test_a_callable_signer_makes_the_same_note() -> None:
    text = format_checkpoint(ORIGIN, 7, ROOT)
    calls: list[bytes] = []

    def transit_sign(message: bytes) -> bytes:
        calls.append(message)
        return KEY.sign(message)

    note = sign_note(text, ORIGIN, transit_sign, public_key=PUBLIC)
    assert note == sign_note(text, ORIGIN, KEY)
    assert calls == [text.encode()]
    assert sign_note(text, ORIGIN, transit_sign, public_key=KEY.public_key()) == note


def test_a_callable_signer_needs_its_public_key_and_must_match_it() -> None:
    text = format_checkpoint(ORIGIN, 7, ROOT)
    with pytest.raises(ValueError, match="public key"):
        sign_note(text, ORIGIN, KEY.sign)
    with pytest.raises(ConfigurationError, match="does not verify"):
        sign_note(text, ORIGIN, OTHER.sign, public_key=PUBLIC)
    with pytest.raises(ConfigurationError):
        sign_note(text, ORIGIN, lambda message: b"vault:v1:not a raw signature", public_key=PUBLIC)
    with pytest.raises(ValueError, match="32 bytes"):
        sign_note(text, ORIGIN, KEY.sign, public_key=PUBLIC[:31])


def test_a_key_kept_in_transit_signs_checkpoints(client: Any) -> None:
    """The shape of the HashiCorp Vault Transit signer, against the emulator through hvac: the
    `sign` answer is `vault:v1:<base64 signature>`, the public key comes from the key's read."""
    transit = client.secrets.transit
    transit.create_key("audit-checkpoints", key_type="ed25519")
    public = base64.b64decode(
        transit.read_key("audit-checkpoints")["data"]["keys"]["1"]["public_key"]
    )

    def transit_sign(message: bytes) -> bytes:
        answer = transit.sign_data("audit-checkpoints", b64(message))["data"]["signature"]
        prefix, version, encoded = answer.split(":")
        assert (prefix, version) == ("vault", "v1")
        return base64.b64decode(encoded)

    text = format_checkpoint(ORIGIN, 42, ROOT)
    note = sign_note(text, ORIGIN, transit_sign, public_key=public)
    verifier = parse_verifier_key(verifier_key(ORIGIN, public))
    assert parse_checkpoint(verify_note(note, verifier.name, verifier.public_key)) == (
        ORIGIN,
        42,
        ROOT,
    )


# -- checkpoints ----------------------------------------------------------------------------------


@settings(max_examples=100)
@given(
    st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=40),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.binary(min_size=32, max_size=32),
)
def test_checkpoints_round_trip(origin: str, size: int, root: bytes) -> None:
    text = format_checkpoint(origin, size, root)
    assert parse_checkpoint(text) == (origin, size, root)
    note = sign_note(text, ORIGIN, KEY)
    assert parse_checkpoint(verify_note(note, ORIGIN, PUBLIC)) == (origin, size, root)


def test_the_c2sp_example_checkpoint_parses() -> None:
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert parse_checkpoint(text) == (
        "example.com/behind-the-sofa",
        20852163,
        base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="),
    )
    assert format_checkpoint(*parse_checkpoint(text)) == text


def test_extension_lines_are_allowed_and_signed() -> None:
    text = format_checkpoint(ORIGIN, 0, EMPTY_ROOT, ["timestamp 1764000000"])
    assert text.endswith("\ntimestamp 1764000000\n")
    assert parse_checkpoint(text) == (ORIGIN, 0, EMPTY_ROOT)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "origin\n1\n",
        f"origin\n1\n{base64.b64encode(ROOT).decode()}",  # no final newline
        f"\n1\n{base64.b64encode(ROOT).decode()}\n",  # empty origin
        f"origin\n01\n{base64.b64encode(ROOT).decode()}\n",  # a leading zero
        f"origin\n+1\n{base64.b64encode(ROOT).decode()}\n",
        f"origin\n 1\n{base64.b64encode(ROOT).decode()}\n",
        f"origin\n1_0\n{base64.b64encode(ROOT).decode()}\n",
        f"origin\n\u0661\n{base64.b64encode(ROOT).decode()}\n",  # an Arabic-Indic digit
        f"origin\n{2**64}\n{base64.b64encode(ROOT).decode()}\n",
        f"origin\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",
        f"origin\n1\n{base64.b64encode(ROOT).decode().rstrip('=')}\n",
        f"origin\n1\n{base64.b64encode(ROOT).decode()}\n\n",  # an empty extension line
        f"ori\tgin\n1\n{base64.b64encode(ROOT).decode()}\n",
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(IntegrityError, match="checkpoint"):
        parse_checkpoint(text)


@pytest.mark.parametrize(
    ("origin", "size", "root", "extensions"),
    [
        ("", 1, ROOT, []),
        ("two\nlines", 1, ROOT, []),
        (ORIGIN, -1, ROOT, []),
        (ORIGIN, 1, ROOT[:31], []),
        (ORIGIN, 1, ROOT, [""]),
        (ORIGIN, 1, ROOT, ["a\nb"]),
    ],
)
def test_a_checkpoint_that_cannot_be_written_is_refused(
    origin: str, size: int, root: bytes, extensions: list[str]
) -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        format_checkpoint(origin, size, root, extensions)
