"""Thin servicers: proto -> domain, one use case, domain -> proto. Nothing else lives here.

Each service is a table of methods (`vault.transport.rpc.Method`); `rpc` authenticates, reads and
parses the request, runs the method on the thread pool with a `Call` (the caller and the
metadata), and maps errors to statuses.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2
from pdvault.v1 import common_pb2, key_service_pb2, subject_service_pb2, token_service_pb2

from vault.domain.keys import KeyAdministration, KeyReport, VersionState
from vault.domain.lifecycle import SHRED_METHOD, SubjectAdministration
from vault.domain.secrets import Secret
from vault.domain.service import Detokenized, FieldInput, TokenService
from vault.domain.types import (
    SUBJECT_RE,
    AuditEvent,
    LegalBasis,
    PlainValue,
    SubjectId,
    SubjectRecord,
    SubjectState,
    TokenFormat,
    ValueKind,
    View,
)
from vault.errors import InvalidArgument
from vault.transport.rpc import Call, Method
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
        out.value.CopyFrom(_value_out(r.value))
    return out


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
        results = self._service.tokenize(call.ctx, request.subject, fields, request.request_id)
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
            legal_basis = _LEGAL_BASES.get(request.legal_basis)
            if legal_basis is None:
                raise InvalidArgument.one(
                    "legal_basis", "legal_basis.unknown", "is not a known legal basis"
                )
        results = self._service.detokenize(
            call.ctx,
            list(request.tokens),
            request.purpose,
            request.justification,
            legal_basis,
        )
        response = token_service_pb2.DetokenizeResponse(results=[_result_out(r) for r in results])
        for r in results:  # the proto holds its own copies now
            if r.value is not None:
                r.value.data.wipe()
        return response


VAULT_TOKEN_METADATA = "x-vault-token"  # noqa: S105  (a metadata key, not a secret)


@contextmanager
def _operator_token(call: Call) -> Iterator[Secret | None]:
    """The operator's own Vault token from the metadata, for one call; wiped after it."""
    presented = call.header(VAULT_TOKEN_METADATA)
    token = Secret(presented.encode()) if presented else None
    try:
        yield token
    finally:
        if token is not None:
            token.wipe()


_VERSION_STATES = {
    VersionState.ACTIVE: key_service_pb2.KEY_VERSION_STATE_ACTIVE,
    VersionState.RETIRED: key_service_pb2.KEY_VERSION_STATE_RETIRED,
    VersionState.DESTROYED: key_service_pb2.KEY_VERSION_STATE_DESTROYED,
    VersionState.UNKNOWN_TO_PROVIDER: key_service_pb2.KEY_VERSION_STATE_UNKNOWN_TO_PROVIDER,
}


def _status_out(report: KeyReport) -> key_service_pb2.KeyStatus:
    kek = report.kek
    out = key_service_pb2.KeyStatus(
        provider=kek.provider,
        key_name=kek.key_name,
        latest_version=kek.latest_version,
        min_decryption_version=kek.min_decryption_version,
        min_available_version=kek.min_available_version,
        versions=[
            key_service_pb2.KeyVersionUsage(
                version=v, data_keys=n, state=_VERSION_STATES[report.state_of(v)]
            )
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
                process_id=c.process_id,
                host=c.host,
            )
        )
    return out


