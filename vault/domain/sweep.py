"""The retention sweep: destroy what its retention rule says is due, and clean up after
interrupted work. Run by `pdv retention sweep` (and `pdv document sweep`), and on a schedule
inside the server (PDV_RETENTION_SWEEP_INTERVAL).

Invariants: a sweep destroys exactly what is due (due dates are computed from recorded events,
so a restored backup's sweep destroys the same things again) and nothing a legal hold keeps;
it is idempotent (a repeat finds nothing more) and safe with several replicas sweeping at once
(each destroy locks its row and does nothing if another replica did it first); every step is
audited, and the sweep as a whole is one audit event with its counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vault.domain.archive import DOCUMENT_LOG_PREFIX
from vault.domain.context import RequestContext
from vault.domain.documents import DocumentId, Variant
from vault.domain.naming import keyed_audit_name
from vault.domain.policy import Policy
from vault.domain.ports import Clock, ShredLog
from vault.domain.retention import Then, Trigger
from vault.domain.stores import (
    AuditLog,
    BlobStore,
    DocumentRecord,
    DocumentStore,
    DocumentTombstone,
    ValueStore,
)
from vault.domain.types import (
    Action,
    AuditEvent,
    CallerName,
    Category,
    Outcome,
    SubjectId,
    Token,
)
from vault.errors import PermissionDenied

__all__ = ["SWEEP_CALLER", "UPLOAD_ABANDONED_AFTER", "RetentionSweep", "SweepReport"]

SWEEP_CALLER = CallerName("system:retention")
# An upload not committed by then was abandoned (its process died): its blobs are deleted.
UPLOAD_ABANDONED_AFTER = timedelta(hours=1)
_BATCH = 200


@dataclass
class SweepReport:
    sweep_id: str
    started_at: datetime
    documents_destroyed: int = 0
    originals_destroyed: int = 0  # keep_sanitized: the original went, the sanitized copy stays
    documents_held: int = 0  # due, but a legal hold keeps them
    values_erased: int = 0
    blobs_deleted: int = 0
    retention_keys_destroyed: int = 0
    documents_redestroyed: int = 0  # deleted before, back in a restored copy
    by_rule: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.documents_destroyed} documents shredded, {self.originals_destroyed} "
            f"originals shredded (sanitized copies kept), {self.documents_held} held, "
            f"{self.values_erased} values erased, {self.blobs_deleted} blobs deleted, "
            f"{self.retention_keys_destroyed} retention keys destroyed, "
            f"{self.documents_redestroyed} deleted documents of a restored copy destroyed again"
        )


class RetentionSweep:
    def __init__(
        self,
        *,
        policy: Policy,
        documents: DocumentStore,
        blobs: BlobStore,
        values: ValueStore,
        audit: AuditLog,
        shred_log: ShredLog,
        clock: Clock,
        forget_key: Callable[[SubjectId], None] = lambda _s: None,
    ) -> None:
        self.policy = policy
        self._documents = documents
        self._blobs = blobs
        self._values = values
        self._audit = audit
        self._log = shred_log
        self._clock = clock
        self._forget = forget_key

    def __repr__(self) -> str:
        return "RetentionSweep()"

    def sweep(self, ctx: RequestContext, now: datetime | None = None) -> SweepReport:
        """A sweep for a caller (operators with `subjects`), or for the server's schedule
        (`RequestContext.system`)."""
        if not ctx.caller.startswith("system:"):
            d = self.policy.may_operate(ctx.caller, "subjects")
            if not d.allowed:
                self._audit.append(
                    [self._event(ctx.caller, Action.RETENTION_SWEEP, Outcome.REFUSED, d.rule)]
                )
                raise PermissionDenied(d.reason, rule=d.rule)
        at = now or self._clock()
        report = SweepReport(str(uuid.uuid4()), at)
        self._redestroy_deleted(report)
        self._documents_due(at, report)
        self._values_due(at, report)
        self._stale_blobs(at, report)
        for owner in self._documents.drop_unused_retention_keys():
            self._forget(SubjectId(owner))
            report.retention_keys_destroyed += 1
        self._audit.append(
            [
                self._event(
                    ctx.caller,
                    Action.RETENTION_SWEEP,
                    Outcome.GRANTED,
                    "retention:sweep",
                    detail=f"sweep {report.sweep_id}: {report.summary()}"[:256],
                )
            ]
        )
        return report

    def _documents_due(self, at: datetime, report: SweepReport) -> None:
        seen: set[DocumentId] = set()
        while True:
            due = [
                d for d in self._documents.due(at, _BATCH + len(seen)) if d.document_id not in seen
            ]
            if not due:
                return
            for record in due:
                seen.add(record.document_id)
                self._expire(record, at, report)

    def _expire(self, record: DocumentRecord, at: datetime, report: SweepReport) -> None:
        rule_name = record.retention_rule or "hold"
        if record.holds:
            report.documents_held += 1
            self._audit.append(
                [
                    self._event(
                        SWEEP_CALLER,
                        Action.DOCUMENT_EXPIRE,
                        Outcome.REFUSED,
                        "hold",
                        document=record.document_id,
                        subject=self._subject(record),
                        detail=f"due under {rule_name}; {len(record.holds)} legal hold(s) stand",
                    )
                ]
            )
            return
        rule = self.policy.retention.get(record.retention_rule or "")
        keep_copy = (
            rule is not None
            and rule.then is Then.KEEP_SANITIZED
            and not record.retained
            and record.variant(Variant.SANITIZED) is not None
        )
        tomb = DocumentTombstone(
            record.document_id, record.document_type, record.subject_digest, at, "retention"
        )
        if keep_copy and record.variant(Variant.ORIGINAL) is None:
            self._documents.set_due_dates([(record.document_id, None)])
            return
        event = self._event(
            SWEEP_CALLER,
            Action.DOCUMENT_EXPIRE,
            Outcome.GRANTED,
            rule_name,
            document=record.document_id,
            subject=self._subject(record),
            detail="original shredded, sanitized copy kept" if keep_copy else "shredded",
        )
        blobs = self._documents.destroy(
            record.document_id,
            [Variant.ORIGINAL] if keep_copy else None,
            tomb,
            [event],
            due_at=None,
        )
        if blobs is None:
            return  # held meanwhile, or another replica swept it first
        if keep_copy:
            report.originals_destroyed += 1
        else:
            report.documents_destroyed += 1
        report.by_rule[rule_name] = report.by_rule.get(rule_name, 0) + 1
        self._delete_blobs(blobs, report)

    def _values_due(self, at: datetime, report: SweepReport) -> None:
        for name, rule in sorted(self.policy.retention.items()):
            if not name.startswith("categories."):
                continue
            category = Category(name.removeprefix("categories."))
            limit = rule.keep.before(at)
            while True:
                if rule.trigger is Trigger.RELATIONSHIP_END:
                    due = self._values.values_of_ended_relationships(category, limit, _BATCH)
                else:  # upload (a verified trigger means nothing for a field: from its upload)
                    due = self._values.values_stored_before(category, limit, _BATCH)
                if not due:
                    break
                events = [
                    AuditEvent(
                        occurred_at=at,
                        caller=SWEEP_CALLER,
                        action=Action.VALUE_EXPIRE,
                        outcome=Outcome.GRANTED,
                        rule=name,
                        token=token,
                        subject=subject,
                        category=category,
                        detail=f"retention {rule.keep} from {rule.trigger.value}",
                    )
                    for token, subject in due
                ]
                erased = self._values.erase_values(
                    [t for t, _s in due], f"sweep:{report.sweep_id}"[:36], events
                )
                report.values_erased += erased
                report.by_rule[name] = report.by_rule.get(name, 0) + erased
                if erased == 0:
                    break

    def _redestroy_deleted(self, report: SweepReport) -> None:
        """Documents deleted on their own are in the shred log: a restored copy that holds one
        again loses it again (as a restored subject is shredded again at start-up)."""
        for key, entry in self._log.entries().items():
            if not key.startswith(DOCUMENT_LOG_PREFIX):
                continue
            document_id = DocumentId(key.removeprefix(DOCUMENT_LOG_PREFIX))
            record = self._documents.document(document_id)
            if record is None:
                continue
            tomb = DocumentTombstone(
                document_id,
                record.document_type,
                record.subject_digest,
                entry.shredded_at,
                "delete",
            )
            event = self._event(
                SWEEP_CALLER,
                Action.DOCUMENT_DELETE,
                Outcome.GRANTED,
                "shred-log:reapplied",
                document=document_id,
                subject=self._subject(record),
                detail=f"deleted {entry.shredded_at.date().isoformat()}; back in a restored copy",
            )
            blobs = self._documents.destroy(document_id, None, tomb, [event], unless_held=False)
            if blobs is not None:
                report.documents_redestroyed += 1
                self._delete_blobs(blobs, report)

    def _stale_blobs(self, at: datetime, report: SweepReport) -> None:
        stale = self._documents.stale_blobs(at - UPLOAD_ABANDONED_AFTER)
        if stale:
            self._delete_blobs(stale, report)

    def _delete_blobs(self, blobs: list[str], report: SweepReport) -> None:
        self._blobs.delete(blobs)
        self._documents.forget_blobs(blobs)
        report.blobs_deleted += len(blobs)

    @staticmethod
    def _subject(record: DocumentRecord) -> SubjectId:
        return record.subject or keyed_audit_name(record.subject_digest)

    def _event(
        self,
        caller: CallerName,
        action: Action,
        outcome: Outcome,
        rule: str,
        *,
        document: DocumentId | None = None,
        subject: SubjectId | None = None,
        detail: str | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            occurred_at=self._clock(),
            caller=caller,
            action=action,
            outcome=outcome,
            rule=rule,
            token=Token(document) if document else None,
            subject=subject,
            detail=detail[:256] if detail else None,
        )
