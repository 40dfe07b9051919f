"""The DocumentService through a `Client`: identity documents streamed in and out.

A document never sits whole in this process's memory: an upload reads its file twice, a chunk
at a time (once to hash it, once to send it), and a download writes each chunk as it arrives.
No file name is ever sent: the API has no field for one, and the server never learns it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import grpc
from pdvault.v1 import document_service_pb2 as pb

from pdvault_client.convert import (
    deleted_document,
    document,
    document_type_value,
    legal_basis_value,
    legal_hold,
    sweep,
    variant_value,
)
from pdvault_client.errors import DataLossError, PdvaultError, from_rpc_error
from pdvault_client.types import DeletedDocument, Document, LegalHold, Sweep

if TYPE_CHECKING:
    from pdvault_client.client import Client

__all__ = [
    "MAX_CHUNK_BYTES",
    "UPLOAD_CHUNK_BYTES",
    "DocumentClient",
    "Progress",
    "guess_media_type",
]

UPLOAD_CHUNK_BYTES = 64 * 1024
MAX_CHUNK_BYTES = 256 * 1024  # the API's limit per chunk, either way (document_service.proto)

# What a document's first bytes are when it is one of the three media types pdvault accepts.
# The server decides from the whole content; this only fills in the header's declaration.
_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG", "image/png"),
    (b"%PDF-", "application/pdf"),
)
_HEAD_BYTES = max(len(magic) for magic, _ in _SIGNATURES)

Progress = Callable[[int, int], None]
"""`progress(sent_bytes, total_bytes)`, called as each chunk of an upload is handed to gRPC."""

Source = str | os.PathLike[str] | BinaryIO
Target = str | os.PathLike[str] | BinaryIO


def guess_media_type(head: bytes) -> str | None:
    """image/jpeg, image/png or application/pdf from a document's first bytes; None if neither."""
    return next((media for magic, media in _SIGNATURES if head.startswith(magic)), None)


