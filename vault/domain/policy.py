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
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from vault.domain.types import (
    NAME_RE,
    CallerName,
    Category,
    Purpose,
    TokenFormat,
    View,
)
from vault.errors import ConfigurationError

ALL = "*"
# What operators do through the operator services (keys now; subjects and audit to come).
OPERATIONS = frozenset({"keys", "subjects", "audit"})

K = TypeVar("K", bound=str)
V = TypeVar("V")
E = TypeVar("E", bound=enum.Enum)


class ValueRule(enum.Enum):
    """Which validator checks a category's values (see `vault.domain.validation`)."""

    TEXT = "text"
    DOCUMENT = "document"
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
    _reads: dict[tuple[CallerName, Purpose, Category], Decision] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Prepared decisions: every (caller, purpose, category) answered once, at load time.
        for caller in self.callers.values():
            for purpose in caller.purposes:
                for category in self.categories:
                    self._reads[(caller.name, purpose, category)] = self._decide_read(
                        caller, self.purposes[purpose], self.categories[category]
                    )

    # -- questions the use cases ask --------------------------------------------------------

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


# -- loading ------------------------------------------------------------------------------------


def default_policy_text() -> str:
    return (resources.files("vault.domain") / "policies" / "default.toml").read_text("utf-8")


def load_policy(path: Path | None = None) -> Policy:
    """Load and validate a policy file; the shipped default when `path` is None."""
    text = default_policy_text() if path is None else path.read_text("utf-8")
    return parse_policy(text)


def parse_policy(text: str) -> Policy:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"policy file is not valid TOML: {exc}") from None
    return _Parser(doc).policy()


_FORBIDDEN_CATEGORIES = frozenset({"card_security_code", "cvv", "cvc", "cid", "cvv2", "cvc2"})


