"""The use cases of the token service: tokenize, and detokenize for a stated purpose."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from vault.domain import masking, tokens
from vault.domain.access import UNKNOWN, Access, Existence, ItemFacts, ReadDecision, ReadEvaluator
from vault.domain.context import RequestContext
from vault.domain.policy import CategoryRule, Decision, Policy
from vault.domain.ports import Binding, Cipher, Clock, KeyProvider
from vault.domain.redaction import audited_token, mask_card_numbers
from vault.domain.secrets import Secret
from vault.domain.stores import (
    AuditLog,
    IdempotencyStore,
    Lookup,
    SubjectStore,
    ValueStore,
    WriteOutcome,
)
from vault.domain.types import (
    NAME_RE,
    SUBJECT_RE,
    Action,
    AuditEvent,
    CallerName,
    Category,
    IdempotencyRecord,
    LegalBasis,
    Outcome,
    PlainValue,
    Purpose,
    StoredValue,
    SubjectId,
    SubjectState,
    Token,
    TokenFormat,
    View,
    WrappedKey,
    subject_digest,
)
from vault.domain.validation import RuleBroken, validate
from vault.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PdvaultError,
    PermissionDenied,
    Reason,
    ResourceExhausted,
)

# NIST SP 800-38D section 8.3: with random 96-bit nonces, at most 2^32 invocations of the
# authenticated encryption function per key.
# The store counts committed encryptions; attempts rolled back (a token collision, a race) are
# not counted, so pdvault stops at half the limit: the margin covers them many times over.
GCM_RANDOM_NONCE_LIMIT = 2**31
_CVV_NAMES = frozenset({"card_security_code", "cvv", "cvc", "cid", "cvv2", "cvc2"})
_JUSTIFICATION_RE = re.compile(r"[\x20-\x7e]{0,256}")


@dataclass(frozen=True, slots=True)
class Limits:
    max_fields: int = 1000
    max_tokens: int = 1000
    max_request_bytes: int = 4 * 1024 * 1024
    # What a Detokenize may return, counted from the stored ciphertexts before anything is
    # decrypted: gRPC's send limit (8 MiB) less room for the tokens and statuses around them.
    max_response_bytes: int = 7 * 1024 * 1024
    idempotency_retention: timedelta = timedelta(hours=24)
    encryption_limit: int = GCM_RANDOM_NONCE_LIMIT


@dataclass(frozen=True, slots=True)
class FieldInput:
    """One field of a Tokenize request as the transport hands it over (value may be absent)."""

    category: str
    value: PlainValue | None
    # None: a format this version does not know (a newer client's enum value).
    token_format: TokenFormat | None = TokenFormat.OPAQUE


@dataclass(frozen=True, slots=True)
class Tokenized:
    token: Token
    category: Category


@dataclass(frozen=True, slots=True)
class Detokenized:
    """The result for one token: a value, a masked value, or a refusal (`error`)."""

    token: str
    category: Category | None = None
    view: View | None = None
    value: PlainValue | None = None
    masked: str | None = None
    error: PdvaultError | None = None


class TokenService:
    """Tokenize and detokenize. Stateless between calls; safe to share between threads.

    Invariants:
    - a value is validated, then encrypted under its subject's data key with associated data
      binding it to (token, subject, category); plaintext never reaches the store;
    - a Tokenize is all or nothing; a retry with the same request id returns the first answer;
    - a Detokenize returns a value only if the policy allows (caller, purpose, category), and
      only after the audit events of the whole request are committed;
    - a token that does not exist and a token that is refused give the same answer.
    """

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
        self._access = ReadEvaluator(policy)
        self._values = values
        self._subjects = subjects
        self._idempotency = idempotency
        self._audit = audit
        self._keys = keys
        self._cipher = cipher
        self._clock = clock
        self.limits = limits or Limits()

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
                raise _stopped_for_new_data()
            if outcome is WriteOutcome.SUBJECT_SHREDDED:
                raise _deleted_subject()
            if outcome is WriteOutcome.KEY_EXHAUSTED:
                raise FailedPrecondition(
                    "the subject's data key reached its encryption limit (NIST SP 800-38D: "
                    "2^32 with random nonces; pdvault stops at 2^31): no more data can be stored "
                    "for this subject; tell the operators",
                    reason=Reason.DATA_KEY_EXHAUSTED,
                )
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
            if name.lower() in _CVV_NAMES:
                violations.append(
                    FieldViolation(
                        f"{where}.category",
                        "category.card_security_code",
                        "card security codes are never stored (PCI DSS 3.3.1)",
                    )
                )
                continue
            rule = self.policy.categories.get(Category(name))
            if rule is None:
                violations.append(
                    FieldViolation(
                        f"{where}.category",
                        "category.unknown",
                        "must be a category of the policy: "
                        + ", ".join(sorted(self.policy.categories)),
                    )
                )
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

    def _tokenize_once(
        self,
        ctx: RequestContext,
        subject: SubjectId,
        checked: list[tuple[CategoryRule, PlainValue, TokenFormat]],
        request_id: str,
    ) -> tuple[WriteOutcome, list[Tokenized]]:
        caller = ctx.caller
        existing = self._values.data_keys([subject]).get(subject)
        new_key = None
        if existing is not None and existing.state is SubjectState.STOPPED:
            raise _stopped_for_new_data()
        if existing is None:
            # Early and cheap; the save refuses a shredded id again inside its transaction.
            if self._subjects.shred_receipt(subject_digest(subject)) is not None:
                raise _deleted_subject()
            dek = self._cipher.new_data_key()
            try:
                new_key = self._keys.wrap(ctx, [(subject, dek)])[0]
            except BaseException:
                dek.wipe()
                raise
        else:
            dek = self._unwrap_one(ctx, subject, existing.wrapped)
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
                dek = self._unwrap_one(ctx, subject, stored.wrapped)
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

    def _unwrap_one(self, ctx: RequestContext, subject: SubjectId, wrapped: WrappedKey) -> Secret:
        key = self._keys.unwrap(ctx, [(subject, wrapped)])[0]
        if key is None:
            raise IntegrityError()
        return key

    # -- Detokenize -----------------------------------------------------------------------------

    def detokenize(
        self,
        ctx: RequestContext,
        requested: Sequence[str],
        purpose: str,
        justification: str = "",
        legal_basis: LegalBasis | None = None,
    ) -> list[Detokenized]:
        self._check_detokenize(requested, purpose, justification)
        access = Access(ctx.caller, Purpose(purpose), legal_basis)
        now = self._clock()
        # Stored in clear for auditors; a card number pasted into it keeps its last four only.
        why = mask_card_numbers(justification) or None

        def event(token: str, decision: ReadDecision, value: StoredValue | None) -> AuditEvent:
            return AuditEvent(
                occurred_at=now,
                caller=ctx.caller,
                action=Action.DETOKENIZE,
                outcome=Outcome.GRANTED if decision.allowed else Outcome.REFUSED,
                rule=decision.rule,
                token=Token(token) if value else audited_token(token),
                subject=value.subject if value else None,
                category=value.category if value else None,
                purpose=access.purpose,
                view=decision.view if decision.allowed else None,
                justification=why,
                legal_basis=legal_basis,
            )

        admitted = self._access.admit(access)
        if not admitted.allowed:
            self._audit.append([event(t, admitted, None) for t in requested])
            raise self._access.refusal(access, admitted)

        distinct = list(dict.fromkeys(requested))
        found = self._values.lookup([Token(t) for t in distinct], access.purpose)
        decisions = {t: self._access.decide(access, _facts(found, Token(t))) for t in distinct}

        # Bounded before anything is decrypted: a repeated 1 MiB token must not cost gigabytes.
        size = sum(
            len(found.values[Token(t)].ciphertext) for t in requested if decisions[t].allowed
        )
        if size > self.limits.max_response_bytes:
            too_large = ReadDecision.refuse(
                "response:too_large", Reason.RESPONSE_TOO_LARGE, "the answer would be too large"
            )
            self._audit.append([event(t, too_large, found.values.get(Token(t))) for t in requested])
            raise ResourceExhausted(
                f"the values asked for total more than {self.limits.max_response_bytes} bytes; "
                "ask for fewer tokens per call",
                reason=Reason.RESPONSE_TOO_LARGE,
            )

        # Unwrap only the keys of subjects with at least one granted token: one provider call.
        subjects = sorted(
            {found.values[Token(t)].subject for t, d in decisions.items() if d.allowed}
        )
        unwrapped = (
            self._keys.unwrap(ctx, [(s, found.keys[s].wrapped) for s in subjects])
            if subjects
            else []
        )
        keys = dict(zip(subjects, unwrapped, strict=True))
        openers: dict[SubjectId, Callable[[Binding, bytes], PlainValue]] = {}
        try:
            answers: dict[str, tuple[Detokenized, AuditEvent]] = {}
            for t in distinct:
                value = found.values.get(Token(t))
                answers[t] = self._answer(access, t, decisions[t], value, keys, openers, event)
            results = [answers[t][0] for t in requested]
            # The audit record is committed before any value leaves: if it fails, nothing does.
            self._audit.append([answers[t][1] for t in requested])
            return results
        finally:
            for k in keys.values():
                if k is not None:
                    k.wipe()

    def _answer(
        self,
        access: Access,
        token: str,
        decision: ReadDecision,
        value: StoredValue | None,
        keys: dict[SubjectId, Secret | None],
        openers: dict[SubjectId, Callable[[Binding, bytes], PlainValue]],
        event: Callable[[str, ReadDecision, StoredValue | None], AuditEvent],
    ) -> tuple[Detokenized, AuditEvent]:
        """One distinct token's result and its audit event (a repeated token shares them)."""
        if value is None or not decision.allowed:
            error = self._access.refusal(access, decision)
            return Detokenized(token, error=error), event(token, decision, value)
        try:
            plain = self._open_stored(value, keys, openers)
        except IntegrityError as exc:
            failed = ReadDecision.refuse("integrity:failed", Reason.DATA_INTEGRITY, exc.message)
            return Detokenized(token, error=exc), event(token, failed, value)
        granted = event(token, decision, value)
        if decision.view is View.FULL:
            return Detokenized(token, value.category, View.FULL, value=plain), granted
        rule = self.policy.categories[value.category]
        masked = masking.mask(rule.mask, plain)
        plain.data.wipe()
        return Detokenized(token, value.category, View.MASKED, masked=masked), granted

    def _open_stored(
        self,
        value: StoredValue,
        keys: dict[SubjectId, Secret | None],
        openers: dict[SubjectId, Callable[[Binding, bytes], PlainValue]],
    ) -> PlainValue:
        """Decrypt one stored value, setting up each subject's key once per request."""
        open_value = openers.get(value.subject)
        if open_value is None:
            key = keys.get(value.subject)
            if key is None:
                raise IntegrityError()
            open_value = openers[value.subject] = self._cipher.opener(key)
        return open_value(Binding(value.token, value.subject, value.category), value.ciphertext)

    def _check_detokenize(self, requested: Sequence[str], purpose: str, justification: str) -> None:
        violations: list[FieldViolation] = []
        if not requested:
            violations.append(
                FieldViolation("tokens", "tokens.required", "must have at least 1 token")
            )
        elif len(requested) > self.limits.max_tokens:
            violations.append(
                FieldViolation(
                    "tokens",
                    "tokens.max_count",
                    f"must have at most {self.limits.max_tokens} tokens",
                )
            )
        else:
            violations.extend(
                FieldViolation(
                    f"tokens[{i}]",
                    "token.syntax",
                    "is not a pdvault token (tok_ and 26 base32 characters, or 16 digits)",
                )
                for i, t in enumerate(requested)
                if len(t) > tokens.TOKEN_MAX_LENGTH or not tokens.well_formed(t)
            )
        if not purpose:
            violations.append(FieldViolation("purpose", "purpose.required", "must be set"))
        elif not NAME_RE.fullmatch(purpose) or Purpose(purpose) not in self.policy.purposes:
            violations.append(
                FieldViolation(
                    "purpose",
                    "purpose.unknown",
                    "must be a purpose of the policy: " + ", ".join(sorted(self.policy.purposes)),
                )
            )
        if not _JUSTIFICATION_RE.fullmatch(justification):
            violations.append(
                FieldViolation(
                    "justification",
                    "justification.printable",
                    "must be at most 256 printable ASCII characters",
                )
            )
        if violations:
            raise InvalidArgument(violations)


