"""The sealed subject binding of documents stored before keyed digests (vault.crypto.bindings)
and the key it is sealed under (SubjectNames.derive)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from vault.crypto.bindings import LABEL, SEALED_BINDING_BYTES, BindingSeal
from vault.domain.naming import SubjectNames, unkeyed_subject_digest
from vault.domain.secrets import Secret
from vault.errors import IntegrityError

SECRET = b"s" * 32
NAMES = SubjectNames(Secret(SECRET))
OTHER = SubjectNames(Secret(b"o" * 32))
DIGEST = unkeyed_subject_digest("user-42")
DOC = "doc_aaaaaaaaaaaaaaaaaaaaaaaaaa"


def test_the_derived_key_is_hkdf_expand_of_the_naming_secret() -> None:
    info = b"pdvault.v1.naming-derive\x00" + LABEL
    expected = HKDFExpand(hashes.SHA256(), 32, info).derive(SECRET)
    assert NAMES.derive(LABEL) == Secret(expected)
    assert NAMES.derive(LABEL) != NAMES.derive(b"another use")
    assert NAMES.derive(LABEL) != OTHER.derive(LABEL)
    with pytest.raises(ValueError, match="label"):
        NAMES.derive(b"")


def test_a_sealed_binding_opens_to_the_unkeyed_digest() -> None:
    seal = BindingSeal(NAMES)
    sealed = seal.seal(DOC, DIGEST)
    assert len(sealed) == SEALED_BINDING_BYTES
    assert bytes.fromhex(DIGEST) not in sealed
    assert DIGEST.encode() not in sealed
    assert seal.open(DOC, sealed) == DIGEST
    assert BindingSeal(NAMES).open(DOC, sealed) == DIGEST  # the same secret, another process
    assert seal.seal(DOC, DIGEST) != sealed  # a fresh nonce each time


@pytest.mark.parametrize(
    "why",
    ["another document", "another naming secret", "tampered", "truncated", "another version"],
)
def test_anything_else_fails_as_an_integrity_error(why: str) -> None:
    sealed = BindingSeal(NAMES).seal(DOC, DIGEST)
    seal, doc = BindingSeal(NAMES), DOC
    if why == "another document":
        doc = "doc_bbbbbbbbbbbbbbbbbbbbbbbbbb"
    elif why == "another naming secret":
        seal = BindingSeal(OTHER)
    elif why == "tampered":
        sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
    elif why == "truncated":
        sealed = sealed[:-1]
    else:
        sealed = b"\x02" + sealed[1:]
    with pytest.raises(IntegrityError):
        seal.open(doc, sealed)


def test_only_a_digest_is_sealed_and_the_key_is_never_shown() -> None:
    seal = BindingSeal(NAMES)
    with pytest.raises(ValueError, match="32 bytes"):
        seal.seal(DOC, "abcd")
    assert repr(seal) == "BindingSeal(<keyed>)"
    assert "sss" not in repr(seal)
