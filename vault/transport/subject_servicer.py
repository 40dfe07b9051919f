"""The SubjectService's servicer: proto -> domain, one use case, domain -> proto."""

from __future__ import annotations

from typing import Any

from pdvault.v1 import subject_service_pb2

from vault.domain.erasure import SHRED_METHOD
from vault.domain.lifecycle import SubjectAdministration
from vault.domain.types import (
    AuditEvent,
    PlainValue,
    SubjectRecord,
    SubjectState,
)
from vault.errors import InvalidArgument
from vault.transport.convert import timestamp, value_out
from vault.transport.rpc import Call, Method

__all__ = ["SubjectServicer"]


_STATES = {
    SubjectState.ACTIVE: subject_service_pb2.SUBJECT_STATE_ACTIVE,
    SubjectState.STOPPED: subject_service_pb2.SUBJECT_STATE_STOPPED,
}


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
        out.state_changed_at.CopyFrom(timestamp(record.state_changed_at))
    return out


def _access_out(e: AuditEvent) -> subject_service_pb2.AccessRecord:
    return subject_service_pb2.AccessRecord(
        occurred_at=timestamp(e.occurred_at),
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
        by_subject = request.requested_by == subject_service_pb2.SHRED_REQUESTER_SUBJECT
        r = self._admin.shred(call.ctx, request.subject, by_subject=by_subject)
        return subject_service_pb2.ShredSubjectResponse(
            receipt=subject_service_pb2.ErasureReceipt(
                previous_receipt_id=r.previous_receipt_id or "",
                receipt_id=r.receipt_id,
                subject_digest=r.subject_digest,
                shredded_at=timestamp(r.shredded_at),
                shredded_by=r.shredded_by,
                data_keys_destroyed=r.data_keys_destroyed,
                values_destroyed=r.values_destroyed,
                tokens_retired=r.tokens_retired,
                key_provider=r.key_provider,
                method=SHRED_METHOD,
                documents_destroyed=r.documents_destroyed,
                retained=[
                    subject_service_pb2.RetainedDocument(
                        document_id=d.document_id,
                        document_type=d.document_type,
                        rule=d.rule,
                        until=timestamp(d.until) if d.until is not None else None,
                    )
                    for d in r.retained
                ],
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
                created_at=timestamp(v.created_at),
                error=v.error or "",
            )
            if v.value is not None:
                item.value.CopyFrom(value_out(v.value))
            values.append(item)
        return subject_service_pb2.ExportSubjectResponse(
            subject=_subject_out(record),
            exported_at=timestamp(export.exported_at),
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
