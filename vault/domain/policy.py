"""The policy: purposes, categories and callers, and the decisions that follow from them.

Why a small evaluator of our own and not Cedar (cedarpy): pdvault's rules are set membership
over three names (caller, purpose, category) plus consent, a shape that fits in a short TOML file
a privacy officer can read beside the privacy policy it comes from. Our evaluator prepares every
decision once at load time (a dict lookup per token on the hot path), names the exact rule that
allowed or refused, and needs no native extension. Cedar would earn its place once policies need
attribute conditions (time windows, per-tenant rules, delegated administration); the `Decision`
type and the `Policy` methods are the seam where it would plug in. See docs/policy.md.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from vault.domain.documents import DocumentType
from vault.domain.quotas import ItemQuota, Rate
from vault.domain.retention import RetentionRule
from vault.domain.types import (
    CallerName,
    Category,
    Purpose,
    TokenFormat,
    View,
)

__all__ = [
    "ALL",
    "OPERATIONS",
    "ApprovalAction",
    "CallerRule",
    "CategoryRule",
    "Decision",
    "DocumentRules",
    "DualControlRules",
    "LifecycleRules",
    "Mask",
    "Policy",
    "PolicyNote",
    "PurposeRule",
    "ValueRule",
]


ALL = "*"
# What operators do through the operator services: keys, the subject lifecycle (and documents'
# deletion and retention sweeps), the audit log, legal holds on documents, callers' API keys,
# approving or rejecting another operator's request under dual control, and the policy in
# force (its reload).
OPERATIONS = frozenset({"keys", "subjects", "audit", "holds", "callers", "approvals", "policy"})


class ApprovalAction(enum.Enum):
    """The irreversible steps dual control can hold for a second operator (PCI DSS 4.0 3.6.1.2
    and 3.7.6: split knowledge and dual control of key-management operations)."""

    KEYS_TRIM = "keys_trim"  # destroys key versions: what they wrapped is unreadable for ever
    CALLER_REVOKE = "caller_revoke"  # revokes a caller's API key
    OPERATOR_SHRED = "operator_shred"  # a crypto-shred an operator asked for, not the subject


@dataclass(frozen=True, slots=True)
class DualControlRules:
    """`[dual_control]` of the policy file: which steps need a second operator, and how long
    a request waits for one. Off (nothing required) by default."""

    required: frozenset[ApprovalAction] = frozenset()
    expires: timedelta = timedelta(hours=24)

    def requires(self, action: ApprovalAction) -> bool:
        return action in self.required


class ValueRule(enum.Enum):
    """Which validator checks a category's values (see `vault.domain.validation`)."""

    TEXT = "text"
    BINARY = "binary"  # opaque bytes (or text) kept as given, up to max_bytes
    DOCUMENT = "document"  # held as documents (DocumentService); Tokenize refuses it
    CARD_NUMBER = "card_number"
    CARD_EXPIRY = "card_expiry"
    EMAIL = "email"
    PHONE = "phone"
    DATE_OF_BIRTH = "date_of_birth"
    IP_ADDRESS = "ip_address"


class Mask(enum.Enum):
    """What a masked view of a category shows (see `vault.domain.masking`)."""

    LAST4 = "last4"
    LAST2 = "last2"
    EMAIL = "email"
    INITIALS = "initials"
    IP_PREFIX = "ip_prefix"
    REDACTED = "redacted"


@dataclass(frozen=True, slots=True)
class PurposeRule:
    name: Purpose
    text: str
    consent_required: bool
    # May read a stopped account's data ("in case you want to come back": kept, not used).
    allowed_when_stopped: bool = False
    # A stated legal basis (Art. 23's exceptions) stands in for the subject's consent, even a
    # withdrawn one: third-party provision under law.
    legal_basis_replaces_consent: bool = False


@dataclass(frozen=True, slots=True)
class CategoryRule:
    name: Category
    row: int | None
    text: str
    kind: ValueRule
    max_bytes: int
    mask: Mask
    purposes: frozenset[Purpose]
    token_formats: frozenset[TokenFormat]


@dataclass(frozen=True, slots=True)
class CallerRule:
    name: CallerName
    text: str
    purposes: frozenset[Purpose]
    view: View
    views: Mapping[Category, View]
    tokenize: frozenset[Category]
    operations: frozenset[str] = frozenset()
    # The purposes for which this caller may state a legal basis; for any other, stating one
    # is refused (a legal basis lifts Account Stop and may replace consent: not for anyone).
    legal_basis: frozenset[Purpose] = frozenset()
    # Workload identities (SPIFFE IDs) whose verified client certificates call as this caller.
    spiffe_ids: frozenset[str] = frozenset()
    # Only with one of those certificates: this caller's API keys alone are refused.
    require_mtls: bool = False
    # Calls per second this caller may make, per process (a token bucket); None: no limit.
    rate: Rate | None = None
    # Items it may ask for per purpose and window, across all processes; a purpose without
    # one is not limited.
    quotas: Mapping[Purpose, ItemQuota] = field(default_factory=dict)

    def view_of(self, category: Category) -> View:
        return self.views.get(category, self.view)


