"""Thin servicers: proto -> domain, one use case, domain -> proto. Nothing else lives here."""

from __future__ import annotations

import grpc
from pdvault.v1 import (
    common_pb2,
    key_service_pb2,
    key_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)

from vault.domain.keys import KeyAdministration, KeyReport
from vault.domain.secrets import Secret
from vault.domain.service import Detokenized, FieldInput, TokenService
from vault.domain.types import PlainValue, TokenFormat, View
from vault.transport.interceptors import current_caller
from vault.transport.status import to_status_proto

_FORMATS = {
    token_service_pb2.TOKEN_FORMAT_UNSPECIFIED: TokenFormat.OPAQUE,
    token_service_pb2.TOKEN_FORMAT_OPAQUE: TokenFormat.OPAQUE,
    token_service_pb2.TOKEN_FORMAT_CARD_NUMBER: TokenFormat.CARD_NUMBER,
}
_VIEWS = {View.FULL: token_service_pb2.VIEW_FULL, View.MASKED: token_service_pb2.VIEW_MASKED}


def _value_in(field: token_service_pb2.TokenizeField) -> PlainValue | None:
    kind = field.value.WhichOneof("kind") if field.HasField("value") else None
    if kind == "text":
        return PlainValue.text(field.value.text)
    if kind == "binary":
        return PlainValue.binary(field.value.binary)
    return None


def _result_out(r: Detokenized) -> token_service_pb2.DetokenizeResult:
    out = token_service_pb2.DetokenizeResult(token=r.token)
    if r.error is not None:
        out.error.CopyFrom(to_status_proto(r.error))
        return out
    out.category = r.category or ""
    out.view = _VIEWS[r.view] if r.view else token_service_pb2.VIEW_UNSPECIFIED
    if r.masked is not None:
        out.masked = r.masked
    elif r.value is not None:
        if r.value.kind.name == "TEXT":
            out.value.CopyFrom(common_pb2.Value(text=r.value.data.reveal_text()))
        else:
            out.value.CopyFrom(common_pb2.Value(binary=r.value.data.reveal()))
    return out


class TokenServicer(token_service_pb2_grpc.TokenServiceServicer):
    def __init__(self, service: TokenService) -> None:
        self._service = service

    def Tokenize(  # noqa: N802  (the gRPC method name)
        self, request: token_service_pb2.TokenizeRequest, context: grpc.ServicerContext
    ) -> token_service_pb2.TokenizeResponse:
        fields = [
            FieldInput(
                category=f.category,
                value=_value_in(f),
                token_format=_FORMATS.get(f.token_format),
            )
            for f in request.fields
        ]
        results = self._service.tokenize(
            current_caller(), request.subject, fields, request.request_id
        )
        return token_service_pb2.TokenizeResponse(
            results=[
                token_service_pb2.TokenizeResult(token=r.token, category=r.category)
                for r in results
            ]
        )

    def Detokenize(  # noqa: N802
        self, request: token_service_pb2.DetokenizeRequest, context: grpc.ServicerContext
    ) -> token_service_pb2.DetokenizeResponse:
        results = self._service.detokenize(
            current_caller(), list(request.tokens), request.purpose, request.justification
        )
        return token_service_pb2.DetokenizeResponse(results=[_result_out(r) for r in results])


VAULT_TOKEN_METADATA = "x-vault-token"  # noqa: S105  (a metadata key, not a secret)


def _admin_credential(context: grpc.ServicerContext) -> Secret | None:
    for key, value in context.invocation_metadata():
        if key == VAULT_TOKEN_METADATA and isinstance(value, str) and value:
            return Secret(value.encode())
    return None


def _status_out(report: KeyReport) -> key_service_pb2.KeyStatus:
    kek = report.kek
    out = key_service_pb2.KeyStatus(
        provider=kek.provider,
        key_name=kek.key_name,
        latest_version=kek.latest_version,
        min_decryption_version=kek.min_decryption_version,
        min_available_version=kek.min_available_version,
        versions=[
            key_service_pb2.KeyVersionUsage(version=v, data_keys=n)
            for v, n in report.data_keys_by_version.items()
        ],
        other_provider_data_keys=sum(report.other_providers.values()),
    )
    if report.cache is not None:
        c = report.cache
        out.cache.CopyFrom(
            key_service_pb2.KeyCacheStats(
                entries=c.entries,
                hits=c.hits,
                misses=c.misses,
                evictions=c.evictions,
                hit_rate=c.hit_rate,
                max_entries=c.max_entries,
                max_age_seconds=c.max_age_seconds,
                max_uses=c.max_uses,
            )
        )
    return out


class KeyServicer(key_service_pb2_grpc.KeyServiceServicer):
    def __init__(self, admin: KeyAdministration) -> None:
        self._admin = admin

    def GetKeyStatus(  # noqa: N802
        self, request: key_service_pb2.GetKeyStatusRequest, context: grpc.ServicerContext
    ) -> key_service_pb2.GetKeyStatusResponse:
        report = self._admin.status(current_caller())
        return key_service_pb2.GetKeyStatusResponse(status=_status_out(report))

    def RotateKey(  # noqa: N802
        self, request: key_service_pb2.RotateKeyRequest, context: grpc.ServicerContext
    ) -> key_service_pb2.RotateKeyResponse:
        report = self._admin.rotate(current_caller(), _admin_credential(context))
        return key_service_pb2.RotateKeyResponse(status=_status_out(report))

    def RewrapDataKeys(  # noqa: N802
        self, request: key_service_pb2.RewrapDataKeysRequest, context: grpc.ServicerContext
    ) -> key_service_pb2.RewrapDataKeysResponse:
        progress = self._admin.rewrap(current_caller(), request.batch_size or 100)
        return key_service_pb2.RewrapDataKeysResponse(
            rewrapped=progress.rewrapped,
            failed=progress.failed,
            remaining=progress.remaining,
            target_version=progress.target_version,
        )

    def TrimKeyVersions(  # noqa: N802
        self, request: key_service_pb2.TrimKeyVersionsRequest, context: grpc.ServicerContext
    ) -> key_service_pb2.TrimKeyVersionsResponse:
        report = self._admin.trim(
            current_caller(), request.min_version or None, _admin_credential(context)
        )
        return key_service_pb2.TrimKeyVersionsResponse(status=_status_out(report))