class _Parser:
    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.errors: list[str] = []

    def policy(self) -> Policy:
        head = self._table(self.doc, "policy")
        purposes = {
            Purpose(name): PurposeRule(
                Purpose(name),
                str(body.get("text", "")),
                self._bool(body, "consent_required", f"purposes.{name}"),
                self._bool(body, "allowed_when_stopped", f"purposes.{name}"),
                self._bool(body, "legal_basis_replaces_consent", f"purposes.{name}"),
            )
            for name, body in self._named_tables("purposes")
        }
        categories = {
            Category(name): self._category(name, body, purposes)
            for name, body in self._named_tables("categories")
        }
        callers = {
            CallerName(name): self._caller(name, body, purposes, categories)
            for name, body in self._named_tables("callers")
        }
        notes = self._notes()
        life = self._table(self.doc, "lifecycle")
        unknown = sorted(set(life) - {"legal_basis_lifts_stop", "correct_when_stopped"})
        if unknown:
            self.errors.append(f"lifecycle: unknown settings {', '.join(unknown)}")
        lifecycle = LifecycleRules(
            legal_basis_lifts_stop=self._bool(
                life, "legal_basis_lifts_stop", "lifecycle", default=True
            ),
            correct_when_stopped=self._bool(life, "correct_when_stopped", "lifecycle"),
        )
        version = head.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            self.errors.append("policy.version: must be a whole number from 1")
            version = 0
        if self.errors:
            raise ConfigurationError("policy file is invalid: " + "; ".join(self.errors))
        return Policy(
            name=str(head.get("name", "unnamed")),
            version=version,
            source=str(head.get("source", "")),
            purposes=purposes,
            categories=categories,
            callers=callers,
            notes=notes,
            lifecycle=lifecycle,
        )

    def _notes(self) -> tuple[PolicyNote, ...]:
        raw = self.doc.get("decisions", [])
        if not isinstance(raw, list):
            self.errors.append("decisions: must be an array of tables ([[decisions]])")
            return ()
        notes: list[PolicyNote] = []
        for i, n in enumerate(raw):
            if not isinstance(n, Mapping):
                self.errors.append(f"decisions[{i}]: must be a table")
                continue
            note = PolicyNote(str(n.get("id", "")), str(n.get("about", "")), str(n.get("text", "")))
            if not note.id or any(note.id == other.id for other in notes):
                self.errors.append(f"decisions[{i}].id: must be set and unique")
            notes.append(note)
        return tuple(notes)

    def _category(
        self, name: str, body: Mapping[str, Any], purposes: Mapping[Purpose, PurposeRule]
    ) -> CategoryRule:
        where = f"categories.{name}"
        if name in _FORBIDDEN_CATEGORIES:
            self.errors.append(f"{where}: card security codes are never stored (PCI DSS 3.3.1)")
        kind = self._enum(ValueRule, body, "kind", where, ValueRule.TEXT)
        max_bytes = body.get("max_bytes", 4096)
        if not isinstance(max_bytes, int) or not 1 <= max_bytes <= 4 * 1024 * 1024:
            self.errors.append(f"{where}.max_bytes: must be an integer from 1 to 4194304")
            max_bytes = 1
        formats = frozenset(
            self._enum_value(TokenFormat, f, f"{where}.token_formats")
            for f in self._names(body, "token_formats", where, default=["opaque"])
        )
        row = body.get("row")
        if row is not None and (not isinstance(row, int) or isinstance(row, bool)):
            self.errors.append(f"{where}.row: must be the number of a row of the source table")
            row = None
        return CategoryRule(
            name=Category(name),
            row=row,
            text=str(body.get("text", "")),
            kind=kind,
            max_bytes=max_bytes,
            mask=self._enum(Mask, body, "mask", where, Mask.REDACTED),
            purposes=frozenset(
                self._known(Purpose(p), purposes, f"{where}.purposes", "purpose")
                for p in self._names(body, "purposes", where)
            ),
            token_formats=frozenset(f for f in formats if f is not None),
        )

    def _caller(
        self,
        name: str,
        body: Mapping[str, Any],
        purposes: Mapping[Purpose, PurposeRule],
        categories: Mapping[Category, CategoryRule],
    ) -> CallerRule:
        where = f"callers.{name}"
        tokenize_names = self._names(body, "tokenize", where)
        if ALL in tokenize_names:
            tokenize = frozenset(categories)
        else:
            tokenize = frozenset(
                self._known(Category(c), categories, f"{where}.tokenize", "category")
                for c in tokenize_names
            )
        operations = frozenset(self._names(body, "operations", where))
        for op in sorted(operations - OPERATIONS):
            self.errors.append(f"{where}.operations: unknown operation '{op}'")
        views_doc = body.get("views", {})
        views: dict[Category, View] = {}
        if isinstance(views_doc, Mapping):
            for cat, v in views_doc.items():
                view = self._enum_value(View, v, f"{where}.views.{cat}")
                if view is not None:
                    views[self._known(Category(cat), categories, f"{where}.views", "category")] = (
                        view
                    )
        claimed = frozenset(
            self._known(Purpose(p), purposes, f"{where}.purposes", "purpose")
            for p in self._names(body, "purposes", where)
        )
        legal_basis = frozenset(Purpose(p) for p in self._names(body, "legal_basis", where))
        for p in sorted(legal_basis - claimed):
            self.errors.append(
                f"{where}.legal_basis: '{p}' is not one of the purposes this caller may claim"
            )
        return CallerRule(
            name=CallerName(name),
            text=str(body.get("text", "")),
            purposes=claimed,
            view=self._enum(View, body, "view", where, View.MASKED),
            views=views,
            tokenize=tokenize,
            operations=operations & OPERATIONS,
            legal_basis=legal_basis & claimed,
        )

    # -- small helpers --

    def _table(self, doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, Mapping):
            self.errors.append(f"{key}: must be a table")
            return {}
        return value

    def _named_tables(self, key: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
        for name, body in self._table(self.doc, key).items():
            if not NAME_RE.fullmatch(name):
                self.errors.append(f"{key}.{name}: names are lower_snake_case, 1-64 characters")
            if not isinstance(body, Mapping):
                self.errors.append(f"{key}.{name}: must be a table")
                continue
            yield name, body

    def _names(
        self, body: Mapping[str, Any], key: str, where: str, default: list[str] | None = None
    ) -> list[str]:
        value = body.get(key, default if default is not None else [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.errors.append(f"{where}.{key}: must be a list of names")
            return []
        return list(value)

    def _bool(self, body: Mapping[str, Any], key: str, where: str, default: bool = False) -> bool:
        value = body.get(key, default)
        if not isinstance(value, bool):
            self.errors.append(f"{where}.{key}: must be true or false")
            return False
        return value

    def _known(self, name: K, known: Mapping[K, V], where: str, what: str) -> K:
        if name not in known:
            self.errors.append(f"{where}: unknown {what} '{name}'")
        return name

    def _enum(self, cls: type[E], body: Mapping[str, Any], key: str, where: str, default: E) -> E:
        if key not in body:
            return default
        value = self._enum_value(cls, body[key], f"{where}.{key}")
        return default if value is None else value

    def _enum_value(self, cls: type[E], raw: object, where: str) -> E | None:
        try:
            return cls(raw)
        except ValueError:
            choices = ", ".join(str(m.value) for m in cls)
            self.errors.append(f"{where}: '{raw}' is not one of {choices}")
            return None
