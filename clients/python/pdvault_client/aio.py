"""The asyncio client: the same surface as `pdvault_client.Client`, on `grpc.aio`.

Every method is a coroutine; conversions, errors and the retry rule are the synchronous
client's own (`pdvault_client.convert`, `pdvault_client.errors`), so both clients answer alike.
Documents stream from and to files a chunk at a time, file reads and writes off the event loop.

    async with pdvault_client.aio.Client("127.0.0.1:50051", key) as client:
        [card] = await client.tokenize("user-42", [Field("card_number", pan)])
        [paid] = await client.detokenize([card.token], "payment")
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import grpc
from pdvault.v1 import (
    approval_service_pb2,
    approval_service_pb2_grpc,
    caller_service_pb2,
    caller_service_pb2_grpc,
    document_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    policy_service_pb2,
    policy_service_pb2_grpc,
    subject_service_pb2,
    subject_service_pb2_grpc,
    token_service_pb2_grpc,
)
from pdvault.v1 import (
    document_service_pb2 as pb,
)

from pdvault_client.admin import shred_request
from pdvault_client.convert import (
    VAULT_TOKEN_METADATA,
    deleted_document,
    detokenize_request,
    detokenized,
    document,
    document_type_value,
    key_status,
    legal_basis_value,
    legal_hold,
    message_to_dict,
    retry_pause,
    rewrap_step,
    sweep,
    tokenize_request,
    tokenized,
    trimmed,
    value_message,
    variant_value,
)
from pdvault_client.documents import (
    MAX_CHUNK_BYTES,
    UPLOAD_CHUNK_BYTES,
    Progress,
    Source,
    Target,
    _changed,
    _exists,
    _measure,
    _put_in_place,
    _readable,
    guess_media_type,
)
from pdvault_client.errors import DataLossError, PdvaultError, from_rpc_error
from pdvault_client.types import (
    CHANNEL_OPTIONS,
    DeletedDocument,
    Detokenized,
    Document,
    Field,
    KeyStatus,
    LegalHold,
    RetryPolicy,
    RewrapStep,
    Sweep,
    Tokenized,
    Trimmed,
)

__all__ = [
    "ApprovalAdmin",
    "CallerAdmin",
    "Client",
    "DocumentClient",
    "KeyAdmin",
    "PolicyAdmin",
    "SubjectAdmin",
]

T = TypeVar("T")


class Client:
    """pdvault's services on `grpc.aio`. Use it from one event loop; close it (or use
    `async with`) to release the channel."""

    def __init__(
        self,
        addr: str,
        api_key: str | None = None,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        channel: grpc.aio.Channel | None = None,
        tls_ca: bytes | None = None,
        tls_server_name: str | None = None,
        tls_cert: bytes | None = None,
        tls_key: bytes | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """As `pdvault_client.Client`: `tls_ca` turns TLS on (`tls_server_name` overrides
        the name checked), `tls_cert` and `tls_key` present a client certificate (mTLS; the
        API key may then be left out), a `channel` given is used as it is."""
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if channel is None:
            options: list[tuple[str, str | int]] = list(CHANNEL_OPTIONS)
            if tls_ca is not None or tls_cert is not None:
                if tls_server_name:
                    options.append(("grpc.ssl_target_name_override", tls_server_name))
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=tls_ca, private_key=tls_key, certificate_chain=tls_cert
                )
                channel = grpc.aio.secure_channel(addr, credentials, options=options)
            else:
                channel = grpc.aio.insecure_channel(addr, options=options)
        self._channel = channel
        self._stub = token_service_pb2_grpc.TokenServiceStub(channel)
        self._key_stub = key_service_pb2_grpc.KeyServiceStub(channel)
        self._subject_stub = subject_service_pb2_grpc.SubjectServiceStub(channel)
        self._caller_stub = caller_service_pb2_grpc.CallerServiceStub(channel)
        self._policy_stub = policy_service_pb2_grpc.PolicyServiceStub(channel)
        self._document_stub = document_service_pb2_grpc.DocumentServiceStub(channel)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"aio.Client(timeout={self._timeout})"

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def tokenize(
        self, subject: str, fields: Sequence[Field], *, request_id: str | None = None
    ) -> list[Tokenized]:
        """As `Client.tokenize`: one request id, reused on every retry."""
        request = tokenize_request(subject, fields, request_id)
        return tokenized(await self._call(self._stub.Tokenize, request))

    async def detokenize(
        self,
        tokens: Sequence[str],
        purpose: str,
        *,
        justification: str = "",
        legal_basis: str = "",
    ) -> list[Detokenized]:
        """As `Client.detokenize`: refused tokens come back with `error`, not raised."""
        request = detokenize_request(tokens, purpose, justification, legal_basis)
        return detokenized(await self._call(self._stub.Detokenize, request))

    def subjects(self) -> SubjectAdmin:
        return SubjectAdmin(self)

    def callers(self) -> CallerAdmin:
        return CallerAdmin(self)

    def approvals(self, *, vault_token: str | None = None) -> ApprovalAdmin:
        return ApprovalAdmin(self, vault_token)

    def policy(self) -> PolicyAdmin:
        return PolicyAdmin(self)

    def keys(self, *, vault_token: str | None = None) -> KeyAdmin:
        return KeyAdmin(self, vault_token)

    def documents(self) -> DocumentClient:
        return DocumentClient(self)

    async def _call(
        self,
        method: Callable[..., Any],
        request: object,
        *,
        extra_metadata: tuple[tuple[str, str], ...] = (),
        retry: bool = True,
        timeout: float | None = None,
    ) -> Any:
        """`await method(request, timeout=..., metadata=...)`, retried as the synchronous
        client retries (UNAVAILABLE and the request rate's refusals, RetryInfo honoured,
        within one deadline)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._timeout if timeout is None else timeout)
        backoff = self._retry.initial_backoff
        metadata = self._metadata + extra_metadata
        attempts = self._retry.attempts if retry else 1
        for attempt in range(1, attempts + 1):
            remaining = deadline - loop.time()
            try:
                return await method(request, timeout=max(remaining, 0.001), metadata=metadata)
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                pause = retry_pause(error, attempt, attempts, backoff, deadline - loop.time())
                if pause is None:
                    raise error from None
                await self._sleep(pause)
                backoff = min(backoff * self._retry.multiplier, self._retry.max_backoff)
        raise AssertionError("unreachable")


