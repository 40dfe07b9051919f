"""Signed notes (c2sp.org/signed-note) and transparency-log checkpoints (c2sp.org/tlog-checkpoint)
with Ed25519, the format Go's golang.org/x/mod/sumdb/note reads and writes: the audit log's tree
heads, signed so that a copy kept outside the database can be checked against the log.

    checkpoint text = origin "\\n" size "\\n" base64(root) "\\n" (extension line "\\n")*
    signed note     = text "\\n" ("— " key-name " " base64(key ID:4 || signature:64) "\\n")+
    key ID          = SHA-256(key-name || 0x0A || 0x01 || Ed25519 public key:32)[:4]
    verifier key    = key-name "+" hex(key ID) "+" base64(0x01 || public key)
    signer key      = "PRIVATE+KEY+" key-name "+" hex(key ID) "+" base64(0x01 || private seed)

A note is signed by a local Ed25519 key or by any callable that returns a raw Ed25519 signature
of the text, such as HashiCorp Vault Transit's `sign` with an ed25519 key, so the key can stay in
HashiCorp Vault. Verification follows the spec: signatures by other keys are ignored, a failing
signature by the expected key rejects the note, and a note without one is rejected.

Malformed keys and texts given to be signed raise ValueError (a caller's mistake); a note or
checkpoint that does not verify or parse raises IntegrityError (the data is not what was signed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vault.errors import ConfigurationError, IntegrityError

__all__ = [
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "Checkpoint",
    "RawSigner",
    "SignerKey",
    "VerifierKey",
    "format_checkpoint",
    "generate_signer",
    "key_id",
    "parse_checkpoint",
    "parse_signer_key",
    "parse_verifier_key",
    "sign_note",
    "verifier_key",
    "verify_note",
]


ALG_ED25519 = 0x01
# Go's note.Open refuses more; c2sp.org/signed-note: verifiers MUST accept at least 16.
MAX_SIGNATURES = 100
_KEY_BYTES = 32
_SIGNATURE_BYTES = 64
_KEY_ID_BYTES = 4
_SIG_PREFIX = "— "  # em dash (U+2014), space
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_HEX8 = re.compile(r"[0-9a-f]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")  # no sign, no leading zero, no other digits
_ROOT_BYTES = 32

RawSigner = Callable[[bytes], bytes]
"""Signs a message: returns the raw 64-byte Ed25519 signature (no prefix, no encoding)."""


def _valid_name(name: str) -> bool:
    # Go's isValidName: non-empty, no Unicode space, no plus; control characters are never
    # allowed in a note at all.
    return (
        bool(name)
        and "+" not in name
        and not any(c.isspace() or c < " " for c in name)
        and _utf8(name) is not None
    )


def _check_name(name: str) -> None:
    if not _valid_name(name):
        raise ValueError("a key name is non-empty, without spaces, plus signs or controls")


def _utf8(text: str) -> bytes | None:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: not valid UTF-8
        return None


def _well_formed(text: str) -> bool:
    """c2sp.org/signed-note: valid UTF-8 and no ASCII control character other than newline."""
    return _utf8(text) is not None and not any(c < " " and c != "\n" for c in text)


def _b64decode(text: str) -> bytes | None:
    """Standard base64 (RFC 4648 section 4) in its one canonical spelling, or None. Python's
    decoder alone accepts surplus padding and stray bits; what Go's encoder writes is canonical."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID of an Ed25519 key under a name (c2sp.org/signed-note, Ed25519)."""
    return hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key
    ).digest()[:_KEY_ID_BYTES]


def _raw_public(public_key: bytes | Ed25519PublicKey) -> bytes:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key.public_bytes_raw()
    if len(public_key) != _KEY_BYTES:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return bytes(public_key)


@dataclass(frozen=True)
class VerifierKey:
    """A public key with its name, as Go's note.NewVerifier reads it."""

    name: str
    key_id: bytes
    public_key: bytes

    def __str__(self) -> str:
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{encoded}"


