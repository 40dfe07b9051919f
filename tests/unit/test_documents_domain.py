"""Identity documents through the use cases, on the in-memory stores with the real crypto and
content checks: upload, purpose-bound reads, holds, the shred's legal exception, the sweep."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.samples import javascript, link, noisy_image, pdf, photo_with_location, saved
from vault.crypto.aead import AesGcmCipher
from vault.crypto.documents import DocumentCrypto
from vault.domain.archive import DocumentArchive, UploadHeader
from vault.domain.context import RequestContext
from vault.domain.documents import DocumentId, MediaType, ScanResult, ScanState, Variant
from vault.domain.lifecycle import SubjectAdministration
from vault.domain.policy_file import load_policy
from vault.domain.requests import FieldInput
from vault.domain.service import TokenService
from vault.domain.stores import DocumentRecord, Stores
from vault.domain.sweep import RetentionSweep
from vault.domain.types import CallerName, LegalBasis, PlainValue, SubjectId
from vault.errors import (
    Aborted,
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Reason,
)
from vault.kms.local import LocalKeyFileProvider
from vault.kms.shred_log import FileShredLog
from vault.media.inspect import ContentInspector
from vault.storage.memory import MEMORY_NAMES, MemoryState, memory_stores

POLICY = load_policy()
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
LAW = LegalBasis.LAW_OR_REGULATION


def ctx(caller: str) -> RequestContext:
    return RequestContext(CallerName(caller))


class Scanner:
    name = "fake"

    def __init__(self) -> None:
        self.answer = ScanResult(ScanState.CLEAN, None, "fake 1.0")

    def scan(self, content: bytes | bytearray) -> ScanResult:
        return self.answer


@dataclass
class Docs:
    state: MemoryState
    stores: Stores
    archive: DocumentArchive
    sweeper: RetentionSweep
    subjects: SubjectAdministration
    tokens: TokenService
    scanner: Scanner
    now: list[datetime]

    def upload(
        self,
        content: bytes,
        document_type: str = "passport",
        media_type: str = "image/jpeg",
        subject: str = "user-42",
        caller: str = "kyc",
        masked: bool = False,
    ) -> DocumentRecord:
        header = UploadHeader(subject, document_type, media_type, len(content), b"", masked)
        ticket = self.archive.admit_upload(ctx(caller), header)
        return self.archive.store(ctx(caller), ticket, bytearray(content))

    def read(
        self,
        document_id: str,
        caller: str = "kyc",
        purpose: str = "identity_verification",
        variant: Variant = Variant.ORIGINAL,
        legal: LegalBasis | None = None,
    ) -> bytes:
        download = self.archive.open(ctx(caller), document_id, purpose, variant, legal)
        return b"".join(download.chunks)

    def later(self, delta: timedelta) -> None:
        self.now[0] += delta

    def nothing_kept(self) -> bool:
        s = self.state
        return not s.documents and not s.segments and not s.blob_marks


@pytest.fixture
def docs(tmp_path: Path) -> Docs:
    state = MemoryState()
    stores = memory_stores(state)
    now = [T0]
    keys = LocalKeyFileProvider(tmp_path / "kek.json")
    cipher = AesGcmCipher()
    log = FileShredLog(tmp_path / "shred-log.jsonl", state.names)
    scanner = Scanner()

    def clock() -> datetime:
        return now[0]

    archive = DocumentArchive(
        policy=POLICY,
        documents=stores.documents,
        blobs=stores.blobs,
        values=stores.values,
        subjects=stores.subjects,
        audit=stores.audit,
        keys=keys,
        cipher=cipher,
        sealer=DocumentCrypto(segment_size=4096),  # small segments: many per test document
        inspector=ContentInspector(),
        scanner=scanner,
        shred_log=log,
        clock=clock,
        names=MEMORY_NAMES,
    )
    sweeper = RetentionSweep(
        policy=POLICY,
        documents=stores.documents,
        blobs=stores.blobs,
        values=stores.values,
        audit=stores.audit,
        shred_log=log,
        clock=clock,
    )
    subjects = SubjectAdministration(
        policy=POLICY,
        values=stores.values,
        subjects=stores.subjects,
        audit=stores.audit,
        keys=keys,
        cipher=cipher,
        shred_log=log,
        names=state.names,
        clock=clock,
        documents=archive,
    )
    tokens = TokenService(
        policy=POLICY,
        values=stores.values,
        subjects=stores.subjects,
        idempotency=stores.idempotency,
        audit=stores.audit,
        keys=keys,
        cipher=cipher,
        clock=clock,
    )
    return Docs(state, stores, archive, sweeper, subjects, tokens, scanner, now)


_PHOTO = photo_with_location(image=noisy_image())


def big_photo() -> bytes:
    """A camera photo of many segments, with GPS metadata."""
    return _PHOTO


def a_pdf() -> bytes:
    return saved(pdf(pages=2))


# -- upload and read ------------------------------------------------------------------------------


def test_a_photo_comes_back_and_its_sanitized_copy_has_no_location(docs: Docs) -> None:
    photo = big_photo()
    record = docs.upload(photo)
    assert {v.variant for v in record.variants} == {Variant.ORIGINAL, Variant.SANITIZED}
    assert docs.read(record.document_id) == photo
    clean = docs.read(record.document_id, variant=Variant.SANITIZED)
    image = Image.open(io.BytesIO(clean))
    assert not image.getexif()
    assert b"139.7454" not in clean
    granted = [e for e in docs.state.audit if e.action.value == "document_read"]
    assert [e.outcome.value for e in granted] == ["granted", "granted"]
    assert all(e.token == str(record.document_id) for e in granted)


def test_a_pdf_is_kept_as_sent_without_a_sanitized_copy(docs: Docs) -> None:
    content = a_pdf()
    record = docs.upload(content, "residence_card", "application/pdf")
    assert [v.variant for v in record.variants] == [Variant.ORIGINAL]
    assert record.pages == 2
    assert docs.read(record.document_id) == content
    with pytest.raises(NotFound) as err:
        docs.read(record.document_id, variant=Variant.SANITIZED)
    assert err.value.reason is Reason.VARIANT_MISSING


def test_the_same_file_twice_gives_other_ids_and_other_ciphertexts(docs: Docs) -> None:
    photo = big_photo()
    a, b = docs.upload(photo), docs.upload(photo)
    assert a.document_id != b.document_id
    sa = docs.state.segments[a.variants[0].blob]
    sb = docs.state.segments[b.variants[0].blob]
    assert sa[0] != sb[0]


@pytest.mark.parametrize(
    ("content", "media_type", "rule"),
    [
        (b"\x7fELF" + bytes(200), "image/jpeg", "document.media_type"),
        (None, "image/png", "document.mismatch"),
        (None, "application/pdf", "document.mismatch"),
    ],
)
def test_bad_content_is_refused_and_nothing_is_kept(
    docs: Docs, content: bytes | None, media_type: str, rule: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        docs.upload(content or big_photo(), media_type=media_type)
    assert err.value.violations[0].rule == rule
    assert docs.nothing_kept()
    [refusal] = [e for e in docs.state.audit if e.action.value == "document_upload"]
    assert refusal.outcome.value == "refused"


def test_a_pdf_with_javascript_is_refused(docs: Docs) -> None:
    document = pdf()
    link(document, javascript())
    with pytest.raises(InvalidArgument) as err:
        docs.upload(saved(document), media_type="application/pdf")
    assert err.value.violations[0].rule == "document.pdf_active_content"
    assert docs.nothing_kept()


def test_the_header_is_checked_before_any_content(docs: Docs) -> None:
    def admit(**changes: Any) -> InvalidArgument:
        header = replace(UploadHeader("user-42", "passport", "image/jpeg", 10), **changes)
        with pytest.raises(InvalidArgument) as err:
            docs.archive.admit_upload(ctx("kyc"), header)
        return err.value

    assert admit(document_type="my_number_card_back").violations[0].rule == (
        "document.my_number_card_back"
    )
    assert admit(document_type="health_insurance_card").violations[0].rule == (
        "document.insurer_number_masked"
    )
    assert admit(document_type="scroll").violations[0].rule == "document_type.unknown"
    assert admit(media_type="image/gif").violations[0].rule == "document.media_type"
    assert admit(size=20 * 1024 * 1024 + 1).violations[0].rule == "document.max_bytes"
    assert admit(subject="user 42").violations[0].rule == "subject.syntax"
    assert admit(sha256=b"short").violations[0].rule == "document.sha256"
    with pytest.raises(PermissionDenied):
        docs.archive.admit_upload(ctx("support"), UploadHeader("u", "passport", "image/jpeg", 10))


def test_a_wrong_digest_keeps_nothing(docs: Docs) -> None:
    photo = big_photo()
    header = UploadHeader("user-42", "passport", "image/jpeg", len(photo), b"\x00" * 32)
    ticket = docs.archive.admit_upload(ctx("kyc"), header)
    with pytest.raises(InvalidArgument) as err:
        docs.archive.store(ctx("kyc"), ticket, bytearray(photo))
    assert err.value.violations[0].rule == "document.sha256_mismatch"
    assert docs.nothing_kept()


def test_the_buffer_is_wiped(docs: Docs) -> None:
    photo = big_photo()
    buffer = bytearray(photo)
    ticket = docs.archive.admit_upload(
        ctx("kyc"), UploadHeader("user-42", "passport", "image/jpeg", len(photo))
    )
    docs.archive.store(ctx("kyc"), ticket, buffer)
    assert buffer == bytearray(len(photo))


def test_a_cancelled_upload_keeps_nothing(docs: Docs) -> None:
    photo = big_photo()
    ticket = docs.archive.admit_upload(
        ctx("kyc"), UploadHeader("user-42", "passport", "image/jpeg", len(photo))
    )
    with pytest.raises(Aborted):
        docs.archive.store(ctx("kyc"), ticket, bytearray(photo), cancelled=lambda: True)
    assert docs.nothing_kept()


# -- malware scans --------------------------------------------------------------------------------


def test_an_infected_upload_is_refused_and_nothing_is_kept(docs: Docs) -> None:
    docs.scanner.answer = ScanResult(ScanState.INFECTED, "Eicar-Test-Signature", "fake")
    with pytest.raises(InvalidArgument) as err:
        docs.upload(big_photo())
    assert err.value.violations[0].rule == "document.malware"
    assert "Eicar-Test-Signature" in err.value.message
    assert docs.nothing_kept()


def test_a_document_the_scanner_could_not_scan_is_not_readable(docs: Docs) -> None:
    docs.scanner.answer = ScanResult(ScanState.ERROR, None, "fake: unreachable")
    record = docs.upload(big_photo())
    with pytest.raises(FailedPrecondition) as err:
        docs.read(record.document_id)
    assert err.value.reason is Reason.DOCUMENT_NOT_CLEAN


# -- reads are decided like detokenize ------------------------------------------------------------


def test_a_forbidden_document_looks_like_an_unknown_one(docs: Docs) -> None:
    record = docs.upload(big_photo())
    with pytest.raises(PermissionDenied) as forbidden:
        docs.read(record.document_id, caller="support", purpose="customer_support")
    with pytest.raises(PermissionDenied) as unknown:
        docs.read("doc_" + "a" * 26, caller="support", purpose="customer_support")
    assert forbidden.value.reason is unknown.value.reason is Reason.DOCUMENT_REFUSED
    assert forbidden.value.message == unknown.value.message
    # A caller that may not claim the purpose at all is told so.
    with pytest.raises(PermissionDenied) as claim:
        docs.read(record.document_id, caller="support", purpose="identity_verification")
    assert claim.value.reason is Reason.PERMISSION_DENIED


def test_a_stopped_subjects_documents_are_not_read(docs: Docs) -> None:
    record = docs.upload(big_photo())
    docs.subjects.stop(ctx("ops"), "user-42")
    with pytest.raises(FailedPrecondition) as err:
        docs.read(record.document_id)
    assert err.value.reason is Reason.SUBJECT_STOPPED


def test_show_and_list(docs: Docs) -> None:
    record = docs.upload(big_photo())
    assert docs.archive.show(ctx("kyc"), record.document_id).document_id == record.document_id
    assert docs.archive.show(ctx("ops"), record.document_id).retention_rule == (
        "documents.passport"
    )
    with pytest.raises(PermissionDenied):
        docs.archive.show(ctx("payment"), record.document_id)
    assert [d.document_id for d in docs.archive.list_documents(ctx("ops"), "user-42")] == [
        record.document_id
    ]
    with pytest.raises(PermissionDenied):
        docs.archive.list_documents(ctx("kyc"), "user-42")


# -- tampering ------------------------------------------------------------------------------------


def test_a_tampered_segment_fails_after_the_ones_before_it(docs: Docs) -> None:
    photo = big_photo()
    record = docs.upload(photo)
    original = record.variant(Variant.ORIGINAL)
    assert original is not None
    assert original.segments >= 3
    held = docs.state.segments[original.blob]
    held[1] = held[1][:-1] + bytes([held[1][-1] ^ 1])
    download = docs.archive.open(ctx("kyc"), record.document_id, "identity_verification")
    first = next(download.chunks)
    assert photo.startswith(first)
    with pytest.raises(IntegrityError):
        next(download.chunks)


def test_a_missing_last_segment_is_truncation(docs: Docs) -> None:
    record = docs.upload(big_photo())
    original = record.variant(Variant.ORIGINAL)
    assert original is not None
    del docs.state.segments[original.blob][original.segments - 1]
    with pytest.raises(IntegrityError):
        docs.read(record.document_id)


def test_a_wrapped_key_moved_to_another_document_does_not_open(docs: Docs) -> None:
    a, b = docs.upload(big_photo()), docs.upload(big_photo())
    va, vb = a.variant(Variant.ORIGINAL), b.variant(Variant.ORIGINAL)
    assert va is not None
    assert vb is not None
    docs.state.documents[b.document_id] = replace(
        b, variants=(replace(vb, wrapped_key=va.wrapped_key),)
    )
    with pytest.raises(IntegrityError):
        docs.read(b.document_id)


# -- delete and holds -----------------------------------------------------------------------------


def test_delete_shreds_one_document_and_leaves_the_rest(docs: Docs) -> None:
    a, b = docs.upload(big_photo()), docs.upload(a_pdf(), media_type="application/pdf")
    [name] = docs.tokens.tokenize(
        ctx("kyc"), "user-42", [FieldInput("name", PlainValue.text("Ann"))]
    )
    with pytest.raises(PermissionDenied):
        docs.archive.delete(ctx("kyc"), a.document_id)
    docs.archive.delete(ctx("ops"), a.document_id)
    with pytest.raises(NotFound) as err:
        docs.read(a.document_id)
    assert err.value.reason is Reason.DOCUMENT_DELETED
    assert docs.read(b.document_id)
    assert docs.tokens.detokenize(ctx("payment"), [name.token], "payment")[0].error is None
    assert all(v.blob not in docs.state.segments for v in a.variants)


def test_a_hold_keeps_a_document_from_delete_and_sweep(docs: Docs) -> None:
    record = docs.upload(big_photo(), "health_insurance_card", masked=True)
    with pytest.raises(PermissionDenied):
        docs.archive.hold(ctx("kyc"), record.document_id, "case 2026-118")
    hold = docs.archive.hold(ctx("legal"), record.document_id, "case 2026-118")
    with pytest.raises(FailedPrecondition) as err:
        docs.archive.delete(ctx("ops"), record.document_id)
    assert err.value.reason is Reason.DOCUMENT_HELD
    docs.archive.mark_verified(ctx("kyc"), record.document_id)
    docs.later(timedelta(days=31))
    report = docs.sweeper.sweep(ctx("ops"))
    assert (report.documents_destroyed, report.documents_held) == (0, 1)
    assert docs.read(record.document_id)
    assert docs.archive.release(ctx("legal"), record.document_id, hold.hold_id) == 1
    report = docs.sweeper.sweep(ctx("ops"))
    assert report.documents_destroyed == 1
    with pytest.raises(NotFound):
        docs.read(record.document_id)


def test_a_hold_reason_is_a_case_reference(docs: Docs) -> None:
    record = docs.upload(big_photo())
    with pytest.raises(InvalidArgument):
        docs.archive.hold(ctx("legal"), record.document_id, "")
    with pytest.raises(InvalidArgument):
        docs.archive.hold(ctx("legal"), record.document_id, "x" * 201)
    hold = docs.archive.hold(ctx("legal"), record.document_id, "card 4111 1111 1111 1111")
    assert "4111 1111 1111 1111" not in hold.reason


# -- retention ------------------------------------------------------------------------------------


def test_an_insurance_card_is_swept_thirty_days_after_verification(docs: Docs) -> None:
    record = docs.upload(big_photo(), "health_insurance_card", masked=True)
    assert record.due_at == T0 + timedelta(days=30)  # unverified: from its upload
    docs.later(timedelta(days=10))
    verified = docs.archive.mark_verified(ctx("kyc"), record.document_id)
    assert verified.due_at == T0 + timedelta(days=40)
    again = docs.archive.mark_verified(ctx("kyc"), record.document_id)
    assert again.verified_at == verified.verified_at  # the first verification counts
    docs.later(timedelta(days=29))
    assert docs.sweeper.sweep(ctx("ops")).documents_destroyed == 0
    docs.later(timedelta(days=2))
    report = docs.sweeper.sweep(ctx("ops"))
    assert report.documents_destroyed == 1
    assert docs.sweeper.sweep(ctx("ops")).documents_destroyed == 0  # idempotent
    assert not docs.state.segments


def test_account_stop_starts_the_relationship_period_and_resume_clears_it(docs: Docs) -> None:
    record = docs.upload(big_photo())
    assert record.due_at is None
    docs.subjects.stop(ctx("ops"), "user-42")
    stopped = docs.stores.documents.document(record.document_id)
    assert stopped is not None
    assert stopped.due_at == T0.replace(year=2033)
    docs.subjects.resume(ctx("ops"), "user-42")
    resumed = docs.stores.documents.document(record.document_id)
    assert resumed is not None
    assert resumed.due_at is None


def test_a_sweep_needs_the_subjects_operation(docs: Docs) -> None:
    with pytest.raises(PermissionDenied):
        docs.sweeper.sweep(ctx("kyc"))


def test_values_are_erased_when_their_period_ends(docs: Docs) -> None:
    [ip] = docs.tokens.tokenize(
        ctx("kyc"), "user-42", [FieldInput("ip_address", PlainValue.text("192.0.2.1"))]
    )
    ann = FieldInput("name", PlainValue.text("A"))
    [name] = docs.tokens.tokenize(ctx("kyc"), "user-42", [ann])
    docs.later(timedelta(days=366))
    report = docs.sweeper.sweep(RequestContext.system("system:retention"))
    assert report.values_erased == 1
    [gone] = docs.tokens.detokenize(ctx("payment"), [ip.token], "fraud_prevention")
    assert gone.error is not None
    assert gone.error.reason is Reason.VALUE_EXPIRED
    [kept] = docs.tokens.detokenize(ctx("payment"), [name.token], "payment")
    assert kept.error is None


# -- the shred, and what a law keeps --------------------------------------------------------------


def test_a_shred_keeps_what_the_law_keeps_and_destroys_the_rest(docs: Docs) -> None:
    passport = docs.upload(big_photo(), "passport")
    card = docs.upload(big_photo(), "health_insurance_card", masked=True)
    receipt = docs.subjects.shred(ctx("ops"), "user-42")
    assert receipt.documents_destroyed == 1
    [kept] = receipt.retained
    assert (kept.document_id, kept.rule) == (passport.document_id, "documents.passport")
    assert kept.until == T0.replace(year=2033)
    # The insurance card is gone; the passport is kept, cut from the subject.
    with pytest.raises(NotFound):
        docs.read(card.document_id)
    record = docs.stores.documents.document(passport.document_id)
    assert record is not None
    assert record.subject is None
    assert record.key_owner == "#retention:documents.passport:2033"
    assert SubjectId("user-42") not in docs.state.keys
    # Unreadable for the purposes of the living account, as if it did not exist ...
    with pytest.raises(PermissionDenied) as refused:
        docs.read(passport.document_id)
    assert refused.value.reason is Reason.DOCUMENT_REFUSED
    with pytest.raises(PermissionDenied):
        docs.read(passport.document_id, caller="legal", purpose="third_party_provision")
    # ... readable by the legal caller answering an authority, with a legal basis.
    photo = docs.read(passport.document_id, "legal", "third_party_provision", legal=LAW)
    assert photo == big_photo()
    # The sweep destroys it when the period ends, then the retention key.
    docs.now[0] = T0.replace(year=2033) + timedelta(days=1)
    report = docs.sweeper.sweep(ctx("ops"))
    assert (report.documents_destroyed, report.retention_keys_destroyed) == (1, 1)
    assert not docs.state.documents
    assert not docs.state.segments
    assert not docs.state.retention_owners


def test_a_passport_uploaded_between_the_keep_step_and_the_shred_is_kept(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload racing the shred, made deterministic: the passport arrives after the keep
    step looked at the subject's documents and before the shred's transaction. The law keeps
    it all the same (the keep step runs again), and the receipt says so."""
    card = docs.upload(big_photo(), "health_insurance_card", masked=True)
    keep = docs.archive.keep_for_shred
    late: list[DocumentRecord] = []

    def keep_then_upload(c: RequestContext, subject: SubjectId, at: datetime) -> Any:
        kept = keep(c, subject, at)
        if not late:
            late.append(docs.upload(big_photo(), "passport"))
        return kept

    monkeypatch.setattr(docs.archive, "keep_for_shred", keep_then_upload)
    receipt = docs.subjects.shred(ctx("ops"), "user-42")
    [kept] = receipt.retained
    assert kept.document_id == late[0].document_id
    assert receipt.documents_destroyed == 1
    assert docs.read(late[0].document_id, "legal", "third_party_provision", legal=LAW)
    with pytest.raises(NotFound):
        docs.read(card.document_id)


