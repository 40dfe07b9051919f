"""Identity documents: upload, read, show, list, delete, legal holds, verification.

Invariants:
- nothing is kept of an upload that fails a check (media type, mismatch, polyglot, bomb, active
  PDF content, malware, size, digest): its blobs are deleted before the error is raised, and a
  process killed mid-upload leaves only blobs marked `writing`, which the sweep deletes;
- the media type is what the content is, never what the client declared;
- every variant has a random key of its own, wrapped under its owner's data key (the subject's;
  a retention key's after its subject's shred) and bound to subject digest, document, variant
  and media type; its content is a segmented stream (vault.crypto.documents);
- a read is decided by the same evaluator as a detokenize (`ReadEvaluator`): the same refusals,
  and an unknown and a forbidden document answer alike; a document whose malware scan has not
  said clean is not readable; a read that fails authentication mid-stream ends with DATA_LOSS;
- every upload, read, hold, release, verification and delete is audited, without content and
  without a file name (pdvault never receives one).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import secrets
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar

from vault.domain.access import (
    UNKNOWN,
    Access,
    Existence,
    ItemFacts,
    Operation,
    ReadDecision,
    ReadEvaluator,
)
from vault.domain.audit_log import SubjectRefs
from vault.domain.context import RequestContext
from vault.domain.documents import (
    DOCUMENT_ID_RE,
    DocumentBinding,
    DocumentId,
    DocumentInspector,
    DocumentSealer,
    DocumentType,
    MalwareScanner,
    MediaType,
    ScanResult,
    ScanState,
    Variant,
    new_document_id,
    sniff,
)
from vault.domain.naming import SubjectNames, keyed_audit_name
from vault.domain.policy import Policy
from vault.domain.ports import Binding, Cipher, Clock, KeyProvider, ShredLog
from vault.domain.quotas import ItemQuotas
from vault.domain.redaction import mask_card_numbers
from vault.domain.requests import is_uuid, read_violations
from vault.domain.retention import RetentionRule, Trigger, due_date, retention_key_owner
from vault.domain.secrets import Secret, wipe_buffer
from vault.domain.service import GCM_RANDOM_NONCE_LIMIT
from vault.domain.stores import (
    AuditLog,
    BlobStore,
    DocumentRecord,
    DocumentStore,
    DocumentTombstone,
    Hold,
    NewDocument,
    RetentionKey,
    SubjectStore,
    ValueStore,
    VariantRecord,
    WriteOutcome,
)
from vault.domain.subject_keys import (
    SubjectKeys,
    deleted_subject,
    key_exhausted,
    stopped_for_new_data,
)
from vault.domain.types import (
    SUBJECT_RE,
    Action,
    AuditEvent,
    CallerName,
    KeptForShred,
    LegalBasis,
    Outcome,
    Purpose,
    RetainedDocument,
    SubjectId,
    SubjectState,
    Token,
    View,
)
from vault.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PdvaultError,
    PermissionDenied,
    QuotaExceeded,
    Reason,
)

__all__ = [
    "DOCUMENT_LOG_PREFIX",
    "DocumentArchive",
    "DocumentLimits",
    "Download",
    "UploadHeader",
    "UploadTicket",
]

# How the shred log names a document deleted on its own (ids are random, never personal).
DOCUMENT_LOG_PREFIX = "document:"
_HOLD_REASON_MAX = 200


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    max_bytes: int = 20 * 1024 * 1024  # the policy's [documents] max_bytes
    max_chunk_bytes: int = 256 * 1024  # per upload message
    segments_per_write: int = 16  # sealed segments per blob-store write (bounds memory)
    segments_per_read: int = 16  # sealed segments per blob-store read on a download


@dataclass(frozen=True, slots=True)
class UploadHeader:
    """The first message of an upload, as the caller sent it (validated by `admit_upload`).
    Never a file name."""

    subject: str
    document_type: str
    media_type: str  # declared: a hint, checked against the content
    size: int
    sha256: bytes = b""  # optional: checked, never stored
    insurer_number_masked: bool = False  # health insurance cards: the uploader's statement


@dataclass(frozen=True, slots=True)
class UploadTicket:
    """An upload the archive admitted: the caller may store documents of this type for this
    subject, and the header is well formed. The content is read only after this."""

    caller: CallerName
    subject: SubjectId
    document_type: DocumentType
    declared: MediaType
    size: int
    sha256: bytes
    masked_statement: bool
    # A value of the retired identity_document field that this document replaces.
    replaces: Token | None = None


@dataclass
class Download:
    """A granted read: the metadata first, then the plaintext, segment by segment. Iterating
    `chunks` raises `IntegrityError` (DATA_LOSS) at the first segment that does not
    authenticate, after the ones before it were yielded."""

    record: DocumentRecord
    variant: VariantRecord
    chunks: Iterator[bytes]


class DocumentArchive:
    """Stateless between calls; safe to share between threads."""

    def __init__(
        self,
        *,
        policy: Policy,
        documents: DocumentStore,
        blobs: BlobStore,
        values: ValueStore,
        subjects: SubjectStore,
        audit: AuditLog,
        keys: KeyProvider,
        cipher: Cipher,
        sealer: DocumentSealer,
        inspector: DocumentInspector,
        scanner: MalwareScanner | None,
        shred_log: ShredLog,
        clock: Clock,
        limits: DocumentLimits | None = None,
        forget_key: Callable[[SubjectId], None] = lambda _s: None,
        quotas: ItemQuotas | None = None,
        names: SubjectNames,
    ) -> None:
        self.policy = policy
        self._names = names
        self._quotas = quotas
        self._access = ReadEvaluator(policy, documents=True)
        self._documents = documents
        self._blobs = blobs
        self._subjects = subjects
        self._audit = audit
        self._keys = keys
        self._cipher = cipher
        self._sealer = sealer
        self._inspector = inspector
        self._scanner = scanner
        self._log = shred_log
        self._clock = clock
        self.limits = limits or DocumentLimits(max_bytes=policy.documents.max_bytes)
        self._subject_keys = SubjectKeys(values, subjects, keys, cipher)
        self._refs = SubjectRefs(cipher)
        self._forget = forget_key

    def __repr__(self) -> str:
        return f"DocumentArchive({self._sealer!r}, scanner={self._scanner!r})"

    @property
    def category(self) -> str:
        return self.policy.documents.category

    # -- upload ---------------------------------------------------------------------------------

    def admit_upload(self, ctx: RequestContext, header: UploadHeader) -> UploadTicket:
        """Check the header and the caller, before a byte of content is read."""
        violations: list[FieldViolation] = []
        if not SUBJECT_RE.fullmatch(header.subject):
            violations.append(
                FieldViolation(
                    "header.subject_id",
                    "subject.syntax",
                    "must be 1 to 128 characters from [A-Za-z0-9._:@-]",
                )
            )
        document_type = _enum(DocumentType, header.document_type)
        rules = self.policy.documents
        if document_type is DocumentType.MY_NUMBER_CARD_BACK:
            violations.append(
                FieldViolation(
                    "header.document_type",
                    "document.my_number_card_back",
                    "the back of a My Number card must not be copied or recorded (My Number "
                    "Act Arts. 15, 20)",
                )
            )
        elif document_type is None or document_type not in rules.types:
            violations.append(
                FieldViolation(
                    "header.document_type",
                    "document_type.unknown",
                    "must be one of: " + ", ".join(sorted(t.value for t in rules.types)),
                )
            )
        elif (
            document_type is DocumentType.HEALTH_INSURANCE_CARD and not header.insurer_number_masked
        ):
            violations.append(
                FieldViolation(
                    "header.insurer_number_masked",
                    "document.insurer_number_masked",
                    "a health insurance card is accepted only with the insurer number, symbol, "
                    "number and QR code masked (MHLW, since 2020-10-01): mask them and state it",
                )
            )
        declared = _enum(MediaType, header.media_type)
        if declared is None:
            violations.append(
                FieldViolation(
                    "header.media_type",
                    "document.media_type",
                    "must be one of: " + ", ".join(m.value for m in MediaType),
                )
            )
        if not 1 <= header.size <= self.limits.max_bytes:
            violations.append(
                FieldViolation(
                    "header.size",
                    "document.max_bytes",
                    f"must be the document's size, from 1 to {self.limits.max_bytes} bytes",
                )
            )
        if header.sha256 and len(header.sha256) != hashlib.sha256().digest_size:
            violations.append(
                FieldViolation("header.sha256", "document.sha256", "must be 32 bytes, or empty")
            )
        if violations:
            raise InvalidArgument(violations)
        assert document_type is not None  # noqa: S101  (checked above)
        assert declared is not None  # noqa: S101
        decision = self.policy.may_tokenize(ctx.caller, self.policy.documents.category)
        if not decision.allowed:
            self._audit.append(
                [
                    self._event(
                        ctx.caller,
                        Action.DOCUMENT_UPLOAD,
                        Outcome.REFUSED,
                        decision.rule,
                        subject=SubjectId(header.subject),
                        detail=f"type {document_type.value}",
                    )
                ]
            )
            raise PermissionDenied(
                f"caller '{ctx.caller}' may not upload documents (category '{self.category}')",
                rule=decision.rule,
            )
        return UploadTicket(
            ctx.caller,
            SubjectId(header.subject),
            document_type,
            declared,
            header.size,
            header.sha256,
            header.insurer_number_masked,
        )

    def store(
        self,
        ctx: RequestContext,
        ticket: UploadTicket,
        content: bytearray,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> DocumentRecord:
        """Check the content, seal it, keep it. `content` is wiped before this returns,
        whatever happens. `cancelled` is asked before the commit: a client that went away
        keeps nothing."""
        try:
            return self._store(ctx, ticket, content, cancelled)
        finally:
            wipe_buffer(content)

    def refuse_upload(self, ctx: RequestContext, ticket: UploadTicket, rule: str) -> None:
        """Audit an upload that ended before its content was complete (cancelled, too long)."""
        self._audit.append(
            [
                self._event(
                    ctx.caller,
                    Action.DOCUMENT_UPLOAD,
                    Outcome.REFUSED,
                    rule,
                    subject=ticket.subject,
                    detail=f"type {ticket.document_type.value}",
                )
            ]
        )

    def _store(
        self,
        ctx: RequestContext,
        ticket: UploadTicket,
        content: bytearray,
        cancelled: Callable[[], bool],
    ) -> DocumentRecord:
        if len(content) != ticket.size:
            raise InvalidArgument.one(
                "header.size", "document.size_mismatch", "must equal the bytes sent"
            )
        if ticket.sha256 and not secrets.compare_digest(
            hashlib.sha256(content).digest(), ticket.sha256
        ):
            raise InvalidArgument.one(
                "header.sha256",
                "document.sha256_mismatch",
                "does not match the bytes received (corrupted in transit?)",
            )
        try:
            inspection = self._inspector.inspect(content, ticket.declared)
        except InvalidArgument as refused:
            self.refuse_upload(ctx, ticket, refused.violations[0].rule)
            raise
        if inspection.media_type is not ticket.declared:  # the inspector's duty; kept honest
            self.refuse_upload(ctx, ticket, "document.mismatch")
            raise InvalidArgument.one(
                "header.media_type",
                "document.mismatch",
                f"the content is {inspection.media_type.value}, not the declared "
                f"{ticket.declared.value}",
            )
        scan = self._scan(content)
        if scan.state is ScanState.INFECTED:
            self.refuse_upload(ctx, ticket, f"document.malware:{scan.signature or 'unnamed'}")
            raise InvalidArgument.one(
                "content",
                "document.malware",
                f"the malware scan ({scan.engine}) found {scan.signature or 'a threat'}: "
                "nothing was kept",
            )
        contents: list[tuple[Variant, MediaType, bytearray | bytes]] = [
            (Variant.ORIGINAL, inspection.media_type, content)
        ]
        if inspection.sanitized is not None:
            contents.append((Variant.SANITIZED, inspection.media_type, inspection.sanitized))
        document_id = new_document_id()
        digest = self._names.digest(ticket.subject)  # the binding, and what is stored
        doc_keys: list[tuple[DocumentBinding, Secret]] = []
        blobs = [_new_blob_id() for _ in contents]
        self._documents.begin_upload(blobs, self._clock())
        kept = False
        try:
            variants = []
            for (variant, media_type, data), blob in zip(contents, blobs, strict=True):
                binding = DocumentBinding(digest, document_id, variant, media_type)
                key = self._sealer.new_document_key()
                doc_keys.append((binding, key))
                header, segments = self._seal_into(blob, key, binding, data)
                variants.append(
                    VariantRecord(variant, media_type, len(data), segments, blob, header, b"")
                )
            if cancelled():
                self.refuse_upload(ctx, ticket, "upload:cancelled")
                raise Aborted("the client cancelled the upload; nothing was kept")
            record = self._commit(
                ctx, ticket, document_id, scan, inspection.pages, variants, doc_keys
            )
            kept = True
            return record
        finally:
            for _binding, key in doc_keys:
                key.wipe()
            if not kept:
                self._discard(blobs)
            if isinstance(inspection.sanitized, bytearray):
                wipe_buffer(inspection.sanitized)

    def _scan(self, content: bytearray) -> ScanResult:
        if self._scanner is None:
            return ScanResult(ScanState.NOT_SCANNED, None, "none configured")
        return self._scanner.scan(content)

    def _seal_into(
        self, blob: str, key: Secret, binding: DocumentBinding, data: bytearray | bytes
    ) -> tuple[bytes, int]:
        """Seal `data` as a segmented stream into `blob`, a few segments per write."""
        sealer = self._sealer.sealer(key, binding)
        view = memoryview(data)
        step = self._sealer.segment_size * self.limits.segments_per_write
        written = 0
        pending: list[bytes] = []
        for at in range(0, len(view), step):
            pending.extend(sealer.push(view[at : at + step]))
            if len(pending) >= self.limits.segments_per_write:
                self._blobs.write(blob, written, pending)
                written += len(pending)
                pending = []
        pending.extend(sealer.finish())
        self._blobs.write(blob, written, pending)
        return sealer.header, written + len(pending)

    def _commit(
        self,
        ctx: RequestContext,
        ticket: UploadTicket,
        document_id: DocumentId,
        scan: ScanResult,
        pages: int | None,
        variants: list[VariantRecord],
        doc_keys: list[tuple[DocumentBinding, Secret]],
    ) -> DocumentRecord:
        rule = self.policy.document_rule(ticket.document_type)
        for _ in range(4):
            now = self._clock()
            ended = None
            if ticket.replaces is not None:  # a move of existing data: its subject's key
                dek, new_key = self._existing_key(ctx, ticket.subject), None
                held = self._subjects.subject_record(ticket.subject)
                if held is not None and held.state is SubjectState.STOPPED:
                    ended = held.state_changed_at
            else:
                dek, new_key = self._subject_keys.acquire(ctx, ticket.subject)
            try:
                wrapped = [self._sealer.wrap_key(dek, binding, key) for binding, key in doc_keys]
                ref = self._refs.ref(dek, ticket.subject)
            finally:
                dek.wipe()
            record = DocumentRecord(
                document_id=document_id,
                subject=ticket.subject,
                subject_digest=self._names.digest(ticket.subject),  # as in the binding
                document_type=ticket.document_type,
                uploaded_by=ticket.caller,
                created_at=now,
                scan=scan,
                key_owner=ticket.subject,
                retention_rule=rule.name if rule else None,
                due_at=due_date(rule, stored_at=now, relationship_ended_at=ended) if rule else None,
                masked_statement=ticket.masked_statement,
                variants=tuple(
                    VariantRecord(v.variant, v.media_type, v.size, v.segments, v.blob, v.header, w)
                    for v, w in zip(variants, wrapped, strict=True)
                ),
                pages=pages,
            )
            detail = (
                f"type {ticket.document_type.value}; {variants[0].media_type.value}; "
                f"{variants[0].size} bytes; variants {', '.join(v.variant.value for v in variants)}"
                f"; scan {scan.state.value}"
            )
            if ticket.masked_statement:
                detail += "; uploader stated the insurer number is masked"
            event = replace(
                self._event(
                    ticket.caller,
                    Action.DOCUMENT_UPLOAD,
                    Outcome.GRANTED,
                    f"caller:{ticket.caller}:tokenize",
                    subject=ticket.subject,
                    document=document_id,
                    detail=detail,
                ),
                subject_ref=ref,
            )
            outcome = self._documents.add(
                NewDocument(record, new_key, GCM_RANDOM_NONCE_LIMIT, ticket.replaces), [event]
            )
            if outcome is WriteOutcome.DONE:
                return record
            if outcome is WriteOutcome.SUBJECT_RACE:
                continue  # the subject was created (or shredded) meanwhile: its key now
            if outcome is WriteOutcome.SUBJECT_STOPPED:
                raise stopped_for_new_data()
            if outcome is WriteOutcome.SUBJECT_SHREDDED:
                raise deleted_subject()
            if outcome is WriteOutcome.KEY_EXHAUSTED:
                raise key_exhausted()
            if outcome is WriteOutcome.GONE:
                raise NotFound("the value to move is gone", reason=Reason.SUBJECT_DELETED)
        raise Aborted("could not store the document under concurrent writes; retry the call")

    def _existing_key(self, ctx: RequestContext, subject: SubjectId) -> Secret:
        stored = self._subject_keys.values.data_keys([subject]).get(subject)
        if stored is None:
            raise NotFound("the subject was shredded meanwhile", reason=Reason.SUBJECT_DELETED)
        return self._subject_keys.unwrap(ctx, subject, stored.wrapped)

    # -- the retired identity_document field ----------------------------------------------------

    def adopt_legacy_values(self, ctx: RequestContext) -> tuple[int, int]:
        """Move every value of the document category (the retired `identity_document` field)
        into a document of type unclassified, its token becoming a tombstone that names the
        document. A value that is not a JPEG, PNG or PDF, or fails the checks, stays a value.
        Idempotent (a moved value is gone); run at the primary's start-up. Returns (moved,
        left as values)."""
        category = self.policy.documents.category
        values = self._subject_keys.values
        seen: set[Token] = set()
        moved = left = 0
        far = self._clock() + timedelta(days=1)
        while True:
            batch = [
                (t, s)
                for t, s in values.values_stored_before(category, far, 100 + len(seen))
                if t not in seen
            ]
            if not batch:
                return moved, left
            for token, subject in batch:
                seen.add(token)
                if self._adopt(ctx, token, subject):
                    moved += 1
                else:
                    left += 1

    def _adopt(self, ctx: RequestContext, token: Token, subject: SubjectId) -> bool:
        found = self._subject_keys.values.lookup([token])
        stored = found.values.get(token)
        if stored is None:
            return False
        dek = self._existing_key(ctx, subject)
        try:
            plain = self._cipher.open(
                dek, Binding(token, subject, self.policy.documents.category), stored.ciphertext
            )
        except IntegrityError:
            return False
        finally:
            dek.wipe()
        content = bytearray(plain.data.reveal())
        plain.data.wipe()
        declared = sniff(content)
        if declared is None:
            wipe_buffer(content)
            return False
        ticket = UploadTicket(
            CallerName("system:migration"),
            subject,
            DocumentType.UNCLASSIFIED,
            declared,
            len(content),
            b"",
            False,
            replaces=token,
        )
        try:
            self.store(ctx, ticket, content)
        except (InvalidArgument, NotFound):
            return False
        return True

    def _discard(self, blobs: Sequence[str]) -> None:
        """Delete what an upload wrote; if the database is gone, the sweep will."""
        try:
            self._blobs.delete(blobs)
            self._documents.forget_blobs(blobs)
        except PdvaultError:
            pass

    # -- read -----------------------------------------------------------------------------------

    def open(
        self,
        ctx: RequestContext,
        document_id: str,
        purpose: str,
        variant: Variant = Variant.ORIGINAL,
        legal_basis: LegalBasis | None = None,
        justification: str = "",
        disclosure: bool = False,
    ) -> Download:
        """A purpose-bound read, decided as a detokenize is; or, with `disclosure`, a read for
        the subject's disclosure request (operators with `subjects`)."""
        _check_id(document_id)
        if disclosure:
            access = Access(ctx.caller, operation=Operation.EXPORT)
        elif not purpose:
            raise InvalidArgument.one(
                "purpose", "purpose.required", "must name a purpose of the policy (or disclosure)"
            )
        else:
            access = Access(ctx.caller, Purpose(purpose), legal_basis)
        violations = read_violations(self.policy, "" if disclosure else purpose, justification)
        if violations:
            raise InvalidArgument(violations)
        decision = self._access.admit(access)
        record = None
        if decision.allowed and self._quotas is not None and access.purpose is not None:
            # A purpose-bound read is one item of the caller's quota for the purpose, counted
            # before the document is looked up (found or not) and its key unwrapped.
            try:
                self._quotas.take(ctx.caller, access.purpose, 1)
            except QuotaExceeded as exc:
                over = ReadDecision.refuse(exc.rule, exc.reason, exc.message)
                self._audit_read(ctx, access, document_id, None, over, justification)
                raise
        if decision.allowed:
            record = self._documents.document(DocumentId(document_id))
            decision = self._access.decide(
                access, self._facts(record, DocumentId(document_id), purpose)
            )
            if decision.allowed and decision.view is View.MASKED:
                decision = ReadDecision.refuse(
                    f"caller:{ctx.caller}:view",
                    Reason.PERMISSION_DENIED,
                    "this caller sees the document category masked, and a document has no "
                    "masked form",
                )
        if record is None or not decision.allowed:
            self._audit_read(ctx, access, document_id, record, decision, justification)
            raise self._access.refusal(access, decision)
        if record.scan.state not in (ScanState.CLEAN, ScanState.NOT_SCANNED):
            self._audit_read(ctx, access, document_id, record, decision, justification, "scan")
            raise FailedPrecondition(
                f"the document's malware scan says {record.scan.state.value}: it is not readable "
                "until a scan says clean",
                reason=Reason.DOCUMENT_NOT_CLEAN,
            )
        chosen = record.variant(variant)
        if chosen is None:
            self._audit_read(ctx, access, document_id, record, decision, justification, "variant")
            raise NotFound(
                f"the document has no {variant.value} variant", reason=Reason.VARIANT_MISSING
            )
        key = self._document_key(ctx, record, chosen)
        # Audited once granted, before the first byte leaves (as a detokenize).
        self._audit_read(ctx, access, document_id, record, decision, justification, None, variant)
        return Download(record, chosen, self._plaintext(record, chosen, key))

    def _facts(
        self, record: DocumentRecord | None, document_id: DocumentId, purpose: str
    ) -> ItemFacts:
        category = self.policy.documents.category
        if record is None:
            gone = self._documents.tombstone(document_id)
            return ItemFacts(Existence.DELETED, category) if gone is not None else UNKNOWN
        if record.retained:
            rule = self.policy.retention.get(record.retention_rule or "")
            allowed = rule.purposes if rule is not None and rule.legal else frozenset()
            return ItemFacts(
                Existence.STORED, category, SubjectState.SHREDDED, None, allowed, document=True
            )
        assert record.subject is not None  # noqa: S101  (not retained)
        held = self._subjects.subject_record(record.subject)
        if held is None:  # shredded between the two reads
            return ItemFacts(Existence.DELETED, category)
        return ItemFacts(
            Existence.STORED,
            category,
            held.state,
            held.consents.get(Purpose(purpose)),
            document=True,
        )

    def _document_key(
        self, ctx: RequestContext, record: DocumentRecord, variant: VariantRecord
    ) -> Secret:
        owner = self._owner_key(ctx, record)
        try:
            return self._sealer.unwrap_key(owner, _binding(record, variant), variant.wrapped_key)
        finally:
            owner.wipe()

    def _owner_key(self, ctx: RequestContext, record: DocumentRecord) -> Secret:
        """The data key that wraps the document's keys: its subject's, or its retention key."""
        if record.subject is not None:
            stored = self._subject_keys.values.data_keys([record.subject]).get(record.subject)
            if stored is None:
                raise NotFound(
                    "the document was destroyed meanwhile", reason=Reason.DOCUMENT_DELETED
                )
            return self._subject_keys.unwrap(ctx, record.subject, stored.wrapped)
        retention = self._documents.retention_key(record.key_owner)
        if retention is None:
            raise NotFound("the document was destroyed meanwhile", reason=Reason.DOCUMENT_DELETED)
        return self._subject_keys.unwrap(ctx, SubjectId(retention.owner), retention.wrapped)

    def _plaintext(
        self, record: DocumentRecord, variant: VariantRecord, key: Secret
    ) -> Iterator[bytes]:
        try:
            opener = self._sealer.opener(key, _binding(record, variant), variant.header)
            index = 0
            step = self.limits.segments_per_read
            while index < variant.segments:
                batch = self._blobs.read(variant.blob, index, min(step, variant.segments - index))
                if not batch:
                    break
                for segment in batch:
                    yield opener.open(index, segment, index == variant.segments - 1)
                    index += 1
            if index != variant.segments:
                raise IntegrityError()  # segments are missing: a truncated stream
        finally:
            key.wipe()

    def _audit_read(
        self,
        ctx: RequestContext,
        access: Access,
        document_id: str,
        record: DocumentRecord | None,
        decision: ReadDecision,
        justification: str,
        blocked: str | None = None,
        variant: Variant | None = None,
    ) -> None:
        granted = decision.allowed and blocked is None
        rule = decision.rule if blocked is None else f"document:{blocked}"
        self._audit.append(
            [
                AuditEvent(
                    occurred_at=self._clock(),
                    caller=ctx.caller,
                    action=Action.DOCUMENT_READ,
                    outcome=Outcome.GRANTED if granted else Outcome.REFUSED,
                    rule=rule,
                    token=Token(document_id) if _well_formed(document_id) else None,
                    subject=_audited_subject(record),
                    category=self.policy.documents.category,
                    purpose=access.purpose,
                    view=decision.view if granted else None,
                    justification=mask_card_numbers(justification)[:256] or None,
                    detail=f"variant {variant.value}" if variant is not None else None,
                    legal_basis=access.legal_basis,
                )
            ]
        )

    # -- show, list -----------------------------------------------------------------------------

    def show(self, ctx: RequestContext, document_id: str) -> DocumentRecord:
        """A document's metadata (type, media type, sizes, scan, retention, holds), for an
        operator (`subjects` or `holds`) or a caller that may read documents for some purpose;
        to anyone else it looks like an unknown document."""
        _check_id(document_id)
        operator = any(
            self.policy.may_operate(ctx.caller, op).allowed for op in ("subjects", "holds")
        )
        reader = self._may_read_some(ctx.caller)
        record = self._documents.document(DocumentId(document_id)) if operator or reader else None
        allowed = record is not None and (operator or (reader and not record.retained))
        self._audit.append(
            [
                self._event(
                    ctx.caller,
                    Action.DOCUMENT_SHOW,
                    Outcome.GRANTED if allowed else Outcome.REFUSED,
                    "document:show" if allowed else "document:refused",
                    subject=_audited_subject(record) if allowed else None,
                    document=DocumentId(document_id),
                )
            ]
        )
        if record is None or not allowed:
            if operator and record is None and self._documents.tombstone(DocumentId(document_id)):
                raise NotFound(
                    "the document was destroyed (deleted, its subject shredded, or its retention "
                    "ended)",
                    reason=Reason.DOCUMENT_DELETED,
                )
            raise _refused()
        return record

    def list_documents(self, ctx: RequestContext, subject: str) -> list[DocumentRecord]:
        """The subject's documents (operators with `subjects`)."""
        subject_id = self._operator(ctx, "subjects", Action.DOCUMENT_LIST, subject=subject)
        found = self._documents.documents_of(subject_id)
        self._audit.append(
            [
                self._event(
                    ctx.caller,
                    Action.DOCUMENT_LIST,
                    Outcome.GRANTED,
                    f"caller:{ctx.caller}:operations",
                    subject=subject_id,
                    detail=f"{len(found)} documents",
                )
            ]
        )
        return found

    def _may_read_some(self, caller: CallerName) -> bool:
        rule = self.policy.callers.get(caller)
        if rule is None:
            return False
        category = self.policy.documents.category
        return any(self.policy.permits(caller, p, category).allowed for p in rule.purposes)

    # -- delete, hold, release, verified ------------------------------------------------------

    def delete(self, ctx: RequestContext, document_id: str) -> DocumentTombstone:
        """Shred one document (operators with `subjects`): its keys first, then its segments.
        Refused while a legal hold stands, and for a document kept after its subject's
        deletion under a legal duty (only its retention's end destroys it)."""
        _check_id(document_id)
        self._operator(ctx, "subjects", Action.DOCUMENT_DELETE, document=document_id)
        record = self._known(DocumentId(document_id))
        if record.holds:
            raise FailedPrecondition(
                f"{len(record.holds)} legal hold(s) stand on the document; release them first",
                reason=Reason.DOCUMENT_HELD,
            )
        if record.retained:
            raise FailedPrecondition(
                "the document is kept under a legal duty after its subject's deletion; it is "
                f"destroyed when its retention ends ({_date(record.due_at)})",
                reason=Reason.DOCUMENT_HELD,
            )
        now = self._clock()
        # The shred log first (as a subject's shred): a restored backup forgets it again.
        self._log.record(DOCUMENT_LOG_PREFIX + document_id, str(uuid.uuid4()), now)
        tomb = DocumentTombstone(
            record.document_id, record.document_type, record.subject_digest, now, "delete"
        )
        event = self._event(
            ctx.caller,
            Action.DOCUMENT_DELETE,
            Outcome.GRANTED,
            f"caller:{ctx.caller}:operations",
            subject=_audited_subject(record),
            document=record.document_id,
            detail=f"type {record.document_type.value}; {len(record.variants)} variants shredded",
        )
        blobs = self._documents.destroy(record.document_id, None, tomb, [event])
        if blobs is None:
            raise Aborted("the document changed during the delete (a hold?); retry")
        self._discard(blobs)
        return tomb

    def hold(self, ctx: RequestContext, document_id: str, reason: str) -> Hold:
        """Place a legal hold (operators with `holds`): no delete, sweep or shred destroys the
        document while it stands. `reason` is a case reference, not content."""
        _check_id(document_id)
        cleaned = mask_card_numbers(reason.strip())
        if not 1 <= len(cleaned) <= _HOLD_REASON_MAX or not cleaned.isprintable():
            raise InvalidArgument.one(
                "reason",
                "hold.reason",
                f"must be 1 to {_HOLD_REASON_MAX} printable characters (a case reference)",
            )
        self._operator(ctx, "holds", Action.DOCUMENT_HOLD, document=document_id)
        record = self._known(DocumentId(document_id))
        hold = Hold(str(uuid.uuid4()), cleaned, ctx.caller, self._clock())
        event = self._event(
            ctx.caller,
            Action.DOCUMENT_HOLD,
            Outcome.GRANTED,
            f"caller:{ctx.caller}:operations",
            subject=_audited_subject(record),
            document=record.document_id,
            detail=f"hold {hold.hold_id}: {cleaned}",
        )
        if not self._documents.add_hold(record.document_id, hold, [event]):
            raise NotFound("the document was destroyed meanwhile", reason=Reason.DOCUMENT_DELETED)
        return hold

    def release(self, ctx: RequestContext, document_id: str, hold_id: str = "") -> int:
        """Release one hold, or every hold when `hold_id` is empty (operators with `holds`)."""
        _check_id(document_id)
        if hold_id and not is_uuid(hold_id):
            # Checked before it reaches a query or the audit (a NUL byte was INTERNAL on
            # PostgreSQL).
            raise InvalidArgument.one(
                "hold_id", "hold_id.syntax", "must be a hold's id (a UUID), or empty for every hold"
            )
        self._operator(ctx, "holds", Action.DOCUMENT_RELEASE, document=document_id)
        record = self._known(DocumentId(document_id))
        event = self._event(
            ctx.caller,
            Action.DOCUMENT_RELEASE,
            Outcome.GRANTED,
            f"caller:{ctx.caller}:operations",
            subject=_audited_subject(record),
            document=record.document_id,
            detail=f"hold {hold_id}" if hold_id else "every hold",
        )
        released = self._documents.release_hold(record.document_id, hold_id or None, [event])
        if hold_id and not released:
            raise NotFound("the document has no hold with this id", reason=Reason.SUBJECT_UNKNOWN)
        return released

    def mark_verified(self, ctx: RequestContext, document_id: str) -> DocumentRecord:
        """The verification flow checked the document: its retention may now run from here
        (callers that may upload documents). The first verification counts."""
        _check_id(document_id)
        decision = self.policy.may_tokenize(ctx.caller, self.policy.documents.category)
        record = self._documents.document(DocumentId(document_id)) if decision.allowed else None
        if record is None or record.retained:
            self._audit.append(
                [
                    self._event(
                        ctx.caller,
                        Action.DOCUMENT_VERIFIED,
                        Outcome.REFUSED,
                        decision.rule if not decision.allowed else "document:refused",
                        document=DocumentId(document_id),
                    )
                ]
            )
            raise _refused()
        now = self._clock()
        rule = self.policy.retention.get(record.retention_rule or "")
        due = record.due_at
        if rule is not None and rule.trigger is Trigger.VERIFIED and record.verified_at is None:
            due = due_date(rule, stored_at=record.created_at, verified_at=now)
        event = self._event(
            ctx.caller,
            Action.DOCUMENT_VERIFIED,
            Outcome.GRANTED,
            f"caller:{ctx.caller}:tokenize",
            subject=_audited_subject(record),
            document=record.document_id,
            detail="first verification" if record.verified_at is None else "already verified",
        )
        if not self._documents.set_verified(record.document_id, now, due, [event]):
            raise NotFound("the document was destroyed meanwhile", reason=Reason.DOCUMENT_DELETED)
        found = self._documents.document(record.document_id)
        if found is None:
            raise NotFound("the document was destroyed meanwhile", reason=Reason.DOCUMENT_DELETED)
        return found

    # -- the subject's lifecycle ----------------------------------------------------------------

    def held_by(self, subject: SubjectId) -> list[DocumentRecord]:
        """The subject's documents (for its disclosure export; the caller is authorized)."""
        return self._documents.documents_of(subject)

    def relationship_changed(self, subject: SubjectId, ended_at: datetime | None) -> None:
        """Account Stop ended the relationship (`ended_at`), or a resume continued it (None):
        the due dates of rules that run from the relationship's end follow."""
        dates = []
        for record in self._documents.documents_of(subject):
            rule = self.policy.retention.get(record.retention_rule or "")
            if rule is not None and rule.trigger is Trigger.RELATIONSHIP_END:
                dates.append(
                    (
                        record.document_id,
                        due_date(
                            rule,
                            stored_at=record.created_at,
                            verified_at=record.verified_at,
                            relationship_ended_at=ended_at,
                        ),
                    )
                )
        self._documents.set_due_dates(dates)

    def keep_for_shred(self, ctx: RequestContext, subject: SubjectId, at: datetime) -> KeptForShred:
        """Before the subject's shred: move the documents a law obliges us to keep (a legal
        rule whose period has not ended) or a hold keeps, under a retention key of their rule,
        so that they no longer depend on the subject's data key. Returns what was kept: each
        document, its rule (`hold`: only a hold keeps it) and until when (None: until its
        holds are released), and every document examined."""
        keep: list[tuple[DocumentRecord, RetentionRule | None, datetime | None]] = []
        found = self._documents.documents_of(subject)
        examined = frozenset(str(record.document_id) for record in found)
        for record in found:
            rule = self.policy.retention.get(record.retention_rule or "")
            until = None
            if rule is not None and rule.legal:
                until = due_date(
                    rule,
                    stored_at=record.created_at,
                    verified_at=record.verified_at,
                    relationship_ended_at=at,
                )
            legal = until is not None and until > at
            if legal or record.holds:
                keep.append((record, rule if legal else None, until if legal else None))
        if not keep:
            return KeptForShred((), examined)
        stored = self._subject_keys.values.data_keys([subject]).get(subject)
        if stored is None:
            return KeptForShred((), examined)
        dek = self._subject_keys.unwrap(ctx, subject, stored.wrapped)
        kept: list[RetainedDocument] = []
        try:
            for record, rule, until in keep:
                owner = self._retention_key(ctx, rule.name if rule else "hold", until or at)
                key = self._subject_keys.unwrap(ctx, SubjectId(owner.owner), owner.wrapped)
                try:
                    rewrapped = []
                    for v in record.variants:
                        binding = _binding(record, v)
                        doc_key = self._sealer.unwrap_key(dek, binding, v.wrapped_key)
                        try:
                            rewrapped.append(
                                (v.variant, self._sealer.wrap_key(key, binding, doc_key))
                            )
                        finally:
                            doc_key.wipe()
                finally:
                    key.wipe()
                # Due when the legal period ends; a document kept only by a hold is due at
                # once, and the sweep destroys it when the hold is released.
                if self._documents.retain(
                    record.document_id, owner, rewrapped, until or at, expected_owner=subject
                ):
                    self._audit.append(
                        [
                            self._event(
                                CallerName("system:retention"),
                                Action.DOCUMENT_RETAIN,
                                Outcome.GRANTED,
                                rule.name if rule else "hold",
                                subject=SubjectId(subject),
                                document=record.document_id,
                                detail=f"kept past the subject's deletion until {_date(until)}",
                            )
                        ]
                    )
                    kept.append(
                        RetainedDocument(
                            record.document_id,
                            record.document_type.value,
                            rule.name if rule else "hold",
                            until,
                        )
                    )
        finally:
            dek.wipe()
        return KeptForShred(tuple(kept), examined)

    def _retention_key(self, ctx: RequestContext, rule: str, due: datetime) -> RetentionKey:
        owner = retention_key_owner(rule, due)
        found = self._documents.retention_key(owner)
        if found is not None:
            return found
        fresh = self._cipher.new_data_key()
        try:
            [wrapped] = self._keys.wrap(ctx, [(SubjectId(owner), fresh)])
        finally:
            fresh.wipe()
        return self._documents.add_retention_key(RetentionKey(owner, wrapped), self._clock())

    def abandon(self, record: DocumentRecord) -> None:
        """Destroy a document whose upload the client cancelled after it was committed (the
        client never learnt its id): a cancelled upload keeps nothing."""
        tomb = DocumentTombstone(
            record.document_id,
            record.document_type,
            record.subject_digest,
            self._clock(),
            "cancelled",
        )
        event = self._event(
            record.uploaded_by,
            Action.DOCUMENT_DELETE,
            Outcome.GRANTED,
            "upload:cancelled",
            subject=_audited_subject(record),
            document=record.document_id,
            detail="the client cancelled the upload as it was committed",
        )
        blobs = self._documents.destroy(record.document_id, None, tomb, [event], unless_held=False)
        if blobs:
            self._discard(blobs)

    def forget_blobs(self, blobs: Sequence[str]) -> None:
        """Delete the segments of documents a shred destroyed (their keys are gone already)."""
        self._discard(blobs)

    # -- helpers --------------------------------------------------------------------------------

    def _operator(
        self,
        ctx: RequestContext,
        operation: str,
        action: Action,
        *,
        subject: str | None = None,
        document: str | None = None,
    ) -> SubjectId:
        if subject is not None and not SUBJECT_RE.fullmatch(subject):
            raise InvalidArgument.one(
                "subject_id", "subject.syntax", "must be 1 to 128 characters from [A-Za-z0-9._:@-]"
            )
        d = self.policy.may_operate(ctx.caller, operation)
        if not d.allowed:
            self._audit.append(
                [
                    self._event(
                        ctx.caller,
                        action,
                        Outcome.REFUSED,
                        d.rule,
                        subject=SubjectId(subject) if subject else None,
                        document=DocumentId(document) if document else None,
                    )
                ]
            )
            raise PermissionDenied(d.reason, rule=d.rule)
        return SubjectId(subject or "")

    def _known(self, document_id: DocumentId) -> DocumentRecord:
        record = self._documents.document(document_id)
        if record is not None:
            return record
        if self._documents.tombstone(document_id) is not None:
            raise NotFound(
                "the document was destroyed (deleted, its subject shredded, or its retention "
                "ended)",
                reason=Reason.DOCUMENT_DELETED,
            )
        raise NotFound("no such document is held", reason=Reason.DOCUMENT_DELETED)

    def _event(
        self,
        caller: CallerName,
        action: Action,
        outcome: Outcome,
        rule: str,
        *,
        subject: SubjectId | None = None,
        document: DocumentId | None = None,
        detail: str | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            occurred_at=self._clock(),
            caller=caller,
            action=action,
            outcome=outcome,
            rule=rule,
            token=Token(document) if document and _well_formed(document) else None,
            subject=subject,
            category=self.policy.documents.category,
            detail=detail[:256] if detail else None,
        )


