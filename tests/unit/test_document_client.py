"""The client library's side of documents (`Client.documents()`), against an in-process gRPC
server with a scripted DocumentService: what an upload streams (the header first, chunks of at
most 256 KiB, the SHA-256, the media type from the first bytes, never a file name), how a
download lands (beside its target, renamed only when whole; DATA_LOSS leaves nothing), the
retry rule for each call, and the conversion of answers into `Document` values.

The real server's DocumentService is tested in tests/integration (test_cli_documents.py runs
`pdv document ...` against it); nothing here needs it.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2, error_details_pb2
from pdvault.v1 import document_service_pb2 as pb
from pdvault.v1 import token_service_pb2

from pdvault_client import (
    DOCUMENT_TYPES,
    Client,
    DataLossError,
    Document,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PdvaultError,
    RetryPolicy,
    UnavailableError,
    guess_media_type,
)
from pdvault_client.documents import MAX_CHUNK_BYTES, UPLOAD_CHUNK_BYTES
from tests.unit.document_fake import (
    DOC_ID,
    JPEG,
    PDF,
    PNG,
    WHEN,
    Fake,
    KiB,
    serving,
)


@pytest.fixture
def fake() -> Iterator[Fake]:
    with serving() as running:
        yield running


def chunks(upload: list[pb.UploadDocumentRequest]) -> list[bytes]:
    return [m.chunk for m in upload[1:]]


# -- upload ---------------------------------------------------------------------------------------


def test_an_upload_is_the_header_then_chunks_of_64_kib(fake: Fake, tmp_path: Path) -> None:
    path = tmp_path / "licence-of-Ann-Lee.jpg"
    path.write_bytes(JPEG)
    seen: list[tuple[int, int]] = []

    found = fake.client.documents().upload(
        "user-42", "drivers_license", path, progress=lambda sent, total: seen.append((sent, total))
    )

    assert isinstance(found, Document)
    assert found.id == DOC_ID
    [upload] = fake.script.uploads
    assert upload[0].WhichOneof("part") == "header"
    assert all(m.WhichOneof("part") == "chunk" for m in upload[1:])
    header = upload[0].header
    assert header.subject == "user-42"
    assert header.document_type == pb.DOCUMENT_TYPE_DRIVERS_LICENSE
    assert header.media_type == "image/jpeg"
    assert header.size == len(JPEG)
    assert header.sha256 == hashlib.sha256(JPEG).digest()
    assert not header.insurer_number_masked
    sizes = [len(c) for c in chunks(upload)]
    assert sizes == [UPLOAD_CHUNK_BYTES] * 4 + [len(JPEG) - 4 * UPLOAD_CHUNK_BYTES]
    assert b"".join(chunks(upload)) == JPEG
    assert seen == [(min((n + 1) * UPLOAD_CHUNK_BYTES, len(JPEG)), len(JPEG)) for n in range(5)]
    # No file name, in any field of any message: the API has none, and nothing smuggles it.
    sent = b"".join(m.SerializeToString() for m in upload)
    assert b"licence-of-Ann-Lee" not in sent
    assert b"jpg" not in upload[0].SerializeToString()
    assert fake.script.keys == ["Bearer key-test"]


def test_chunks_are_never_more_than_256_kib(fake: Fake, tmp_path: Path) -> None:
    path = tmp_path / "doc"
    path.write_bytes(JPEG)
    docs = fake.client.documents()
    docs.upload("user-42", "passport", path, chunk_size=MAX_CHUNK_BYTES)
    assert max(len(c) for c in chunks(fake.script.uploads[0])) == 256 * KiB
    for size in (0, MAX_CHUNK_BYTES + 1):
        with pytest.raises(ValueError, match="chunk_size must be 1 to 262144 bytes"):
            docs.upload("user-42", "passport", path, chunk_size=size)
    assert len(fake.script.uploads) == 1


@pytest.mark.parametrize(
    ("content", "media_type"),
    [(JPEG, "image/jpeg"), (PNG, "image/png"), (PDF, "application/pdf")],
)
def test_the_media_type_is_guessed_from_the_first_bytes(
    fake: Fake, tmp_path: Path, content: bytes, media_type: str
) -> None:
    path = tmp_path / "scan.bin"  # the name says nothing; the bytes do
    path.write_bytes(content)
    fake.client.documents().upload("user-42", "passport", path)
    assert fake.script.uploads[0][0].header.media_type == media_type
    assert guess_media_type(content[:8]) == media_type


def test_a_given_media_type_is_sent_as_it_is(fake: Fake) -> None:
    fake.client.documents().upload(
        "user-42",
        "health_insurance_card",
        io.BytesIO(b"GIF89a..."),
        media_type="image/png",
        insurer_number_masked=True,
    )
    header = fake.script.uploads[0][0].header
    assert header.media_type == "image/png"
    assert header.insurer_number_masked
    assert header.document_type == pb.DOCUMENT_TYPE_HEALTH_INSURANCE_CARD


def test_content_of_no_accepted_type_is_refused_before_any_call(fake: Fake) -> None:
    docs = fake.client.documents()
    with pytest.raises(ValueError, match="does not begin as a JPEG, PNG or PDF"):
        docs.upload("user-42", "passport", io.BytesIO(b"GIF89a..."))
    with pytest.raises(ValueError, match="empty"):
        docs.upload("user-42", "passport", io.BytesIO(b""))
    with pytest.raises(ValueError, match="unknown document type 'passprt'"):
        docs.upload("user-42", "passprt", io.BytesIO(JPEG))
    assert fake.script.uploads == []
    assert guess_media_type(b"\xff\xd8") is None


def test_every_document_type_of_the_api_is_accepted(fake: Fake) -> None:
    # The server refuses the last two (my_number_card_back by name; unclassified is for
    # migrated values only): the client sends them, so that the refusal is the server's.
    assert DOCUMENT_TYPES[-2:] == ("my_number_card_back", "unclassified")
    for name in DOCUMENT_TYPES:
        fake.client.documents().upload("user-42", name, io.BytesIO(PNG))
    sent = [u[0].header.document_type for u in fake.script.uploads]
    assert [pb.DocumentType.Name(t) for t in sent] == [
        f"DOCUMENT_TYPE_{n.upper()}" for n in DOCUMENT_TYPES
    ]


class RecordingFile(io.BytesIO):
    """A file that remembers every read size asked of it."""

    def __init__(self, content: bytes) -> None:
        super().__init__(content)
        self.asked: list[int | None] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.asked.append(size)
        return super().read(size)


def test_the_file_is_read_a_chunk_at_a_time_from_its_position(fake: Fake) -> None:
    f = RecordingFile(b"prefix" + JPEG)
    f.seek(6)
    fake.client.documents().upload("user-42", "passport", f)
    header = fake.script.uploads[0][0].header
    assert header.size == len(JPEG)
    assert header.sha256 == hashlib.sha256(JPEG).digest()
    assert b"".join(chunks(fake.script.uploads[0])) == JPEG
    # Never the whole file at once: no read() without a size, none above a chunk.
    assert all(n is not None and 0 < n <= UPLOAD_CHUNK_BYTES for n in f.asked)
    assert not f.closed  # the caller's file stays the caller's to close


def test_a_file_that_cannot_seek_is_refused(fake: Fake) -> None:
    r, w = os.pipe()
    os.close(w)
    with os.fdopen(r, "rb") as pipe, pytest.raises(ValueError, match="can seek"):
        fake.client.documents().upload("user-42", "passport", pipe)


def test_a_file_that_changes_between_the_passes_is_not_kept(fake: Fake) -> None:
    class Changing(io.BytesIO):
        passes = 0

        def seek(self, pos: int, whence: int = 0, /) -> int:
            self.passes += 1
            if self.passes == 1:  # between the hashing pass and the sending pass
                self.getbuffer()[-1] ^= 1
            return super().seek(pos, whence)

    with pytest.raises(OSError, match="the file changed while it was uploaded"):
        fake.client.documents().upload("user-42", "passport", Changing(JPEG))
    # The stream ended before its last chunk: the server got fewer bytes than declared.
    [upload] = fake.script.uploads
    assert sum(len(c) for c in chunks(upload)) < upload[0].header.size


def test_a_file_that_shrinks_between_the_passes_is_not_kept(fake: Fake, tmp_path: Path) -> None:
    path = tmp_path / "doc"
    path.write_bytes(JPEG)

    def truncate(sent: int, total: int) -> None:
        if sent == UPLOAD_CHUNK_BYTES:
            path.write_bytes(JPEG[: 2 * UPLOAD_CHUNK_BYTES])

    with pytest.raises(OSError, match=f"after {2 * UPLOAD_CHUNK_BYTES} of {len(JPEG)} bytes"):
        fake.client.documents().upload("user-42", "passport", path, progress=truncate)


def test_a_progress_callback_that_raises_stops_the_upload(fake: Fake) -> None:
    class Stop(Exception):
        pass

    def progress(sent: int, total: int) -> None:
        if sent > UPLOAD_CHUNK_BYTES:
            raise Stop

    with pytest.raises(Stop):
        fake.client.documents().upload("user-42", "passport", io.BytesIO(JPEG), progress=progress)
    [upload] = fake.script.uploads
    assert len(chunks(upload)) == 1


def test_an_upload_is_never_retried(fake: Fake) -> None:
    fake.script.upload_failure = (code_pb2.UNAVAILABLE, "storage is down")
    with pytest.raises(UnavailableError, match="storage is down"):
        fake.client.documents().upload("user-42", "passport", io.BytesIO(JPEG))
    assert len(fake.script.uploads) == 1


def test_an_upload_to_no_server_fails_once(tmp_path: Path) -> None:
    slept: list[float] = []
    path = tmp_path / "doc"
    path.write_bytes(JPEG)
    with (
        Client("127.0.0.1:1", "k", timeout=5, sleep=slept.append) as client,
        pytest.raises(UnavailableError),
    ):
        client.documents().upload("user-42", "passport", path)
    assert slept == []


def test_a_refusal_keeps_its_rule(fake: Fake) -> None:
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(
        field="header.document_type",
        reason="document.my_number_card_back",
        description="the back of a My Number card is never kept",
    )
    info = error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT", domain="pdvault")
    fake.script.upload_failure = (code_pb2.INVALID_ARGUMENT, "refused", bad, info)
    with pytest.raises(InvalidArgumentError) as raised:
        fake.client.documents().upload("user-42", "my_number_card_back", io.BytesIO(JPEG))
    assert [v.rule for v in raised.value.violations] == ["document.my_number_card_back"]


# -- download -------------------------------------------------------------------------------------


def parts(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_download_lands_whole_beside_its_target(fake: Fake, tmp_path: Path) -> None:
    target = tmp_path / "out.jpg"
    found = fake.client.documents().download(
        DOC_ID,
        "identity_verification",
        target,
        variant="sanitized",
        legal_basis="law_or_regulation",
        justification="ticket-7",
    )
    assert target.read_bytes() == JPEG
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert parts(tmp_path) == ["out.jpg"]
    assert found.id == DOC_ID
    assert found.size == len(JPEG)
    [request] = fake.script.requests
    assert request.document_id == DOC_ID
    assert request.purpose == "identity_verification"
    assert request.variant == pb.DOCUMENT_VARIANT_SANITIZED
    assert request.legal_basis == token_service_pb2.LEGAL_BASIS_LAW_OR_REGULATION
    assert request.justification == "ticket-7"
    assert not request.disclosure


def test_a_download_for_disclosure_sends_no_purpose(fake: Fake) -> None:
    sink = io.BytesIO()
    fake.client.documents().download(DOC_ID, "", sink, disclosure=True)
    [request] = fake.script.requests
    assert (request.purpose, request.disclosure) == ("", True)
    assert request.variant == pb.DOCUMENT_VARIANT_ORIGINAL
    assert request.legal_basis == token_service_pb2.LEGAL_BASIS_UNSPECIFIED
    assert sink.getvalue() == JPEG


def test_chunks_are_written_as_they_arrive(fake: Fake) -> None:
    class Sink(io.BytesIO):
        writes: list[int] = []  # noqa: RUF012

        def write(self, data: Any, /) -> int:
            self.writes.append(len(data))
            return super().write(data)

    sink = Sink()
    fake.client.documents().download(DOC_ID, "p", sink)
    assert sink.writes == [100 * KiB, 100 * KiB, 100 * KiB, len(JPEG) - 300 * KiB]


def test_data_loss_mid_stream_leaves_no_file(fake: Fake, tmp_path: Path) -> None:
    fake.script.fail_after_chunks = 2
    target = tmp_path / "out.jpg"
    with pytest.raises(DataLossError, match="integrity check"):
        fake.client.documents().download(DOC_ID, "p", target)
    assert parts(tmp_path) == []  # neither the target nor the partial file
    assert len(fake.script.requests) == 1  # never retried


def test_a_failed_download_leaves_an_existing_file_as_it_was(fake: Fake, tmp_path: Path) -> None:
    fake.script.fail_after_chunks = 1
    target = tmp_path / "out.jpg"
    target.write_bytes(b"the earlier copy")
    with pytest.raises(DataLossError):
        fake.client.documents().download(DOC_ID, "p", target)
    assert target.read_bytes() == b"the earlier copy"
    assert parts(tmp_path) == ["out.jpg"]


def test_a_stream_short_of_the_announced_size_is_data_loss(fake: Fake, tmp_path: Path) -> None:
    fake.script.short_by = 10
    with pytest.raises(DataLossError, match=f"{len(JPEG) - 10} of the {len(JPEG)} bytes"):
        fake.client.documents().download(DOC_ID, "p", tmp_path / "out.jpg")
    assert parts(tmp_path) == []


def test_a_local_failure_removes_the_partial_file(
    fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        fake.client.documents().download(DOC_ID, "p", tmp_path / "out.jpg")
    assert parts(tmp_path) == []


def test_an_existing_file_is_kept_unless_overwrite(fake: Fake, tmp_path: Path) -> None:
    target = tmp_path / "out.jpg"
    target.write_bytes(b"mine")
    docs = fake.client.documents()
    with pytest.raises(FileExistsError):
        docs.download(DOC_ID, "p", target, overwrite=False)
    assert fake.script.requests == []  # refused before the call
    assert target.read_bytes() == b"mine"
    docs.download(DOC_ID, "p", target)
    assert target.read_bytes() == JPEG


def test_a_file_appearing_during_the_download_is_not_overwritten(
    fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.jpg"
    real_fsync = os.fsync

    def meanwhile(fd: int) -> None:
        real_fsync(fd)
        target.write_bytes(b"written meanwhile")

    monkeypatch.setattr(os, "fsync", meanwhile)
    with pytest.raises(FileExistsError):
        fake.client.documents().download(DOC_ID, "p", target, overwrite=False)
    assert target.read_bytes() == b"written meanwhile"
    assert parts(tmp_path) == ["out.jpg"]


def test_a_download_is_retried_until_its_first_message(fake: Fake) -> None:
    fake.script.get_failures = [(code_pb2.UNAVAILABLE, "restarting")] * 2
    sink = io.BytesIO()
    fake.client.documents().download(DOC_ID, "p", sink)
    assert sink.getvalue() == JPEG
    assert len(fake.script.requests) == 3


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (code_pb2.PERMISSION_DENIED, PdvaultError),
        (code_pb2.FAILED_PRECONDITION, FailedPreconditionError),
        (code_pb2.NOT_FOUND, NotFoundError),
    ],
)
def test_a_refused_download_is_not_retried(
    fake: Fake, tmp_path: Path, code: int, error: type[PdvaultError]
) -> None:
    fake.script.get_failures = [(code, "refused")]
    with pytest.raises(error, match="refused"):
        fake.client.documents().download(DOC_ID, "p", tmp_path / "out.jpg")
    assert len(fake.script.requests) == 1
    assert parts(tmp_path) == []


def test_an_unknown_variant_or_legal_basis_is_refused_before_the_call(fake: Fake) -> None:
    docs = fake.client.documents()
    with pytest.raises(ValueError, match="unknown variant 'thumbnail'"):
        docs.download(DOC_ID, "p", io.BytesIO(), variant="thumbnail")
    with pytest.raises(ValueError, match="unknown legal basis"):
        docs.download(DOC_ID, "p", io.BytesIO(), legal_basis="because")
    assert fake.script.requests == []


# -- the unary methods ----------------------------------------------------------------------------


def test_show_converts_the_whole_document(fake: Fake) -> None:
    doc = fake.client.documents().show(DOC_ID)
    assert doc.id == DOC_ID
    assert (doc.subject, doc.subject_digest) == ("user-42", "ab" * 32)
    assert (doc.type, doc.media_type, doc.uploaded_by) == ("drivers_license", "image/jpeg", "kyc")
    assert doc.created_at == WHEN
    assert (doc.scan_state, doc.scan_engine) == ("not_scanned", "none configured")
    assert [(v.variant, v.size) for v in doc.variants] == [
        ("original", len(JPEG)),
        ("sanitized", 7),
    ]
    assert doc.size == len(JPEG)
    assert doc.retention.rule == "documents.drivers_license"
    assert (doc.retention.trigger, doc.retention.keep, doc.retention.then) == (
        "verified",
        "P7Y",
        "shred",
    )
    assert doc.retention.legal
    assert doc.retention.due_at is None  # not started: never verified
    assert doc.verified_at is None
    assert doc.holds == ()
    assert (doc.retained, doc.pages, doc.insurer_number_masked) == (False, 0, False)


def test_mark_verified_sets_the_dates(fake: Fake) -> None:
    doc = fake.client.documents().mark_verified(DOC_ID)
    assert doc.verified_at == WHEN
    assert doc.retention.due_at == WHEN.replace(year=2033)
    assert fake.script.requests[0].document_id == DOC_ID


def test_list_follows_every_page(fake: Fake) -> None:
    fake.script.pages = 3
    found = fake.client.documents().list("user-42", page_size=1)
    assert [d.id for d in found] == ["doc_0", "doc_1", "doc_2"]
    assert [r.page_token for r in fake.script.requests] == ["", "1", "2"]
    assert {(r.subject, r.page_size) for r in fake.script.requests} == {("user-42", 1)}


def test_delete_hold_release_and_sweep(fake: Fake) -> None:
    docs = fake.client.documents()
    deleted = docs.delete(DOC_ID)
    assert (deleted.document_id, deleted.destroyed_at) == (DOC_ID, WHEN)
    hold = docs.hold(DOC_ID, "case 2026-118")
    assert (hold.hold_id, hold.reason, hold.placed_by, hold.placed_at) == (
        "h-1",
        "case 2026-118",
        "legal",
        WHEN,
    )
    assert docs.release(DOC_ID) == 2
    assert docs.release(DOC_ID, "h-1") == 1
    assert [r.hold_id for r in fake.script.requests[2:]] == ["", "h-1"]
    swept = docs.sweep()
    assert swept.sweep_id == "s-1"
    assert [
        swept.documents_destroyed,
        swept.originals_destroyed,
        swept.documents_held,
        swept.values_erased,
        swept.blobs_deleted,
        swept.retention_keys_destroyed,
        swept.documents_redestroyed,
    ] == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize(
    ("call", "attempts"),
    [
        (lambda d: d.show(DOC_ID), 2),
        (lambda d: d.list("user-42"), 2),
        (lambda d: d.delete(DOC_ID), 2),
        (lambda d: d.release(DOC_ID), 2),
        (lambda d: d.mark_verified(DOC_ID), 2),
        (lambda d: d.sweep(), 2),
        (lambda d: d.hold(DOC_ID, "case"), 1),  # a retry could place a second hold
    ],
)
def test_unary_calls_follow_the_retry_rule(
    fake: Fake, call: Callable[[Any], object], attempts: int
) -> None:
    fake.script.unary_failures = [(code_pb2.UNAVAILABLE, "restarting")]
    if attempts == 1:
        with pytest.raises(UnavailableError):
            call(fake.client.documents())
    else:
        call(fake.client.documents())
    assert len(fake.script.requests) == attempts


def test_an_unknown_enum_value_from_a_newer_server_is_kept_as_its_number() -> None:
    from pdvault_client.convert import document

    doc = document(pb.Document(document_id=DOC_ID, document_type=99, scan_state=0))  # type: ignore[arg-type]
    assert (doc.type, doc.scan_state, doc.created_at) == ("99", "", None)


def test_the_client_takes_a_retry_policy_for_documents_too(fake: Fake) -> None:
    with Client(fake.addr, "k", retry=RetryPolicy(attempts=1)) as once:
        fake.script.unary_failures = [(code_pb2.UNAVAILABLE, "restarting")]
        with pytest.raises(UnavailableError):
            once.documents().show(DOC_ID)


def test_a_download_can_be_interrupted(fake: Fake, tmp_path: Path) -> None:
    """Ctrl-C while the chunks arrive: the partial file goes, the stream is cancelled."""

    class Interrupting(io.BytesIO):
        def write(self, data: Any, /) -> int:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fake.client.documents().download(DOC_ID, "p", Interrupting())
    sink = io.BytesIO()
    fake.client.documents().download(DOC_ID, "p", sink)  # the channel still works
    assert sink.getvalue() == JPEG
