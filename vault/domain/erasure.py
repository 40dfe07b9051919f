"""Account Deletion by crypto-shredding: the shred, its receipt, and its re-application to a
restored database.

Invariants: a shred MUST be recorded in the shred log (once per subject) before the database
forgets the subject, MUST be atomic in the database, idempotent (a repeat that finds nothing
returns the receipt unchanged; one that finds data again, in a restored copy, destroys it and
returns a new receipt naming the earlier one), MUST leave no cached key in this process (the
others hear of it through the notice feed) and no old page in the database's own files before
it returns. One instant, taken once, is in the log, the database and every receipt.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from vault.domain.context import RequestContext
from vault.domain.naming import SubjectNames, keyed_audit_name
from vault.domain.ports import Clock, ShredLog
from vault.domain.stores import ShreddedRecord, ShredResult, SubjectStore
from vault.domain.types import (
    Action,
    AuditEvent,
    CallerName,
    ErasureReceipt,
    KeptForShred,
    Outcome,
    RetainedDocument,
    SubjectId,
)
from vault.errors import (
    FailedPrecondition,
    KeyServiceUnavailable,
    NotFound,
    Reason,
    StorageUnavailable,
)

__all__ = ["SCRUB_ATTEMPTS", "SHRED_METHOD", "SYSTEM_CALLER", "Erasure", "ShredDocuments"]

log = logging.getLogger(__name__)

SCRUB_ATTEMPTS = 5
# Keep-then-destroy rounds a shred tries while uploads (or holds) keep arriving for its subject.
KEEP_ATTEMPTS = 10
SHRED_METHOD = "crypto-shred: data key destroyed (NIST SP 800-88 cryptographic erase)"
SYSTEM_CALLER = CallerName("system:shred-log")


class ShredDocuments(Protocol):
    """What a shred asks of the documents (vault.domain.archive.DocumentArchive)."""

    def keep_for_shred(self, ctx: RequestContext, subject: SubjectId, at: datetime) -> KeptForShred:
        """Move the documents a legal duty or hold keeps under retention keys; what was kept,
        and which documents were examined."""
        ...

    def forget_blobs(self, blobs: Sequence[str]) -> None:
        """Delete the segments of the documents the shred destroyed."""
        ...


class Erasure:
    def __init__(
        self,
        *,
        subjects: SubjectStore,
        shred_log: ShredLog,
        names: SubjectNames,
        clock: Clock,
        provider: str,
        forget_key: Callable[[SubjectId], None] = lambda _s: None,
        documents: ShredDocuments | None = None,
    ) -> None:
        self._subjects = subjects
        self._log = shred_log
        self._names = names
        self._clock = clock
        self._provider = provider
        self._forget = forget_key
        self.documents = documents

    def __repr__(self) -> str:
        return f"Erasure({self._log!r})"

    def shred(self, ctx: RequestContext, subject_id: SubjectId) -> ErasureReceipt:
        """Shred `subject_id` for the caller (authorized by the lifecycle use cases).

        Documents a law obliges us to keep (or a legal hold keeps) are first moved under
        retention keys (so they no longer depend on the subject's data key); everything else
        is destroyed at once, and the receipt says which documents were kept, under which
        rule, until when."""
        caller = ctx.caller
        digest = self._names.digest(subject_id)  # keyed: a dictionary of ids cannot reverse it
        if self._subjects.subject_record(subject_id) is None:
            done = self._subjects.shred_receipt(digest)
            if done is None:
                raise NotFound(
                    f"no data subject '{subject_id}' is held", reason=Reason.SUBJECT_UNKNOWN
                )
            self._scrub()  # a retry after a scrub that could not finish completes it
            return self._receipt_of(done)
        # One instant, taken once: the log, the database and the receipt all hold it. The log
        # first: if the process dies after this line, start-up finishes the shred.
        fresh = ShreddedRecord(digest, str(uuid.uuid4()), self._clock(), caller, 0)
        entry = self._log.record(digest, fresh.receipt_id, fresh.shredded_at)
        if entry.receipt_id != fresh.receipt_id:
            # Shredded before (the log keeps its first entry): if data is found again, this is
            # a new shred, with a receipt of its own naming the earlier one.
            fresh = dataclasses.replace(fresh, previous_receipt_id=entry.receipt_id)
        retained: tuple[RetainedDocument, ...] = ()
        for _ in range(KEEP_ATTEMPTS):
            # Keep what a law or a hold keeps, then destroy the rest in one transaction, which
            # changes nothing if a document arrived (or a hold was placed) in between: then
            # keep again (what was kept stays kept, and in the receipt).
            kept = self._keep(ctx, subject_id, fresh.shredded_at)
            retained += kept.retained
            fresh = dataclasses.replace(fresh, retained=retained)
            result = self._destroy(
                subject_id,
                fresh,
                f"caller:{caller}:operations",
                f"receipt {fresh.receipt_id}",
                kept.examined if self.documents is not None else None,
            )
            if result.destroyed is not None or result.receipt is not None:
                break
        if result.destroyed is None or result.receipt is None:
            # A concurrent shred won: answer with its receipt.
            if result.receipt is None:
                raise FailedPrecondition("the subject changed during the shred; retry")
            return self._receipt_of(result.receipt)
        keys, values = result.destroyed
        r = result.receipt
        return ErasureReceipt(
            r.receipt_id,
            digest,
            r.shredded_at,
            caller,
            keys,
            values,
            values,
            self._provider,
            r.previous_receipt_id,
            r.documents_destroyed,
            r.retained,
        )

    def _keep(self, ctx: RequestContext, subject: SubjectId, at: datetime) -> KeptForShred:
        if self.documents is None:
            return KeptForShred()
        return self.documents.keep_for_shred(ctx, subject, at)

    def _destroy(
        self,
        subject: SubjectId,
        record: ShreddedRecord,
        rule: str,
        detail: str,
        examined: frozenset[str] | None = None,
    ) -> ShredResult:
        """The database half of a shred, audited; the key out of this process's cache; the
        database's own files scrubbed of the old pages before the caller hears it is done."""
        event = AuditEvent(
            occurred_at=record.shredded_at,
            caller=record.shredded_by,
            action=Action.SUBJECT_SHRED,
            outcome=Outcome.GRANTED,
            rule=rule,
            subject=keyed_audit_name(record.subject_digest),
            detail=detail,
        )
        result = self._subjects.shred(subject, record, [event], examined)
        self._forget(subject)
        if result.blobs and self.documents is not None:
            self.documents.forget_blobs(result.blobs)
        if result.destroyed is not None or result.receipt is not None:
            self._scrub()  # (nothing changed otherwise: the keep step runs again)
        return result

    def _scrub(self) -> None:
        for _ in range(SCRUB_ATTEMPTS):
            if self._subjects.scrub():
                return
        # The shred is committed (a retry returns its receipt and scrubs again), but the
        # promise "the live database holds none of its data" is not yet true: say so.
        raise StorageUnavailable(
            "the subject is shredded, but the database's write-ahead log could not be cleared "
            "of it yet (readers busy); retry the call to finish"
        )

    def _receipt_of(self, done: ShreddedRecord) -> ErasureReceipt:
        """The receipt of an earlier shred, rebuilt from what the database kept of it."""
        return ErasureReceipt(
            done.receipt_id,
            done.subject_digest,
            done.shredded_at,
            done.shredded_by,
            1,
            done.values_destroyed,
            done.values_destroyed,
            self._provider,
            done.previous_receipt_id,
            done.documents_destroyed,
            done.retained,
        )

    def reapply_shred_log(self) -> int:
        """Shred again every subject the log names that this database still holds (a restored
        backup). Returns how many. Run at start-up, before serving, by one process."""
        logged = self._log.entries()
        if not logged:
            return 0
        again = self._subjects.subjects_with_digests(list(logged))
        done = 0
        ctx = RequestContext.system(SYSTEM_CALLER)
        for subject in again:
            entry = logged[self._names.digest(subject)]
            try:
                # What a law keeps is kept again (its period runs from the first shred).
                retained = self._keep(ctx, subject, entry.shredded_at).retained
            except KeyServiceUnavailable:
                log.warning(
                    "shred log: a restored subject keeps documents under a legal duty and the "
                    "key provider is unavailable; its shred is re-applied at the next start"
                )
                continue
            self._destroy(
                subject,
                ShreddedRecord(
                    entry.digest,
                    entry.receipt_id,
                    entry.shredded_at,
                    SYSTEM_CALLER,
                    0,
                    retained=retained,
                ),
                "shred-log:reapplied",
                f"receipt {entry.receipt_id} re-applied to a restored database",
            )
            done += 1
        return done