class SubjectAdmin:
    """The SubjectService (as `pdvault_client.SubjectAdmin`, answers as plain dicts)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = client._subject_stub

    def __repr__(self) -> str:
        return "aio.SubjectAdmin()"

    async def _do(self, method: Callable[..., Any], request: object) -> dict[str, Any]:
        return message_to_dict(await self._client._call(method, request))

    async def get(self, subject: str) -> dict[str, Any]:
        return await self._do(
            self._stub.GetSubject, subject_service_pb2.GetSubjectRequest(subject=subject)
        )

    async def stop(self, subject: str) -> dict[str, Any]:
        return await self._do(
            self._stub.StopSubject, subject_service_pb2.StopSubjectRequest(subject=subject)
        )

    async def resume(self, subject: str) -> dict[str, Any]:
        return await self._do(
            self._stub.ResumeSubject, subject_service_pb2.ResumeSubjectRequest(subject=subject)
        )

    async def shred(self, subject: str, *, by_subject: bool = False) -> dict[str, Any]:
        return await self._do(self._stub.ShredSubject, shred_request(subject, by_subject))

    async def export(self, subject: str) -> dict[str, Any]:
        return await self._do(
            self._stub.ExportSubject, subject_service_pb2.ExportSubjectRequest(subject=subject)
        )

    async def consent(self, subject: str, purpose: str, granted: bool) -> dict[str, Any]:
        return await self._do(
            self._stub.SetConsent,
            subject_service_pb2.SetConsentRequest(
                subject=subject, purpose=purpose, granted=granted
            ),
        )

    async def correct(self, token: str, value: str | bytes) -> dict[str, Any]:
        return await self._do(
            self._stub.CorrectValue,
            subject_service_pb2.CorrectValueRequest(token=token, value=value_message(value)),
        )


class KeyAdmin:
    """The KeyService (as `pdvault_client.KeyAdmin`): rotate is never retried."""

    def __init__(self, client: Client, vault_token: str | None) -> None:
        self._client = client
        self._admin = ((VAULT_TOKEN_METADATA, vault_token),) if vault_token else ()

    def __repr__(self) -> str:
        return "aio.KeyAdmin()"

    async def status(self) -> KeyStatus:
        answer = await self._client._call(
            self._client._key_stub.GetKeyStatus, key_service_pb2.GetKeyStatusRequest()
        )
        return key_status(answer.status)

    async def rotate(self) -> KeyStatus:
        answer = await self._client._call(
            self._client._key_stub.RotateKey,
            key_service_pb2.RotateKeyRequest(),
            extra_metadata=self._admin,
            retry=False,
        )
        return key_status(answer.status)

    async def rewrap_batch(self, batch_size: int = 100, page_token: str = "") -> RewrapStep:
        answer = await self._client._call(
            self._client._key_stub.RewrapDataKeys,
            key_service_pb2.RewrapDataKeysRequest(batch_size=batch_size, page_token=page_token),
        )
        return rewrap_step(answer)

    async def trim(self, min_version: int | None = None) -> Trimmed:
        answer = await self._client._call(
            self._client._key_stub.TrimKeyVersions,
            key_service_pb2.TrimKeyVersionsRequest(min_version=min_version or 0),
            extra_metadata=self._admin,
        )
        return trimmed(answer)


class CallerAdmin:
    """The CallerService (as `pdvault_client.CallerAdmin`)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = client._caller_stub

    def __repr__(self) -> str:
        return "aio.CallerAdmin()"

    async def add(self, caller: str, rotation: bool = False) -> dict[str, Any]:
        answer = await self._client._call(
            self._stub.AddCallerKey,
            caller_service_pb2.AddCallerKeyRequest(caller=caller, rotation=rotation),
            retry=False,
        )
        return message_to_dict(answer)

    async def list(self) -> list[dict[str, Any]]:
        answer = await self._client._call(
            self._stub.ListCallerKeys, caller_service_pb2.ListCallerKeysRequest()
        )
        keys: list[dict[str, Any]] = message_to_dict(answer).get("keys", [])
        return keys

    async def revoke(self, caller: str, key_id: str) -> None:
        await self._client._call(
            self._stub.RevokeCallerKey,
            caller_service_pb2.RevokeCallerKeyRequest(caller=caller, key_id=key_id),
        )


