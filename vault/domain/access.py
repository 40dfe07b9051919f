"""May this caller read this? One evaluator, fed with facts, asked by every read path.

Detokenize, correction, export (and documents) do not decide for themselves: they gather the
facts (who asks, for which purpose or operation, with which legal basis; what the store knows of
the item: stored, shredded or unknown, its category, its subject's state and consent) and ask
`ReadEvaluator`. It answers with one `ReadDecision`: allowed or not, the view, the rule that
decided, the reason (one of `vault.errors.Reason`), and whether the answer may reveal that the
item exists. `refusal` turns a refused decision into the error the caller sees.

The rule that a refusal by category looks like an unknown token is written here, once: a
decision that may not reveal existence is answered with the same error, byte for byte, as an
unknown token (tested for every caller, purpose and category). What the policy file says
(purposes a category permits, consent-bound purposes, purposes allowed on stopped accounts,
whether a legal basis replaces consent or lifts Account Stop, which callers may state one) is
data the evaluator reads; none of it is code here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from vault.domain.policy import Policy
from vault.domain.types import CallerName, Category, LegalBasis, Purpose, SubjectState, View
from vault.errors import FailedPrecondition, NotFound, PdvaultError, PermissionDenied, Reason

__all__ = [
    "UNKNOWN",
    "Access",
    "Existence",
    "ItemFacts",
    "Operation",
    "ReadDecision",
    "ReadEvaluator",
    "Step",
    "Verdict",
]


class Existence(enum.Enum):
    STORED = enum.auto()
    SHREDDED = enum.auto()  # its subject was crypto-shredded; only a tombstone remains
    EXPIRED = enum.auto()  # a value erased at the end of its retention period
    DELETED = enum.auto()  # a document destroyed on its own (deleted, or its retention ended)
    MOVED = enum.auto()  # a value of the retired identity_document field, now a document
    UNKNOWN = enum.auto()


class Operation(enum.Enum):
    """Reads of the subject lifecycle, for callers with the `subjects` operation."""

    CORRECT = "correct"
    EXPORT = "export"


@dataclass(frozen=True, slots=True)
class Access:
    """Who asks, and why: a purpose (with an optional legal basis), or a lifecycle operation."""

    caller: CallerName
    purpose: Purpose | None = None
    legal_basis: LegalBasis | None = None
    operation: Operation | None = None


@dataclass(frozen=True, slots=True)
class ItemFacts:
    """What the store knows of one item asked for."""

    existence: Existence
    category: Category | None = None  # stored and shredded items
    state: SubjectState | None = None  # stored items: the subject's lifecycle state
    consent: bool | None = None  # stored items: True given, False withdrawn, None never recorded
    # A document kept after its subject's deletion under a legal duty: readable only for these
    # purposes (the retention rule's), with a stated legal basis. None for every other item.
    retained_for: frozenset[Purpose] | None = None
    document: bool = False  # the item is a document (refusals name documents, not tokens)
    moved_to: str | None = None  # MOVED: the document's id


UNKNOWN = ItemFacts(Existence.UNKNOWN)


class Verdict(enum.Enum):
    """What one rule said about a request (`Step`)."""

    ALLOWS = "allows"  # the rule was met
    REFUSES = "refuses"  # the rule refused: the decision
    NOT_APPLIED = "not applied"  # looked at, and did not bear on this request


@dataclass(frozen=True, slots=True)
class Step:
    """One rule the evaluator looked at, in order: its stable id (the policy file's place, as
    in `Decision.rule`), what it said, and a sentence for people. Never a value."""

    rule: str
    verdict: Verdict
    text: str


@dataclass(frozen=True, slots=True)
class ReadDecision:
    allowed: bool
    rule: str  # the rule that decided, recorded in the audit
    reason: Reason | None  # why not; None when allowed
    message: str  # for people; never a value
    view: View | None = None
    reveals_existence: bool = False  # whether the answer may tell that the item exists

    @classmethod
    def refuse(cls, rule: str, reason: Reason, message: str, reveals: bool = True) -> ReadDecision:
        return cls(False, rule, reason, message, None, reveals)


class ReadEvaluator:
    """The one answer to "may this caller read this item?" Stateless; thread-safe."""

    def __init__(self, policy: Policy, documents: bool = False) -> None:
        self.policy = policy
        # Refusals that may not reveal existence name documents instead of tokens.
        self._about_documents = documents

    def __repr__(self) -> str:
        return f"ReadEvaluator({self.policy.name} v{self.policy.version})"

    # -- the whole request ----------------------------------------------------------------------

    def admit(self, access: Access, trace: list[Step] | None = None) -> ReadDecision:
        """Whether the request may go on at all: the caller may claim the purpose (and state
        its legal basis), or has the operation. Its refusal concerns every item. Given a
        `trace`, each rule looked at is appended to it (`pdv policy explain`)."""
        policy = self.policy
        if access.operation is not None:
            d = policy.may_operate(access.caller, "subjects")
            if trace is not None:
                _step(trace, d.rule, d.allowed, d.reason)
            if not d.allowed:
                return ReadDecision.refuse(d.rule, Reason.PERMISSION_DENIED, d.reason)
            return ReadDecision(True, d.rule, None, d.reason, View.FULL)
        if access.purpose is None:
            raise ValueError("an access names a purpose or an operation")
        claim = policy.may_claim(access.caller, access.purpose)
        if trace is not None:
            _step(trace, claim.rule, claim.allowed, claim.reason)
        if not claim.allowed:
            return ReadDecision.refuse(claim.rule, Reason.PERMISSION_DENIED, claim.reason)
        if access.legal_basis is not None:
            stated = policy.may_state_legal_basis(access.caller, access.purpose)
            if trace is not None:
                _step(trace, stated.rule, stated.allowed, stated.reason)
            if not stated.allowed:
                return ReadDecision.refuse(stated.rule, Reason.LEGAL_BASIS_REFUSED, stated.reason)
        return ReadDecision(True, claim.rule, None, claim.reason)

    # -- one item -------------------------------------------------------------------------------

    def decide(
        self, access: Access, item: ItemFacts, trace: list[Step] | None = None
    ) -> ReadDecision:
        """The decision for one item, for a request `admit` allowed. The order matters: what
        may not be told (unknown, or a category the purpose does not permit) first, then what
        the subject's lifecycle and choices say, which may be told in words. Given a `trace`,
        each rule looked at is appended to it (the same code decides, traced or not)."""
        if access.operation is not None:
            return self._decide_operation(access.operation, item)
        purpose = access.purpose
        if purpose is None:
            raise ValueError("an access names a purpose or an operation")
        if item.existence is Existence.UNKNOWN or item.category is None:
            return self._untold("token:unknown", "no such token")
        if item.retained_for is not None:
            return self._decide_retained(access, purpose, item)
        base = self.policy.permits(access.caller, purpose, item.category)
        if trace is not None:
            _step(trace, base.rule, base.allowed, base.reason)
        if not base.allowed:
            return self._untold(base.rule, base.reason)
        if trace is not None:
            trace.append(self._view_step(access.caller, item.category, base.view))
        gone = self._gone(item)
        if gone is not None:
            # Only a caller who could have read it learns that it was destroyed.
            return gone
        rule = self.policy.purposes[purpose]
        legal = access.legal_basis
        lifted = legal is not None and self.policy.lifecycle.legal_basis_lifts_stop
        if item.state is SubjectState.STOPPED and not (rule.allowed_when_stopped or lifted):
            if trace is not None:
                _step(trace, "subject:stopped", False, self._stopped())
            return ReadDecision.refuse("subject:stopped", Reason.SUBJECT_STOPPED, self._stopped())
        if trace is not None:
            trace.append(self._stop_step(purpose, item, lifted))
        if legal is not None and rule.legal_basis_replaces_consent:
            # Art. 23's exceptions stand in for consent, and override a withdrawal.
            why = "provided under a legal exception"
            if trace is not None:
                _step(trace, f"purpose:{purpose}:legal_basis:{legal.value}", True, why)
            return ReadDecision(
                True, f"purpose:{purpose}:legal_basis:{legal.value}", None, why, base.view
            )
        if legal is not None and trace is not None:
            trace.append(
                Step(
                    f"purpose:{purpose}:legal_basis_replaces_consent",
                    Verdict.NOT_APPLIED,
                    f"the stated legal basis does not stand in for consent for purpose "
                    f"'{purpose}' (legal_basis_replaces_consent = false)",
                )
            )
        if item.consent is False:
            why = f"the data subject withdrew purpose '{purpose}' (discontinuation of use)"
            if trace is not None:
                _step(trace, f"purpose:{purpose}:withdrawn", False, why)
            return ReadDecision.refuse(
                f"purpose:{purpose}:withdrawn", Reason.CONSENT_WITHDRAWN, why
            )
        if rule.consent_required:
            if not item.consent:
                why = (
                    f"purpose '{purpose}' needs the subject's advance consent, and none is recorded"
                )
                if trace is not None:
                    _step(trace, f"purpose:{purpose}:consent", False, why)
                return ReadDecision.refuse(
                    f"purpose:{purpose}:consent", Reason.CONSENT_REQUIRED, why
                )
            why = "the subject consented to this purpose"
            if trace is not None:
                _step(trace, f"purpose:{purpose}:consent", True, why)
            return ReadDecision(True, f"purpose:{purpose}:consent", None, why, base.view)
        if trace is not None:
            trace.append(
                Step(
                    f"purpose:{purpose}:consent",
                    Verdict.NOT_APPLIED,
                    f"purpose '{purpose}' needs no consent (consent_required = false)",
                )
            )
        return ReadDecision(True, base.rule, None, base.reason, base.view)

    def _view_step(self, caller: CallerName, category: Category, view: View | None) -> Step:
        rule = self.policy.callers[caller]
        if category in rule.views:
            where, how = f"caller:{caller}:views:{category}", "for this category"
        else:
            where, how = f"caller:{caller}:view", "its view of every category without its own"
        shown = view.value if view else "nothing"
        return Step(where, Verdict.ALLOWS, f"caller '{caller}' sees {shown} values ({how})")

    def _stop_step(self, purpose: Purpose, item: ItemFacts, lifted: bool) -> Step:
        if item.state is not SubjectState.STOPPED:
            return Step(
                "subject:stopped", Verdict.NOT_APPLIED, "the data subject's account is not stopped"
            )
        if self.policy.purposes[purpose].allowed_when_stopped:
            return Step(
                f"purpose:{purpose}:allowed_when_stopped",
                Verdict.ALLOWS,
                f"purpose '{purpose}' may read a stopped account's data",
            )
        return Step(
            "lifecycle:legal_basis_lifts_stop",
            Verdict.ALLOWS,
            "the stated legal basis lifts Account Stop",
        )

    def _decide_retained(self, access: Access, purpose: Purpose, item: ItemFacts) -> ReadDecision:
        """A document kept after its subject's deletion under a legal duty: only for the
        purposes its retention rule names, only with a stated legal basis (answering an
        authority); anything else looks like an unknown document."""
        allowed = item.retained_for or frozenset()
        if purpose not in allowed or access.legal_basis is None or item.category is None:
            return self._untold(
                "retention:purposes",
                "a document kept under a legal duty is read only for its rule's purposes, with "
                "a legal basis",
            )
        view = self.policy.callers[access.caller].view_of(item.category)
        return ReadDecision(
            True,
            f"retention:purpose:{purpose}:legal_basis:{access.legal_basis.value}",
            None,
            "a document kept under a legal duty, read for its rule's purpose",
            view,
        )

    def _gone(self, item: ItemFacts) -> ReadDecision | None:
        if item.existence is Existence.SHREDDED:
            return ReadDecision.refuse("subject:shredded", Reason.SUBJECT_DELETED, _SHREDDED)
        if item.existence is Existence.EXPIRED:
            return ReadDecision.refuse("retention:expired", Reason.VALUE_EXPIRED, _EXPIRED)
        if item.existence is Existence.DELETED:
            return ReadDecision.refuse("document:deleted", Reason.DOCUMENT_DELETED, _DELETED)
        if item.existence is Existence.MOVED:
            return ReadDecision.refuse(
                "document:moved",
                Reason.DOCUMENT_MOVED,
                f"this value is now document {item.moved_to}: read it with GetDocument",
            )
        return None

    def _decide_operation(self, operation: Operation, item: ItemFacts) -> ReadDecision:
        if item.existence is Existence.UNKNOWN:
            return self._untold("token:refused", "no such token")
        gone = self._gone(item)
        if gone is not None:
            return gone
        if (
            operation is Operation.CORRECT
            and item.state is SubjectState.STOPPED
            and not self.policy.lifecycle.correct_when_stopped
        ):
            return ReadDecision.refuse(
                "lifecycle:correct_when_stopped",
                Reason.SUBJECT_STOPPED,
                "the data subject's account is stopped: resume it before correcting its values",
            )
        # Disclosure (export) holds for a stopped account too: the subject's right of access.
        return ReadDecision(True, f"operation:{operation.value}", None, "lifecycle operation")

    def _untold(self, rule: str, why: str) -> ReadDecision:
        return ReadDecision.refuse(rule, Reason.TOKEN_REFUSED, why, reveals=False)

    def _stopped(self) -> str:
        allowed = sorted(p.name for p in self.policy.purposes.values() if p.allowed_when_stopped)
        return (
            "the data subject's account is stopped: its data is kept but may be read only for "
            f"{', '.join(allowed) or 'no purpose'}, or with a stated legal basis"
        )

    # -- the answer -----------------------------------------------------------------------------

    def refusal(self, access: Access, decision: ReadDecision) -> PdvaultError:
        """What the caller hears for a refused item: a decision that may not reveal existence
        gets the unknown token's answer, the same for every such decision of this access."""
        if decision.allowed or decision.reason is None:
            raise ValueError("refusal() of an allowed decision")
        if not decision.reveals_existence and self._about_documents:
            return PermissionDenied(
                "refused: the document does not exist, or this caller or purpose may not read it",
                rule="document:refused",
                reason=Reason.DOCUMENT_REFUSED,
            )
        if not decision.reveals_existence:
            if access.purpose is None:
                return PermissionDenied(
                    "refused: the token does not exist, or this caller may not correct it",
                    rule="token:refused",
                    reason=Reason.TOKEN_REFUSED,
                )
            permitted = ", ".join(self.policy.categories_for(access.purpose)) or "no category"
            return PermissionDenied(
                f"refused: the token does not exist, or purpose '{access.purpose}' does not "
                f"permit its category (it permits: {permitted})",
                rule="token:refused",
                reason=Reason.TOKEN_REFUSED,
            )
        reason = decision.reason
        if reason.code is PermissionDenied.code:
            return PermissionDenied(decision.message, rule=decision.rule, reason=reason)
        if reason.code is NotFound.code:
            return NotFound(decision.message, reason=reason)
        return FailedPrecondition(decision.message, reason=reason)


def _step(trace: list[Step], rule: str, allowed: bool, text: str) -> None:
    # Called only with a trace: the server's calls pay one `is not None` test per rule.
    trace.append(Step(rule, Verdict.ALLOWS if allowed else Verdict.REFUSES, text))


_SHREDDED = (
    "the data subject was deleted (crypto-shredded): this token resolves to nothing any more"
)
_EXPIRED = "the value's retention period ended and it was erased: this token resolves to nothing"
_DELETED = "the document was destroyed (deleted, or its retention period ended)"
