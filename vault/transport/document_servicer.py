"""The DocumentService's servicer: the upload and download streams, and the unary methods.

The upload reads the header, asks the archive to admit it (before a byte of content), then
reads chunks into one buffer of the declared size (never more), each within the read timeout
and all within PDV_UPLOAD_TIMEOUT, and hands the buffer to the archive, which checks, seals
and keeps it, and wipes it. A client that goes away keeps nothing. The download sends the
metadata, then the plaintext a few segments per message, pulled from the thread pool one
message at a time (the stream's flow control bounds the memory).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

from pdvault.v1 import document_service_pb2 as pb

from vault.domain.archive import DocumentArchive, Download, UploadHeader
from vault.domain.documents import DocumentType, Variant
from vault.domain.policy import Policy
from vault.domain.secrets import wipe_buffer
from vault.domain.stores import DocumentRecord
from vault.domain.sweep import RetentionSweep
from vault.errors import DeadlineExceeded, InvalidArgument, Reason
from vault.transport.convert import timestamp
from vault.transport.rpc import Call, Method, Stream, StreamingMethod
from vault.transport.token_servicer import LEGAL_BASES

__all__ = ["CHUNK_BYTES", "DocumentServicer", "document_out"]

CHUNK_BYTES = 256 * 1024  # the largest chunk either way
_LIST_MAX = 100

_TYPES_IN = {
    pb.DOCUMENT_TYPE_PASSPORT: DocumentType.PASSPORT,
    pb.DOCUMENT_TYPE_DRIVERS_LICENSE: DocumentType.DRIVERS_LICENSE,
    pb.DOCUMENT_TYPE_RESIDENCE_CARD: DocumentType.RESIDENCE_CARD,
    pb.DOCUMENT_TYPE_HEALTH_INSURANCE_CARD: DocumentType.HEALTH_INSURANCE_CARD,
    pb.DOCUMENT_TYPE_MY_NUMBER_CARD_FRONT: DocumentType.MY_NUMBER_CARD_FRONT,
    pb.DOCUMENT_TYPE_MY_NUMBER_CARD_BACK: DocumentType.MY_NUMBER_CARD_BACK,
    pb.DOCUMENT_TYPE_UNCLASSIFIED: DocumentType.UNCLASSIFIED,
}
_TYPES_OUT = {v: k for k, v in _TYPES_IN.items()}
_VARIANTS_IN = {
    pb.DOCUMENT_VARIANT_UNSPECIFIED: Variant.ORIGINAL,
    pb.DOCUMENT_VARIANT_ORIGINAL: Variant.ORIGINAL,
    pb.DOCUMENT_VARIANT_SANITIZED: Variant.SANITIZED,
}
_VARIANTS_OUT = {
    Variant.ORIGINAL: pb.DOCUMENT_VARIANT_ORIGINAL,
    Variant.SANITIZED: pb.DOCUMENT_VARIANT_SANITIZED,
}
_SCANS_OUT = {
    "not_scanned": pb.SCAN_STATE_NOT_SCANNED,
    "clean": pb.SCAN_STATE_CLEAN,
    "infected": pb.SCAN_STATE_INFECTED,
    "error": pb.SCAN_STATE_ERROR,
}


def document_out(record: DocumentRecord, policy: Policy) -> pb.Document:
    original = record.variant(Variant.ORIGINAL) or (record.variants[0] if record.variants else None)
    out = pb.Document(
        document_id=record.document_id,
        subject=record.subject or "",
        subject_digest=record.subject_digest,
        document_type=_TYPES_OUT[record.document_type],
        media_type=original.media_type.value if original else "",
        created_at=timestamp(record.created_at),
        uploaded_by=record.uploaded_by,
        scan_state=_SCANS_OUT[record.scan.state.value],
        scan_engine=record.scan.engine,
        variants=[
            pb.VariantInfo(
                variant=_VARIANTS_OUT[v.variant], media_type=v.media_type.value, size=v.size
            )
            for v in record.variants
        ],
        holds=[
            pb.LegalHold(
                hold_id=h.hold_id,
                reason=h.reason,
                placed_by=h.placed_by,
                placed_at=timestamp(h.placed_at),
            )
            for h in record.holds
        ],
        retained=record.retained,
        pages=record.pages or 0,
        insurer_number_masked=record.masked_statement,
    )
    if record.verified_at is not None:
        out.verified_at.CopyFrom(timestamp(record.verified_at))
    rule = policy.retention.get(record.retention_rule or "")
    retention = pb.Retention(rule=record.retention_rule or "")
    if rule is not None:
        retention.trigger = rule.trigger.value
        retention.keep = str(rule.keep)
        retention.then = rule.then.value
        retention.legal = rule.legal
        retention.source = rule.source
    if record.due_at is not None:
        retention.due_at.CopyFrom(timestamp(record.due_at))
    out.retention.CopyFrom(retention)
    return out


class DocumentServicer:
    def __init__(
        self, archive: DocumentArchive, sweeper: RetentionSweep, upload_timeout: float
    ) -> None:
        self._archive = archive
        self._sweeper = sweeper
        self._policy = archive.policy
        self._upload_timeout = upload_timeout

    def methods(self) -> dict[str, Method[Any, Any] | StreamingMethod]:
        return {
            "UploadDocument": StreamingMethod("UploadDocument", False, self.upload),
            "GetDocument": StreamingMethod("GetDocument", True, self.get),
            "GetDocumentMetadata": Method(
                "GetDocumentMetadata", pb.GetDocumentMetadataRequest, self.metadata
            ),
            "ListDocuments": Method("ListDocuments", pb.ListDocumentsRequest, self.list_documents),
            "DeleteDocument": Method("DeleteDocument", pb.DeleteDocumentRequest, self.delete),
            "HoldDocument": Method("HoldDocument", pb.HoldDocumentRequest, self.hold),
            "ReleaseDocument": Method("ReleaseDocument", pb.ReleaseDocumentRequest, self.release),
            "MarkDocumentVerified": Method(
                "MarkDocumentVerified", pb.MarkDocumentVerifiedRequest, self.verified
            ),
            "SweepRetention": Method("SweepRetention", pb.SweepRetentionRequest, self.sweep),
        }

    # -- streams --------------------------------------------------------------------------------

    async def upload(self, stream: Stream, call: Call) -> pb.UploadDocumentResponse:
        first = await stream.next(pb.UploadDocumentRequest)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument.one(
                "header", "upload.header_first", "the first message must be the header"
            )
        h = first.header
        document_type = _TYPES_IN.get(h.document_type)
        header = UploadHeader(
            subject=h.subject,
            document_type=document_type.value if document_type else "",
            media_type=h.media_type,
            size=h.size,
            sha256=h.sha256,
            insurer_number_masked=h.insurer_number_masked,
        )
        ticket = await stream.run(self._archive.admit_upload, call.ctx, header)
        content = bytearray(ticket.size)  # never more than declared (and the policy allows)
        try:
            received = await self._receive(stream, content)
            call.facts.bytes_in = received
            if received != ticket.size:
                raise InvalidArgument.one(
                    "header.size",
                    "document.size_mismatch",
                    f"declared {ticket.size} bytes, but the stream ended after {received}",
                )
        except BaseException as exc:
            wipe_buffer(content)
            rule = exc.violations[0].rule if isinstance(exc, InvalidArgument) else "upload:ended"
            # Not awaited: a cancelled call cannot wait, and the audit must not be lost.
            asyncio.get_running_loop().run_in_executor(
                None, self._archive.refuse_upload, call.ctx, ticket, rule
            )
            raise
        cancelled = asyncio.Event()
        work = asyncio.ensure_future(
            stream.run(self._archive.store, call.ctx, ticket, content, cancelled.is_set)
        )
        try:
            record = await asyncio.shield(work)
        except asyncio.CancelledError:
            # The client went away while its document was being checked and sealed: the
            # archive stops before committing, or the committed document is destroyed.
            cancelled.set()
            work.add_done_callback(self._abandon_if_kept)
            raise
        return pb.UploadDocumentResponse(document=document_out(record, self._policy))

    def _abandon_if_kept(self, work: asyncio.Future[DocumentRecord]) -> None:
        if work.cancelled() or work.exception() is not None:
            return
        asyncio.get_running_loop().run_in_executor(None, self._archive.abandon, work.result())

    async def _receive(self, stream: Stream, content: bytearray) -> int:
        received = 0
        limit = self._archive.limits.max_chunk_bytes
        # The upload's deadline is checked before each read and bounds each read: no timer
        # cancels the loop from outside. (It did, with asyncio.timeout around reads that each
        # ran under wait_for: on Python 3.11 a message arriving just as the outer timer fired
        # could swallow its cancellation, and a trickle sent on past PDV_UPLOAD_TIMEOUT until
        # the client gave up: a CI run caught it.)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._upload_timeout
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError
                message = await stream.next(pb.UploadDocumentRequest, within=left)
                if message is None:
                    return received
                part = message.WhichOneof("part")
                if part == "header":
                    raise InvalidArgument.one(
                        "header", "upload.header_twice", "the header must be sent once, first"
                    )
                chunk = message.chunk
                if not 1 <= len(chunk) <= limit:
                    raise InvalidArgument.one(
                        "chunk", "upload.chunk_size", f"must be 1 to {limit} bytes"
                    )
                if received + len(chunk) > len(content):
                    raise InvalidArgument.one(
                        "header.size",
                        "document.size_mismatch",
                        f"more bytes were sent than the {len(content)} declared",
                    )
                content[received : received + len(chunk)] = chunk
                received += len(chunk)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the upload did not finish within {self._upload_timeout:g} s (PDV_UPLOAD_TIMEOUT)",
                reason=Reason.REQUEST_TOO_SLOW,
            ) from None

    async def get(self, stream: Stream, call: Call) -> AsyncIterator[pb.GetDocumentResponse]:
        request = await stream.next(pb.GetDocumentRequest)
        if request is None:
            raise InvalidArgument.one(
                "request", "request.required", "the request message is missing"
            )
        variant = _VARIANTS_IN.get(request.variant)
        if variant is None:
            raise InvalidArgument.one("variant", "variant.unknown", "is not a known variant")
        legal = LEGAL_BASES.get(request.legal_basis)
        if request.legal_basis and legal is None:
            raise InvalidArgument.one(
                "legal_basis", "legal_basis.unknown", "is not a known legal basis"
            )
        call.facts.purpose = request.purpose  # the access log keeps it only if the policy's
        download: Download = await stream.run(
            self._archive.open,
            call.ctx,
            request.document_id,
            request.purpose,
            variant,
            legal,
            request.justification,
            request.disclosure,
        )
        try:
            yield pb.GetDocumentResponse(metadata=document_out(download.record, self._policy))
            while True:
                chunk = await stream.run(_next_chunk, download.chunks)
                if chunk is None:
                    return
                call.facts.bytes_out += len(chunk)
                yield pb.GetDocumentResponse(chunk=chunk)
        finally:
            close = getattr(download.chunks, "close", None)
            if close is not None:
                close()  # wipes the document key if the stream ended early

    # -- unary ----------------------------------------------------------------------------------

    def metadata(
        self, request: pb.GetDocumentMetadataRequest, call: Call
    ) -> pb.GetDocumentMetadataResponse:
        record = self._archive.show(call.ctx, request.document_id)
        return pb.GetDocumentMetadataResponse(document=document_out(record, self._policy))

    def list_documents(
        self, request: pb.ListDocumentsRequest, call: Call
    ) -> pb.ListDocumentsResponse:
        size = request.page_size or 50
        if not 1 <= size <= _LIST_MAX:
            raise InvalidArgument.one(
                "page_size", "page_size.range", f"must be 0 (the default, 50) to {_LIST_MAX}"
            )
        start = _page_start(request.page_token)
        found = self._archive.list_documents(call.ctx, request.subject)
        page = found[start : start + size]
        more = start + size < len(found)
        return pb.ListDocumentsResponse(
            documents=[document_out(r, self._policy) for r in page],
            next_page_token=_page_token(start + size) if more else "",
        )

    def delete(self, request: pb.DeleteDocumentRequest, call: Call) -> pb.DeleteDocumentResponse:
        tomb = self._archive.delete(call.ctx, request.document_id)
        return pb.DeleteDocumentResponse(
            document_id=tomb.document_id, destroyed_at=timestamp(tomb.destroyed_at)
        )

    def hold(self, request: pb.HoldDocumentRequest, call: Call) -> pb.HoldDocumentResponse:
        hold = self._archive.hold(call.ctx, request.document_id, request.reason)
        return pb.HoldDocumentResponse(
            hold=pb.LegalHold(
                hold_id=hold.hold_id,
                reason=hold.reason,
                placed_by=hold.placed_by,
                placed_at=timestamp(hold.placed_at),
            )
        )

    def release(self, request: pb.ReleaseDocumentRequest, call: Call) -> pb.ReleaseDocumentResponse:
        released = self._archive.release(call.ctx, request.document_id, request.hold_id)
        return pb.ReleaseDocumentResponse(released=released)

    def verified(
        self, request: pb.MarkDocumentVerifiedRequest, call: Call
    ) -> pb.MarkDocumentVerifiedResponse:
        record = self._archive.mark_verified(call.ctx, request.document_id)
        return pb.MarkDocumentVerifiedResponse(document=document_out(record, self._policy))

    def sweep(self, request: pb.SweepRetentionRequest, call: Call) -> pb.SweepRetentionResponse:
        r = self._sweeper.sweep(call.ctx)
        return pb.SweepRetentionResponse(
            sweep_id=r.sweep_id,
            documents_destroyed=r.documents_destroyed,
            originals_destroyed=r.originals_destroyed,
            documents_held=r.documents_held,
            values_erased=r.values_erased,
            blobs_deleted=r.blobs_deleted,
            retention_keys_destroyed=r.retention_keys_destroyed,
            documents_redestroyed=r.documents_redestroyed,
        )


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    """The next message's worth of plaintext (up to CHUNK_BYTES), or None at the end."""
    parts: list[bytes] = []
    size = 0
    for part in chunks:
        parts.append(part)
        size += len(part)
        if size >= CHUNK_BYTES * 3 // 4:
            break
    if not parts:
        return None
    return b"".join(parts)


_PAGE_PREFIX = b"pdvault.v1.documents:"


def _page_token(start: int) -> str:
    return base64.urlsafe_b64encode(_PAGE_PREFIX + str(start).encode()).decode().rstrip("=")


def _page_start(token: str) -> int:
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        if not raw.startswith(_PAGE_PREFIX):
            raise ValueError
        start = int(raw.removeprefix(_PAGE_PREFIX))
        if start < 0:
            raise ValueError
        return start
    except ValueError:
        raise InvalidArgument.one(
            "page_token", "page_token.invalid", "is not a next_page_token of this method"
        ) from None
