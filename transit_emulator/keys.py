"""One named Transit key (a ``keysutil.Policy``) and the cryptography of its versions.

Two key types exist here: ``aes256-gcm96`` (encrypt, decrypt, rewrap, datakey) and ``ed25519``
(sign, verify). Every version of either type also has its own random 32-byte HMAC key, as in
Vault, so ``hmac`` works with both. Texts and checks follow ``sdk/helper/keysutil/policy.go``;
sources are in ``shared/reference/vault-transit.md`` and ``docs/vault-transit-hmac-sign.md``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from transit_emulator.errors import ERR_TOO_OLD, OpError
from transit_emulator.fields import JSON, Base64Error, b64encode, go_b64decode, rfc3339_nano

AES = "aes256-gcm96"
ED25519 = "ed25519"
KEY_TYPES = (AES, ED25519)
_VERSION = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts


@dataclass
class Version:
    """One key version: the AES key or the Ed25519 seed, its HMAC key, its creation time."""

    material: bytes = field(repr=False)
    hmac_key: bytes = field(repr=False)
    created: float

    def public_key(self) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.material).public_key().public_bytes_raw()


def _split(text: str, what: str) -> tuple[int, str]:
    """``vault:v<N>:<rest>`` -> (N, rest), with keysutil's ``invalid <what>: ...`` errors."""
    if not text.startswith("vault:v"):
        raise OpError(f"invalid {what}: no prefix")
    parts = text[len("vault:v") :].split(":", 1)
    if len(parts) != 2:
        raise OpError(f"invalid {what}: wrong number of fields")
    if not _VERSION.fullmatch(parts[0]):
        raise OpError(f"invalid {what}: version number could not be decoded")
    return int(parts[0]), parts[1]


def _raw_url_b64decode(text: str) -> bytes:
    """Go's ``base64.RawURLEncoding``: URL alphabet, no padding."""
    if "=" in text:
        raise ValueError(text)
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


