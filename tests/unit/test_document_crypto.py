"""vault.crypto.documents: format DV1's known answers, round trips, every way a stream can be cut,
reordered, spliced or tampered with, wrapped document keys, and a cross-check against Tink."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tink import BinaryKeysetReader, TinkError, cleartext_keyset_handle, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

from tests.vectors import load_vectors
from vault.crypto.documents import (
    DEFAULT_SEGMENT_SIZE,
    HEADER_BYTES,
    MAX_SEGMENT_SIZE,
    MAX_SEGMENTS,
    MIN_SEGMENT_SIZE,
    TAG_BYTES,
    TINK_HEADER_BYTES,
    WRAPPED_DOCUMENT_KEY_BYTES,
    DocumentCrypto,
    open_stream,
    tink_ciphertext,
)
from vault.domain.documents import (
    DocumentBinding,
    DocumentId,
    DocumentSealer,
    MediaType,
    SegmentOpener,
    SegmentSealer,
    Variant,
)
from vault.domain.secrets import Secret
from vault.errors import IntegrityError

SEGMENT = 256  # small segments: many boundaries in little data
FIRST = SEGMENT - TINK_HEADER_BYTES - TAG_BYTES  # plaintext in segment 0
REST = SEGMENT - TAG_BYTES  # plaintext in every later segment
CRYPTO = DocumentCrypto(SEGMENT)
KEY = Secret(bytes(range(32)))
WRAPPING_KEY = Secret(bytes(range(32, 64)))
BINDING = DocumentBinding(
    subject_digest="5d41402abc4b2a76b9719d911017c592",
    document_id=DocumentId("doc_aaaaaaaaaaaaaaaaaaaaaaaaaa"),
    variant=Variant.ORIGINAL,
    media_type=MediaType.JPEG,
)
OTHER_BINDINGS = {
    "subject": DocumentBinding(
        "7d793037a0760186574b0282f2f435e7",
        BINDING.document_id,
        BINDING.variant,
        BINDING.media_type,
    ),
    "document": DocumentBinding(
        BINDING.subject_digest,
        DocumentId("doc_bbbbbbbbbbbbbbbbbbbbbbbbbb"),
        BINDING.variant,
        BINDING.media_type,
    ),
    "variant": DocumentBinding(
        BINDING.subject_digest, BINDING.document_id, Variant.SANITIZED, BINDING.media_type
    ),
    "media_type": DocumentBinding(
        BINDING.subject_digest, BINDING.document_id, BINDING.variant, MediaType.PNG
    ),
}


def content(size: int) -> bytes:
    return bytes((i * 7 + i // 251) & 0xFF for i in range(size))


def seal(
    plaintext: bytes,
    crypto: DocumentCrypto = CRYPTO,
    key: Secret = KEY,
    binding: DocumentBinding = BINDING,
    pieces: int = 1,
) -> tuple[bytes, list[bytes]]:
    sealer: SegmentSealer = crypto.sealer(key, binding)
    segments: list[bytes] = []
    step = max(1, -(-len(plaintext) // pieces))
    for at in range(0, len(plaintext), step):
        segments += sealer.push(plaintext[at : at + step])
    segments += sealer.finish()
    return sealer.header, segments


def unseal(
    header: bytes,
    segments: list[bytes],
    crypto: DocumentCrypto = CRYPTO,
    key: Secret = KEY,
    binding: DocumentBinding = BINDING,
) -> bytes:
    opener: SegmentOpener = crypto.opener(key, binding, header)
    return b"".join(open_stream(opener, segments))


def scripted(*chunks: bytes) -> Callable[[int], bytes]:
    """A random source that returns `chunks` in order (known-answer tests only)."""
    queue = list(chunks)

    def draw(size: int) -> bytes:
        chunk = queue.pop(0)
        assert len(chunk) == size
        return chunk

    return draw


def binding_of(v: dict[str, Any]) -> DocumentBinding:
    return DocumentBinding(
        v["subject_digest"],
        DocumentId(v["document_id"]),
        Variant(v["variant"]),
        MediaType(v["media_type"]),
    )


def content_info(binding: DocumentBinding) -> bytes:
    """The HKDF info (Tink's associated data), spelled out again from the module docstring."""
    fields = (
        binding.subject_digest,
        binding.document_id,
        binding.variant.value,
        binding.media_type.value,
    )
    return b"pdvault.v1.document\x00PDVD\x01" + b"".join(
        struct.pack(">H", len(f.encode())) + f.encode() for f in fields
    )


# -- Known answers ------------------------------------------------------------------------------


VECTORS = load_vectors("pdvault_document_v1.json")


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["name"])
def test_document_format_v1_known_answers(v: dict[str, Any]) -> None:
    binding, key = binding_of(v), Secret(bytes.fromhex(v["key"]))
    randomness = (bytes.fromhex(v["salt"]), bytes.fromhex(v["nonce_prefix"]))
    crypto = DocumentCrypto(v["segment_size"], random=scripted(*randomness))
    header, segments = seal(bytes.fromhex(v["plaintext"]), crypto, key, binding)
    assert header.hex() == v["header"]
    assert [s.hex() for s in segments] == v["segments"]
    stored = [bytes.fromhex(s) for s in v["segments"]]
    opened = unseal(bytes.fromhex(v["header"]), stored, crypto, key, binding)
    assert opened.hex() == v["plaintext"]


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["name"])
def test_wrapped_document_key_v1_known_answers(v: dict[str, Any]) -> None:
    binding, key = binding_of(v), Secret(bytes.fromhex(v["key"]))
    wrapping_key = Secret(bytes.fromhex(v["wrapping_key"]))
    crypto = DocumentCrypto(random=scripted(bytes.fromhex(v["wrap_nonce"])))
    assert crypto.wrap_key(wrapping_key, binding, key).hex() == v["wrapped_key"]
    assert crypto.unwrap_key(wrapping_key, binding, bytes.fromhex(v["wrapped_key"])) == key


