"""The data subject's lifecycle, as the privacy policy promises it: stop and resume, deletion by
crypto-shredding, disclosure (export), correction, and consent or its withdrawal.

Callers with the `subjects` operation (ops) run these. Every call is audited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from vault.domain.access import (
    UNKNOWN,
    Access,
    Existence,
    ItemFacts,
    Operation,
    ReadDecision,
    ReadEvaluator,
)
from vault.domain.approvals import DualControl
from vault.domain.archive import DocumentArchive
from vault.domain.audit_log import SubjectRefs
from vault.domain.context import RequestContext
from vault.domain.erasure import Erasure
from vault.domain.naming import SubjectNames, unkeyed_subject_digest
from vault.domain.policy import ApprovalAction, Policy
from vault.domain.ports import Binding, Cipher, Clock, KeyProvider, ShredLog
from vault.domain.redaction import audited_token
from vault.domain.secrets import Secret
from vault.domain.service import GCM_RANDOM_NONCE_LIMIT
from vault.domain.stores import (
    AuditLog,
    SubjectStore,
    ValueStore,
    WriteOutcome,
)
from vault.domain.tokens import TOKEN_MAX_LENGTH, well_formed
from vault.domain.types import (
    SUBJECT_RE,
    Action,
    AuditEvent,
    CallerName,
    Category,
    ErasureReceipt,
    Outcome,
    PlainValue,
    Purpose,
    StoredValue,
    SubjectId,
    SubjectRecord,
    SubjectState,
    Token,
    WrappedKey,
    anonymized_subject,
)
from vault.domain.validation import RuleBroken, validate
from vault.errors import (
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Reason,
)

__all__ = ["ExportedValue", "SubjectAdministration", "SubjectExport"]


@dataclass(frozen=True, slots=True)
class ExportedValue:
    token: Token
    category: Category
    value: PlainValue | None  # None: it could not be decrypted (see `error`)
    created_at: datetime
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SubjectExport:
    """Everything held about one subject (Art. 29 disclosure), as a machine-readable bundle."""

    subject: SubjectId
    state: SubjectState
    exported_at: datetime
    values: tuple[ExportedValue, ...]
    consents: dict[Purpose, bool]
    access_history: tuple[AuditEvent, ...]


class SubjectAdministration:
    """Invariants: every operation is authorized (the `subjects` operation) and audited; a
    shred holds the invariants of `vault.domain.erasure`; an export and a correction go through
    the read evaluator and decrypt only under the subject's own binding."""

    def __init__(
        self,
        *,
        policy: Policy,
        values: ValueStore,
        subjects: SubjectStore,
        audit: AuditLog,
        keys: KeyProvider,
        cipher: Cipher,
        shred_log: ShredLog,
        names: SubjectNames,
        clock: Clock,
        forget_key: Callable[[SubjectId], None] = lambda _s: None,
        documents: DocumentArchive | None = None,
        dual_control: DualControl | None = None,
    ) -> None:
        self._policy = policy
        self.documents = documents
        self._dual = dual_control
        self._access = ReadEvaluator(policy)
        self._refs = SubjectRefs(cipher)
        self._values = values
        self._subjects = subjects
        self._audit = audit
        self._keys = keys
        self._cipher = cipher
        self._clock = clock
        self.erasure = Erasure(
            subjects=subjects,
            shred_log=shred_log,
            names=names,
            clock=clock,
            provider=keys.name,
            forget_key=forget_key,
            documents=documents,
        )

    # -- stop / resume ------------------------------------------------------------------------

    def stop(self, ctx: RequestContext, subject: str) -> SubjectRecord:
        return self._set_state(ctx, subject, SubjectState.STOPPED, Action.SUBJECT_STOP)

    def resume(self, ctx: RequestContext, subject: str) -> SubjectRecord:
        return self._set_state(ctx, subject, SubjectState.ACTIVE, Action.SUBJECT_RESUME)

    def status(self, ctx: RequestContext, subject: str) -> SubjectRecord:
        subject_id = self._authorize(ctx.caller, subject, Action.SUBJECT_SHOW)
        return self._record(subject_id)

    def _set_state(
        self, ctx: RequestContext, subject: str, state: SubjectState, action: Action
    ) -> SubjectRecord:
        caller = ctx.caller
        subject_id = self._authorize(caller, subject, action)
        now = self._clock()
        event = self._event(
            caller, action, subject_id, f"state: {state.value}", self._ref(ctx, subject_id)
        )
        if not self._subjects.set_state(subject_id, state, now, [event]):
            raise self._absent(subject_id)
        if self.documents is not None:
            # Account Stop ends the relationship; a resume continues it.
            ended = now if state is SubjectState.STOPPED else None
            self.documents.relationship_changed(subject_id, ended)
        return self._record(subject_id)

    # -- shred ----------------------------------------------------------------------------------

    def shred(self, ctx: RequestContext, subject: str, by_subject: bool = False) -> ErasureReceipt:
        """Account Deletion (see vault.domain.erasure). `by_subject`: the data subject asked
        for it through its own flow (recorded in the audit); otherwise an operator did, and
        dual control may hold it for a second operator (`operator_shred`). A repeat of a
        done shred (its receipt) is never held."""
        subject_id = self._authorize(ctx.caller, subject, Action.SUBJECT_SHRED)
        if by_subject:
            self._audit.append(
                [
                    AuditEvent(
                        occurred_at=self._clock(),
                        caller=ctx.caller,
                        action=Action.SUBJECT_SHRED,
                        outcome=Outcome.GRANTED,
                        rule=f"caller:{ctx.caller}:operations",
                        detail="requested by the data subject's own flow (no second operator)",
                    )
                ]
            )
        elif self._dual is not None and self._subjects.subject_record(subject_id) is not None:
            self._dual.hold(
                ctx,
                ApprovalAction.OPERATOR_SHRED,
                {"subject": subject_id},
                "crypto-shred one subject",
            )
        return self.erasure.shred(ctx, subject_id)

    def reapply_shred_log(self, ctx: RequestContext) -> int:
        """Shred again every subject the log names that this database still holds (a restored
        backup). Returns how many. Run at start-up, before serving, by one process."""
        return self.erasure.reapply_shred_log()

    # -- consent --------------------------------------------------------------------------------

    def set_consent(
        self, ctx: RequestContext, subject: str, purpose: str, granted: bool
    ) -> SubjectRecord:
        caller = ctx.caller
        subject_id = self._authorize(caller, subject, Action.SUBJECT_CONSENT)
        if Purpose(purpose) not in self._policy.purposes:
            raise InvalidArgument.one(
                "purpose",
                "purpose.unknown",
                "must be a purpose of the policy: " + ", ".join(sorted(self._policy.purposes)),
            )
        now = self._clock()
        verb = "granted" if granted else "withdrawn"
        event = AuditEvent(
            occurred_at=now,
            caller=caller,
            action=Action.SUBJECT_CONSENT,
            outcome=Outcome.GRANTED,
            rule=f"caller:{caller}:operations",
            subject=subject_id,
            purpose=Purpose(purpose),
            detail=verb,
            subject_ref=self._ref(ctx, subject_id),
        )
        if not self._subjects.set_consent(subject_id, Purpose(purpose), granted, now, [event]):
            raise self._absent(subject_id)
        return self._record(subject_id)

    # -- correction -----------------------------------------------------------------------------

    def correct(self, ctx: RequestContext, token: str, value: PlainValue) -> tuple[Token, Category]:
        """Replace the value behind `token` (Art. 29's correction), keeping the token. Only
        callers with the `subjects` operation; audited with the token and category, never a
        value; refused on a stopped subject unless the policy allows it."""
        if len(token) > TOKEN_MAX_LENGTH or not well_formed(token):
            raise InvalidArgument.one(
                "token",
                "token.syntax",
                "is not a pdvault token (tok_ and 26 base32 characters, or 16 digits)",
            )
        caller = ctx.caller
        access = Access(caller, operation=Operation.CORRECT)
        decision = self._access.admit(access)
        current = None
        if decision.allowed:
            found = self._values.lookup([Token(token)])
            current = found.values.get(Token(token))
            facts = (
                ItemFacts(
                    Existence.STORED,
                    current.category,
                    found.keys[current.subject].state,
                )
                if current is not None
                else ItemFacts(Existence.SHREDDED, found.shredded[Token(token)])
                if Token(token) in found.shredded
                else UNKNOWN
            )
            decision = self._access.decide(access, facts)
        if current is None or not decision.allowed:
            self._audit.append(
                [
                    AuditEvent(
                        occurred_at=self._clock(),
                        caller=caller,
                        action=Action.VALUE_CORRECT,
                        outcome=Outcome.REFUSED,
                        rule=decision.rule,
                        token=audited_token(token),
                        category=current.category if current is not None else None,
                    )
                ]
            )
            raise self._access.refusal(access, decision)
        rule = self._policy.categories[current.category]
        try:
            normalized = validate(rule, value, self._clock().date())
        except RuleBroken as broken:
            raise InvalidArgument.one("value", broken.rule.name, broken.rule.description) from None
        wrapped = self._values.data_keys([current.subject]).get(current.subject)
        if wrapped is None:
            raise NotFound(
                "the token's subject was deleted meanwhile", reason=Reason.SUBJECT_DELETED
            )
        key = self._unwrap(ctx, current.subject, wrapped.wrapped)
        try:
            binding = Binding(current.token, current.subject, current.category)
            sealed = self._cipher.seal(key, binding, normalized)
        finally:
            key.wipe()
            normalized.data.wipe()
        replaced = StoredValue(
            current.token, current.subject, current.category, current.token_format, sealed
        )
        event = AuditEvent(
            occurred_at=self._clock(),
            caller=caller,
            action=Action.VALUE_CORRECT,
            outcome=Outcome.GRANTED,
            rule="value:corrected",
            token=current.token,
            subject=current.subject,
            category=current.category,
        )
        outcome = self._values.replace_value(
            replaced,
            GCM_RANDOM_NONCE_LIMIT,
            [event],
            # Decided above; the store checks it again under the subject's lock.
            allow_stopped=self._policy.lifecycle.correct_when_stopped,
        )
        if outcome is WriteOutcome.SUBJECT_STOPPED:
            raise FailedPrecondition(
                "the data subject's account is stopped: resume it before correcting its values",
                reason=Reason.SUBJECT_STOPPED,
            )
        if outcome is WriteOutcome.KEY_EXHAUSTED:
            raise FailedPrecondition(
                "the subject's data key reached its encryption limit",
                reason=Reason.DATA_KEY_EXHAUSTED,
            )
        if outcome is not WriteOutcome.DONE:
            raise NotFound(
                "the token's subject was deleted meanwhile", reason=Reason.SUBJECT_DELETED
            )
        return current.token, current.category

    # -- export ---------------------------------------------------------------------------------

    def export(self, ctx: RequestContext, subject: str) -> SubjectExport:
        caller = ctx.caller
        subject_id = self._authorize(caller, subject, Action.SUBJECT_EXPORT, Operation.EXPORT)
        record = self._record(subject_id)
        rows = self._values.subject_values(subject_id)
        ref = self._ref(ctx, subject_id)
        # Its entries: by its keyed digest, by its tokens and documents, and the entries
        # written before the Merkle log by its unkeyed digest.
        names = [anonymized_subject(unkeyed_subject_digest(subject_id)), *([ref] if ref else [])]
        items = [str(v.token) for v, _at in rows]
        if self.documents is not None:
            items += [str(d.document_id) for d in self.documents.held_by(subject_id)]
        history = tuple(self._audit.of_subject(names, items))
        values: list[ExportedValue] = []
        if rows:
            wrapped = self._values.data_keys([subject_id])[subject_id].wrapped
            key = self._unwrap(ctx, subject_id, wrapped)
            try:
                for stored, created in rows:
                    binding = Binding(stored.token, stored.subject, stored.category)
                    try:
                        plain: PlainValue | None = self._cipher.open(
                            key, binding, stored.ciphertext
                        )
                        error = None
                    except IntegrityError as exc:
                        plain, error = None, exc.message
                    values.append(
                        ExportedValue(stored.token, stored.category, plain, created, error)
                    )
            finally:
                key.wipe()
        # Audited after it is assembled and before it is returned, like a detokenize.
        self._audit.append(
            [
                self._event(
                    caller,
                    Action.SUBJECT_EXPORT,
                    subject_id,
                    f"{len(values)} values, {len(history)} access records",
                    ref,
                )
            ]
        )
        return SubjectExport(
            subject_id, record.state, self._clock(), tuple(values), dict(record.consents), history
        )

    # -- helpers --------------------------------------------------------------------------------

    def _unwrap(self, ctx: RequestContext, subject: SubjectId, wrapped: WrappedKey) -> Secret:
        [key] = self._keys.unwrap(ctx, [(subject, wrapped)])
        if key is None:
            raise IntegrityError()
        return key

    def _record(self, subject: SubjectId) -> SubjectRecord:
        record = self._subjects.subject_record(subject)
        if record is None:
            raise self._absent(subject)
        return record

    def _absent(self, subject: SubjectId) -> Exception:
        if self._subjects.shred_receipt_of(subject) is not None:
            return NotFound(
                "this data subject was deleted (crypto-shredded); nothing is held any more",
                reason=Reason.SUBJECT_DELETED,
            )
        return NotFound(f"no data subject '{subject}' is held", reason=Reason.SUBJECT_UNKNOWN)

    def _authorize(
        self, caller: CallerName, subject: str, action: Action, read: Operation | None = None
    ) -> SubjectId:
        """The subject's id, if `caller` may act on subjects. A read (`read`: export) asks the
        read evaluator; the other lifecycle operations the policy's operations directly."""
        if not SUBJECT_RE.fullmatch(subject):
            raise InvalidArgument.one(
                "subject", "subject.syntax", "must be 1 to 128 characters from [A-Za-z0-9._:@-]"
            )
        if read is not None:
            admitted = self._access.admit(Access(caller, operation=read))
        else:
            d = self._policy.may_operate(caller, "subjects")
            admitted = ReadDecision(d.allowed, d.rule, None, d.reason)
        if not admitted.allowed:
            self._audit.append(
                [
                    AuditEvent(
                        occurred_at=self._clock(),
                        caller=caller,
                        action=action,
                        outcome=Outcome.REFUSED,
                        rule=admitted.rule,
                    )
                ]
            )
            raise PermissionDenied(admitted.message, rule=admitted.rule)
        return SubjectId(subject)

    def _event(
        self,
        caller: CallerName,
        action: Action,
        subject: SubjectId,
        detail: str,
        ref: str | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            occurred_at=self._clock(),
            caller=caller,
            action=action,
            outcome=Outcome.GRANTED,
            rule=f"caller:{caller}:operations",
            subject=subject,
            detail=detail,
            subject_ref=ref,
        )

    def _ref(self, ctx: RequestContext, subject: SubjectId) -> str | None:
        """The subject's keyed digest for the audit log; None if it has no data key."""
        stored = self._values.data_keys([subject]).get(subject)
        if stored is None:
            return None
        key = self._unwrap(ctx, subject, stored.wrapped)
        try:
            return self._refs.ref(key, subject)
        finally:
            key.wipe()