def test_a_held_document_survives_the_shred_until_its_release(docs: Docs) -> None:
    card = docs.upload(big_photo(), "health_insurance_card", masked=True)
    docs.archive.hold(ctx("legal"), card.document_id, "case 7")
    receipt = docs.subjects.shred(ctx("ops"), "user-42")
    [kept] = receipt.retained
    assert (kept.rule, kept.until) == ("hold", None)
    assert docs.sweeper.sweep(ctx("ops")).documents_held == 1
    with pytest.raises(FailedPrecondition):
        docs.archive.delete(ctx("ops"), card.document_id)
    docs.archive.release(ctx("legal"), card.document_id)
    assert docs.sweeper.sweep(ctx("ops")).documents_destroyed == 1
    assert not docs.state.documents


def test_a_repeated_shred_returns_the_same_receipt(docs: Docs) -> None:
    docs.upload(big_photo(), "passport")
    first = docs.subjects.shred(ctx("ops"), "user-42")
    again = docs.subjects.shred(ctx("ops"), "user-42")
    assert again.receipt_id == first.receipt_id
    assert again.retained == first.retained
    assert again.documents_destroyed == first.documents_destroyed == 0


def test_uploads_to_a_shredded_or_stopped_subject_are_refused(docs: Docs) -> None:
    docs.upload(big_photo())
    docs.subjects.stop(ctx("ops"), "user-42")
    with pytest.raises(FailedPrecondition) as stopped:
        docs.upload(big_photo())
    assert stopped.value.reason is Reason.SUBJECT_STOPPED
    docs.subjects.shred(ctx("ops"), "user-42")
    with pytest.raises(NotFound) as shredded:
        docs.upload(big_photo())
    assert shredded.value.reason is Reason.SUBJECT_DELETED
    assert all(d.subject is None for d in docs.state.documents.values())