def test_document_crypto_is_the_document_sealer_port() -> None:
    port: DocumentSealer = DocumentCrypto()  # checked by mypy: the adapter fits the port
    assert port.segment_size == DEFAULT_SEGMENT_SIZE


def test_the_header_is_tinks_behind_a_magic_and_a_version() -> None:
    header, _ = seal(b"x")
    assert len(header) == HEADER_BYTES == 45
    assert header[:5] == b"PDVD\x01"
    assert header[5] == TINK_HEADER_BYTES == 0x28


# -- Round trips --------------------------------------------------------------------------------


ROUND_TRIP_SIZES = {
    "empty": 0,
    "one byte": 1,
    "first segment - 1": FIRST - 1,
    "first segment": FIRST,
    "first segment + 1": FIRST + 1,
    "segment size - 1": SEGMENT - 1,
    "segment size": SEGMENT,
    "segment size + 1": SEGMENT + 1,
    "three full segments": FIRST + 2 * REST,
    "three full segments + 1": FIRST + 2 * REST + 1,
    "ten segments": FIRST + 9 * REST,
}


@pytest.mark.parametrize("size", ROUND_TRIP_SIZES.values(), ids=ROUND_TRIP_SIZES.keys())
@pytest.mark.parametrize("pieces", [1, 3, 1000])
def test_round_trip(size: int, pieces: int) -> None:
    plaintext = content(size)
    header, segments = seal(plaintext, pieces=pieces)
    assert unseal(header, segments) == plaintext