@dataclass(frozen=True, slots=True)
class LifecycleRules:
    """What the subject lifecycle allows, where the privacy policy leaves a choice."""

    # A request stating a legal basis (allowed to its caller for its purpose) may read a
    # stopped account's data.
    legal_basis_lifts_stop: bool = True
    # A stopped account's values may be corrected (default: no; resume it first).
    correct_when_stopped: bool = False


@dataclass(frozen=True, slots=True)
class DocumentRules:
    """What documents pdvault accepts. Reads of documents are decided as reads of `category`
    (the privacy policy's row 7): its purposes, and each caller's view of it; a caller may
    upload documents when it may store that category."""

    category: Category = field(default_factory=lambda: Category("identity_document"))
    types: frozenset[DocumentType] = frozenset(
        t
        for t in DocumentType
        if t not in (DocumentType.MY_NUMBER_CARD_BACK, DocumentType.UNCLASSIFIED)
    )
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000  # decoded image size: against decompression bombs
    max_pages: int = 20


@dataclass(frozen=True, slots=True)
class PolicyNote:
    """A place where the source privacy policy is silent or odd, and what we decided."""

    id: str
    about: str
    text: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of the policy: allowed or not, how much is seen, and which rule said so.

    `rule` is a stable id such as `category:card_number:purposes`; `reason` is a sentence a
    support agent can act on. Neither contains a value.
    """

    allowed: bool
    rule: str
    reason: str
    view: View | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    version: int
    source: str
    purposes: Mapping[Purpose, PurposeRule]
    categories: Mapping[Category, CategoryRule]
    callers: Mapping[CallerName, CallerRule]
    notes: tuple[PolicyNote, ...]
    lifecycle: LifecycleRules = field(default_factory=LifecycleRules)
    documents: DocumentRules = field(default_factory=DocumentRules)
    # `documents.<type>` and `categories.<category>` -> the rule (vault.domain.retention)
    retention: Mapping[str, RetentionRule] = field(default_factory=dict)
    dual_control: DualControlRules = field(default_factory=DualControlRules)
    _reads: dict[tuple[CallerName, Purpose, Category], Decision] = field(
        default_factory=dict, repr=False, compare=False
    )
    _workloads: dict[str, CallerName] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The policy file refuses an identity named by two callers; the first would win here.
        for caller in self.callers.values():
            for spiffe_id in caller.spiffe_ids:
                self._workloads.setdefault(spiffe_id, caller.name)
        # Prepared decisions: every (caller, purpose, category) answered once, at load time.
        for caller in self.callers.values():
            for purpose in caller.purposes:
                for category in self.categories:
                    self._reads[(caller.name, purpose, category)] = self._decide_read(
                        caller, self.purposes[purpose], self.categories[category]
                    )

    # -- questions the use cases ask --------------------------------------------------------

    def caller_of_workload(self, spiffe_id: str) -> CallerName | None:
        """The caller a verified client certificate with this SPIFFE ID calls as; None when
        the policy maps it to no caller (deny by default)."""
        return self._workloads.get(spiffe_id)

    def may_claim(self, caller: CallerName, purpose: Purpose) -> Decision:
        """Whether `caller` may ask for values for `purpose` at all (a whole-request check)."""
        rule = self.callers.get(caller)
        if rule is None:
            return Decision(False, "caller:unknown", f"caller '{caller}' is not in the policy")
        if purpose not in self.purposes:
            return Decision(False, "purpose:unknown", f"purpose '{purpose}' is not in the policy")
        if purpose not in rule.purposes:
            allowed = ", ".join(sorted(rule.purposes)) or "none"
            return Decision(
                False,
                f"caller:{caller}:purposes",
                f"caller '{caller}' may not claim purpose '{purpose}' (it may claim: {allowed})",
            )
        return Decision(True, f"caller:{caller}:purposes", "the caller may claim this purpose")

    def permits(self, caller: CallerName, purpose: Purpose, category: Category) -> Decision:
        """Whether `caller`'s purpose permits `category`, and the view: the policy's part of
        a read, prepared at load time. The whole decision (subject state, consent, legal
        basis, what may be told) is `vault.domain.access.ReadEvaluator`'s."""
        decision = self._reads.get((caller, purpose, category))
        return decision or Decision(False, "policy:no-rule", "no rule allows this read")

    def may_state_legal_basis(self, caller: CallerName, purpose: Purpose) -> Decision:
        """Whether `caller` may state a legal basis for `purpose` (a whole-request check)."""
        rule = self.callers.get(caller)
        if rule is None or purpose not in rule.legal_basis:
            allowed = ", ".join(sorted(rule.legal_basis)) if rule and rule.legal_basis else "none"
            return Decision(
                False,
                f"caller:{caller}:legal_basis",
                f"caller '{caller}' may not state a legal basis for purpose '{purpose}' "
                f"(it may for: {allowed})",
            )
        return Decision(
            True, f"caller:{caller}:legal_basis", "the caller may state a legal basis here"
        )

    def may_tokenize(self, caller: CallerName, category: Category) -> Decision:
        rule = self.callers.get(caller)
        if rule is None:
            return Decision(False, "caller:unknown", f"caller '{caller}' is not in the policy")
        if category not in rule.tokenize:
            return Decision(
                False,
                f"caller:{caller}:tokenize",
                f"caller '{caller}' may not store category '{category}'",
            )
        return Decision(True, f"caller:{caller}:tokenize", "the caller may store this category")

    def may_operate(self, caller: CallerName, operation: str) -> Decision:
        """Whether `caller` may use an operator service (`keys`, `subjects`, `audit`)."""
        rule = self.callers.get(caller)
        if rule is None or operation not in rule.operations:
            return Decision(
                False,
                f"caller:{caller}:operations",
                f"caller '{caller}' may not administer {operation}",
            )
        return Decision(True, f"caller:{caller}:operations", f"the caller administers {operation}")

    def document_rule(self, document_type: DocumentType) -> RetentionRule | None:
        return self.retention.get(f"documents.{document_type.value}")

    def category_rule(self, category: Category) -> RetentionRule | None:
        return self.retention.get(f"categories.{category}")

    def purposes_for(self, category: Category) -> frozenset[Purpose]:
        rule = self.categories.get(category)
        return rule.purposes if rule else frozenset()

    def categories_for(self, purpose: Purpose) -> list[Category]:
        return sorted(c.name for c in self.categories.values() if purpose in c.purposes)

    def check(self) -> list[str]:
        """Findings for `pdv policy check`: the recorded decisions and anything suspicious."""
        findings = [f"decision {n.id} ({n.about}): {n.text}" for n in self.notes]
        for category in self.categories.values():
            if not category.purposes:
                findings.append(f"warning: category '{category.name}' has no purpose")
        readable = {p for c in self.categories.values() for p in c.purposes}
        findings.extend(
            f"warning: purpose '{purpose}' permits no category"
            for purpose in self.purposes
            if purpose not in readable
        )
        for caller in self.callers.values():
            findings.extend(
                f"warning: caller '{caller.name}' may claim '{p}', which permits no category"
                for p in sorted(caller.purposes)
                if p not in readable
            )
        for caller in self.callers.values():
            findings.extend(
                f"warning: caller '{caller.name}' may read values for '{p}' without an item "
                f"quota (callers.{caller.name}.quotas): its reads for it are not limited"
                for p in sorted(caller.purposes)
                if p in readable and p not in caller.quotas
            )
        for category in self.categories.values():
            if (
                category.kind is not ValueRule.DOCUMENT
                and self.category_rule(category.name) is None
            ):
                findings.append(
                    f"warning: category '{category.name}' has no retention rule: its values "
                    "are kept until their subject is deleted"
                )
        for document_type in sorted(self.documents.types, key=lambda t: t.value):
            if self.document_rule(document_type) is None:
                findings.append(
                    f"warning: document type '{document_type.value}' has no retention rule: "
                    "its documents are kept until their subject is deleted"
                )
        return findings

    # -- preparation --------------------------------------------------------------------------

    def _decide_read(
        self, caller: CallerRule, purpose: PurposeRule, category: CategoryRule
    ) -> Decision:
        if purpose.name not in category.purposes:
            permitted = ", ".join(self.categories_for(purpose.name)) or "no category"
            return Decision(
                False,
                f"category:{category.name}:purposes",
                f"purpose '{purpose.name}' is not permitted for category '{category.name}' "
                f"(it permits: {permitted})",
            )
        view = caller.view_of(category.name)
        return Decision(
            True,
            f"category:{category.name}:purposes",
            f"purpose '{purpose.name}' is permitted for category '{category.name}'",
            view,
        )
