"""The policy, explained to the people who review it: why one read is granted or refused, and
which caller may read which category for which purpose.

`explain` asks the server's own evaluator (`vault.domain.access.ReadEvaluator`, the one every
read path asks) about an item of the category, with the facts given (consent recorded, account
stopped, a legal basis stated), and returns its decision, the rules it looked at in order (its
trace), the policy's settings those rules read, and the recorded [[decisions]] that concern the
request. `matrix` lists every read the policy can grant. Neither reads a value or a database:
`pdv policy explain` and `pdv policy matrix` print them (vault/cli.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vault.domain.access import Access, Existence, ItemFacts, ReadEvaluator, Step
from vault.domain.policy import Policy, PolicyNote
from vault.domain.types import CallerName, Category, LegalBasis, Purpose, SubjectState, View

__all__ = ["Explanation", "Grant", "Unknown", "explain", "matrix", "notes_about"]


class Unknown(LookupError):
    """A caller, purpose or category the policy does not have: `what` and `name`."""

    def __init__(self, what: str, name: str, known: list[str]) -> None:
        super().__init__(f"unknown {what} '{name}' (the policy's: {', '.join(known) or 'none'})")
        self.what = what
        self.name = name


@dataclass(frozen=True, slots=True)
class Explanation:
    """The evaluator's answer for one read, and why."""

    policy: str
    version: int
    caller: CallerName
    purpose: Purpose
    category: Category
    legal_basis: LegalBasis | None
    consent: bool
    stopped: bool
    granted: bool
    view: View | None
    rule: str  # the rule that decided
    reason: str | None  # vault.errors.Reason's name, when refused
    told: str  # what the caller hears (a refusal's message; "granted" when granted)
    steps: tuple[Step, ...]  # the rules the evaluator looked at, in order
    settings: tuple[tuple[str, str], ...]  # (place in the policy file, what it says)
    notes: tuple[PolicyNote, ...]  # the [[decisions]] that concern this read

    def as_dict(self) -> dict[str, object]:
        return {
            "policy": {"name": self.policy, "version": self.version},
            "request": {
                "caller": self.caller,
                "purpose": self.purpose,
                "category": self.category,
                "legalBasis": self.legal_basis.value if self.legal_basis else None,
                "consent": self.consent,
                "stopped": self.stopped,
            },
            "decision": "granted" if self.granted else "refused",
            "view": self.view.value if self.view else None,
            "rule": self.rule,
            "reason": self.reason,
            "told": self.told,
            "steps": [
                {"rule": s.rule, "verdict": s.verdict.value, "text": s.text} for s in self.steps
            ],
            "settings": [{"rule": r, "text": t} for r, t in self.settings],
            "decisions": [{"id": n.id, "about": n.about, "text": n.text} for n in self.notes],
        }


def explain(
    policy: Policy,
    caller: str,
    purpose: str,
    category: str,
    *,
    legal_basis: LegalBasis | None = None,
    consent: bool = False,
    stopped: bool = False,
) -> Explanation:
    """What the evaluator decides when `caller` reads a stored value of `category` for
    `purpose`: the subject's consent to the purpose recorded (`consent`) or never recorded,
    its account stopped or active. Raises `Unknown` for a name the policy does not have."""
    if caller not in policy.callers:
        raise Unknown("caller", caller, sorted(policy.callers))
    if purpose not in policy.purposes:
        raise Unknown("purpose", purpose, sorted(policy.purposes))
    if category not in policy.categories:
        raise Unknown("category", category, sorted(policy.categories))
    # Documents are read as their category is (DocumentService); refusals then name documents.
    document = Category(category) == policy.documents.category
    evaluator = ReadEvaluator(policy, documents=document)
    access = Access(CallerName(caller), Purpose(purpose), legal_basis)
    item = ItemFacts(
        Existence.STORED,
        Category(category),
        SubjectState.STOPPED if stopped else SubjectState.ACTIVE,
        True if consent else None,
        document=document,
    )
    trace: list[Step] = []
    decision = evaluator.admit(access, trace)
    if decision.allowed:
        decision = evaluator.decide(access, item, trace)
    told = "granted"
    reason = None
    if not decision.allowed:
        refusal = evaluator.refusal(access, decision)
        told = refusal.message
        reason = refusal.reason.name
    return Explanation(
        policy=policy.name,
        version=policy.version,
        caller=CallerName(caller),
        purpose=Purpose(purpose),
        category=Category(category),
        legal_basis=legal_basis,
        consent=consent,
        stopped=stopped,
        granted=decision.allowed,
        view=decision.view if decision.allowed else None,
        rule=decision.rule,
        reason=reason,
        told=told,
        steps=tuple(trace),
        settings=_settings(policy, CallerName(caller), Purpose(purpose), Category(category)),
        notes=notes_about(policy, [caller, purpose, category], legal_basis=legal_basis is not None),
    )