def test_nothing_of_a_document_reaches_the_audit_log(docs: Docs) -> None:
    photo = big_photo()
    record = docs.upload(photo)
    docs.read(record.document_id)
    text = repr(docs.state.audit)
    assert "139.7454" not in text
    assert "user-42" not in text
    assert record.document_id in text


def test_a_document_id_is_checked(docs: Docs) -> None:
    with pytest.raises(InvalidArgument) as err:
        docs.read("doc_../../etc/passwd")
    assert err.value.violations[0].rule == "document_id.syntax"
    assert DocumentId("doc_" + "a" * 26)
    assert MediaType("image/jpeg") is MediaType.JPEG


# -- the retired identity_document field ----------------------------------------------------------


def legacy_value(docs: Docs, subject: str, content: bytes, keys_dir: Path) -> str:
    """A value stored under identity_document before documents (Tokenize now refuses it)."""
    from vault.domain import tokens
    from vault.domain.ports import Binding
    from vault.domain.types import Category, StoredValue, TokenFormat

    cipher = AesGcmCipher()
    provider = LocalKeyFileProvider(keys_dir / "kek.json")
    sid = SubjectId(subject)
    held = docs.stores.values.data_keys([sid]).get(sid)
    if held is None:
        dek = cipher.new_data_key()
        new_key = provider.wrap(ctx("kyc"), [(sid, dek)])[0]
    else:
        [opened] = provider.unwrap(ctx("kyc"), [(sid, held.wrapped)])
        assert opened is not None
        dek, new_key = opened, None
    token = tokens.new_token(TokenFormat.OPAQUE, None)
    category = Category("identity_document")
    sealed = cipher.seal(dek, Binding(token, sid, category), PlainValue.binary(content))
    docs.stores.values.save_tokenized(
        subject=sid,
        new_key=new_key,
        encryption_limit=2**31,
        values=[StoredValue(token, sid, category, TokenFormat.OPAQUE, sealed)],
        audit=[],
        idempotency=None,
        now=docs.now[0],
    )
    return token