class DocumentClient:
    """The DocumentService, through a Client. Thread-safe as the Client is.

    Unary calls follow the client's retry rule (UNAVAILABLE, within the deadline), except
    `hold`, which is never retried: a retry after a lost answer would place a second hold.
    Every error is a `PdvaultError` of the client's usual classes, DATA_LOSS included.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = client._document_stub

    def __repr__(self) -> str:
        return "DocumentClient()"

    # -- the streams ------------------------------------------------------------------------------

    def upload(
        self,
        subject: str,
        document_type: str,
        source: Source,
        *,
        media_type: str | None = None,
        insurer_number_masked: bool = False,
        progress: Progress | None = None,
        chunk_size: int = UPLOAD_CHUNK_BYTES,
        timeout: float | None = None,
    ) -> Document:
        """Store one document of `subject` from a file (a path, or a binary file object that
        can seek, read from its current position) and return it as stored.

        `document_type` is one of `DOCUMENT_TYPES` (passport, drivers_license, ...).
        `media_type` is guessed from the first bytes (JPEG, PNG or PDF) unless given; the
        server decides from the content either way. The file is read twice, `chunk_size`
        bytes at a time (1 byte to 256 KiB): first to hash it (the header's sha256, which
        the server checks), then to send it; if it changes in between, the upload stops
        before its last chunk, so the server keeps nothing, and OSError is raised.

        `progress(sent, total)` is called from gRPC's sending thread as each chunk is handed
        over; an exception it raises ends the upload the same way and is raised here.
        `timeout` is this call's deadline in seconds (the client's by default): a large
        document over a slow link may need more than a token call.

        Never retried, not even on UNAVAILABLE: the header carries no request id, so a retry
        after an answer lost on the way back would store the document twice, and gRPC takes
        the header from this side before it knows whether the server is reachable. After an
        UnavailableError, list the subject's documents before uploading again.
        """
        if not 1 <= chunk_size <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_size must be 1 to {MAX_CHUNK_BYTES} bytes")
        kind = document_type_value(document_type)
        with _readable(source) as f:
            start = f.tell()
            size, sha256, head = _measure(f, chunk_size)
            if size == 0:
                raise ValueError("the document is empty")
            declared = media_type or guess_media_type(head)
            if declared is None:
                raise ValueError(
                    "the content does not begin as a JPEG, PNG or PDF does, the only media "
                    "types pdvault accepts (give the media type to let the server decide)"
                )
            header = pb.UploadHeader(
                subject=subject,
                document_type=kind,
                media_type=declared,
                size=size,
                sha256=sha256,
                insurer_number_masked=insurer_number_masked,
            )
            f.seek(start)
            requests = _UploadRequests(header, f, chunk_size, progress)
            try:
                answer = self._client._call(
                    self._upload_once, requests, retry=False, timeout=timeout
                )
            except PdvaultError:
                # The server's refusal of a stream we cut short says less than why we did.
                if requests.error is not None:
                    raise requests.error from None
                raise
        return document(answer.document)

    def _upload_once(
        self,
        requests: _UploadRequests,
        *,
        timeout: float,
        metadata: tuple[tuple[str, str], ...],
    ) -> pb.UploadDocumentResponse:
        future = self._stub.UploadDocument.future(
            iter(requests), timeout=timeout, metadata=metadata
        )
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted (Ctrl-C): stop sending; the server keeps nothing
            raise

    def download(
        self,
        document_id: str,
        purpose: str,
        target: Target,
        *,
        variant: str = "original",
        legal_basis: str | None = None,
        justification: str = "",
        disclosure: bool = False,
        overwrite: bool = True,
        timeout: float | None = None,
    ) -> Document:
        """Read one variant of a document (`original` or `sanitized`) for `purpose` (or, with
        `disclosure`, for its subject's disclosure request: give purpose ""), write its content
        to `target` as it arrives, and return its metadata.

        A path is written through a temporary file beside it (mode 0600), renamed over the
        path only once every byte has arrived and the count matches the metadata; on any
        error (notably DataLossError: the server found stored content that fails its
        integrity check) the temporary file is deleted and the error raised. With
        `overwrite=False` an existing path is refused (FileExistsError), before the call and
        again, atomically where the file system allows, when the file is put in place.
        A file object is written as the chunks come: on an error, discard what it received.

        `legal_basis` (law_or_regulation, public_interest, public_function,
        legitimate_rights) states a legal exception; it is audited, as `justification` is.
        Retried on UNAVAILABLE as a unary call is, only until the first message arrives.
        """
        request = pb.GetDocumentRequest(
            document_id=document_id,
            purpose=purpose,
            variant=variant_value(variant),
            legal_basis=legal_basis_value(legal_basis),
            justification=justification,
            disclosure=disclosure,
        )
        if not isinstance(target, str | os.PathLike):
            return self._receive(request, variant, target, timeout)
        path = Path(target)
        if not overwrite and path.exists():
            raise _exists(path)
        fd, part = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as sink:
                found = self._receive(request, variant, sink, timeout)
                sink.flush()
                os.fsync(sink.fileno())
            _put_in_place(Path(part), path, overwrite)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
            raise
        return found

    def _receive(
        self, request: pb.GetDocumentRequest, variant: str, sink: BinaryIO, timeout: float | None
    ) -> Document:
        def once(
            req: pb.GetDocumentRequest, *, timeout: float, metadata: tuple[tuple[str, str], ...]
        ) -> Document:
            stream = self._stub.GetDocument(req, timeout=timeout, metadata=metadata)
            try:
                return _write(stream, variant, sink)
            finally:
                stream.cancel()  # a no-op once the stream has ended; else stops it

        return self._client._call(once, request, timeout=timeout)

    # -- the unary methods ------------------------------------------------------------------------

    def show(self, document_id: str) -> Document:
        """A document's metadata: type, media type, sizes, scan state, retention, holds."""
        answer = self._client._call(
            self._stub.GetDocumentMetadata, pb.GetDocumentMetadataRequest(document_id=document_id)
        )
        return document(answer.document)

    def list(self, subject: str, *, page_size: int = 0) -> list[Document]:
        """Every document of `subject`, oldest first (all pages; `page_size` per call, 1 to
        100, 0 for the server's default)."""
        found: list[Document] = []
        token = ""
        while True:
            answer = self._client._call(
                self._stub.ListDocuments,
                pb.ListDocumentsRequest(subject=subject, page_size=page_size, page_token=token),
            )
            found.extend(document(d) for d in answer.documents)
            token = answer.next_page_token
            if not token:
                return found

    def delete(self, document_id: str) -> DeletedDocument:
        """Shred one document. Retried on UNAVAILABLE: if an earlier attempt did delete it,
        the retry answers NotFoundError (the document is gone either way)."""
        answer = self._client._call(
            self._stub.DeleteDocument, pb.DeleteDocumentRequest(document_id=document_id)
        )
        return deleted_document(answer)

    def hold(self, document_id: str, reason: str) -> LegalHold:
        """Place a legal hold (never retried: a retry could place two)."""
        answer = self._client._call(
            self._stub.HoldDocument,
            pb.HoldDocumentRequest(document_id=document_id, reason=reason),
            retry=False,
        )
        return legal_hold(answer.hold)

    def release(self, document_id: str, hold_id: str | None = None) -> int:
        """Release one hold, or every hold of the document; returns how many were released."""
        answer = self._client._call(
            self._stub.ReleaseDocument,
            pb.ReleaseDocumentRequest(document_id=document_id, hold_id=hold_id or ""),
        )
        return answer.released

    def mark_verified(self, document_id: str) -> Document:
        """Record that the verification flow checked it; the first call counts."""
        answer = self._client._call(
            self._stub.MarkDocumentVerified,
            pb.MarkDocumentVerifiedRequest(document_id=document_id),
        )
        return document(answer.document)

    def sweep(self) -> Sweep:
        """Destroy now what the retention rules say is due (idempotent)."""
        return sweep(self._client._call(self._stub.SweepRetention, pb.SweepRetentionRequest()))


# -- the upload's two passes ----------------------------------------------------------------------


@contextlib.contextmanager
def _readable(source: Source) -> Iterator[BinaryIO]:
    """A path opened for the upload (and closed after), or the caller's file object."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            yield f
        return
    if not source.seekable():
        raise ValueError("the document must be a file that can seek: it is read twice")
    yield source


def _measure(f: BinaryIO, chunk_size: int) -> tuple[int, bytes, bytes]:
    """The size, the SHA-256 and the first bytes of the rest of `f`, a chunk at a time."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    while chunk := f.read(chunk_size):
        if len(head) < _HEAD_BYTES:
            head += chunk[: _HEAD_BYTES - len(head)]
        digest.update(chunk)
        size += len(chunk)
    return size, digest.digest(), head


class _UploadRequests:
    """The upload's messages: the header, then the content as read again, a chunk at a time.

    Whatever goes wrong here (the file changed, a read failed, `progress` raised) happens
    before the last chunk is handed over, so ending the stream early leaves the server short
    of the declared size: it refuses the upload and keeps nothing. The error is kept in
    `error` for the caller to raise, instead of escaping into gRPC's thread (which would log
    it and cancel the call with UNKNOWN)."""

    def __init__(
        self, header: pb.UploadHeader, f: BinaryIO, chunk_size: int, progress: Progress | None
    ) -> None:
        self._header = header
        self._file = f
        self._chunk_size = chunk_size
        self._progress = progress
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[pb.UploadDocumentRequest]:
        yield pb.UploadDocumentRequest(header=self._header)
        total = self._header.size
        check = hashlib.sha256()
        sent = 0
        try:
            while sent < total:
                chunk = self._file.read(min(self._chunk_size, total - sent))
                if not chunk:
                    raise _changed(sent, total)
                check.update(chunk)
                sent += len(chunk)
                if sent == total and check.digest() != self._header.sha256:
                    raise _changed(sent, total)
                if self._progress is not None:
                    self._progress(sent, total)
                yield pb.UploadDocumentRequest(chunk=chunk)
        except Exception as exc:  # noqa: BLE001  (kept and raised by upload(), see above)
            self.error = exc


def _changed(sent: int, total: int) -> OSError:
    return OSError(
        f"the file changed while it was uploaded (after {sent} of {total} bytes): "
        "nothing was kept; upload it again"
    )


# -- the download ---------------------------------------------------------------------------------


def _write(stream: Iterator[pb.GetDocumentResponse], variant: str, sink: BinaryIO) -> Document:
    """The metadata first (an error before it is a grpc.RpcError, which the client may retry),
    then every chunk into `sink` (an error from here on is a PdvaultError: never retried)."""
    first = next(stream, None)
    if first is None or first.WhichOneof("part") != "metadata":
        raise PdvaultError(
            grpc.StatusCode.UNKNOWN, "the download did not begin with the document's metadata"
        )
    found = document(first.metadata)
    received = 0
    try:
        for message in stream:
            if message.WhichOneof("part") != "chunk":
                raise PdvaultError(grpc.StatusCode.UNKNOWN, "the download sent its metadata twice")
            sink.write(message.chunk)
            received += len(message.chunk)
    except grpc.RpcError as err:
        raise from_rpc_error(err) from None
    held = found.variant(variant)
    if held is not None and received != held.size:
        raise DataLossError(
            grpc.StatusCode.DATA_LOSS,
            f"the download ended after {received} of the {held.size} bytes announced: "
            "discard what was received",
        )
    return found


def _exists(path: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))


def _put_in_place(part: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(part, path)
        return
    try:
        os.link(part, path)  # fails if `path` appeared meanwhile, where replace would not
    except FileExistsError:
        raise _exists(path) from None
    except OSError:  # a file system without hard links: check, then rename
        if path.exists():
            raise _exists(path) from None
        os.replace(part, path)
        return
    os.unlink(part)