@dataclass(frozen=True, eq=False)
class SignerKey:
    """A private key with its name, as Go's note.NewSigner reads it. Never printed."""

    name: str
    key_id: bytes
    private_key: Ed25519PrivateKey = field(repr=False)

    def verifier(self) -> VerifierKey:
        public = self.private_key.public_key().public_bytes_raw()
        return VerifierKey(self.name, self.key_id, public)


def verifier_key(name: str, public_key: bytes | Ed25519PublicKey) -> str:
    """The verifier key string of a public key (Go's note.NewEd25519VerifierKey): what an
    operator hands to whoever checks the checkpoints, e.g. for a key kept in Transit."""
    _check_name(name)
    raw = _raw_public(public_key)
    return str(VerifierKey(name, key_id(name, raw), raw))


def _split_key(text: str) -> tuple[str, bytes, bytes]:
    """name, key ID and the Ed25519 key bytes of `name+hash+base64(0x01||key)`."""
    name, _, rest = text.partition("+")
    hash_hex, _, material = rest.partition("+")
    key = _b64decode(material)
    if (
        not _valid_name(name)
        or not _HEX8.fullmatch(hash_hex)
        or key is None
        or len(key) != 1 + _KEY_BYTES
        or key[0] != ALG_ED25519
    ):
        raise ValueError("not an Ed25519 note key (name+hash+key)")
    return name, bytes.fromhex(hash_hex), key[1:]


def parse_verifier_key(text: str) -> VerifierKey:
    """Read `name+hash+base64(0x01||public key)`; ValueError unless the hash matches."""
    name, kid, public = _split_key(text)
    if kid != key_id(name, public):
        raise ValueError("the verifier key's hash does not match its key")
    return VerifierKey(name, kid, public)


def parse_signer_key(text: str) -> SignerKey:
    """Read `PRIVATE+KEY+name+hash+base64(0x01||seed)`; ValueError unless the hash matches
    the public key derived from the seed. The message never repeats the key."""
    if not text.startswith(_PRIVATE_PREFIX):
        raise ValueError("not a note signer key (PRIVATE+KEY+name+hash+key)")
    name, kid, seed = _split_key(text[len(_PRIVATE_PREFIX) :])
    private = Ed25519PrivateKey.from_private_bytes(seed)
    if kid != key_id(name, private.public_key().public_bytes_raw()):
        raise ValueError("the signer key's hash does not match its key")
    return SignerKey(name, kid, private)


def generate_signer(name: str) -> tuple[str, str]:
    """A new Ed25519 key: (signer key string, to keep secret; verifier key string, to publish),
    as Go's note.GenerateKey makes them."""
    _check_name(name)
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    kid = key_id(name, public)
    seed = base64.b64encode(bytes([ALG_ED25519]) + private.private_bytes_raw()).decode("ascii")
    return f"{_PRIVATE_PREFIX}{name}+{kid.hex()}+{seed}", str(VerifierKey(name, kid, public))


def sign_note(
    text: str,
    name: str,
    private_key: Ed25519PrivateKey | RawSigner,
    *,
    public_key: bytes | Ed25519PublicKey | None = None,
) -> str:
    """Sign `text` (which ends in a newline) as key `name`: the signed note.

    `private_key` is a local key or a callable returning the raw signature of the bytes it is
    given; a callable needs `public_key`, for the key ID, and its signature is checked against
    it before the note is returned, so a signer holding another key is found at once
    (ConfigurationError) rather than by the first verifier.
    """
    _check_name(name)
    if not text.endswith("\n") or not _well_formed(text):
        raise ValueError("a note's text is UTF-8 without control characters, ending in newline")
    message = text.encode("utf-8")
    if isinstance(private_key, Ed25519PrivateKey):
        public = private_key.public_key()
        signature = private_key.sign(message)
    else:
        if public_key is None:
            raise ValueError("a callable signer needs its public key, for the key ID")
        raw = _raw_public(public_key)
        public = Ed25519PublicKey.from_public_bytes(raw)
        signature = bytes(private_key(message))
        try:
            public.verify(signature, message)
        except InvalidSignature:
            raise ConfigurationError(
                "the note signer's signature does not verify under the public key configured for it"
            ) from None
    kid = key_id(name, public.public_bytes_raw())
    encoded = base64.b64encode(kid + signature).decode("ascii")
    return f"{text}\n{_SIG_PREFIX}{name} {encoded}\n"


