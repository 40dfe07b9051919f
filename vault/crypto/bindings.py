"""The sealed subject binding of documents stored before keyed digests.

Such a document's content key and wrapped keys are bound (DV1's `binding`) to the unkeyed
SHA-256 of its subject's id, which a dictionary of ids reverses; the document cannot be opened
without it, and it must outlive the subject's id when the document is retained after a shred.
So the database keeps it only sealed:

    sealed  = 0x01 | nonce:12 | AES-256-GCM(binding key, nonce, unkeyed digest:32, ad)   (61 bytes)
        ad  = "pdvault.v1.document-binding" 0x00 | 0x01 | document id
    binding key = SubjectNames.derive("document-binding"): HKDF-Expand of the naming secret

Reading it back takes the service-wide naming secret, exactly as recognising a keyed digest
does; the document id in the associated data stops a sealed binding being moved to another
document. Random 96-bit nonces: one seal per legacy document, once (SP 800-38D section 8.3's
2^32 is far away).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.domain.naming import SubjectNames
from vault.errors import IntegrityError

__all__ = ["SEALED_BINDING_BYTES", "BindingSeal"]

_VERSION = 0x01
_NONCE_BYTES = 12
_DIGEST_BYTES = 32
SEALED_BINDING_BYTES = 1 + _NONCE_BYTES + _DIGEST_BYTES + 16
_AD = b"pdvault.v1.document-binding\x00" + bytes([_VERSION])
LABEL = b"document-binding"


class BindingSeal:
    """Seals and opens the unkeyed subject digest a legacy document is bound to. The key never
    appears in a repr."""

    __slots__ = ("_aead",)

    def __init__(self, names: SubjectNames) -> None:
        key = names.derive(LABEL)
        try:
            self._aead = AESGCM(key.reveal())
        finally:
            key.wipe()

    def __repr__(self) -> str:
        return "BindingSeal(<keyed>)"

    def seal(self, document_id: str, unkeyed: str) -> bytes:
        """`unkeyed` (64 hex characters) sealed to `document_id`."""
        raw = bytes.fromhex(unkeyed)
        if len(raw) != _DIGEST_BYTES:
            raise ValueError("a subject digest is 32 bytes")
        nonce = os.urandom(_NONCE_BYTES)
        return bytes([_VERSION]) + nonce + self._aead.encrypt(nonce, raw, _ad(document_id))

    def open(self, document_id: str, sealed: bytes) -> str:
        """The unkeyed digest (hex) sealed to `document_id`; `IntegrityError` for anything else
        (another document's, another naming secret's, or tampered)."""
        # Length and version are checked before the key is used (STYLE habit 6).
        if len(sealed) != SEALED_BINDING_BYTES or sealed[0] != _VERSION:
            raise IntegrityError()
        try:
            raw = self._aead.decrypt(
                sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :], _ad(document_id)
            )
        except InvalidTag:
            raise IntegrityError() from None
        return raw.hex()


def _ad(document_id: str) -> bytes:
    return _AD + document_id.encode("utf-8")
