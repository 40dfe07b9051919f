"""The Tokenize use case: values in, tokens out.

Invariants: a value is validated, then encrypted under its subject's data key with associated
data binding it to (token, subject, category), and plaintext never reaches the store; a
Tokenize is all or nothing; a retry with the same request id returns the first answer; a
shredded subject's id is never written under again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from vault.domain import tokens
from vault.domain.audit_log import SubjectRefs
from vault.domain.context import RequestContext
from vault.domain.policy import CategoryRule, Decision, Policy, ValueRule
from vault.domain.ports import Binding, Cipher, Clock, KeyProvider
from vault.domain.requests import (
    CVV_NAMES,
    FieldInput,
    Limits,
    Tokenized,
    is_uuid,
    normalized_request_id,
)
from vault.domain.secrets import Secret
from vault.domain.stores import (
    AuditLog,
    IdempotencyStore,
    SubjectStore,
    ValueStore,
    WriteOutcome,
)
from vault.domain.subject_keys import (
    SubjectKeys,
    deleted_subject,
    key_exhausted,
    stopped_for_new_data,
)
from vault.domain.types import (
    SUBJECT_RE,
    Action,
    AuditEvent,
    CallerName,
    Category,
    IdempotencyRecord,
    Outcome,
    PlainValue,
    StoredValue,
    SubjectId,
    TokenFormat,
)
from vault.domain.validation import RuleBroken, validate
from vault.errors import (
    Aborted,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
)

__all__ = ["Tokenization"]


class Tokenization:
    """Stateless between calls; safe to share between threads."""

    def __init__(
        self,
        *,
        policy: Policy,
        values: ValueStore,
        subjects: SubjectStore,
        idempotency: IdempotencyStore,
        audit: AuditLog,
        keys: KeyProvider,
        cipher: Cipher,
        clock: Clock,
        limits: Limits | None = None,
    ) -> None:
        self.policy = policy
        self._values = values
        self._subjects = subjects
        self._idempotency = idempotency
        self._audit = audit
        self._keys = keys
        self._cipher = cipher
        self._clock = clock
        self.limits = limits or Limits()
        self._subject_keys = SubjectKeys(values, subjects, keys, cipher)
        self._refs = SubjectRefs(cipher)

    # -- Tokenize -------------------------------------------------------------------------------

    def tokenize(
        self,
        ctx: RequestContext,
        subject: str,
        fields: Sequence[FieldInput],
        request_id: str = "",
    ) -> list[Tokenized]:
        caller = ctx.caller
        request_id = normalized_request_id(request_id)
        subject_id, checked = self._check_tokenize(caller, subject, fields, request_id)
        # No read of the request id first: the save inserts it, and only a conflict (a retry)
        # costs a lookup. A first request, the common case, saves a round trip.
        for _ in range(4):
            outcome, results = self._tokenize_once(ctx, subject_id, checked, request_id)
            if outcome is WriteOutcome.DONE:
                return results
            if outcome in (WriteOutcome.TOKEN_COLLISION, WriteOutcome.SUBJECT_RACE):
                continue  # fresh tokens, or the data key another request created first
            if outcome is WriteOutcome.DUPLICATE_REQUEST:
                # A retry, or a concurrent twin that committed first: answer as it did.
                twin = self._idempotency.idempotency(caller, request_id)
                if twin is None:
                    continue
                if self._clock() - twin.created_at >= self.limits.idempotency_retention:
                    self._idempotency.forget_idempotency(
                        caller, request_id
                    )  # expired: a new request
                    continue
                return self._replay(ctx, twin, subject_id, checked)
            if outcome is WriteOutcome.SUBJECT_STOPPED:
                raise stopped_for_new_data()
            if outcome is WriteOutcome.SUBJECT_SHREDDED:
                raise deleted_subject()
            if outcome is WriteOutcome.KEY_EXHAUSTED:
                raise key_exhausted()
        raise Aborted("could not store the values under concurrent writes; retry the call")

    def _check_tokenize(
        self,
        caller: CallerName,
        subject: str,
        fields: Sequence[FieldInput],
        request_id: str,
    ) -> tuple[SubjectId, list[tuple[CategoryRule, PlainValue, TokenFormat]]]:
        violations: list[FieldViolation] = []
        if not SUBJECT_RE.fullmatch(subject):
            violations.append(
                FieldViolation(
                    "subject", "subject.syntax", "must be 1 to 128 characters from [A-Za-z0-9._:@-]"
                )
            )
        if request_id and not is_uuid(request_id):
            violations.append(
                FieldViolation(
                    "request_id", "request_id.uuid", "must be a UUID in its 36-character text form"
                )
            )
        if not fields:
            violations.append(
                FieldViolation("fields", "fields.required", "must have at least 1 field")
            )
        elif len(fields) > self.limits.max_fields:
            violations.append(
                FieldViolation(
                    "fields",
                    "fields.max_count",
                    f"must have at most {self.limits.max_fields} fields",
                )
            )
            raise InvalidArgument(violations)
        total = sum(len(f.value.data) for f in fields if f.value is not None)
        if total > self.limits.max_request_bytes:
            violations.append(
                FieldViolation(
                    "fields",
                    "fields.max_bytes",
                    f"values must total at most {self.limits.max_request_bytes} bytes",
                )
            )
            raise InvalidArgument(violations)

        today = self._clock().date()
        checked: list[tuple[CategoryRule, PlainValue, TokenFormat]] = []
        refused: list[tuple[int, Category, Decision]] = []
        for i, f in enumerate(fields):
            where = f"fields[{i}]"
            name = f.category
            rule = self._category_of(where, name)
            if isinstance(rule, FieldViolation):
                violations.append(rule)
                continue
            fmt = f.token_format
            if fmt is None:
                violations.append(
                    FieldViolation(
                        f"{where}.token_format", "token_format.unknown", "is not a known format"
                    )
                )
            elif fmt not in rule.token_formats:
                violations.append(
                    FieldViolation(
                        f"{where}.token_format",
                        "token_format.category",
                        f"format {fmt.value} is not offered for category {name}",
                    )
                )
            if f.value is None:
                violations.append(FieldViolation(f"{where}.value", "value.required", "must be set"))
                continue
            try:
                normalized = validate(rule, f.value, today)
            except RuleBroken as broken:
                violations.append(
                    FieldViolation(f"{where}.value", broken.rule.name, broken.rule.description)
                )
                continue
            decision = self.policy.may_tokenize(caller, rule.name)
            if not decision.allowed:
                refused.append((i, rule.name, decision))
            checked.append((rule, normalized, fmt or TokenFormat.OPAQUE))
        if violations:
            raise InvalidArgument(violations)
        if refused:
            now = self._clock()
            self._audit.append(
                [
                    AuditEvent(
                        occurred_at=now,
                        caller=caller,
                        action=Action.TOKENIZE,
                        outcome=Outcome.REFUSED,
                        rule=d.rule,
                        subject=SubjectId(subject),
                        category=category,
                        request_id=request_id or None,
                    )
                    for _, category, d in refused
                ]
            )
            i, _, first = refused[0]
            raise PermissionDenied(f"fields[{i}]: {first.reason}", rule=first.rule)
        return SubjectId(subject), checked

    def _category_of(self, where: str, name: str) -> CategoryRule | FieldViolation:
        """The rule of a field's category, or why the field cannot name it."""
        if name.lower() in CVV_NAMES:
            return FieldViolation(
                f"{where}.category",
                "category.card_security_code",
                "card security codes are never stored (PCI DSS 3.3.1)",
            )
        rule = self.policy.categories.get(Category(name))
        if rule is None:
            return FieldViolation(
                f"{where}.category",
                "category.unknown",
                "must be a category of the policy: " + ", ".join(sorted(self.policy.categories)),
            )
        if rule.kind is ValueRule.DOCUMENT:
            # Retired as a field: documents are streamed, checked and kept apart.
            return FieldViolation(
                f"{where}.category",
                "category.documents_only",
                f"category {name} holds documents: upload them with "
                "DocumentService.UploadDocument (pdv document upload)",
            )
        return rule

    def _tokenize_once(
        self,
        ctx: RequestContext,
        subject: SubjectId,
        checked: list[tuple[CategoryRule, PlainValue, TokenFormat]],
        request_id: str,
    ) -> tuple[WriteOutcome, list[Tokenized]]:
        caller = ctx.caller
        dek, new_key = self._subject_keys.acquire(ctx, subject)
        try:
            now = self._clock()
            values: list[StoredValue] = []
            results: list[Tokenized] = []
            for rule, value, fmt in checked:
                pan = value.data.reveal_text() if fmt is TokenFormat.CARD_NUMBER else None
                token = tokens.new_token(fmt, pan)
                binding = Binding(token, subject, rule.name)
                values.append(
                    StoredValue(
                        token, subject, rule.name, fmt, self._cipher.seal(dek, binding, value)
                    )
                )
                results.append(Tokenized(token, rule.name))
            ref = self._refs.ref(dek, subject)
            audit = [
                AuditEvent(
                    occurred_at=now,
                    caller=caller,
                    action=Action.TOKENIZE,
                    outcome=Outcome.GRANTED,
                    rule=f"caller:{caller}:tokenize",
                    token=r.token,
                    subject=subject,
                    category=r.category,
                    request_id=request_id or None,
                    subject_ref=ref,
                )
                for r in results
            ]
            record = None
            if request_id:
                record = IdempotencyRecord(
                    caller=caller,
                    request_id=request_id,
                    subject=subject,
                    fingerprint=self._fingerprint(dek, subject, checked),
                    tokens=tuple((r.token, r.category) for r in results),
                    created_at=now,
                )
            outcome = self._values.save_tokenized(
                subject=subject,
                new_key=new_key,
                encryption_limit=self.limits.encryption_limit,
                values=values,
                audit=audit,
                idempotency=record,
                now=now,
            )
            return outcome, results
        finally:
            dek.wipe()

    def _replay(
        self,
        ctx: RequestContext,
        earlier: IdempotencyRecord,
        subject: SubjectId,
        checked: list[tuple[CategoryRule, PlainValue, TokenFormat]],
    ) -> list[Tokenized]:
        same = earlier.subject == subject
        if same:
            stored = self._values.data_keys([subject]).get(subject)
            if stored is None:
                same = False
            else:
                dek = self._subject_keys.unwrap(ctx, subject, stored.wrapped)
                try:
                    same = self._fingerprint(dek, subject, checked) == earlier.fingerprint
                finally:
                    dek.wipe()
        if not same:
            raise InvalidArgument.one(
                "request_id",
                "request_id.reused",
                "was already used for a different request; use a new id for a new request",
            )
        now = self._clock()
        self._audit.append(
            [
                AuditEvent(
                    occurred_at=now,
                    caller=earlier.caller,
                    action=Action.TOKENIZE,
                    outcome=Outcome.GRANTED,
                    rule="request_id:replayed",
                    token=t,
                    subject=subject,
                    category=c,
                    request_id=earlier.request_id,
                    detail="a retry: the first answer was returned again",
                )
                for t, c in earlier.tokens
            ]
        )
        return [Tokenized(t, c) for t, c in earlier.tokens]

    def _fingerprint(
        self,
        dek: Secret,
        subject: SubjectId,
        checked: list[tuple[CategoryRule, PlainValue, TokenFormat]],
    ) -> bytes:
        # Keyed by the subject's data key, so the stored fingerprint reveals nothing about the
        # values and dies with the key when the subject is shredded.
        h = hashlib.sha256()
        h.update(subject.encode())
        for rule, value, fmt in checked:
            for part in (rule.name.encode(), fmt.value.encode(), bytes([value.kind])):
                h.update(len(part).to_bytes(4, "big") + part)
            h.update(len(value.data).to_bytes(4, "big"))
            h.update(value.data.reveal())
        return self._cipher.fingerprint(dek, h.digest())
