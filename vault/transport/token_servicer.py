"""The TokenService's servicer: proto -> domain, one use case, domain -> proto."""

from __future__ import annotations

from typing import Any

from pdvault.v1 import token_service_pb2

from vault.domain.service import Detokenized, FieldInput, TokenService
from vault.domain.types import (
    LegalBasis,
    PlainValue,
    TokenFormat,
    View,
)
from vault.errors import InvalidArgument
from vault.transport.convert import value_out
from vault.transport.rpc import Call, Method
from vault.transport.status import to_status_proto

__all__ = ["LEGAL_BASES", "TokenServicer"]


LEGAL_BASES = {
    token_service_pb2.LEGAL_BASIS_LAW_OR_REGULATION: LegalBasis.LAW_OR_REGULATION,
    token_service_pb2.LEGAL_BASIS_PUBLIC_INTEREST: LegalBasis.PUBLIC_INTEREST,
    token_service_pb2.LEGAL_BASIS_PUBLIC_FUNCTION: LegalBasis.PUBLIC_FUNCTION,
    token_service_pb2.LEGAL_BASIS_LEGITIMATE_RIGHTS: LegalBasis.LEGITIMATE_RIGHTS,
}

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
        out.value.CopyFrom(value_out(r.value))
    return out


def _outcome(r: Detokenized) -> str:
    """What became of one token, from a closed set: ok, masked, or the error's reason."""
    if r.error is not None:
        return r.error.reason.name
    return "masked" if r.masked is not None else "ok"


class TokenServicer:
    def __init__(self, service: TokenService) -> None:
        self._service = service

    def methods(self) -> dict[str, Method[Any, Any]]:
        return {
            "Tokenize": Method("Tokenize", token_service_pb2.TokenizeRequest, self.tokenize),
            "Detokenize": Method(
                "Detokenize", token_service_pb2.DetokenizeRequest, self.detokenize
            ),
        }

    def tokenize(
        self, request: token_service_pb2.TokenizeRequest, call: Call
    ) -> token_service_pb2.TokenizeResponse:
        fields = [
            FieldInput(
                category=f.category,
                value=_value_in(f),
                token_format=_FORMATS.get(f.token_format),
            )
            for f in request.fields
        ]
        call.facts.items = len(fields)
        results = self._service.tokenize(call.ctx, request.subject, fields, request.request_id)
        call.facts.tokenized.update(r.category for r in results)
        return token_service_pb2.TokenizeResponse(
            results=[
                token_service_pb2.TokenizeResult(token=r.token, category=r.category)
                for r in results
            ]
        )

    def detokenize(
        self, request: token_service_pb2.DetokenizeRequest, call: Call
    ) -> token_service_pb2.DetokenizeResponse:
        legal_basis = None
        if request.legal_basis != token_service_pb2.LEGAL_BASIS_UNSPECIFIED:
            legal_basis = LEGAL_BASES.get(request.legal_basis)
            if legal_basis is None:
                raise InvalidArgument.one(
                    "legal_basis", "legal_basis.unknown", "is not a known legal basis"
                )
        call.facts.purpose = request.purpose  # the access log keeps it only if the policy's
        call.facts.items = len(request.tokens)
        results = self._service.detokenize(
            call.ctx,
            list(request.tokens),
            request.purpose,
            request.justification,
            legal_basis,
        )
        call.facts.detokenized.update(_outcome(r) for r in results)
        response = token_service_pb2.DetokenizeResponse(results=[_result_out(r) for r in results])
        for r in results:  # the proto holds its own copies now
            if r.value is not None:
                r.value.data.wipe()
        return response
