"""Identity documents: their vocabulary, and the ports that check and seal their content.

A document is a photo or scan (passport, driver's licence, residence card, insurance card) of
one data subject, stored whole, streamed in and out, encrypted under a random key of its own
(wrapped under the subject's data key, so that one document can be shredded alone and the
subject's shred destroys them all), checked before anything is kept, and kept only as long as
a retention rule of the policy says. The privacy policy's row 7: "Official documents for
identity verification or age verification".
"""

from __future__ import annotations

import base64
import enum
import re
import secrets
from dataclasses import dataclass
from typing import NewType, Protocol

from vault.domain.secrets import Secret

__all__ = [
    "DOCUMENT_ID_RE",
    "DocumentBinding",
    "DocumentId",
    "DocumentInspector",
    "DocumentSealer",
    "DocumentType",
    "Inspection",
    "MalwareScanner",
    "MediaType",
    "ScanResult",
    "ScanState",
    "SegmentOpener",
    "SegmentSealer",
    "Variant",
    "new_document_id",
    "sniff",
]

DocumentId = NewType("DocumentId", str)
"""`doc_` and 26 base32 characters: 128 random bits, never derived from the content."""

DOCUMENT_ID_RE = re.compile(r"doc_[a-z2-7]{26}")


def sniff(content: bytes | bytearray) -> MediaType | None:
    """What the first bytes say the content is, among the allow-list (a hint: the inspector
    decides)."""
    head = bytes(content[:8])
    if head.startswith(b"\xff\xd8\xff"):
        return MediaType.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return MediaType.PNG
    if head.startswith(b"%PDF-"):
        return MediaType.PDF
    return None


def new_document_id() -> DocumentId:
    raw = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
    return DocumentId("doc_" + raw)


class DocumentType(enum.Enum):
    PASSPORT = "passport"
    DRIVERS_LICENSE = "drivers_license"
    RESIDENCE_CARD = "residence_card"
    HEALTH_INSURANCE_CARD = "health_insurance_card"  # accepted only with the insurer number masked
    MY_NUMBER_CARD_FRONT = "my_number_card_front"
    # The back of a My Number card must not be copied or recorded (My Number Act Arts. 15, 20):
    # refused as a type, whatever the content.
    MY_NUMBER_CARD_BACK = "my_number_card_back"
    # An identity document migrated from the retired `identity_document` field, whose kind was
    # never recorded. Never accepted on upload.
    UNCLASSIFIED = "unclassified"


class MediaType(enum.Enum):
    """The allow-list: decided from the content, never from what the client declares."""

    JPEG = "image/jpeg"
    PNG = "image/png"
    PDF = "application/pdf"


class Variant(enum.Enum):
    ORIGINAL = "original"  # the bytes uploaded, after the checks
    SANITIZED = "sanitized"  # images: upright, re-encoded, without metadata (EXIF, GPS, XMP)


class ScanState(enum.Enum):
    NOT_SCANNED = "not_scanned"  # no scanner is configured
    CLEAN = "clean"
    INFECTED = "infected"  # quarantined: never readable
    ERROR = "error"  # the scanner failed: not readable until a scan says clean


@dataclass(frozen=True, slots=True)
class ScanResult:
    state: ScanState
    signature: str | None = None  # the scanner's name for what it found (INFECTED)
    engine: str = ""  # which scanner and database answered


@dataclass(frozen=True, slots=True)
class Inspection:
    """What the content checks found: the media type the bytes are, and what to keep."""

    media_type: MediaType
    sanitized: bytes | bytearray | None  # images: the copy without metadata; PDFs: None
    pages: int | None = None  # PDFs
    width: int | None = None  # images
    height: int | None = None


class DocumentInspector(Protocol):
    """Checks content before anything is kept. MUST decide the media type from the bytes (never
    from `declared`), MUST refuse with `vault.errors.InvalidArgument` naming the rule broken
    (`document.media_type`, `document.mismatch`, `document.polyglot`, `document.image_bomb`,
    `document.pdf_active_content`, `document.pdf_encrypted`, `document.pdf_pages`,
    `document.undecodable`), and MUST bound its work by pixel and page limits, not by size."""

    def inspect(self, content: bytes | bytearray, declared: MediaType) -> Inspection: ...


class MalwareScanner(Protocol):
    """A malware scan of the whole content (ClamAV's clamd). MUST answer ERROR, never raise, when
    the scanner cannot be reached or refuses the content (too large), so that reads stay
    blocked until a scan says CLEAN."""

    name: str

    def scan(self, content: bytes | bytearray) -> ScanResult: ...


@dataclass(frozen=True, slots=True)
class DocumentBinding:
    """What a document's key and every segment of its content are bound to (associated data):
    a variant of one document of one subject. The subject is named by its digest, so that a
    document retained after its subject's shred (whose id is gone) still opens."""

    subject_digest: str
    document_id: DocumentId
    variant: Variant
    media_type: MediaType


class SegmentSealer(Protocol):
    """Seals one document variant as a stream of segments, holding one segment back (only the
    end of the stream says which segment is last)."""

    header: bytes  # stored with the variant; MUST be fresh (salt, nonce prefix) per stream

    def push(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Ciphertext segments complete so far (possibly none)."""
        ...

    def finish(self) -> list[bytes]:
        """The remaining segments, the last one flagged as last (at least one segment)."""
        ...


class SegmentOpener(Protocol):
    def open(self, index: int, segment: bytes, last: bool) -> bytes:
        """The plaintext of segment `index`; MUST raise `vault.errors.IntegrityError` if it does
        not authenticate as that segment of this stream (reordered, duplicated, truncated,
        spliced from another stream, or tampered)."""
        ...


class DocumentSealer(Protocol):
    """Document encryption (implemented in vault.crypto): a random key per document, wrapped
    under the subject's data key (or a retention key), and the content as a segmented stream
    in the manner of Tink's AES-GCM-HKDF streaming AEAD."""

    segment_size: int

    def new_document_key(self) -> Secret:
        """A fresh random 256-bit key: never derived, so it can be destroyed on its own."""
        ...

    def wrap_key(
        self, wrapping_key: Secret, binding: DocumentBinding, document_key: Secret
    ) -> bytes:
        """`document_key` encrypted under `wrapping_key` (the subject's data key, or a retention
        key), bound to `binding`."""
        ...

    def unwrap_key(self, wrapping_key: Secret, binding: DocumentBinding, wrapped: bytes) -> Secret:
        """MUST raise `vault.errors.IntegrityError` for a key of another binding or tampering."""
        ...

    def sealer(self, document_key: Secret, binding: DocumentBinding) -> SegmentSealer: ...

    def opener(
        self, document_key: Secret, binding: DocumentBinding, header: bytes
    ) -> SegmentOpener: ...