class KeyServicer:
    def __init__(self, admin: KeyAdministration) -> None:
        self._admin = admin

    def methods(self) -> dict[str, Method[Any, Any]]:
        k = key_service_pb2
        return {
            "GetKeyStatus": Method("GetKeyStatus", k.GetKeyStatusRequest, self.get_key_status),
            "RotateKey": Method("RotateKey", k.RotateKeyRequest, self.rotate_key),
            "RewrapDataKeys": Method(
                "RewrapDataKeys", k.RewrapDataKeysRequest, self.rewrap_data_keys
            ),
            "TrimKeyVersions": Method(
                "TrimKeyVersions", k.TrimKeyVersionsRequest, self.trim_key_versions
            ),
        }

    def get_key_status(
        self, request: key_service_pb2.GetKeyStatusRequest, call: Call
    ) -> key_service_pb2.GetKeyStatusResponse:
        report = self._admin.status(call.ctx)
        return key_service_pb2.GetKeyStatusResponse(status=_status_out(report))

    def rotate_key(
        self, request: key_service_pb2.RotateKeyRequest, call: Call
    ) -> key_service_pb2.RotateKeyResponse:
        with _operator_token(call) as admin:
            report = self._admin.rotate(call.ctx, admin)
        return key_service_pb2.RotateKeyResponse(status=_status_out(report))

    def rewrap_data_keys(
        self, request: key_service_pb2.RewrapDataKeysRequest, call: Call
    ) -> key_service_pb2.RewrapDataKeysResponse:
        after = _page_after(request.page_token) if request.page_token else None
        progress = self._admin.rewrap(call.ctx, request.batch_size or 100, after)
        token = _page_token(progress.next_after) if progress.next_after else ""
        return key_service_pb2.RewrapDataKeysResponse(
            rewrapped=progress.rewrapped,
            failed=progress.failed,
            remaining=progress.remaining,
            target_version=progress.target_version,
            next_page_token=token,
        )

    def trim_key_versions(
        self, request: key_service_pb2.TrimKeyVersionsRequest, call: Call
    ) -> key_service_pb2.TrimKeyVersionsResponse:
        with _operator_token(call) as admin:
            done = self._admin.trim(call.ctx, request.min_version or None, admin)
        return key_service_pb2.TrimKeyVersionsResponse(
            status=_status_out(done.report),
            destroyed_versions=list(done.destroyed),
            still_in_use=[
                key_service_pb2.KeyVersionUsage(
                    version=v, data_keys=n, state=_VERSION_STATES[done.report.state_of(v)]
                )
                for v, n in sorted(done.still_in_use.items())
            ],
        )


def _page_token(after: SubjectId) -> str:
    return base64.urlsafe_b64encode(after.encode()).decode().rstrip("=")


def _page_after(token: str) -> SubjectId:
    """The subject a next_page_token names. Strict: a token this call did not give is refused,
    never read as "start over" (base64 decoders skip characters they do not know)."""
    refused = InvalidArgument.one(
        "page_token", "page_token.invalid", "must be a next_page_token of this call"
    )
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        after = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise refused from None
    if not SUBJECT_RE.fullmatch(after) or _page_token(SubjectId(after)) != token:
        raise refused
    return SubjectId(after)


_LEGAL_BASES = {
    token_service_pb2.LEGAL_BASIS_LAW_OR_REGULATION: LegalBasis.LAW_OR_REGULATION,
    token_service_pb2.LEGAL_BASIS_PUBLIC_INTEREST: LegalBasis.PUBLIC_INTEREST,
    token_service_pb2.LEGAL_BASIS_PUBLIC_FUNCTION: LegalBasis.PUBLIC_FUNCTION,
    token_service_pb2.LEGAL_BASIS_LEGITIMATE_RIGHTS: LegalBasis.LEGITIMATE_RIGHTS,
}
_STATES = {
    SubjectState.ACTIVE: subject_service_pb2.SUBJECT_STATE_ACTIVE,
    SubjectState.STOPPED: subject_service_pb2.SUBJECT_STATE_STOPPED,
}