@dataclass
class TransitKey:
    """A named key: versions 1..latest, those below min_decryption_version archived and those
    below min_available_version trimmed (deleted for good)."""

    name: str
    type: str
    exportable: bool = False
    allow_plaintext_backup: bool = False
    auto_rotate_period: int = 0
    deletion_allowed: bool = False
    min_decryption_version: int = 1
    min_encryption_version: int = 0
    min_available_version: int = 0
    latest_version: int = 0
    versions: dict[int, Version] = field(default_factory=dict, repr=False)

    def rotate(self, now: float) -> None:
        self.latest_version += 1
        if self.type == ED25519:
            seed = Ed25519PrivateKey.generate().private_bytes_raw()
        else:
            seed = os.urandom(32)
        self.versions[self.latest_version] = Version(seed, os.urandom(32), now)

    def created(self, version: int) -> float:
        return self.versions[version].created

    def info(self) -> JSON:
        """``formatKeyPolicy``; ``keys`` shows the working set (>= min_decryption_version)."""
        working = range(self.min_decryption_version, self.latest_version + 1)
        keys: JSON
        if self.type == ED25519:
            keys = {
                str(v): {
                    "certificate_chain": "",
                    "creation_time": rfc3339_nano(self.versions[v].created),
                    "name": "ed25519",
                    "public_key": b64encode(self.versions[v].public_key()),
                }
                for v in working
            }
        else:
            keys = {str(v): int(self.versions[v].created) for v in working}
        data: JSON = {
            "allow_plaintext_backup": self.allow_plaintext_backup,
            "auto_rotate_period": self.auto_rotate_period,
            "deletion_allowed": self.deletion_allowed,
            "derived": False,
            "exportable": self.exportable,
            "imported_key": False,
            "keys": keys,
            "latest_version": self.latest_version,
            "min_available_version": self.min_available_version,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "name": self.name,
            "supports_decryption": self.type == AES,
            "supports_derivation": True,
            "supports_encryption": self.type == AES,
            "supports_signing": self.type == ED25519,
            "type": self.type,
        }
        return data

    def trim(self, min_available: int) -> None:
        self.min_available_version = min_available
        for version in [v for v in self.versions if v < min_available]:
            del self.versions[version]

    def _entry(self, version: int) -> Version:
        """``safeGetKeyEntry``: only the working set is loaded."""
        if version < self.min_decryption_version or version not in self.versions:
            raise OpError("no such key version")
        return self.versions[version]

    def _write_version(self, version: int, purpose: str) -> int:
        """The version to encrypt or sign with: 0 is the latest; the minimum applies."""
        if version == 0:
            return self.latest_version
        if version < 0:
            raise OpError(f"requested version for {purpose} is negative")
        if version > self.latest_version:
            raise OpError(f"requested version for {purpose} is higher than the latest key version")
        if version < self.min_encryption_version:
            raise OpError(
                f"requested version for {purpose} is less than the minimum encryption key version"
            )
        return version

    # ------------------------------------------------------------------------- aes256-gcm96

    @staticmethod
    def _aad(encoded: str) -> bytes:
        """``AssocDataFactory.GetAssociatedData``; index 0 as no padding factory precedes it."""
        try:
            return go_b64decode(encoded)
        except Base64Error as exc:
            message = f"unable to get associated_data/additional_data from factory[0]: {exc}"
            raise OpError(message, internal=True) from None

    def encrypt(self, version: int, plaintext_b64: str, aad_b64: str = "") -> str:
        """``EncryptWithFactory``: ``vault:vN:base64(nonce|ct|tag)``, a 12-byte random nonce."""
        if self.type != AES:
            raise OpError(f"message encryption not supported for key type {self.type}")
        try:
            plaintext = go_b64decode(plaintext_b64)
        except Base64Error as exc:
            raise OpError(str(exc)) from None
        version = self._write_version(version, "encryption")
        key = self._entry(version).material
        aad = self._aad(aad_b64)
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext, aad)
        return f"vault:v{version}:{b64encode(nonce + sealed)}"

    def decrypt(self, ciphertext: str, aad_b64: str = "") -> str:
        """``DecryptWithFactory``, checks in Vault's order; returns the base64 plaintext."""
        if self.type != AES:
            raise OpError(f"message decryption not supported for key type {self.type}")
        version, body = _split(ciphertext, "ciphertext")
        version = version or 1  # compatibility: version 0 is read as 1
        if version > self.latest_version:
            raise OpError("invalid ciphertext: version is too new")
        if version < self.min_decryption_version:
            raise OpError(ERR_TOO_OLD)
        try:
            decoded = go_b64decode(body)
        except Base64Error:
            raise OpError("invalid ciphertext: could not decode base64") from None
        key = self._entry(version).material
        aad = self._aad(aad_b64)
        if len(decoded) < 12:
            raise OpError("invalid ciphertext length")
        try:
            plain = AESGCM(key).decrypt(decoded[:12], decoded[12:], aad)
        except InvalidTag:
            raise OpError("cipher: message authentication failed") from None
        return b64encode(plain)

    # ------------------------------------------------------------------------------- hmac

    def hmac_key(self, version: int) -> bytes:
        """``Policy.HMACKey``."""
        if version < 0:
            raise OpError("key version does not exist (cannot be negative)")
        if version > self.latest_version:
            raise OpError(
                f"key version does not exist; latest key version is {self.latest_version}"
            )
        return self._entry(version).hmac_key

    # ---------------------------------------------------------------------------- ed25519

    def sign(self, version: int, message: bytes, jws: bool) -> tuple[str, int]:
        """``SignWithOptions`` for a pure Ed25519 signature; returns (signature, version)."""
        version = self._write_version(version, "signing")
        seed = self._entry(version).material
        raw = Ed25519PrivateKey.from_private_bytes(seed).sign(message)
        if jws:  # marshaling_algorithm=jws: URL-safe base64 without padding, for any key type
            encoded = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
        else:
            encoded = b64encode(raw)
        return f"vault:v{version}:{encoded}", version

    def verify(self, signature: str, message: bytes, jws: bool) -> bool:
        """``VerifySignatureWithOptions``: format errors raise, a wrong signature is False."""
        version, body = _split(signature, "signature")
        if version > self.latest_version:
            raise OpError("invalid signature: version is too new")
        if self.min_decryption_version > 0 and version < self.min_decryption_version:
            raise OpError(ERR_TOO_OLD)
        try:
            raw = _raw_url_b64decode(body) if jws else go_b64decode(body)
        except (ValueError, binascii.Error):
            raise OpError("invalid base64 signature value") from None
        public = Ed25519PublicKey.from_public_bytes(self._entry(version).public_key())
        try:
            public.verify(raw, message)
        except InvalidSignature:
            return False
        return True
