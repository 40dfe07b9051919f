"""A scripted DocumentService in-process: what the client library and `pdv document ...` are
tested against while the real server is not needed (tests/unit/test_document_client.py,
tests/unit/test_cli_document_commands.py). It answers as document_service.proto says, records
what it received, and fails where a test's `Script` tells it to."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from pdvault.v1 import document_service_pb2 as pb
from pdvault.v1 import document_service_pb2_grpc

from pdvault_client import Client

KiB = 1024
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 1200  # 307,204 bytes: five chunks of 64 KiB
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
PDF = b"%PDF-1.7\n" + b"%" * 100
DOC_ID = "doc_" + "a" * 26
WHEN = datetime(2026, 11, 29, 16, 9, 44, tzinfo=UTC)


def ts(at: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(at)
    return out


def metadata(
    content: bytes, *, media_type: str = "image/jpeg", sanitized: int = 7, **fields: Any
) -> pb.Document:
    return pb.Document(
        document_id=DOC_ID,
        subject="user-42",
        subject_digest="ab" * 32,
        document_type=pb.DOCUMENT_TYPE_DRIVERS_LICENSE,
        media_type=media_type,
        created_at=ts(WHEN),
        uploaded_by="kyc",
        scan_state=pb.SCAN_STATE_NOT_SCANNED,
        scan_engine="none configured",
        variants=[
            pb.VariantInfo(
                variant=pb.DOCUMENT_VARIANT_ORIGINAL, media_type=media_type, size=len(content)
            ),
            pb.VariantInfo(
                variant=pb.DOCUMENT_VARIANT_SANITIZED, media_type=media_type, size=sanitized
            ),
        ],
        retention=pb.Retention(
            rule="documents.drivers_license",
            trigger="verified",
            keep="P7Y",
            then="shred",
            legal=True,
            source="Act on Prevention of Transfer of Criminal Proceeds Art. 6",
        ),
        **fields,
    )


def abort(context: grpc.ServicerContext, code: int, message: str, *details: Any) -> None:
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        status.details.add().Pack(detail)
    context.abort_with_status(rpc_status.to_status(status))


@dataclass
class Script:
    """What the fake DocumentService answers, and what it received."""

    content: bytes = JPEG
    upload_failure: tuple[Any, ...] | None = None
    get_failures: list[tuple[int, str]] = field(default_factory=list)  # before any message
    fail_after_chunks: int | None = None  # DATA_LOSS after this many chunks
    short_by: int = 0  # end OK, this many bytes short of the metadata's size
    unary_failures: list[tuple[int, str]] = field(default_factory=list)
    pages: int = 1
    uploads: list[list[pb.UploadDocumentRequest]] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    stream_ended: list[bool] = field(default_factory=list)


class FakeDocuments(document_service_pb2_grpc.DocumentServiceServicer):
    def __init__(self, script: Script) -> None:
        self.s = script

    def _seen(self, request: Any, context: grpc.ServicerContext) -> None:
        self.s.requests.append(request)
        self.s.keys.extend(str(v) for k, v in context.invocation_metadata() if k == "authorization")

    def _unary(self, request: Any, context: grpc.ServicerContext) -> None:
        self._seen(request, context)
        if self.s.unary_failures:
            abort(context, *self.s.unary_failures.pop(0))

    def UploadDocument(  # noqa: N802  (gRPC's method names)
        self, request_iterator: Iterator[pb.UploadDocumentRequest], context: grpc.ServicerContext
    ) -> pb.UploadDocumentResponse:
        self._seen(None, context)
        received: list[pb.UploadDocumentRequest] = []
        self.s.uploads.append(received)
        for message in request_iterator:
            received.append(message)
        header = received[0].header
        size = sum(len(m.chunk) for m in received[1:])
        self.s.stream_ended.append(True)
        if self.s.upload_failure is not None:
            abort(context, *self.s.upload_failure)
        if size != header.size:
            bad = error_details_pb2.BadRequest()
            bad.field_violations.add(
                field="header.size", reason="document.size_mismatch", description="short"
            )
            abort(context, code_pb2.INVALID_ARGUMENT, "header.size: short", bad)
        return pb.UploadDocumentResponse(document=metadata(b"x" * size))

    def GetDocument(  # noqa: N802  (gRPC's method names)
        self, request: pb.GetDocumentRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GetDocumentResponse]:
        self._seen(request, context)
        if self.s.get_failures:
            abort(context, *self.s.get_failures.pop(0))
        content = self.s.content
        yield pb.GetDocumentResponse(metadata=metadata(content, sanitized=len(content)))
        body = content[: len(content) - self.s.short_by]
        for n, start in enumerate(range(0, len(body), 100 * KiB)):
            if n == self.s.fail_after_chunks:
                abort(context, code_pb2.DATA_LOSS, "stored content failed its integrity check")
            yield pb.GetDocumentResponse(chunk=body[start : start + 100 * KiB])

    def GetDocumentMetadata(  # noqa: N802  (gRPC's method names)
        self, request: pb.GetDocumentMetadataRequest, context: grpc.ServicerContext
    ) -> pb.GetDocumentMetadataResponse:
        self._unary(request, context)
        return pb.GetDocumentMetadataResponse(document=metadata(JPEG))

    def ListDocuments(  # noqa: N802  (gRPC's method names)
        self, request: pb.ListDocumentsRequest, context: grpc.ServicerContext
    ) -> pb.ListDocumentsResponse:
        self._unary(request, context)
        page = int(request.page_token or "0")
        more = page + 1 < self.s.pages
        doc = metadata(JPEG)
        doc.document_id = f"doc_{page}"
        return pb.ListDocumentsResponse(
            documents=[doc], next_page_token=str(page + 1) if more else ""
        )

    def DeleteDocument(  # noqa: N802  (gRPC's method names)
        self, request: pb.DeleteDocumentRequest, context: grpc.ServicerContext
    ) -> pb.DeleteDocumentResponse:
        self._unary(request, context)
        return pb.DeleteDocumentResponse(document_id=request.document_id, destroyed_at=ts(WHEN))

    def HoldDocument(  # noqa: N802  (gRPC's method names)
        self, request: pb.HoldDocumentRequest, context: grpc.ServicerContext
    ) -> pb.HoldDocumentResponse:
        self._unary(request, context)
        return pb.HoldDocumentResponse(
            hold=pb.LegalHold(
                hold_id="h-1", reason=request.reason, placed_by="legal", placed_at=ts(WHEN)
            )
        )

    def ReleaseDocument(  # noqa: N802  (gRPC's method names)
        self, request: pb.ReleaseDocumentRequest, context: grpc.ServicerContext
    ) -> pb.ReleaseDocumentResponse:
        self._unary(request, context)
        return pb.ReleaseDocumentResponse(released=2 if not request.hold_id else 1)

    def MarkDocumentVerified(  # noqa: N802  (gRPC's method names)
        self, request: pb.MarkDocumentVerifiedRequest, context: grpc.ServicerContext
    ) -> pb.MarkDocumentVerifiedResponse:
        self._unary(request, context)
        doc = metadata(JPEG, verified_at=ts(WHEN))
        doc.retention.due_at.CopyFrom(ts(WHEN.replace(year=2033)))
        return pb.MarkDocumentVerifiedResponse(document=doc)

    def SweepRetention(  # noqa: N802  (gRPC's method names)
        self, request: pb.SweepRetentionRequest, context: grpc.ServicerContext
    ) -> pb.SweepRetentionResponse:
        self._unary(request, context)
        return pb.SweepRetentionResponse(
            sweep_id="s-1",
            documents_destroyed=1,
            originals_destroyed=2,
            documents_held=3,
            values_erased=4,
            blobs_deleted=5,
            retention_keys_destroyed=6,
            documents_redestroyed=7,
        )


@dataclass
class Fake:
    script: Script
    client: Client
    addr: str


@contextmanager
def serving() -> Iterator[Fake]:
    """The fake DocumentService on a free loopback port, and a Client of it."""
    script = Script()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    document_service_pb2_grpc.add_DocumentServiceServicer_to_server(FakeDocuments(script), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    addr = f"127.0.0.1:{port}"
    client = Client(addr, "key-test", timeout=10, sleep=lambda _s: None)
    try:
        yield Fake(script, client, addr)
    finally:
        client.close()
        server.stop(grace=None)