class ApprovalAdmin:
    """The ApprovalService (as `pdvault_client.ApprovalAdmin`): approve and reject are never
    retried."""

    def __init__(self, client: Client, vault_token: str | None = None) -> None:
        self._client = client
        self._stub = approval_service_pb2_grpc.ApprovalServiceStub(client._channel)
        self._admin = ((VAULT_TOKEN_METADATA, vault_token),) if vault_token else ()

    def __repr__(self) -> str:
        return "aio.ApprovalAdmin()"

    async def list(self) -> list[dict[str, Any]]:
        answer = await self._client._call(
            self._stub.ListApprovals, approval_service_pb2.ListApprovalsRequest()
        )
        found: list[dict[str, Any]] = message_to_dict(answer).get("approvals", [])
        return found

    async def approve(self, request_id: str) -> dict[str, Any]:
        answer = await self._client._call(
            self._stub.ApproveRequest,
            approval_service_pb2.ApproveRequestRequest(request_id=request_id),
            extra_metadata=self._admin,
            retry=False,
        )
        approval: dict[str, Any] = message_to_dict(answer)["approval"]
        return approval

    async def reject(self, request_id: str) -> dict[str, Any]:
        answer = await self._client._call(
            self._stub.RejectRequest,
            approval_service_pb2.RejectRequestRequest(request_id=request_id),
            retry=False,
        )
        approval: dict[str, Any] = message_to_dict(answer)["approval"]
        return approval


