"""How records that must recognise a shredded subject name it: a keyed digest.

The shred log, `shredded_subjects`, the `subjects` table's lookup column and erasure receipts
name a subject by HMAC-SHA-256 under a service-wide naming secret that the key provider holds
(the local key file, or Transit `hmac` under its own key). Without that secret, a dictionary
of subject ids does not reproduce the digest, so these records link a shredded subject to no
one; with it, pdvault recognises the id again (a repeated shred, a restored backup).

The keyed digest is a function of the unkeyed one (`unkeyed_subject_digest`), so digests
stored before keyed digests existed are converted without knowing the ids
(`SubjectNames.from_unkeyed`, used once by the start-up conversion and when reading old
shred-log lines).

Documents and their tombstones name their subject by the keyed digest too. A document stored
before keyed digests has its content bound to the unkeyed digest (sealed into its key
derivation and associated data when it was stored); the start-up conversion keeps that value
only sealed under a key derived from the naming secret (`SubjectNames.derive`,
vault.crypto.bindings), never in clear.
"""

from __future__ import annotations

import hashlib
import hmac

from vault.domain.secrets import Secret
from vault.domain.types import SubjectId

__all__ = ["KEYED_PREFIX", "NAMING_SCHEME", "SubjectNames", "unkeyed_subject_digest"]

NAMING_SCHEME = "hmac-sha256"
"""The scheme field of shred-log lines (and `service_state`) written with keyed digests."""
KEYED_PREFIX = "hmac:"
"""How audit entries of a shred name the subject (entries from before keep `sha256:`)."""
_LABEL = b"pdvault.v1.subject-name\x00"
_FINGERPRINT = b"pdvault.v1.naming-fingerprint\x00"
_DERIVE = b"pdvault.v1.naming-derive\x00"


def unkeyed_subject_digest(subject: str) -> str:
    """The unkeyed SHA-256 of a subject id: the INPUT of the keyed digest and of the
    conversion of old records (and the subject binding of documents stored before keyed
    digests, kept only sealed). Never stored in clear: a dictionary of ids reverses it."""
    return hashlib.sha256(b"pdvault.v1.subject\x00" + subject.encode()).hexdigest()


class SubjectNames:
    """The keyed digest of subject ids under the service-wide naming secret. Pure (stdlib
    `hmac`); the secret never appears in a repr."""

    def __init__(self, secret: Secret) -> None:
        if len(secret) < 32:
            raise ValueError("the naming secret must be at least 32 bytes")
        self._key = secret.reveal()

    def __repr__(self) -> str:
        return "SubjectNames(<keyed>)"

    def digest(self, subject: SubjectId | str) -> str:
        """The keyed digest of `subject`: 64 hex characters, like the unkeyed one."""
        return self.from_unkeyed(unkeyed_subject_digest(subject))

    def from_unkeyed(self, unkeyed: str) -> str:
        """The keyed digest of the subject whose unkeyed digest is `unkeyed` (hex)."""
        raw = bytes.fromhex(unkeyed)
        return hmac.new(self._key, _LABEL + raw, hashlib.sha256).hexdigest()

    def audit_name(self, subject: SubjectId | str) -> SubjectId:
        """What an audit entry of a shred names the subject by."""
        return keyed_audit_name(self.digest(subject))

    def derive(self, label: bytes) -> Secret:
        """A 32-byte key for another use of the naming secret, independent of the digests:
        HKDF-Expand (RFC 5869 section 2.3) with the naming secret as the pseudorandom key and
        `label` as the info, one block. Whoever holds it needs the naming secret as much as
        for the keyed digest."""
        if not label:
            raise ValueError("a derived key needs a label")
        return Secret(hmac.new(self._key, _DERIVE + label + b"\x01", hashlib.sha256).digest())

    def fingerprint(self) -> str:
        """Identifies the secret (not reversible to it): kept with the converted database, so a
        start with another naming secret is refused instead of forgetting every shred."""
        return hmac.new(self._key, _FINGERPRINT, hashlib.sha256).hexdigest()[:16]


def keyed_audit_name(digest: str) -> SubjectId:
    """What audit entries name a shredded subject by: its keyed digest, never its id again."""
    return SubjectId(f"{KEYED_PREFIX}{digest}")
