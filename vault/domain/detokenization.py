"""The Detokenize use case: tokens and a purpose in, values (or refusals) out.

Invariants: a value is returned only if the read evaluator allows it for this caller, purpose
and the subject's state and choices, and only after the audit events of the whole request are
committed; a token that does not exist and one that is refused give the same answer; the answer
is bounded in size before anything is decrypted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vault.domain import masking
from vault.domain.access import UNKNOWN, Access, Existence, ItemFacts, ReadDecision, ReadEvaluator
from vault.domain.audit_log import SubjectRefs
from vault.domain.context import RequestContext
from vault.domain.policy import Policy
from vault.domain.ports import Binding, Cipher, Clock, KeyProvider
from vault.domain.quotas import ItemQuotas
from vault.domain.redaction import audited_token, mask_card_numbers
from vault.domain.requests import Detokenized, Limits, check_detokenize
from vault.domain.secrets import Secret
from vault.domain.stores import (
    AuditLog,
    Lookup,
    ValueStore,
)
from vault.domain.types import (
    Action,
    AuditEvent,
    LegalBasis,
    Outcome,
    PlainValue,
    Purpose,
    StoredValue,
    SubjectId,
    Token,
    View,
)
from vault.errors import (
    IntegrityError,
    QuotaExceeded,
    Reason,
    ResourceExhausted,
)

__all__ = ["Detokenization"]


class Detokenization:
    """Stateless between calls; safe to share between threads."""

    def __init__(
        self,
        *,
        policy: Policy,
        values: ValueStore,
        audit: AuditLog,
        keys: KeyProvider,
        cipher: Cipher,
        clock: Clock,
        limits: Limits | None = None,
        quotas: ItemQuotas | None = None,
    ) -> None:
        self.policy = policy
        self._quotas = quotas
        self._access = ReadEvaluator(policy)
        self._refs = SubjectRefs(cipher)
        self._values = values
        self._audit = audit
        self._keys = keys
        self._cipher = cipher
        self._clock = clock
        self.limits = limits or Limits()

    # -- Detokenize -----------------------------------------------------------------------------

    def detokenize(
        self,
        ctx: RequestContext,
        requested: Sequence[str],
        purpose: str,
        justification: str = "",
        legal_basis: LegalBasis | None = None,
    ) -> list[Detokenized]:
        check_detokenize(self.policy, self.limits, requested, purpose, justification)
        access = Access(ctx.caller, Purpose(purpose), legal_basis)
        now = self._clock()
        # Stored in clear for auditors; a card number pasted into it keeps its last four only.
        why = mask_card_numbers(justification) or None

        def event(
            token: str, decision: ReadDecision, value: StoredValue | None, ref: str | None = None
        ) -> AuditEvent:
            # A refusal names no subject: naming it would need its key (timing, and a key
            # provider call for a caller who gets nothing); the token is there.
            return AuditEvent(
                occurred_at=now,
                caller=ctx.caller,
                action=Action.DETOKENIZE,
                outcome=Outcome.GRANTED if decision.allowed else Outcome.REFUSED,
                rule=decision.rule,
                token=Token(token) if value else audited_token(token),
                subject=value.subject if value and ref else None,
                subject_ref=ref,
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

        # The item quota, before anything is looked up or unwrapped: every item asked for
        # counts (repeats, unknown and refused tokens too: its use says nothing of which
        # tokens exist), or, over the limit, none and the request is refused whole.
        if self._quotas is not None:
            try:
                self._quotas.take(ctx.caller, Purpose(purpose), len(requested))
            except QuotaExceeded as exc:
                over = ReadDecision.refuse(exc.rule, exc.reason, exc.message)
                self._audit.append([event(t, over, None) for t in requested])
                raise

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
        refs: dict[SubjectId, str] = {}
        try:
            answers: dict[str, tuple[Detokenized, AuditEvent]] = {}
            for t in distinct:
                value = found.values.get(Token(t))
                answers[t] = self._answer(
                    access, t, decisions[t], value, keys, openers, event, refs
                )
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
        event: Callable[..., AuditEvent],
        refs: dict[SubjectId, str],
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
        ref = refs.get(value.subject)
        if ref is None:
            key = keys.get(value.subject)
            if key is not None:  # once per subject and request (an HKDF and an HMAC)
                ref = refs[value.subject] = self._refs.ref(key, value.subject)
        granted = event(token, decision, value, ref)
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
    if token in found.moved:
        return ItemFacts(Existence.MOVED, found.shredded[token], moved_to=found.moved[token])
    if token in found.shredded:
        gone = Existence.EXPIRED if token in found.expired else Existence.SHREDDED
        return ItemFacts(gone, found.shredded[token])
    return UNKNOWN