def _binding(record: DocumentRecord, variant: VariantRecord) -> DocumentBinding:
    return DocumentBinding(
        record.binding_digest, record.document_id, variant.variant, variant.media_type
    )


def _audited_subject(record: DocumentRecord | None) -> SubjectId | None:
    if record is None:
        return None
    # A retained document's subject is gone: its keyed digest (never the unkeyed one, which
    # a dictionary of ids reverses).
    return record.subject if record.subject is not None else keyed_audit_name(record.subject_digest)


def _well_formed(document_id: str) -> bool:
    return DOCUMENT_ID_RE.fullmatch(document_id) is not None


def _check_id(document_id: str) -> None:
    if not _well_formed(document_id):
        raise InvalidArgument.one(
            "document_id", "document_id.syntax", "must be doc_ and 26 base32 characters"
        )


def _refused() -> PermissionDenied:
    return PermissionDenied(
        "refused: the document does not exist, or this caller or purpose may not read it",
        rule="document:refused",
        reason=Reason.DOCUMENT_REFUSED,
    )


def _date(at: datetime | None) -> str:
    return at.date().isoformat() if at is not None else "the release of its holds"


def _new_blob_id() -> str:
    return "blob_" + base64.b32encode(secrets.token_bytes(20)).decode("ascii").rstrip("=").lower()


E = TypeVar("E", bound=enum.Enum)


def _enum(cls: type[E], value: str) -> E | None:
    try:
        return cls(value)
    except ValueError:
        return None
