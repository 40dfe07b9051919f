"""vault.crypto: known answers, tampering, swapped rows, nonces, limits."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.vectors import load_vectors
from vault.crypto.aead import (
    NONCE_BYTES,
    OVERHEAD,
    AesGcmCipher,
    seal_value,
    unwrap_key,
    wrap_key,
    wrapped_key_version,
)
from vault.domain.ports import Binding
from vault.domain.secrets import Secret
from vault.domain.types import Category, PlainValue, SubjectId, Token, ValueKind
from vault.errors import IntegrityError

CIPHER = AesGcmCipher()
KEY = Secret(bytes(range(32)))
BINDING = Binding(Token("tok_aaaaaaaaaaaaaaaaaaaaaaaaaa"), SubjectId("user-42"), Category("name"))


@pytest.mark.parametrize("v", load_vectors("aes_gcm_nist.json"), ids=lambda v: v["name"])
def test_the_primitive_matches_the_gcm_specification(v: dict[str, Any]) -> None:
    aead = AESGCM(bytes.fromhex(v["key"]))
    out = aead.encrypt(
        bytes.fromhex(v["nonce"]), bytes.fromhex(v["plaintext"]), bytes.fromhex(v["aad"]) or None
    )
    assert out.hex() == v["ciphertext"] + v["tag"]


@pytest.mark.parametrize("v", load_vectors("pdvault_value_v1.json"), ids=lambda v: v["token"])
def test_value_format_v1_known_answers(v: dict[str, Any]) -> None:
    value = (
        PlainValue.text(v["value"])
        if v["kind"] == "text"
        else PlainValue.binary(bytes.fromhex(v["value"]))
    )
    binding = Binding(Token(v["token"]), SubjectId(v["subject"]), Category(v["category"]))
    key = Secret(bytes.fromhex(v["key"]))
    sealed = seal_value(key, binding, value, nonce=bytes.fromhex(v["nonce"]))
    assert sealed.hex() == v["ciphertext"]
    opened = CIPHER.open(key, binding, bytes.fromhex(v["ciphertext"]))
    assert opened.kind is value.kind
    assert opened.data == value.data


@settings(max_examples=50)
@given(st.text(min_size=1, max_size=200))
def test_round_trip(text: str) -> None:
    sealed = CIPHER.seal(KEY, BINDING, PlainValue.text(text))
    assert CIPHER.open(KEY, BINDING, sealed).data.reveal_text() == text


def test_nonces_are_fresh_and_random() -> None:
    value = PlainValue.text("same value")
    nonces = {CIPHER.seal(KEY, BINDING, value)[5 : 5 + NONCE_BYTES] for _ in range(2000)}
    assert len(nonces) == 2000


def test_every_flipped_byte_is_detected() -> None:
    sealed = bytearray(CIPHER.seal(KEY, BINDING, PlainValue.text("Jane Doe")))
    for i in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        with pytest.raises(IntegrityError):
            CIPHER.open(KEY, BINDING, bytes(tampered))


@pytest.mark.parametrize(
    "other",
    [
        Binding(Token("tok_bbbbbbbbbbbbbbbbbbbbbbbbbb"), SubjectId("user-42"), Category("name")),
        Binding(Token("tok_aaaaaaaaaaaaaaaaaaaaaaaaaa"), SubjectId("user-43"), Category("name")),
        Binding(Token("tok_aaaaaaaaaaaaaaaaaaaaaaaaaa"), SubjectId("user-42"), Category("email")),
    ],
    ids=["token", "subject", "category"],
)
def test_a_row_cannot_be_swapped(other: Binding) -> None:
    sealed = CIPHER.seal(KEY, BINDING, PlainValue.text("Jane Doe"))
    with pytest.raises(IntegrityError):
        CIPHER.open(KEY, other, sealed)


def test_binding_fields_cannot_bleed_into_each_other() -> None:
    # Length prefixes: ("ab", "c") and ("a", "bc") are different bindings.
    a = Binding(Token("tok_x"), SubjectId("ab"), Category("c"))
    b = Binding(Token("tok_x"), SubjectId("a"), Category("bc"))
    with pytest.raises(IntegrityError):
        CIPHER.open(KEY, b, CIPHER.seal(KEY, a, PlainValue.text("v")))


def test_wrong_key_and_malformed_ciphertexts_fail_opaquely() -> None:
    sealed = CIPHER.seal(KEY, BINDING, PlainValue.text("v"))
    for bad_key, blob in [
        (Secret(bytes(32)), sealed),
        (KEY, b""),
        (KEY, sealed[:OVERHEAD]),
        (KEY, b"\x02" + sealed[1:]),
        (Secret(b"short"), sealed),
    ]:
        with pytest.raises(IntegrityError) as err:
            CIPHER.open(bad_key, BINDING, blob)
        assert str(err.value) == "stored data failed its integrity check"


def test_values_keep_their_kind() -> None:
    sealed = CIPHER.seal(KEY, BINDING, PlainValue.binary(b"\x00\xff"))
    opened = CIPHER.open(KEY, BINDING, sealed)
    assert opened.kind is ValueKind.BINARY
    assert opened.data.reveal() == b"\x00\xff"


def test_caller_chosen_nonces_must_be_96_bits() -> None:
    with pytest.raises(ValueError, match="96 bits"):
        seal_value(KEY, BINDING, PlainValue.text("v"), nonce=b"\x00" * 8)


def test_wrapped_keys_are_bound_to_their_subject() -> None:
    kek, dek = Secret(bytes(range(32, 64))), Secret(bytes(range(32)))
    blob = wrap_key(kek, 3, SubjectId("user-1"), dek)
    assert wrapped_key_version(blob) == 3
    unwrapped = unwrap_key(kek, SubjectId("user-1"), blob)
    assert unwrapped is not None
    assert unwrapped == dek
    assert unwrap_key(kek, SubjectId("user-2"), blob) is None
    assert unwrap_key(Secret(bytes(32)), SubjectId("user-1"), blob) is None
    assert unwrap_key(kek, SubjectId("user-1"), blob[:-1]) is None
    assert wrapped_key_version(b"junk") is None


def test_fingerprints_are_keyed() -> None:
    a = CIPHER.fingerprint(KEY, b"message")
    assert a == CIPHER.fingerprint(KEY, b"message")
    assert a != CIPHER.fingerprint(Secret(bytes(32)), b"message")
    assert a != CIPHER.fingerprint(KEY, b"other")


def test_new_data_keys_are_256_bit_and_distinct() -> None:
    keys = [CIPHER.new_data_key() for _ in range(100)]
    assert all(len(k) == 32 for k in keys)
    assert len({k.reveal() for k in keys}) == 100


def test_an_opener_opens_what_open_opens_and_refuses_the_same() -> None:
    sealed = CIPHER.seal(KEY, BINDING, PlainValue.text("Jane Doe"))
    open_value = CIPHER.opener(KEY)
    assert open_value(BINDING, sealed).data.reveal_text() == "Jane Doe"
    other = Binding(Token("tok_bbbbbbbbbbbbbbbbbbbbbbbbbb"), SubjectId("user-42"), Category("name"))
    with pytest.raises(IntegrityError):
        open_value(other, sealed)
    with pytest.raises(IntegrityError):
        CIPHER.opener(Secret(b"short"))
