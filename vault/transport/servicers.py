"""Thin servicers: proto -> domain, one use case, domain -> proto. Nothing else lives here."""

from __future__ import annotations

import grpc
from pdvault.v1 import common_pb2, token_service_pb2, token_service_pb2_grpc

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