def test_values_of_the_retired_field_become_documents(docs: Docs, tmp_path: Path) -> None:
    photo = big_photo()
    moved = legacy_value(docs, "user-7", photo, tmp_path)
    kept = legacy_value(docs, "user-7", b"scan-reference: 42", tmp_path)
    assert docs.archive.adopt_legacy_values(RequestContext.system()) == (1, 1)
    assert docs.archive.adopt_legacy_values(RequestContext.system()) == (0, 1)  # idempotent
    [gone] = docs.tokens.detokenize(ctx("kyc"), [moved], "identity_verification")
    assert gone.error is not None
    assert gone.error.reason is Reason.DOCUMENT_MOVED
    [record] = docs.stores.documents.documents_of(SubjectId("user-7"))
    assert record.document_id in gone.error.message
    assert record.document_type.value == "unclassified"
    assert record.retention_rule == "documents.unclassified"
    assert docs.read(record.document_id) == photo
    [still] = docs.tokens.detokenize(ctx("kyc"), [kept], "identity_verification")
    assert still.error is None
    # A caller that could never read the category learns nothing of the move.
    [hidden] = docs.tokens.detokenize(ctx("payment"), [moved], "payment")
    assert hidden.error is not None
    assert hidden.error.reason is Reason.TOKEN_REFUSED