def verify_note(note: str, name: str, public_key: bytes | Ed25519PublicKey) -> str:
    """The text of `note` if it carries a valid signature by key `name` with `public_key`.

    IntegrityError if the note is malformed, if no signature by that key is present, or if one
    is present and does not verify. Signatures by other keys (other names or key IDs: a
    witness's cosignature, a rotated key) are ignored, as the spec requires.
    """
    _check_name(name)
    raw = _raw_public(public_key)
    public = Ed25519PublicKey.from_public_bytes(raw)
    kid = key_id(name, raw)
    if not _well_formed(note):
        raise IntegrityError("malformed note")
    split = note.rfind("\n\n")
    if split < 0:
        raise IntegrityError("malformed note")
    text, signatures = note[: split + 1], note[split + 2 :]
    if not signatures.endswith("\n"):
        raise IntegrityError("malformed note")
    lines = signatures[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise IntegrityError("malformed note")
    message = text.encode("utf-8")
    verified = False
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise IntegrityError("malformed note")
        signer, _, encoded = line[len(_SIG_PREFIX) :].partition(" ")
        blob = _b64decode(encoded)
        if not _valid_name(signer) or not encoded or blob is None or len(blob) <= _KEY_ID_BYTES:
            raise IntegrityError("malformed note")
        if signer != name or blob[:_KEY_ID_BYTES] != kid:
            continue
        try:
            public.verify(blob[_KEY_ID_BYTES:], message)
        except InvalidSignature:
            raise IntegrityError(
                "the note's signature by the expected key does not verify"
            ) from None
        verified = True
    if not verified:
        raise IntegrityError("the note has no signature by the expected key")
    return text


class Checkpoint(NamedTuple):
    """A log's tree head as a checkpoint states it (extension lines are checked, then left)."""

    origin: str
    size: int
    root: bytes


def format_checkpoint(origin: str, size: int, root: bytes, extensions: Iterable[str] = ()) -> str:
    """The checkpoint text for a tree head, ready for `sign_note`."""
    lines = [origin, str(size), base64.b64encode(root).decode("ascii"), *extensions]
    if not origin or not 0 <= size < 2**64 or len(root) != _ROOT_BYTES:
        raise ValueError("a checkpoint has an origin, a size >= 0 and a 32-byte root")
    if any(not line or "\n" in line for line in lines) or not _well_formed("".join(lines)):
        raise ValueError("checkpoint lines are non-empty, one line each, without controls")
    return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """Read a checkpoint's text (a verified note's text: verify first, then parse).

    IntegrityError unless it is: a non-empty origin, a decimal size without leading zeros, the
    base64 of a 32-byte root, then any non-empty extension lines, each line ending in newline.
    """
    if not text.endswith("\n") or not _well_formed(text):
        raise IntegrityError("malformed checkpoint")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise IntegrityError("malformed checkpoint")
    origin, size, encoded = lines[:3]
    root = _b64decode(encoded)
    if not _DECIMAL.fullmatch(size) or int(size) >= 2**64 or root is None:
        raise IntegrityError("malformed checkpoint")
    if len(root) != _ROOT_BYTES:
        raise IntegrityError("malformed checkpoint")
    return Checkpoint(origin, int(size), root)
