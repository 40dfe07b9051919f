"""Document encryption: a random key per document, wrapped under the subject's data key (or a
retention key), and the content as a segmented stream in the manner of Tink's AES-GCM-HKDF
streaming AEAD (STREAM, Hoang-Reyhanitabar-Rogaway-Vizar 2015): a fresh salt and nonce prefix per
stream, a segment counter and a last flag in every nonce, so that truncation, reordering,
duplication and splicing between streams and documents all fail authentication.

Format DV1 (all integers big-endian):

    header            = "PDVD" | 0x01 | 0x28 | salt:32 | nonce_prefix:7             (45 bytes)
    derived key       = HKDF-SHA256(ikm = document key, salt = salt, info = content info):32
        content info  = "pdvault.v1.document" 0x00 | "PDVD" 0x01 | binding
    segment i         = AES-256-GCM(derived key, nonce_i, plaintext_i, no assoc. data): ct || tag:16
        nonce_i       = nonce_prefix:7 | i:u32 | 0x01 on the last segment, else 0x00
        plaintext_0   = segment_size - 40 - 16 bytes; plaintext_i (i > 0) = segment_size - 16 bytes;
                        every segment is full but the last, which holds 1 byte or more (none
                        only when it is segment 0: an empty document is one empty last segment)
    wrapped doc key   = 0x01 | nonce:12 | AES-256-GCM(wrapping key, nonce, document key:32, ad)
                        (61 bytes: ct:32 || tag:16 after the nonce)
        assoc. data   = "pdvault.v1.document-key" 0x00 | 0x01 | binding
    binding           = lp(subject digest) | lp(document id) | lp(variant) | lp(media type)

where lp(x) is a u16 length followed by x in UTF-8 (the values' spelling of the enums).

The header is stored apart from the segments (one row for the variant, one row per segment). Its
last 40 bytes are Tink's header verbatim (header length 0x28, salt, nonce prefix), and segment 0
keeps Tink's rule of being shorter by those 40 bytes even though it does not carry them: so
`header[5:] + b"".join(segments)` is exactly the ciphertext Tink's AES256_GCM_HKDF streaming AEAD
writes for the same key, segment size and associated data (the content info), and Tink decrypts
our streams in the tests. The cost is 40 bytes less plaintext in the first segment.

The binding goes into the key derivation, not into each segment's associated data (as Tink does),
so a stream opened with a wrong binding fails on its first segment. Each stream has its own
derived key (random salt), under which nonces are deterministic and distinct (NIST SP 800-38D
section 8.2.1: fixed field = prefix, invocation field = counter and flag), and a stream has at most
2^32 segments. Wrapped document keys use random 96-bit nonces: each wrap counts against the
wrapping key's 2^32 encryptions (SP 800-38D section 8.3) like a sealed value does.

Python cannot wipe the derived key (pyca holds it): the sealer zeroes its own plaintext buffer
when it finishes, which is a courtesy, not a guarantee (see vault.domain.secrets).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vault.domain.documents import DocumentBinding, SegmentOpener
from vault.domain.secrets import Secret
from vault.errors import IntegrityError

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "FORMAT_V1",
    "HEADER_BYTES",
    "KEY_BYTES",
    "MAGIC",
    "MAX_SEGMENTS",
    "MAX_SEGMENT_SIZE",
    "MIN_SEGMENT_SIZE",
    "TAG_BYTES",
    "TINK_HEADER_BYTES",
    "WRAPPED_DOCUMENT_KEY_BYTES",
    "DocumentCrypto",
    "DocumentStreamOpener",
    "DocumentStreamSealer",
    "open_stream",
    "tink_ciphertext",
]

MAGIC = b"PDVD"
FORMAT_V1 = 0x01
_PREFIX = MAGIC + bytes([FORMAT_V1])

KEY_BYTES = 32
SALT_BYTES = 32  # Tink: the salt is as long as the derived key
NONCE_PREFIX_BYTES = 7
NONCE_BYTES = 12
TAG_BYTES = 16
TINK_HEADER_BYTES = (
    1 + SALT_BYTES + NONCE_PREFIX_BYTES
)  # 40: Tink's header says so in its first byte
HEADER_BYTES = len(_PREFIX) + TINK_HEADER_BYTES
WRAPPED_DOCUMENT_KEY_BYTES = 1 + NONCE_BYTES + KEY_BYTES + TAG_BYTES

DEFAULT_SEGMENT_SIZE = 64 * 1024  # 0.02% overhead; "16KiB - 64KiB" per gRPC message
# Tink requires segment_size > header + tag, so that segment 0 holds at least one byte.
MIN_SEGMENT_SIZE = TINK_HEADER_BYTES + TAG_BYTES + 1
# Bounds the memory per segment, far below AESGCM's 2^31 - 1 bytes per call.
MAX_SEGMENT_SIZE = 1 << 24
# The segment index is a u32 in the nonce (Tink's limit as well).
MAX_SEGMENTS = 1 << 32

_CONTENT_INFO = b"pdvault.v1.document\x00" + _PREFIX
_KEY_AD = b"pdvault.v1.document-key\x00" + bytes([FORMAT_V1])
_LAST = b"\x01"
_NOT_LAST = b"\x00"
_INDEX = struct.Struct(">I")


def _lp(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("a binding field is at most 65535 bytes")
    return struct.pack(">H", len(raw)) + raw


def _binding(binding: DocumentBinding) -> bytes:
    return b"".join(
        (
            _lp(binding.subject_digest),
            _lp(binding.document_id),
            _lp(binding.variant.value),
            _lp(binding.media_type.value),
        )
    )


def _content_key(document_key: Secret, salt: bytes, binding: DocumentBinding) -> AESGCM:
    derived = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=salt,
        info=_CONTENT_INFO + _binding(binding),
    ).derive(document_key.reveal())
    return AESGCM(derived)


class DocumentCrypto:
    """The `DocumentSealer` port: per-document keys and format DV1 (see the module docstring).

    `random` is a seam for known-answer tests only; anything but the OS CSPRNG (the default)
    repeats salts, nonce prefixes and nonces, and breaks every guarantee here."""

    def __init__(
        self,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        *,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment_size must be {MIN_SEGMENT_SIZE} to {MAX_SEGMENT_SIZE} bytes")
        self.segment_size = segment_size
        self._random = random

    def _draw(self, size: int) -> bytes:
        data = self._random(size)
        if len(data) != size:
            raise ValueError("the random source returned the wrong number of bytes")
        return data

    def new_document_key(self) -> Secret:
        return Secret(self._draw(KEY_BYTES))

    def wrap_key(
        self, wrapping_key: Secret, binding: DocumentBinding, document_key: Secret
    ) -> bytes:
        if len(wrapping_key) != KEY_BYTES or len(document_key) != KEY_BYTES:
            raise ValueError("wrapping and document keys are 32 bytes")
        nonce = self._draw(NONCE_BYTES)
        sealed = AESGCM(wrapping_key.reveal()).encrypt(
            nonce, document_key.reveal(), _KEY_AD + _binding(binding)
        )
        return bytes([FORMAT_V1]) + nonce + sealed

    def unwrap_key(self, wrapping_key: Secret, binding: DocumentBinding, wrapped: bytes) -> Secret:
        # Lengths and version are checked before any key is used (STYLE habit 6).
        if (
            len(wrapping_key) != KEY_BYTES
            or len(wrapped) != WRAPPED_DOCUMENT_KEY_BYTES
            or wrapped[0] != FORMAT_V1
        ):
            raise IntegrityError()
        try:
            key = AESGCM(wrapping_key.reveal()).decrypt(
                wrapped[1 : 1 + NONCE_BYTES],
                wrapped[1 + NONCE_BYTES :],
                _KEY_AD + _binding(binding),
            )
        except InvalidTag:
            raise IntegrityError() from None
        return Secret(key)

    def sealer(self, document_key: Secret, binding: DocumentBinding) -> DocumentStreamSealer:
        if len(document_key) != KEY_BYTES:
            raise ValueError("a document key is 32 bytes")
        salt = self._draw(SALT_BYTES)
        nonce_prefix = self._draw(NONCE_PREFIX_BYTES)
        header = _PREFIX + bytes([TINK_HEADER_BYTES]) + salt + nonce_prefix
        return DocumentStreamSealer(
            _content_key(document_key, salt, binding), header, nonce_prefix, self.segment_size
        )

    def opener(
        self, document_key: Secret, binding: DocumentBinding, header: bytes
    ) -> DocumentStreamOpener:
        if (
            len(document_key) != KEY_BYTES
            or len(header) != HEADER_BYTES
            or header[: len(_PREFIX)] != _PREFIX
            or header[len(_PREFIX)] != TINK_HEADER_BYTES
        ):
            raise IntegrityError()
        salt_at = len(_PREFIX) + 1
        salt = header[salt_at : salt_at + SALT_BYTES]
        nonce_prefix = header[salt_at + SALT_BYTES :]
        return DocumentStreamOpener(
            _content_key(document_key, salt, binding), nonce_prefix, self.segment_size
        )


def _plaintext_capacity(segment_size: int, index: int) -> int:
    # Segment 0 is shorter by Tink's header, so the segments concatenate into Tink's layout.
    return segment_size - TAG_BYTES - (TINK_HEADER_BYTES if index == 0 else 0)


class DocumentStreamSealer:
    """The `SegmentSealer` port: holds back at least one byte (or the empty segment 0) until
    `finish`, because only the end of the stream says which segment is last."""

    def __init__(self, aead: AESGCM, header: bytes, nonce_prefix: bytes, segment_size: int) -> None:
        self.header = header
        self._aead = aead
        self._nonce_prefix = nonce_prefix
        self._segment_size = segment_size
        self._index = 0
        self._buffer = bytearray()
        self._finished = False

    def push(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        if self._finished:
            raise ValueError("the stream is finished")
        segments: list[bytes] = []
        with memoryview(data) as incoming:
            view = incoming.cast("B")
            # Whole segments are sealed straight from `data`; only what may turn out to be the
            # last segment is copied and held back: no second copy of the document in memory.
            if self._buffer:
                size = _plaintext_capacity(self._segment_size, self._index)
                taken = min(len(view), size - len(self._buffer))
                self._buffer += view[:taken]
                view = view[taken:]
                # Strictly more than a segment's worth: the rest may be the last segment.
                if not view:
                    return segments
                segments.append(self._seal(self._buffer, last=False))
                self._wipe_buffer()
            start = 0
            size = _plaintext_capacity(self._segment_size, self._index)
            while len(view) - start > size:
                segments.append(self._seal(view[start : start + size], last=False))
                start += size
                size = _plaintext_capacity(self._segment_size, self._index)
            self._buffer += view[start:]
        return segments

    def _wipe_buffer(self) -> None:
        self._buffer[:] = bytes(len(self._buffer))
        self._buffer.clear()

    def finish(self) -> list[bytes]:
        if self._finished:
            raise ValueError("the stream is finished")
        self._finished = True
        last = self._seal(self._buffer, last=True)
        self._wipe_buffer()
        return [last]

    def _seal(self, plaintext: bytes | bytearray | memoryview, *, last: bool) -> bytes:
        if self._index >= MAX_SEGMENTS:
            raise ValueError("a document stream has at most 2^32 segments")
        nonce = self._nonce_prefix + _INDEX.pack(self._index) + (_LAST if last else _NOT_LAST)
        self._index += 1
        return self._aead.encrypt(nonce, plaintext, None)


class DocumentStreamOpener:
    """The `SegmentOpener` port: opens any segment of one stream by its index (seekable)."""

    def __init__(self, aead: AESGCM, nonce_prefix: bytes, segment_size: int) -> None:
        self._aead = aead
        self._nonce_prefix = nonce_prefix
        self._segment_size = segment_size

    def open(self, index: int, segment: bytes, last: bool) -> bytes:
        # Lengths and index are checked before decrypting (STYLE habit 6): every segment is
        # full but the last, and only segment 0 may be empty (the empty document).
        if not 0 <= index < MAX_SEGMENTS:
            raise IntegrityError()
        full = _plaintext_capacity(self._segment_size, index) + TAG_BYTES
        shortest = (TAG_BYTES + (0 if index == 0 else 1)) if last else full
        if not shortest <= len(segment) <= full:
            raise IntegrityError()
        nonce = self._nonce_prefix + _INDEX.pack(index) + (_LAST if last else _NOT_LAST)
        try:
            return self._aead.decrypt(nonce, segment, None)
        except InvalidTag:
            raise IntegrityError() from None


def open_stream(opener: SegmentOpener, segments: Iterable[bytes]) -> Iterator[bytes]:
    """The plaintext of a whole stream, segment by segment, in order: each segment is opened as
    the last only when nothing follows it (one-segment look-ahead), so truncation, trailing
    segments and an empty stream raise `IntegrityError`. Every piece yielded is authentic, but a
    truncation shows only at the end: a caller that forwards pieces MUST end in failure then."""
    index = 0
    pending: bytes | None = None
    for segment in segments:
        if pending is not None:
            yield opener.open(index, pending, last=False)
            index += 1
        pending = segment
    if pending is None:
        raise IntegrityError()
    yield opener.open(index, pending, last=True)


def tink_ciphertext(header: bytes, segments: Iterable[bytes]) -> bytes:
    """A DV1 stream laid out as Tink's AES-GCM-HKDF streaming ciphertext: Tink's header (the
    DV1 header without its magic and version) followed by the segments."""
    if len(header) != HEADER_BYTES or header[: len(_PREFIX)] != _PREFIX:
        raise ValueError("not a DV1 header")
    return header[len(_PREFIX) :] + b"".join(segments)
