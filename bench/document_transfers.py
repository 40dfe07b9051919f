"""Document uploads and downloads, timed: in-process through the storage and encryption path
(`DocumentArchive` as vault/app.py wires it, with an inspector stub), and end to end over gRPC
with the raw generated stubs. Also the peak memory of a process, from /proc."""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from pdvault.v1 import document_service_pb2 as pb
from pdvault.v1 import document_service_pb2_grpc

from bench.document_samples import Sample
from vault.app import App, malware_scanner, utc_now
from vault.config import Settings
from vault.crypto.aead import AesGcmCipher
from vault.crypto.documents import DocumentCrypto
from vault.domain.archive import DocumentArchive, UploadHeader
from vault.domain.context import RequestContext
from vault.domain.documents import Inspection, MediaType, sniff
from vault.domain.types import CallerName
from vault.kms.shred_log import FileShredLog

CALLER = "kyc"  # may upload documents and read them for identity_verification
PURPOSE = "identity_verification"
DOCUMENT_TYPE = "passport"
GRPC_CHUNK = 64 * 1024  # bytes per upload message


class MediaTypeOnly:
    """A `DocumentInspector` for a document already validated: the media type from its first
    bytes (vault.domain.documents.sniff), no decoding, no sanitized copy. What the storage and
    encryption path costs without the content checks."""

    def inspect(self, content: bytes | bytearray, declared: MediaType) -> Inspection:
        media_type = sniff(content)
        if media_type is None:
            raise ValueError("not a JPEG, PNG or PDF")
        return Inspection(media_type=media_type, sanitized=None)


def settings(data_dir: Path, database_url: str) -> Settings:
    """pdvault's defaults (local key file, the shipped policy), in `data_dir`."""
    return Settings(
        addr="127.0.0.1:0",
        data_dir=data_dir,
        database_url=database_url,
        retention_sweep_interval=0,
    )


def validated_archive(app: App) -> DocumentArchive:
    """The archive vault.app._wire builds, from the same application parts, but with
    `MediaTypeOnly` for the inspector."""
    forget_key = app.cache.forget if app.cache is not None else lambda _s: None
    return DocumentArchive(
        policy=app.policy,
        documents=app.stores.documents,
        blobs=app.stores.blobs,
        values=app.stores.values,
        subjects=app.stores.subjects,
        audit=app.stores.audit,
        keys=app.keys,
        cipher=AesGcmCipher(),
        sealer=DocumentCrypto(),
        inspector=MediaTypeOnly(),
        scanner=malware_scanner(app.settings, app.policy),
        shred_log=FileShredLog(app.settings.effective_shred_log, app.database.names),
        clock=utc_now,
        forget_key=forget_key,
        names=app.database.names,
    )


# -- memory -------------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


