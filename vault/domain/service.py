"""The use cases of the token service: tokenize, and detokenize for a stated purpose."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from vault.domain import masking, tokens
from vault.domain.policy import CategoryRule, Decision, Policy
from vault.domain.ports import (
    Binding,
    Cipher,
    Clock,
    DuplicateRequestError,
    KeyProvider,
    KeyUsageExhaustedError,
    Store,
    SubjectKeyRaceError,
    TokenCollisionError,
)
from vault.domain.secrets import Secret
from vault.domain.types import (
    NAME_RE,
    SUBJECT_RE,
    Action,
    AuditEvent,
    CallerName,
    Category,
    IdempotencyRecord,
    Outcome,
    PlainValue,
    Purpose,
    StoredValue,
    SubjectId,
    Token,
    TokenFormat,
    View,
    WrappedKey,
)
from vault.domain.validation import RuleBroken, validate
from vault.errors import (
    FailedPrecondition,
    FieldViolation,
    IntegrityError,
    InvalidArgument,
    PdvaultError,
    PermissionDenied,
)

# NIST SP 800-38D section 8.3: with random 96-bit nonces, at most 2^32 invocations of the
# authenticated encryption function per key.
GCM_RANDOM_NONCE_LIMIT = 2**32
_CVV_NAMES = frozenset({"card_security_code", "cvv", "cvc", "cid", "cvv2", "cvc2"})
_JUSTIFICATION_RE = re.compile(r"[\x20-\x7e]{0,256}")


@dataclass(frozen=True, slots=True)
class Limits:
    max_fields: int = 1000
    max_tokens: int = 1000
    max_request_bytes: int = 4 * 1024 * 1024
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


TOKEN_REFUSED = "TOKEN_REFUSED"  # noqa: S105  (an ErrorInfo reason, not a secret)


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
        store: Store,
        keys: KeyProvider,
        cipher: Cipher,
        clock: Clock,
        limits: Limits | None = None,
    ) -> None:
        self.policy = policy
        self._store = store
        self._keys = keys
        self._cipher = cipher
        self._clock = clock
        self._limits = limits or Limits()

    # -- Tokenize -------------------------------------------------------------------------------

    def tokenize(
        self,
        caller: CallerName,
        subject: str,
        fields: Sequence[FieldInput],
        request_id: str = "",
    ) -> list[Tokenized]:
        subject_id, checked = self._check_tokenize(caller, subject, fields, request_id)
        if request_id:
            earlier = self._store.idempotency(caller, request_id)
            if earlier is not None and self._clock() - earlier.created_at < (
                self._limits.idempotency_retention
            ):
                return self._replay(earlier, subject_id, checked)
        for _ in range(4):
            try:
                return self._tokenize_once(caller, subject_id, checked, request_id)
            except (TokenCollisionError, SubjectKeyRaceError):
                continue  # fresh tokens, or the data key another request created first
            except DuplicateRequestError:
                # A concurrent twin of this request committed first: answer as it did.
                twin = self._store.idempotency(caller, request_id)
                if twin is None:
                    continue
                return self._replay(twin, subject_id, checked)
            except KeyUsageExhaustedError:
                raise FailedPrecondition(
                    "the subject's data key reached the NIST SP 800-38D limit of 2^32 "
                    "encryptions; its key must be rotated before more data is stored",
                    reason="DATA_KEY_EXHAUSTED",
                ) from None
        raise FailedPrecondition("could not store the values; retry", reason="CONTENTION")

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
        if request_id and not _is_uuid(request_id):
            violations.append(
                FieldViolation(
                    "request_id", "request_id.uuid", "must be a UUID in its 36-character text form"
                )
            )
        if not fields:
            violations.append(
                FieldViolation("fields", "fields.required", "must have at least 1 field")
            )
        elif len(fields) > self._limits.max_fields:
            violations.append(
                FieldViolation(
                    "fields",
                    "fields.max_count",
                    f"must have at most {self._limits.max_fields} fields",
                )
            )
            raise InvalidArgument(violations)
        total = sum(len(f.value.data) for f in fields if f.value is not None)
        if total > self._limits.max_request_bytes:
            violations.append(
                FieldViolation(
                    "fields",
                    "fields.max_bytes",
                    f"values must total at most {self._limits.max_request_bytes} bytes",
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
            self._store.append_audit(
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
        caller: CallerName,
        subject: SubjectId,
        checked: list[tuple[CategoryRule, PlainValue, TokenFormat]],
        request_id: str,
    ) -> list[Tokenized]:
        existing = self._store.data_keys([subject]).get(subject)
        new_key = None
        if existing is None:
            dek = self._cipher.new_data_key()
            new_key = self._keys.wrap([(subject, dek)])[0]
        else:
            dek = self._unwrap_one(subject, existing.wrapped)
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
            self._store.save_tokenized(
                subject=subject,
                new_key=new_key,
                encryption_limit=self._limits.encryption_limit,
                values=values,
                audit=audit,
                idempotency=record,
                now=now,
            )
            return results
        finally:
            dek.wipe()

    def _replay(
        self,
        earlier: IdempotencyRecord,
        subject: SubjectId,
        checked: list[tuple[CategoryRule, PlainValue, TokenFormat]],
    ) -> list[Tokenized]:
        same = earlier.subject == subject
        if same:
            stored = self._store.data_keys([subject]).get(subject)
            if stored is None:
                same = False
            else:
                dek = self._unwrap_one(subject, stored.wrapped)
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

    def _unwrap_one(self, subject: SubjectId, wrapped: WrappedKey) -> Secret:
        key = self._keys.unwrap([(subject, wrapped)])[0]
        if key is None:
            raise IntegrityError()
        return key

    # -- Detokenize -----------------------------------------------------------------------------

    def detokenize(
        self,
        caller: CallerName,
        requested: Sequence[str],
        purpose: str,
        justification: str = "",
    ) -> list[Detokenized]:
        self._check_detokenize(requested, purpose, justification)
        purpose_id = Purpose(purpose)
        now = self._clock()
        why = justification or None

        def event(
            token: str, outcome: Outcome, decision: Decision, value: StoredValue | None
        ) -> AuditEvent:
            return AuditEvent(
                occurred_at=now,
                caller=caller,
                action=Action.DETOKENIZE,
                outcome=outcome,
                rule=decision.rule,
                token=Token(token) if value else _audited_unknown(token),
                subject=value.subject if value else None,
                category=value.category if value else None,
                purpose=purpose_id,
                view=decision.view if outcome is Outcome.GRANTED else None,
                justification=why,
            )

        claim = self.policy.may_claim(caller, purpose_id)
        if not claim.allowed:
            self._store.append_audit([event(t, Outcome.REFUSED, claim, None) for t in requested])
            raise PermissionDenied(claim.reason, rule=claim.rule)

        wanted = {Token(t) for t in requested if tokens.well_formed(t)}
        stored, data_keys = self._store.values_and_keys(wanted) if wanted else ({}, {})

        decisions: dict[str, Decision] = {}
        for t in dict.fromkeys(requested):
            value = stored.get(Token(t))
            if value is None:
                decisions[t] = Decision(False, "token:unknown", "no such token")
            else:
                decisions[t] = self.policy.may_read(caller, purpose_id, value.category)

        # Unwrap only the keys of subjects with at least one granted token: one provider call.
        subjects = sorted({stored[Token(t)].subject for t, d in decisions.items() if d.allowed})
        unwrapped = (
            self._keys.unwrap([(s, data_keys[s].wrapped) for s in subjects]) if subjects else []
        )
        keys = dict(zip(subjects, unwrapped, strict=True))
        try:
            results: list[Detokenized] = []
            audit: list[AuditEvent] = []
            for t in requested:
                decision = decisions[t]
                value = stored.get(Token(t))
                if value is None or not decision.allowed:
                    audit.append(event(t, Outcome.REFUSED, decision, value))
                    results.append(Detokenized(t, error=self._refusal(purpose_id)))
                    continue
                key = keys.get(value.subject)
                try:
                    if key is None:
                        raise IntegrityError()
                    plain = self._cipher.open(
                        key, Binding(value.token, value.subject, value.category), value.ciphertext
                    )
                except IntegrityError as exc:
                    integrity = Decision(False, "integrity:failed", exc.message)
                    audit.append(event(t, Outcome.REFUSED, integrity, value))
                    results.append(Detokenized(t, error=exc))
                    continue
                audit.append(event(t, Outcome.GRANTED, decision, value))
                if decision.view is View.FULL:
                    results.append(Detokenized(t, value.category, View.FULL, value=plain))
                else:
                    rule = self.policy.categories[value.category]
                    results.append(
                        Detokenized(
                            t, value.category, View.MASKED, masked=masking.mask(rule.mask, plain)
                        )
                    )
            # The audit record is committed before any value leaves: if it fails, nothing does.
            self._store.append_audit(audit)
            return results
        finally:
            for k in keys.values():
                if k is not None:
                    k.wipe()

    def _refusal(self, purpose: Purpose) -> PermissionDenied:
        permitted = ", ".join(self.policy.categories_for(purpose)) or "no category"
        return PermissionDenied(
            f"refused: the token does not exist, or purpose '{purpose}' does not permit its "
            f"category (it permits: {permitted})",
            rule="token:refused",
            reason=TOKEN_REFUSED,
        )

    def _check_detokenize(self, requested: Sequence[str], purpose: str, justification: str) -> None:
        violations: list[FieldViolation] = []
        if not requested:
            violations.append(
                FieldViolation("tokens", "tokens.required", "must have at least 1 token")
            )
        elif len(requested) > self._limits.max_tokens:
            violations.append(
                FieldViolation(
                    "tokens",
                    "tokens.max_count",
                    f"must have at most {self._limits.max_tokens} tokens",
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


def _audited_unknown(token: str) -> Token:
    """How a token that resolved to nothing is written to the audit log.

    A card-shaped "token" that does not exist may be a real card number pasted by mistake: the
    audit keeps only its last four digits (PCI DSS 3.4.1), never the number.
    """
    if len(token) == 16 and token.isascii() and token.isdigit():
        return Token("*" * 12 + token[-4:])
    return Token(token)


def _is_uuid(text: str) -> bool:
    if len(text) != 36:
        return False
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