def _facts(found: Lookup, token: Token) -> ItemFacts:
    """What the lookup knows of one token, as the evaluator takes it."""
    value = found.values.get(token)
    if value is not None:
        return ItemFacts(
            Existence.STORED,
            value.category,
            found.keys[value.subject].state,
            found.consent.get(value.subject),
        )
    if token in found.shredded:
        return ItemFacts(Existence.SHREDDED, found.shredded[token])
    return UNKNOWN


def _stopped_for_new_data() -> FailedPrecondition:
    return FailedPrecondition(
        "the data subject's account is stopped: its data is kept, but no new data is stored "
        "until it is resumed",
        reason=Reason.SUBJECT_STOPPED,
    )


def _deleted_subject() -> NotFound:
    # The parent of the new values was deleted: NOT_FOUND, as AIP-193 answers for a child of a
    # deleted parent; the same reason as its shredded tokens give.
    return NotFound(
        "this data subject was deleted (crypto-shredded); its id cannot be used again",
        reason=Reason.SUBJECT_DELETED,
    )


def is_uuid(text: str) -> bool:
    if len(text) != 36:
        return False
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def normalized_request_id(request_id: str) -> str:
    """A UUID in its canonical lower-case form (AIP-155 ids are compared as UUIDs, not text);
    anything else unchanged, for validation to refuse."""
    return str(uuid.UUID(request_id)) if is_uuid(request_id) else request_id