class PolicyAdmin:
    """The PolicyService (as `pdvault_client.PolicyAdmin`)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = client._policy_stub

    def __repr__(self) -> str:
        return "aio.PolicyAdmin()"

    async def get(self) -> dict[str, Any]:
        answer = await self._client._call(
            self._stub.GetPolicy, policy_service_pb2.GetPolicyRequest()
        )
        return message_to_dict(answer)

    async def reload(self) -> dict[str, Any]:
        answer = await self._client._call(
            self._stub.ReloadPolicy, policy_service_pb2.ReloadPolicyRequest()
        )
        return message_to_dict(answer)


class DocumentClient:
    """The DocumentService (as `pdvault_client.DocumentClient`): the same rules for retries
    (uploads and holds never), the same temporary-file discipline for downloads."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = client._document_stub

    def __repr__(self) -> str:
        return "aio.DocumentClient()"

    async def upload(
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
        if not 1 <= chunk_size <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_size must be 1 to {MAX_CHUNK_BYTES} bytes")
        kind = document_type_value(document_type)
        with _readable(source) as f:
            start = f.tell()
            size, sha256, head = await asyncio.to_thread(_measure, f, chunk_size)
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
            requests = _AsyncUploadRequests(header, f, chunk_size, progress)

            async def once(
                reqs: _AsyncUploadRequests,
                *,
                timeout: float,
                metadata: tuple[tuple[str, str], ...],
            ) -> pb.UploadDocumentResponse:
                answer: pb.UploadDocumentResponse = await self._stub.UploadDocument(
                    reqs.messages(), timeout=timeout, metadata=metadata
                )
                return answer

            try:
                answer = await self._client._call(once, requests, retry=False, timeout=timeout)
            except PdvaultError:
                if requests.error is not None:
                    raise requests.error from None
                raise
        return document(answer.document)

    async def download(
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
        request = pb.GetDocumentRequest(
            document_id=document_id,
            purpose=purpose,
            variant=variant_value(variant),
            legal_basis=legal_basis_value(legal_basis),
            justification=justification,
            disclosure=disclosure,
        )
        if not isinstance(target, str | os.PathLike):
            return await self._receive(request, variant, target, timeout)
        path = Path(target)
        if not overwrite and path.exists():
            raise _exists(path)
        fd, part = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as sink:
                found = await self._receive(request, variant, sink, timeout)
                sink.flush()
                os.fsync(sink.fileno())
            _put_in_place(Path(part), path, overwrite)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
            raise
        return found

    async def _receive(
        self, request: pb.GetDocumentRequest, variant: str, sink: BinaryIO, timeout: float | None
    ) -> Document:
        async def once(
            req: pb.GetDocumentRequest, *, timeout: float, metadata: tuple[tuple[str, str], ...]
        ) -> Document:
            call = self._stub.GetDocument(req, timeout=timeout, metadata=metadata)
            try:
                return await _write(call, variant, sink)
            finally:
                call.cancel()

        found: Document = await self._client._call(once, request, timeout=timeout)
        return found

    async def show(self, document_id: str) -> Document:
        answer = await self._client._call(
            self._stub.GetDocumentMetadata, pb.GetDocumentMetadataRequest(document_id=document_id)
        )
        return document(answer.document)

    async def list(self, subject: str, *, page_size: int = 0) -> list[Document]:
        found: list[Document] = []
        token = ""
        while True:
            answer = await self._client._call(
                self._stub.ListDocuments,
                pb.ListDocumentsRequest(subject=subject, page_size=page_size, page_token=token),
            )
            found.extend(document(d) for d in answer.documents)
            token = answer.next_page_token
            if not token:
                return found

    async def delete(self, document_id: str) -> DeletedDocument:
        answer = await self._client._call(
            self._stub.DeleteDocument, pb.DeleteDocumentRequest(document_id=document_id)
        )
        return deleted_document(answer)

    async def hold(self, document_id: str, reason: str) -> LegalHold:
        answer = await self._client._call(
            self._stub.HoldDocument,
            pb.HoldDocumentRequest(document_id=document_id, reason=reason),
            retry=False,
        )
        return legal_hold(answer.hold)

    async def release(self, document_id: str, hold_id: str | None = None) -> int:
        answer = await self._client._call(
            self._stub.ReleaseDocument,
            pb.ReleaseDocumentRequest(document_id=document_id, hold_id=hold_id or ""),
        )
        released: int = answer.released
        return released

    async def mark_verified(self, document_id: str) -> Document:
        answer = await self._client._call(
            self._stub.MarkDocumentVerified,
            pb.MarkDocumentVerifiedRequest(document_id=document_id),
        )
        return document(answer.document)

    async def sweep(self) -> Sweep:
        return sweep(
            await self._client._call(self._stub.SweepRetention, pb.SweepRetentionRequest())
        )


class _AsyncUploadRequests:
    """The upload's messages as an async generator: the header, then the file read again a
    chunk at a time off the event loop. A failure ends the stream before its last chunk (the
    server keeps nothing) and is kept in `error` for `upload` to raise."""

    def __init__(
        self, header: pb.UploadHeader, f: BinaryIO, chunk_size: int, progress: Progress | None
    ) -> None:
        self._header = header
        self._file = f
        self._chunk_size = chunk_size
        self._progress = progress
        self.error: Exception | None = None

    async def messages(self) -> AsyncIterator[pb.UploadDocumentRequest]:
        yield pb.UploadDocumentRequest(header=self._header)
        total = self._header.size
        check = hashlib.sha256()
        sent = 0
        try:
            while sent < total:
                chunk = await asyncio.to_thread(
                    self._file.read, min(self._chunk_size, total - sent)
                )
                if not chunk:
                    raise _changed(sent, total)
                check.update(chunk)
                sent += len(chunk)
                if sent == total and check.digest() != self._header.sha256:
                    raise _changed(sent, total)
                if self._progress is not None:
                    self._progress(sent, total)
                yield pb.UploadDocumentRequest(chunk=chunk)
        except Exception as exc:  # noqa: BLE001  (raised by upload(), see the class docstring)
            self.error = exc


async def _write(call: Any, variant: str, sink: BinaryIO) -> Document:
    """As the synchronous `_write`: the metadata first, then the chunks into `sink`."""
    iterator = call.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = None
    if first is None or first.WhichOneof("part") != "metadata":
        raise PdvaultError(
            grpc.StatusCode.UNKNOWN, "the download did not begin with the document's metadata"
        )
    found = document(first.metadata)
    received = 0
    try:
        async for message in iterator:
            if message.WhichOneof("part") != "chunk":
                raise PdvaultError(grpc.StatusCode.UNKNOWN, "the download sent its metadata twice")
            await asyncio.to_thread(sink.write, message.chunk)
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
