"""The only module that touches AES-GCM: sealing values under data keys, and data keys under a
local key-encryption key. Everything above it uses these recipes, never the primitive.

Formats (all integers big-endian):

    value ciphertext  = 0x01 | dek_version:u32 | nonce:12 | AES-256-GCM(ct || tag:16)
        plaintext     = kind:u8 | value bytes
        assoc. data   = "pdvault.v1.value" 0x00 | header | lp(token) | lp(subject) | lp(category)
    wrapped data key  = 0x01 | kek_version:u32 | nonce:12 | AES-256-GCM(dek:32 || tag:16)
        assoc. data   = "pdvault.v1.dek" 0x00 | header | lp(subject)

where header is the first 5 bytes and lp(x) is a u16 length followed by x in UTF-8.

Nonces are 96 random bits from the OS CSPRNG, drawn per encryption, never reused by design. NIST
SP 800-38D section 8.3 limits a key to 2^32 such encryptions; the store counts them per data key.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vault.domain.ports import Binding
from vault.domain.secrets import Secret
from vault.domain.types import PlainValue, SubjectId, ValueKind
from vault.errors import IntegrityError

__all__ = [
    "FORMAT_V1",
    "HEADER_BYTES",
    "KEY_BYTES",
    "MAX_VALUE_CIPHERTEXT",
    "NONCE_BYTES",
    "OVERHEAD",
    "TAG_BYTES",
    "WRAPPED_KEY_BYTES",
    "AesGcmCipher",
    "random_key",
    "seal_value",
    "unwrap_key",
    "wrap_key",
    "wrapped_key_version",
]


FORMAT_V1 = 0x01
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER = struct.Struct(">BI")
HEADER_BYTES = _HEADER.size
OVERHEAD = HEADER_BYTES + NONCE_BYTES + TAG_BYTES
# The largest value any category allows (4 MiB) plus its kind byte; checked before decrypting.
MAX_VALUE_CIPHERTEXT = OVERHEAD + 1 + 4 * 1024 * 1024
WRAPPED_KEY_BYTES = OVERHEAD + KEY_BYTES

_VALUE_AD = b"pdvault.v1.value\x00"
_DEK_AD = b"pdvault.v1.dek\x00"
_FINGERPRINT_INFO = b"pdvault.v1.request-fingerprint"


def random_key() -> Secret:
    """A fresh 256-bit key from the OS CSPRNG."""
    return Secret(os.urandom(KEY_BYTES))


def _lp(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw


def _value_ad(header: bytes, binding: Binding) -> bytes:
    return b"".join(
        (_VALUE_AD, header, _lp(binding.token), _lp(binding.subject), _lp(binding.category))
    )


def _aead(key: Secret) -> AESGCM:
    if len(key) != KEY_BYTES:
        raise IntegrityError()
    return AESGCM(key.reveal())


class AesGcmCipher:
    """The `Cipher` port: AES-256-GCM with associated data binding each value to its row."""

    def new_data_key(self) -> Secret:
        return random_key()

    def seal(self, key: Secret, binding: Binding, value: PlainValue) -> bytes:
        return seal_value(key, binding, value, nonce=os.urandom(NONCE_BYTES))

    def open(self, key: Secret, binding: Binding, ciphertext: bytes) -> PlainValue:
        return _open(_aead(key), binding, ciphertext)

    def opener(self, key: Secret) -> Callable[[Binding, bytes], PlainValue]:
        """`open` for many values under one key: the AES key schedule is set up once."""
        aead = _aead(key)
        return lambda binding, ciphertext: _open(aead, binding, ciphertext)

    def fingerprint(self, key: Secret, message: bytes) -> bytes:
        subkey = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=_FINGERPRINT_INFO
        ).derive(key.reveal())
        mac = hmac.HMAC(subkey, hashes.SHA256())
        mac.update(message)
        return mac.finalize()


def _open(aead: AESGCM, binding: Binding, ciphertext: bytes) -> PlainValue:
    # Lengths and version are checked before any key is used (STYLE habit 6).
    if not OVERHEAD + 1 <= len(ciphertext) <= MAX_VALUE_CIPHERTEXT:
        raise IntegrityError()
    header = ciphertext[:HEADER_BYTES]
    if header[0] != FORMAT_V1:
        raise IntegrityError()
    nonce = ciphertext[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
    try:
        plaintext = aead.decrypt(
            nonce, ciphertext[HEADER_BYTES + NONCE_BYTES :], _value_ad(header, binding)
        )
    except InvalidTag:
        raise IntegrityError() from None
    try:
        kind = ValueKind(plaintext[0])
    except ValueError:
        raise IntegrityError() from None
    return PlainValue(kind, Secret(plaintext[1:]))


def seal_value(
    key: Secret, binding: Binding, value: PlainValue, *, nonce: bytes, dek_version: int = 1
) -> bytes:
    """Seal with a given nonce. Only `AesGcmCipher.seal` (random nonce) and known-answer tests
    call this: a caller-chosen nonce is how GCM breaks, so nothing else may."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError("a GCM nonce here is 96 bits")
    header = _HEADER.pack(FORMAT_V1, dek_version)
    plaintext = bytes([value.kind]) + value.data.reveal()
    return header + nonce + _aead(key).encrypt(nonce, plaintext, _value_ad(header, binding))


def wrap_key(kek: Secret, kek_version: int, subject: SubjectId, dek: Secret) -> bytes:
    """Wrap a data key under a local key-encryption key, bound to its subject."""
    if len(dek) != KEY_BYTES:
        raise ValueError("a data key is 32 bytes")
    header = _HEADER.pack(FORMAT_V1, kek_version)
    nonce = os.urandom(NONCE_BYTES)
    ad = _DEK_AD + header + _lp(subject)
    return header + nonce + _aead(kek).encrypt(nonce, dek.reveal(), ad)


def wrapped_key_version(blob: bytes) -> int | None:
    """The key-encryption-key version a wrapped key names, or None if it is malformed."""
    if len(blob) != WRAPPED_KEY_BYTES or blob[0] != FORMAT_V1:
        return None
    version: int = _HEADER.unpack(blob[:HEADER_BYTES])[1]
    return version


def unwrap_key(kek: Secret, subject: SubjectId, blob: bytes) -> Secret | None:
    """Unwrap a data key; None if it does not authenticate (tampered, swapped, wrong key)."""
    if wrapped_key_version(blob) is None:
        return None
    header = blob[:HEADER_BYTES]
    nonce = blob[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
    try:
        dek = _aead(kek).decrypt(
            nonce, blob[HEADER_BYTES + NONCE_BYTES :], _DEK_AD + header + _lp(subject)
        )
    except InvalidTag:
        return None
    return Secret(dek)