@dataclass
class PeakRss:
    """The growth of a process's resident memory over a span: its RSS at the start, and its peak
    (VmHWM) at the end, the peak reset at the start (`5` into /proc/PID/clear_refs, Linux 4.0+;
    our own processes only). Memory that glibc keeps after an earlier, larger span is reused,
    not counted again: the first span of a size shows the most."""

    pid: int
    start: int = 0

    def begin(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.start = _status(self.pid)["VmRSS"]

    def growth(self) -> int:
        return _status(self.pid)["VmHWM"] - self.start

    @staticmethod
    def available(pid: int) -> bool:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True


@contextlib.contextmanager
def traced() -> Iterator[list[int]]:
    """tracemalloc's peak (bytes) of the block, in the list it yields, once the block ends:
    what Python's allocators hold (bytes, bytearrays, objects), not the C libraries' own
    memory (SQLite's page cache, libpq's result buffers: the gRPC runs' server RSS has them)."""
    out: list[int] = []
    tracemalloc.start()
    try:
        yield out
        out.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


# -- in-process ---------------------------------------------------------------------------------


@dataclass
class InProcess:
    """Uploads and downloads through `archive` as the DocumentService's servicer drives it: an
    upload hands `store` a buffer holding the whole document (the servicer fills it from the
    stream); a download iterates the plaintext segments."""

    archive: DocumentArchive
    subject: str

    def __post_init__(self) -> None:
        self.ctx = RequestContext(CallerName(CALLER))

    def _header(self, sample: Sample) -> UploadHeader:
        return UploadHeader(self.subject, DOCUMENT_TYPE, sample.media_type, sample.size)

    def upload(self, sample: Sample) -> tuple[str, float]:
        """(document id, seconds) of one upload; the buffer is filled before the clock starts."""
        buffer = bytearray(sample.content)
        start = time.perf_counter()
        ticket = self.archive.admit_upload(self.ctx, self._header(sample))
        record = self.archive.store(self.ctx, ticket, buffer)
        return record.document_id, time.perf_counter() - start

    def download(self, document_id: str) -> tuple[bytes, float, float]:
        """(the content, seconds, seconds of `open` alone: the decision, the record and key
        lookups and the audit's commit, before the first byte) of one download; the pieces
        are joined after the clock stops."""
        start = time.perf_counter()
        download = self.archive.open(self.ctx, document_id, PURPOSE)
        opened = time.perf_counter() - start
        pieces = list(download.chunks)
        elapsed = time.perf_counter() - start
        return b"".join(pieces), elapsed, opened

    def upload_traced(self, sample: Sample) -> tuple[str, int]:
        """(document id, tracemalloc peak) of one upload, the upload buffer included (the
        servicer allocates it when the header is admitted)."""
        with traced() as peak:
            document_id = self._upload_whole(sample)
        return document_id, peak[0]

    def _upload_whole(self, sample: Sample) -> str:
        buffer = bytearray(sample.content)
        ticket = self.archive.admit_upload(self.ctx, self._header(sample))
        return self.archive.store(self.ctx, ticket, buffer).document_id

    def download_traced(self, document_id: str) -> tuple[int, int]:
        """(bytes, tracemalloc peak) of one download, each piece dropped once read (as the
        servicer sends it)."""
        with traced() as peak:
            size = self._download_dropping(document_id)
        return size, peak[0]

    def _download_dropping(self, document_id: str) -> int:
        size = 0
        for piece in self.archive.open(self.ctx, document_id, PURPOSE).chunks:
            size += len(piece)
        return size


# -- gRPC ---------------------------------------------------------------------------------------


class GrpcClient:
    """pdvault's DocumentService through the raw generated stubs, as `kyc`."""

    def __init__(self, addr: str, api_key: str, subject: str) -> None:
        self._channel = grpc.insecure_channel(
            addr, options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)]
        )
        grpc.channel_ready_future(self._channel).result(timeout=30)
        self._stub = document_service_pb2_grpc.DocumentServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self.subject = subject

    def close(self) -> None:
        self._channel.close()

    def _requests(self, sample: Sample) -> list[pb.UploadDocumentRequest]:
        header = pb.UploadHeader(
            subject=self.subject,
            document_type=pb.DOCUMENT_TYPE_PASSPORT,
            media_type=sample.media_type,
            size=sample.size,
        )
        content = sample.content
        return [
            pb.UploadDocumentRequest(header=header),
            *(
                pb.UploadDocumentRequest(chunk=content[at : at + GRPC_CHUNK])
                for at in range(0, len(content), GRPC_CHUNK)
            ),
        ]

    def upload(self, sample: Sample) -> tuple[str, float]:
        """(document id, seconds): the messages are built before the clock starts."""
        requests = self._requests(sample)
        start = time.perf_counter()
        answer = self._stub.UploadDocument(iter(requests), metadata=self._metadata, timeout=300)
        return answer.document.document_id, time.perf_counter() - start

    def download(self, document_id: str) -> tuple[bytes, float]:
        request = pb.GetDocumentRequest(document_id=document_id, purpose=PURPOSE)
        start = time.perf_counter()
        pieces = []
        metadata = None
        for message in self._stub.GetDocument(request, metadata=self._metadata, timeout=300):
            if message.WhichOneof("part") == "metadata":
                metadata = message.metadata
            else:
                pieces.append(message.chunk)
        elapsed = time.perf_counter() - start
        if metadata is None or metadata.document_id != document_id:
            raise ValueError("the download did not start with the document's metadata")
        return b"".join(pieces), elapsed
