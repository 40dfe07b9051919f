"""The policy file: TOML in, a validated `Policy` out (or one ConfigurationError listing every
mistake). The shipped default, `policies/default.toml`, is written from a real privacy policy;
docs/policy.md says how each row maps."""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Iterable, Mapping
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from vault.domain.documents import DocumentType
from vault.domain.identity import spiffe_id_problem
from vault.domain.policy import (
    ALL,
    OPERATIONS,
    ApprovalAction,
    CallerRule,
    CategoryRule,
    DocumentRules,
    DualControlRules,
    LifecycleRules,
    Mask,
    Policy,
    PolicyNote,
    PurposeRule,
    ValueRule,
)
from vault.domain.quotas import ItemQuota, Rate, parse_window
from vault.domain.retention import Period, RetentionRule, Then, Trigger
from vault.domain.types import NAME_RE, CallerName, Category, Purpose, TokenFormat, View
from vault.errors import ConfigurationError

__all__ = ["default_policy_text", "load_policy", "parse_policy"]

K = TypeVar("K", bound=str)
V = TypeVar("V")
E = TypeVar("E", bound=enum.Enum)


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


_MAX_RATE = 1_000_000  # calls per second, and a bucket's size
_MAX_ITEMS = 1_000_000_000  # items per window
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
        self._one_caller_per_workload(callers)
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
        documents = self._documents(categories)
        retention = self._retention(purposes, categories, documents)
        dual_control = self._dual_control(callers)
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
            documents=documents,
            retention=retention,
            dual_control=dual_control,
        )

    def _dual_control(self, callers: Mapping[CallerName, CallerRule]) -> DualControlRules:
        """`[dual_control]`: `required` (steps that wait for a second operator) and `expires`
        (an ISO 8601 duration of minutes to days: how long a request waits)."""
        body = self._table(self.doc, "dual_control")
        where = "dual_control"
        unknown = sorted(set(body) - {"required", "expires"})
        if unknown:
            self.errors.append(f"{where}: unknown settings {', '.join(unknown)}")
        required = frozenset(
            a
            for a in (
                self._enum_value(ApprovalAction, name, f"{where}.required")
                for name in self._names(body, "required", where)
            )
            if a is not None
        )
        expires = DualControlRules().expires
        raw = body.get("expires")
        if raw is not None:
            try:
                period = Period.parse(str(raw)) if isinstance(raw, str) else None
            except ValueError:
                period = None
            low, high = timedelta(minutes=1), timedelta(days=30)
            if period is None or period.years or period.months or not low <= period.exact <= high:
                self.errors.append(
                    f"{where}.expires: must be an ISO 8601 duration from PT1M to P30D, "
                    "such as PT24H"
                )
            else:
                expires = period.exact
        approvers = {c.name for c in callers.values() if "approvals" in c.operations}
        stranded = sorted(
            c.name
            for c in callers.values()
            if c.operations & {"keys", "callers", "subjects"} and not approvers - {c.name}
        )
        if required and stranded:
            # A request is never approved by the caller that made it.
            self.errors.append(
                f"{where}.required: no other caller has the approvals operation to approve "
                f"what {', '.join(stranded)} request: give a second operator approvals"
            )
        return DualControlRules(required, expires)

    def _documents(self, categories: Mapping[Category, CategoryRule]) -> DocumentRules:
        body = self._table(self.doc, "documents")
        default = DocumentRules()
        if not body:
            # Without a [documents] table, documents are accepted only if the policy has the
            # default's document category.
            held = categories.get(default.category)
            if held is not None and held.kind is ValueRule.DOCUMENT:
                return default
            return DocumentRules(types=frozenset())
        where = "documents"
        unknown = sorted(set(body) - {"category", "types", "max_bytes", "max_pixels", "max_pages"})
        if unknown:
            self.errors.append(f"{where}: unknown settings {', '.join(unknown)}")
        category = Category(str(body.get("category", default.category)))
        rule = categories.get(category)
        if rule is None:
            self.errors.append(f"{where}.category: unknown category '{category}'")
        elif rule.kind is not ValueRule.DOCUMENT:
            self.errors.append(f"{where}.category: category '{category}' must be of kind document")
        types: set[DocumentType] = set()
        for name in self._names(body, "types", where, [t.value for t in default.types]):
            t = self._enum_value(DocumentType, name, f"{where}.types")
            if t is DocumentType.UNCLASSIFIED:
                self.errors.append(
                    f"{where}.types: unclassified documents come only from the retired "
                    "identity_document field, never from an upload"
                )
            elif t is DocumentType.MY_NUMBER_CARD_BACK:
                self.errors.append(
                    f"{where}.types: the back of a My Number card must not be copied or recorded "
                    "(My Number Act Arts. 15, 20)"
                )
            elif t is not None:
                types.add(t)
        return DocumentRules(
            category=category,
            types=frozenset(types),
            max_bytes=self._int(body, "max_bytes", where, default.max_bytes, 1, 256 * 1024 * 1024),
            max_pixels=self._int(body, "max_pixels", where, default.max_pixels, 1, 500_000_000),
            max_pages=self._int(body, "max_pages", where, default.max_pages, 1, 10_000),
        )

    def _retention(
        self,
        purposes: Mapping[Purpose, PurposeRule],
        categories: Mapping[Category, CategoryRule],
        documents: DocumentRules,
    ) -> dict[str, RetentionRule]:
        body = self._table(self.doc, "retention")
        rules: dict[str, RetentionRule] = {}
        for group in sorted(set(body) - {"documents", "categories"}):
            self.errors.append(f"retention.{group}: must be retention.documents or .categories")
        for name, rule_body in self._named_tables_in(body, "documents", "retention.documents"):
            t = self._enum_value(DocumentType, name, "retention.documents")
            if t is not None and t not in documents.types and t is not DocumentType.UNCLASSIFIED:
                self.errors.append(f"retention.documents.{name}: not a type of [documents].types")
            rules[f"documents.{name}"] = self._rule(
                f"documents.{name}", rule_body, purposes, document=True
            )
        for name, rule_body in self._named_tables_in(body, "categories", "retention.categories"):
            category = categories.get(Category(name))
            if category is None:
                self.errors.append(f"retention.categories.{name}: unknown category '{name}'")
            elif category.kind is ValueRule.DOCUMENT:
                self.errors.append(
                    f"retention.categories.{name}: a document category's retention is set per "
                    "document type (retention.documents.<type>)"
                )
            rules[f"categories.{name}"] = self._rule(
                f"categories.{name}", rule_body, purposes, document=False
            )
        return rules

    def _rule(
        self,
        name: str,
        body: Mapping[str, Any],
        purposes: Mapping[Purpose, PurposeRule],
        document: bool,
    ) -> RetentionRule:
        where = f"retention.{name}"
        unknown = sorted(set(body) - {"trigger", "keep", "then", "legal", "purposes", "source"})
        if unknown:
            self.errors.append(f"{where}: unknown settings {', '.join(unknown)}")
        if "trigger" not in body or "keep" not in body:
            self.errors.append(f"{where}: needs a trigger and a keep period")
        trigger = self._enum(Trigger, body, "trigger", where, Trigger.UPLOAD)
        keep = Period()
        raw_keep = body.get("keep", "P0D")
        try:
            keep = Period.parse(str(raw_keep))
        except ValueError as exc:
            self.errors.append(f"{where}.keep: {exc}")
        then = self._enum(Then, body, "then", where, Then.SHRED)
        legal = self._bool(body, "legal", where)
        retained_for = frozenset(
            self._known(Purpose(p), purposes, f"{where}.purposes", "purpose")
            for p in self._names(body, "purposes", where)
        )
        if not document and (legal or retained_for or then is not Then.SHRED):
            self.errors.append(
                f"{where}: a field category's values end with their subject; only documents "
                "may be kept past it (legal, purposes) or keep a sanitized copy"
            )
        if legal and not retained_for:
            self.errors.append(
                f"{where}.purposes: a legal duty to keep names the purposes a kept document "
                "may still be read for"
            )
        if retained_for and not legal:
            self.errors.append(
                f"{where}.purposes: only a legal duty (legal = true) keeps a "
                "document past its subject's deletion"
            )
        return RetentionRule(
            name, trigger, keep, then, legal, retained_for, str(body.get("source", ""))
        )

    def _named_tables_in(
        self, body: Mapping[str, Any], key: str, where: str
    ) -> Iterable[tuple[str, Mapping[str, Any]]]:
        group = body.get(key, {})
        if not isinstance(group, Mapping):
            self.errors.append(f"{where}: must be a table")
            return
        for name, rule in group.items():
            if not isinstance(rule, Mapping):
                self.errors.append(f"{where}.{name}: must be a table")
                continue
            yield name, rule

    def _int(
        self, body: Mapping[str, Any], key: str, where: str, default: int, low: int, high: int
    ) -> int:
        value = body.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.errors.append(f"{where}.{key}: must be an integer from {low} to {high}")
            return default
        return value

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
        spiffe_ids = self._spiffe_ids(body, where)
        require_mtls = self._bool(body, "require_mtls", where)
        if require_mtls and not spiffe_ids:
            self.errors.append(
                f"{where}.require_mtls: this caller could never call; give it a spiffe_id"
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
            spiffe_ids=spiffe_ids,
            require_mtls=require_mtls,
            rate=self._rate(body, where),
            quotas=self._quotas(body, where, claimed),
        )

    def _rate(self, body: Mapping[str, Any], where: str) -> Rate | None:
        """`rate = { per_second = 50, burst = 100 }`: a token bucket per caller and process."""
        if "rate" not in body:
            return None
        raw = body["rate"]
        where = f"{where}.rate"
        if not isinstance(raw, Mapping):
            self.errors.append(f"{where}: must be a table: {{ per_second = 50, burst = 100 }}")
            return None
        unknown = sorted(set(raw) - {"per_second", "burst"})
        if unknown:
            self.errors.append(f"{where}: unknown settings {', '.join(unknown)}")
        per_second = raw.get("per_second")
        if (
            not isinstance(per_second, int | float)
            or isinstance(per_second, bool)
            or not 0 < per_second <= _MAX_RATE
        ):
            self.errors.append(
                f"{where}.per_second: must be a number of calls per second above 0 and at most "
                f"{_MAX_RATE}"
            )
            per_second = None
        default_burst = max(1, int(per_second)) if per_second is not None else 1
        burst = self._int(raw, "burst", where, default_burst, 1, _MAX_RATE)
        return None if per_second is None else Rate(float(per_second), burst)

    def _quotas(
        self, body: Mapping[str, Any], where: str, claimed: frozenset[Purpose]
    ) -> dict[Purpose, ItemQuota]:
        """`[callers.<name>.quotas]` `<purpose> = { items = 10000, window = "1h" }`."""
        raw = body.get("quotas", {})
        where = f"{where}.quotas"
        if not isinstance(raw, Mapping):
            self.errors.append(f"{where}: must be a table of purpose = {{ items, window }}")
            return {}
        quotas: dict[Purpose, ItemQuota] = {}
        for purpose, spec in raw.items():
            at = f"{where}.{purpose}"
            if purpose not in claimed:
                self.errors.append(
                    f"{at}: '{purpose}' is not one of the purposes this caller may claim"
                )
                continue
            if not isinstance(spec, Mapping):
                self.errors.append(f'{at}: must be a table: {{ items = 10000, window = "1h" }}')
                continue
            unknown = sorted(set(spec) - {"items", "window"})
            if unknown:
                self.errors.append(f"{at}: unknown settings {', '.join(unknown)}")
            if "items" not in spec or "window" not in spec:
                self.errors.append(f"{at}: needs items and window")
                continue
            items = self._int(spec, "items", at, 0, 1, _MAX_ITEMS)
            window_text = spec["window"]
            if not isinstance(window_text, str):
                self.errors.append(f'{at}.window: must be a string such as "1h"')
                continue
            try:
                window = parse_window(window_text)
            except ValueError as exc:
                self.errors.append(f"{at}.window: {exc}")
                continue
            if items:
                quotas[Purpose(purpose)] = ItemQuota(items, window, window_text)
        return quotas

    def _spiffe_ids(self, body: Mapping[str, Any], where: str) -> frozenset[str]:
        """`spiffe_id`: one workload identity, or a list of them."""
        value = body.get("spiffe_id", [])
        listed = [value] if isinstance(value, str) else value
        if not isinstance(listed, list) or not all(isinstance(v, str) for v in listed):
            self.errors.append(f"{where}.spiffe_id: must be a SPIFFE ID or a list of them")
            return frozenset()
        for spiffe_id in listed:
            problem = spiffe_id_problem(spiffe_id)
            if problem is not None:
                self.errors.append(f"{where}.spiffe_id: '{spiffe_id[:80]}': {problem}")
        return frozenset(listed)

    def _one_caller_per_workload(self, callers: Mapping[CallerName, CallerRule]) -> None:
        owner: dict[str, CallerName] = {}
        for caller in callers.values():
            for spiffe_id in sorted(caller.spiffe_ids):
                first = owner.setdefault(spiffe_id, caller.name)
                if first != caller.name:
                    self.errors.append(
                        f"callers.{caller.name}.spiffe_id: '{spiffe_id}' is already the "
                        f"identity of caller '{first}': one workload identity, one caller"
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