def _timestamp(at: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


def _value_out(value: PlainValue) -> common_pb2.Value:
    if value.kind is ValueKind.TEXT:
        return common_pb2.Value(text=value.data.reveal_text())
    return common_pb2.Value(binary=value.data.reveal())


def _subject_out(record: SubjectRecord) -> subject_service_pb2.Subject:
    out = subject_service_pb2.Subject(
        subject=record.subject,
        state=_STATES.get(record.state, subject_service_pb2.SUBJECT_STATE_UNSPECIFIED),
        consents=[
            subject_service_pb2.Consent(purpose=p, granted=g)
            for p, g in sorted(record.consents.items())
        ],
    )
    if record.state_changed_at is not None:
        out.state_changed_at.CopyFrom(_timestamp(record.state_changed_at))
    return out


def _access_out(e: AuditEvent) -> subject_service_pb2.AccessRecord:
    return subject_service_pb2.AccessRecord(
        occurred_at=_timestamp(e.occurred_at),
        caller=e.caller,
        action=e.action.value,
        outcome=e.outcome.value,
        rule=e.rule,
        token=e.token or "",
        category=e.category or "",
        purpose=e.purpose or "",
        justification=e.justification or "",
        legal_basis=e.legal_basis.value if e.legal_basis else "",
        detail=e.detail or "",
    )


class SubjectServicer:
    def __init__(self, admin: SubjectAdministration) -> None:
        self._admin = admin

    def methods(self) -> dict[str, Method[Any, Any]]:
        s = subject_service_pb2
        return {
            "GetSubject": Method("GetSubject", s.GetSubjectRequest, self.get_subject),
            "StopSubject": Method("StopSubject", s.StopSubjectRequest, self.stop_subject),
            "ResumeSubject": Method("ResumeSubject", s.ResumeSubjectRequest, self.resume_subject),
            "ShredSubject": Method("ShredSubject", s.ShredSubjectRequest, self.shred_subject),
            "ExportSubject": Method("ExportSubject", s.ExportSubjectRequest, self.export_subject),
            "SetConsent": Method("SetConsent", s.SetConsentRequest, self.set_consent),
            "CorrectValue": Method("CorrectValue", s.CorrectValueRequest, self.correct_value),
        }

    def get_subject(
        self, request: subject_service_pb2.GetSubjectRequest, call: Call
    ) -> subject_service_pb2.GetSubjectResponse:
        record = self._admin.status(call.ctx, request.subject)
        return subject_service_pb2.GetSubjectResponse(subject=_subject_out(record))

    def stop_subject(
        self, request: subject_service_pb2.StopSubjectRequest, call: Call
    ) -> subject_service_pb2.StopSubjectResponse:
        record = self._admin.stop(call.ctx, request.subject)
        return subject_service_pb2.StopSubjectResponse(subject=_subject_out(record))

    def resume_subject(
        self, request: subject_service_pb2.ResumeSubjectRequest, call: Call
    ) -> subject_service_pb2.ResumeSubjectResponse:
        record = self._admin.resume(call.ctx, request.subject)
        return subject_service_pb2.ResumeSubjectResponse(subject=_subject_out(record))

    def shred_subject(
        self, request: subject_service_pb2.ShredSubjectRequest, call: Call
    ) -> subject_service_pb2.ShredSubjectResponse:
        r = self._admin.shred(call.ctx, request.subject)
        return subject_service_pb2.ShredSubjectResponse(
            receipt=subject_service_pb2.ErasureReceipt(
                previous_receipt_id=r.previous_receipt_id or "",
                receipt_id=r.receipt_id,
                subject_digest=r.subject_digest,
                shredded_at=_timestamp(r.shredded_at),
                shredded_by=r.shredded_by,
                data_keys_destroyed=r.data_keys_destroyed,
                values_destroyed=r.values_destroyed,
                tokens_retired=r.tokens_retired,
                key_provider=r.key_provider,
                method=SHRED_METHOD,
            )
        )

    def export_subject(
        self, request: subject_service_pb2.ExportSubjectRequest, call: Call
    ) -> subject_service_pb2.ExportSubjectResponse:
        export = self._admin.export(call.ctx, request.subject)
        record = SubjectRecord(export.subject, export.state, export.consents)
        values = []
        for v in export.values:
            item = subject_service_pb2.ExportedValue(
                token=v.token,
                category=v.category,
                created_at=_timestamp(v.created_at),
                error=v.error or "",
            )
            if v.value is not None:
                item.value.CopyFrom(_value_out(v.value))
            values.append(item)
        return subject_service_pb2.ExportSubjectResponse(
            subject=_subject_out(record),
            exported_at=_timestamp(export.exported_at),
            values=values,
            access_history=[_access_out(e) for e in export.access_history],
        )

    def set_consent(
        self, request: subject_service_pb2.SetConsentRequest, call: Call
    ) -> subject_service_pb2.SetConsentResponse:
        record = self._admin.set_consent(
            call.ctx, request.subject, request.purpose, request.granted
        )
        return subject_service_pb2.SetConsentResponse(subject=_subject_out(record))

    def correct_value(
        self, request: subject_service_pb2.CorrectValueRequest, call: Call
    ) -> subject_service_pb2.CorrectValueResponse:
        kind = request.value.WhichOneof("kind") if request.HasField("value") else None
        if kind is None:
            raise InvalidArgument.one("value", "value.required", "must be set")
        value = (
            PlainValue.text(request.value.text)
            if kind == "text"
            else PlainValue.binary(request.value.binary)
        )
        token, category = self._admin.correct(call.ctx, request.token, value)
        return subject_service_pb2.CorrectValueResponse(token=token, category=category)