@pytest.mark.parametrize("size", ROUND_TRIP_SIZES.values(), ids=ROUND_TRIP_SIZES.keys())
def test_every_segment_is_full_but_the_last_which_is_empty_only_for_an_empty_document(
    size: int,
) -> None:
    _, segments = seal(content(size))
    expected = 1 if size <= FIRST else 1 + -(-(size - FIRST) // REST)
    assert len(segments) == expected
    assert len(segments[0]) == (SEGMENT - TINK_HEADER_BYTES if size > FIRST else size + TAG_BYTES)
    assert all(len(s) == SEGMENT for s in segments[1:-1])
    assert len(b"".join(segments)) == size + TAG_BYTES * len(segments)
    assert (len(segments[-1]) > TAG_BYTES) == (size > 0)


def test_several_megabytes_with_the_default_segment_size() -> None:
    crypto = DocumentCrypto()
    assert crypto.segment_size == DEFAULT_SEGMENT_SIZE == 64 * 1024
    plaintext = content(5 * 1024 * 1024 + 12345)
    header, segments = seal(plaintext, crypto, pieces=37)
    assert len(segments) == 81
    assert unseal(header, segments, crypto) == plaintext


def test_the_same_plaintext_sealed_twice_differs() -> None:
    plaintext = content(3 * SEGMENT)
    (header_a, segments_a), (header_b, segments_b) = seal(plaintext), seal(plaintext)
    assert header_a[5:38] != header_b[5:38]  # salt
    assert header_a[38:] != header_b[38:]  # nonce prefix
    assert not set(segments_a) & set(segments_b)


def test_segments_open_in_any_order_by_index() -> None:
    plaintext = content(FIRST + 3 * REST + 5)
    header, segments = seal(plaintext)
    opener = CRYPTO.opener(KEY, BINDING, header)
    last = len(segments) - 1
    pieces = {i: opener.open(i, segments[i], last=i == last) for i in reversed(range(last + 1))}
    assert b"".join(pieces[i] for i in range(last + 1)) == plaintext


@settings(max_examples=60, deadline=None)
@given(
    plaintext=st.binary(max_size=3000),
    segment_size=st.integers(MIN_SEGMENT_SIZE, 700),
    cuts=st.lists(st.integers(0, 3000), max_size=8),
)
def test_property_round_trip_whatever_the_pushes(
    plaintext: bytes, segment_size: int, cuts: list[int]
) -> None:
    crypto = DocumentCrypto(segment_size)
    sealer = crypto.sealer(KEY, BINDING)
    segments: list[bytes] = []
    at = 0
    for cut in sorted(c for c in cuts if c <= len(plaintext)):
        segments += sealer.push(plaintext[at:cut])
        at = cut
    segments += sealer.push(plaintext[at:])
    segments += sealer.finish()
    assert unseal(sealer.header, segments, crypto) == plaintext


@settings(max_examples=40, deadline=None)
@given(
    plaintext=st.binary(min_size=1, max_size=1500),
    segment_size=st.integers(MIN_SEGMENT_SIZE, 300),
    data=st.data(),
)
def test_property_any_flipped_bit_fails(
    plaintext: bytes, segment_size: int, data: st.DataObject
) -> None:
    crypto = DocumentCrypto(segment_size)
    header, segments = seal(plaintext, crypto)
    which = data.draw(st.integers(0, len(segments) - 1))
    at = data.draw(st.integers(0, len(segments[which]) * 8 - 1))
    tampered = bytearray(segments[which])
    tampered[at // 8] ^= 1 << (at % 8)
    segments[which] = bytes(tampered)
    with pytest.raises(IntegrityError):
        unseal(header, segments, crypto)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_property_any_other_order_or_selection_of_segments_fails(data: st.DataObject) -> None:
    header, segments = seal(content(FIRST + 4 * REST + 9))  # six segments
    order = data.draw(st.lists(st.integers(0, len(segments) - 1), max_size=8))
    if order == list(range(len(segments))):
        return
    with pytest.raises(IntegrityError):
        unseal(header, [segments[i] for i in order])


# -- What must fail -----------------------------------------------------------------------------


def stream(size: int = FIRST + 3 * REST + 10) -> tuple[bytes, list[bytes]]:
    return seal(content(size))  # five segments, the last partial


def test_truncation_dropping_the_last_segment_fails() -> None:
    header, segments = stream()
    with pytest.raises(IntegrityError):
        unseal(header, segments[:-1])


def test_truncation_at_a_non_final_boundary_fails() -> None:
    header, segments = stream()
    opener = CRYPTO.opener(KEY, BINDING, header)
    for i in range(len(segments) - 1):
        with pytest.raises(IntegrityError):
            opener.open(i, segments[i], last=True)
        with pytest.raises(IntegrityError):
            unseal(header, segments[: i + 1])


@pytest.mark.parametrize("cut", [1, TAG_BYTES, 100], ids=["one byte", "a tag's worth", "100"])
def test_a_cut_inside_a_segment_fails(cut: int) -> None:
    header, segments = stream()
    for i in range(len(segments)):
        cut_short = [*segments[:i], segments[i][:-cut]]
        with pytest.raises(IntegrityError):
            unseal(header, cut_short)
        with pytest.raises(IntegrityError):
            unseal(header, [*cut_short, *segments[i + 1 :]])


def test_an_empty_stream_fails() -> None:
    header, _ = stream()
    with pytest.raises(IntegrityError):
        unseal(header, [])


def test_reordered_segments_fail() -> None:
    header, segments = stream()
    segments[1], segments[2] = segments[2], segments[1]
    with pytest.raises(IntegrityError):
        unseal(header, segments)


def test_a_duplicated_segment_fails() -> None:
    header, segments = stream()
    for i in range(len(segments)):
        with pytest.raises(IntegrityError):
            unseal(header, [*segments[: i + 1], segments[i], *segments[i + 1 :]])


@pytest.mark.parametrize("field", OTHER_BINDINGS)
def test_a_segment_spliced_from_a_sibling_document_fails(field: str) -> None:
    # The same document key (a sibling variant shares nothing in practice, but a bug might).
    plaintext = content(FIRST + 3 * REST + 10)
    header, segments = seal(plaintext)
    _, sibling = seal(plaintext, binding=OTHER_BINDINGS[field])
    for i in range(len(segments)):
        with pytest.raises(IntegrityError):
            unseal(header, [*segments[:i], sibling[i], *segments[i + 1 :]])


def test_a_segment_spliced_from_another_stream_of_the_same_document_fails() -> None:
    plaintext = content(FIRST + 3 * REST + 10)
    header, segments = seal(plaintext)
    other_header, other = seal(plaintext)
    for i in range(len(segments)):
        with pytest.raises(IntegrityError):
            unseal(header, [*segments[:i], other[i], *segments[i + 1 :]])
    with pytest.raises(IntegrityError):
        unseal(other_header, segments)


def test_every_tampered_header_byte_fails() -> None:
    header, segments = stream()
    for i in range(len(header)):
        tampered = bytearray(header)
        tampered[i] ^= 0x01
        with pytest.raises(IntegrityError):
            unseal(bytes(tampered), segments)


@pytest.mark.parametrize(
    "header",
    [
        b"",
        b"PDVD\x01",
        b"PDVD\x01\x28" + bytes(40),
        b"PDVD\x01\x28" + bytes(38),
        b"PDVD\x02\x28" + bytes(39),
        b"XDVD\x01\x28" + bytes(39),
        b"PDVD\x01\x18" + bytes(39),
    ],
    ids=["empty", "magic only", "too long", "too short", "version 2", "other magic", "tink length"],
)
def test_malformed_headers_fail_before_any_key_is_used(header: bytes) -> None:
    with pytest.raises(IntegrityError):
        CRYPTO.opener(KEY, BINDING, header)


@pytest.mark.parametrize("field", OTHER_BINDINGS)
def test_a_wrong_binding_fails_on_the_first_segment(field: str) -> None:
    header, segments = stream()
    opener = CRYPTO.opener(KEY, OTHER_BINDINGS[field], header)
    with pytest.raises(IntegrityError):
        opener.open(0, segments[0], last=False)


def test_binding_fields_cannot_bleed_into_each_other() -> None:
    a = DocumentBinding("ab", DocumentId("c"), Variant.ORIGINAL, MediaType.PDF)
    b = DocumentBinding("a", DocumentId("bc"), Variant.ORIGINAL, MediaType.PDF)
    header, segments = seal(b"x", binding=a)
    with pytest.raises(IntegrityError):
        unseal(header, segments, binding=b)


def test_a_wrong_document_key_fails() -> None:
    header, segments = stream()
    with pytest.raises(IntegrityError):
        unseal(header, segments, key=Secret(bytes(32)))
    with pytest.raises(IntegrityError):
        CRYPTO.opener(Secret(b"short"), BINDING, header)


def test_trailing_data_fails() -> None:
    header, segments = stream()
    with pytest.raises(IntegrityError):
        unseal(header, [*segments[:-1], segments[-1] + b"\x00"])
    with pytest.raises(IntegrityError):  # a trailing segment: the real last is opened as middle
        unseal(header, [*segments, segments[-1]])
    with pytest.raises(IntegrityError):
        unseal(header, [*segments, b""])
    short_header, short = seal(b"short")
    with pytest.raises(IntegrityError):
        unseal(short_header, [short[0] + b"\x00" * (SEGMENT - TINK_HEADER_BYTES - len(short[0]))])


def test_the_last_flag_on_a_middle_segment_fails_and_its_absence_on_the_last() -> None:
    header, segments = stream()
    opener = CRYPTO.opener(KEY, BINDING, header)
    with pytest.raises(IntegrityError):
        opener.open(2, segments[2], last=True)
    with pytest.raises(IntegrityError):
        opener.open(len(segments) - 1, segments[-1], last=False)


def test_lengths_and_indexes_are_checked_before_decrypting() -> None:
    header, segments = stream()
    opener = CRYPTO.opener(KEY, BINDING, header)
    for index, segment, last in [
        (-1, segments[0], False),
        (MAX_SEGMENTS, segments[1], False),
        (0, segments[0] + b"\x00", False),  # longer than segment 0 may be
        (1, segments[1][:-1], False),  # a middle segment must be full
        (1, bytes(TAG_BYTES), True),  # only segment 0 may be empty
        (0, bytes(TAG_BYTES - 1), True),  # shorter than a tag
        (1, bytes(SEGMENT + 1), True),
    ]:
        with pytest.raises(IntegrityError):
            opener.open(index, segment, last)


def test_integrity_errors_say_nothing() -> None:
    header, segments = stream()
    with pytest.raises(IntegrityError) as err:
        unseal(header, segments[:-1])
    assert str(err.value) == "stored data failed its integrity check"


# -- The sealer's own rules ---------------------------------------------------------------------


def test_a_finished_sealer_refuses_more() -> None:
    sealer = CRYPTO.sealer(KEY, BINDING)
    sealer.finish()
    with pytest.raises(ValueError, match="finished"):
        sealer.push(b"more")
    with pytest.raises(ValueError, match="finished"):
        sealer.finish()


def test_a_stream_has_at_most_2_to_the_32_segments() -> None:
    sealer = CRYPTO.sealer(KEY, BINDING)
    sealer._index = MAX_SEGMENTS - 1  # as if 2^32 - 1 segments had been sealed
    assert len(sealer.push(content(REST + 1))) == 1
    with pytest.raises(ValueError, match="2\\^32"):
        sealer.finish()


@pytest.mark.parametrize("size", [MIN_SEGMENT_SIZE - 1, MAX_SEGMENT_SIZE + 1, 0])
def test_segment_sizes_are_bounded(size: int) -> None:
    with pytest.raises(ValueError, match="segment_size"):
        DocumentCrypto(size)


def test_the_smallest_segment_size_still_works() -> None:
    crypto = DocumentCrypto(MIN_SEGMENT_SIZE)
    plaintext = content(100)
    header, segments = seal(plaintext, crypto)
    assert len(segments[0]) == TAG_BYTES + 1
    assert unseal(header, segments, crypto) == plaintext


def test_keys_of_the_wrong_length_are_refused_when_sealing() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        CRYPTO.sealer(Secret(b"short"), BINDING)
    with pytest.raises(ValueError, match="32 bytes"):
        CRYPTO.wrap_key(Secret(b"short"), BINDING, KEY)
    with pytest.raises(ValueError, match="32 bytes"):
        CRYPTO.wrap_key(WRAPPING_KEY, BINDING, Secret(b"short"))


def test_a_random_source_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="random source"):
        DocumentCrypto(random=lambda n: bytes(n - 1)).new_document_key()


def test_an_overlong_binding_field_is_refused() -> None:
    long = DocumentBinding("x" * 65536, BINDING.document_id, BINDING.variant, BINDING.media_type)
    with pytest.raises(ValueError, match="65535"):
        CRYPTO.sealer(KEY, long)


# -- Document keys ------------------------------------------------------------------------------


def test_new_document_keys_are_256_bit_and_distinct() -> None:
    keys = [CRYPTO.new_document_key() for _ in range(100)]
    assert all(len(k) == 32 for k in keys)
    assert len({k.reveal() for k in keys}) == 100


def test_a_document_key_wraps_and_unwraps() -> None:
    key = CRYPTO.new_document_key()
    wrapped = CRYPTO.wrap_key(WRAPPING_KEY, BINDING, key)
    assert len(wrapped) == WRAPPED_DOCUMENT_KEY_BYTES == 61
    assert wrapped[0] == 0x01
    assert key.reveal() not in wrapped
    assert CRYPTO.unwrap_key(WRAPPING_KEY, BINDING, wrapped) == key
    assert CRYPTO.wrap_key(WRAPPING_KEY, BINDING, key) != wrapped  # a fresh nonce each time


@pytest.mark.parametrize("field", OTHER_BINDINGS)
def test_a_wrapped_key_moved_to_another_binding_fails(field: str) -> None:
    wrapped = CRYPTO.wrap_key(WRAPPING_KEY, BINDING, KEY)
    with pytest.raises(IntegrityError):
        CRYPTO.unwrap_key(WRAPPING_KEY, OTHER_BINDINGS[field], wrapped)


def test_a_wrapped_document_key_is_not_a_wrapped_data_key() -> None:
    # Distinct labels: the same bytes under the same key never open as another kind of key.
    from vault.crypto.aead import unwrap_key as unwrap_data_key
    from vault.domain.types import SubjectId

    wrapped = CRYPTO.wrap_key(WRAPPING_KEY, BINDING, KEY)
    as_data_key = wrapped[:1] + b"\x00\x00\x00\x01" + wrapped[1:]
    assert unwrap_data_key(WRAPPING_KEY, SubjectId(BINDING.subject_digest), as_data_key) is None


def test_tampered_or_malformed_wrapped_keys_fail() -> None:
    wrapped = CRYPTO.wrap_key(WRAPPING_KEY, BINDING, KEY)
    for i in range(len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[i] ^= 0x01
        with pytest.raises(IntegrityError):
            CRYPTO.unwrap_key(WRAPPING_KEY, BINDING, bytes(tampered))
    for wrapping_key, blob in [
        (Secret(bytes(32)), wrapped),
        (Secret(b"short"), wrapped),
        (WRAPPING_KEY, b""),
        (WRAPPING_KEY, wrapped[:-1]),
        (WRAPPING_KEY, wrapped + b"\x00"),
        (WRAPPING_KEY, b"\x02" + wrapped[1:]),
    ]:
        with pytest.raises(IntegrityError) as err:
            CRYPTO.unwrap_key(wrapping_key, BINDING, blob)
        assert str(err.value) == "stored data failed its integrity check"


def test_tink_layout_needs_a_dv1_header() -> None:
    with pytest.raises(ValueError, match="DV1"):
        tink_ciphertext(b"PDVD\x02" + bytes(40), [])


# -- Cross-check against Tink's AES256_GCM_HKDF streaming AEAD ----------------------------------


class _Sink(io.BytesIO):
    """Tink closes its destination when the stream closes: keep what was written."""

    written = b""

    def close(self) -> None:
        self.written = self.getvalue()
        super().close()


def tink_primitive(key: Secret, segment_size: int) -> Any:
    """Tink's StreamingAead from raw key bytes, through its proto keyset (no Tink keygen)."""
    streaming_aead.register()
    params = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
        ciphertext_segment_size=segment_size, derived_key_size=32, hkdf_hash_type=common_pb2.SHA256
    )
    key_proto = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(
        version=0, params=params, key_value=key.reveal()
    )
    keyset = tink_pb2.Keyset(
        primary_key_id=1,
        key=[
            tink_pb2.Keyset.Key(
                key_data=tink_pb2.KeyData(
                    type_url="type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey",
                    value=key_proto.SerializeToString(),
                    key_material_type=tink_pb2.KeyData.SYMMETRIC,
                ),
                status=tink_pb2.ENABLED,
                key_id=1,
                output_prefix_type=tink_pb2.RAW,
            )
        ],
    )
    handle = cleartext_keyset_handle.read(BinaryKeysetReader(keyset.SerializeToString()))
    return handle.primitive(streaming_aead.StreamingAead)


def tink_decrypt(primitive: Any, ciphertext: bytes, associated_data: bytes) -> bytes:
    with primitive.new_decrypting_stream(io.BytesIO(ciphertext), associated_data) as stream:
        plaintext: bytes = stream.read()
    return plaintext


def tink_encrypt(primitive: Any, plaintext: bytes, associated_data: bytes) -> bytes:
    sink = _Sink()
    with primitive.new_encrypting_stream(sink, associated_data) as stream:
        stream.write(plaintext)
    return sink.written


TINK_CASES = [
    (MIN_SEGMENT_SIZE, 0),
    (MIN_SEGMENT_SIZE, 1000),
    (SEGMENT, FIRST),
    (SEGMENT, FIRST + 1),
    (SEGMENT, FIRST + 3 * REST),
    (SEGMENT, 5000),
    (DEFAULT_SEGMENT_SIZE, 0),
    (DEFAULT_SEGMENT_SIZE, 3 * DEFAULT_SEGMENT_SIZE + 7),
]


@pytest.mark.parametrize(("segment_size", "size"), TINK_CASES)
def test_tink_decrypts_our_streams(segment_size: int, size: int) -> None:
    crypto, plaintext = DocumentCrypto(segment_size), content(size)
    header, segments = seal(plaintext, crypto)
    primitive = tink_primitive(KEY, segment_size)
    ciphertext = tink_ciphertext(header, segments)
    assert tink_decrypt(primitive, ciphertext, content_info(BINDING)) == plaintext
    with pytest.raises(TinkError):
        tink_decrypt(primitive, ciphertext, content_info(OTHER_BINDINGS["variant"]))


@pytest.mark.parametrize(("segment_size", "size"), TINK_CASES)
def test_we_open_tinks_streams(segment_size: int, size: int) -> None:
    crypto, plaintext = DocumentCrypto(segment_size), content(size)
    ciphertext = tink_encrypt(tink_primitive(KEY, segment_size), plaintext, content_info(BINDING))
    header = b"PDVD\x01" + ciphertext[:TINK_HEADER_BYTES]
    body = ciphertext[TINK_HEADER_BYTES:]
    first = segment_size - TINK_HEADER_BYTES
    segments = [body[:first]] + [
        body[at : at + segment_size] for at in range(first, len(body), segment_size)
    ]
    assert unseal(header, segments, crypto) == plaintext


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["name"])
def test_tink_decrypts_the_frozen_vectors(v: dict[str, Any]) -> None:
    primitive = tink_primitive(Secret(bytes.fromhex(v["key"])), v["segment_size"])
    ciphertext = tink_ciphertext(
        bytes.fromhex(v["header"]), [bytes.fromhex(s) for s in v["segments"]]
    )
    plaintext = tink_decrypt(primitive, ciphertext, content_info(binding_of(v)))
    assert plaintext.hex() == v["plaintext"]