def _names(items: frozenset[str] | list[str]) -> str:
    return ", ".join(sorted(items)) or "none"


def _settings(
    policy: Policy, caller: CallerName, purpose: Purpose, category: Category
) -> tuple[tuple[str, str], ...]:
    """What the policy file says that the evaluator reads for this request."""
    c = policy.callers[caller]
    p = policy.purposes[purpose]
    k = policy.categories[category]
    view = c.views.get(category)
    return (
        (f"categories.{category}.purposes", _names(k.purposes)),
        (f"callers.{caller}.purposes", _names(c.purposes)),
        (
            f"callers.{caller}.view" + (f"s.{category}" if view else ""),
            (view or c.view).value,
        ),
        (f"callers.{caller}.legal_basis", _names(c.legal_basis)),
        (f"purposes.{purpose}.consent_required", _bool(p.consent_required)),
        (f"purposes.{purpose}.legal_basis_replaces_consent", _bool(p.legal_basis_replaces_consent)),
        (f"purposes.{purpose}.allowed_when_stopped", _bool(p.allowed_when_stopped)),
        ("lifecycle.legal_basis_lifts_stop", _bool(policy.lifecycle.legal_basis_lifts_stop)),
    )


def _bool(value: bool) -> str:
    return "true" if value else "false"


_WORD = re.compile(r"[a-z0-9_*]+")


def notes_about(
    policy: Policy, names: list[str], *, legal_basis: bool = False
) -> tuple[PolicyNote, ...]:
    """The recorded decisions that concern a read of these names (a caller, a purpose, a
    category): those whose `about` names one of them, or every purpose, or (for a read
    stating a legal basis) legal bases. Decisions about retention are not about reads."""
    wanted = set(names)
    found = []
    for note in policy.notes:
        about = note.about.lower()
        if about.startswith("retention"):
            continue
        words = set(_WORD.findall(about))
        if (
            words & wanted
            or "every" in words
            or (legal_basis and "legal" in words)
            or (legal_basis and "callers" in words)
        ):
            found.append(note)
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Grant:
    """One read the policy can grant: `caller` reads `category` for `purpose` with `view`,
    on the conditions of the purpose (consent) and the caller (a legal basis it may state)."""

    caller: CallerName
    purpose: Purpose
    category: Category
    view: View
    consent_required: bool
    allowed_when_stopped: bool
    legal_basis: bool  # the caller may state a legal basis for this purpose

    def conditions(self) -> str:
        said = []
        if self.consent_required:
            said.append("with the subject's consent")
        if self.allowed_when_stopped:
            said.append("stopped accounts too")
        if self.legal_basis:
            said.append("may state a legal basis")
        return "; ".join(said)


def matrix(policy: Policy) -> list[Grant]:
    """Every (caller, purpose, category) the policy grants, sorted, from the same prepared
    decisions the server reads (`Policy.permits`)."""
    grants = []
    for caller in sorted(policy.callers):
        rule = policy.callers[caller]
        for purpose in sorted(rule.purposes):
            p = policy.purposes[purpose]
            for category in sorted(policy.categories):
                d = policy.permits(caller, purpose, category)
                if d.allowed and d.view is not None:
                    grants.append(
                        Grant(
                            caller,
                            purpose,
                            category,
                            d.view,
                            p.consent_required,
                            p.allowed_when_stopped,
                            purpose in rule.legal_basis,
                        )
                    )
    return grants
