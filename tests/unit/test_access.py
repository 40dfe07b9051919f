"""The read evaluator, from a table of facts and by a property, without a database.

Every read path (detokenize, correction, export, documents) asks `ReadEvaluator`; these tests
pin what it answers for each combination that matters, and that a refusal which may not reveal
existence is byte-identical, on the wire, to an unknown token's (issue #10 §1).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.domain.access import (
    UNKNOWN,
    Access,
    Existence,
    ItemFacts,
    Operation,
    ReadEvaluator,
)
from vault.domain.policy_file import default_policy_text, load_policy, parse_policy
from vault.domain.types import CallerName, Category, LegalBasis, Purpose, SubjectState, View
from vault.errors import Reason
from vault.transport.status import to_status_proto

POLICY = load_policy()
EVALUATOR = ReadEvaluator(POLICY)
ACTIVE, STOPPED = SubjectState.ACTIVE, SubjectState.STOPPED
LAW = LegalBasis.LAW_OR_REGULATION


def stored(category: str, state: SubjectState = ACTIVE, consent: bool | None = None) -> ItemFacts:
    return ItemFacts(Existence.STORED, Category(category), state, consent)


def shredded(category: str) -> ItemFacts:
    return ItemFacts(Existence.SHREDDED, Category(category))


def ask(caller: str, purpose: str, legal: LegalBasis | None = None) -> Access:
    return Access(CallerName(caller), Purpose(purpose), legal)


@dataclass(frozen=True)
class Row:
    access: Access
    item: ItemFacts
    allowed: bool
    rule: str
    reason: Reason | None
    reveals: bool = True
    view: View | None = None


TABLE = [
    # Granted, with the caller's view.
    Row(
        ask("payment", "payment"),
        stored("card_number"),
        True,
        "category:card_number:purposes",
        None,
        False,
        View.FULL,
    ),
    Row(
        ask("support", "customer_support"),
        stored("card_number"),
        True,
        "category:card_number:purposes",
        None,
        False,
        View.MASKED,
    ),
    # Unknown, and a category the purpose does not permit: told nothing, alike.
    Row(
        ask("shipping", "product_shipping"),
        UNKNOWN,
        False,
        "token:unknown",
        Reason.TOKEN_REFUSED,
        False,
    ),
    Row(
        ask("shipping", "product_shipping"),
        stored("card_number"),
        False,
        "category:card_number:purposes",
        Reason.TOKEN_REFUSED,
        False,
    ),
    Row(
        ask("shipping", "product_shipping"),
        shredded("card_number"),
        False,
        "category:card_number:purposes",
        Reason.TOKEN_REFUSED,
        False,
    ),
    # Shredded, to a caller who could have read it: told.
    Row(
        ask("payment", "payment"),
        shredded("card_number"),
        False,
        "subject:shredded",
        Reason.SUBJECT_DELETED,
    ),
    # Account Stop: refused, but fraud_prevention is allowed on stopped accounts (policy data),
    # and a stated legal basis lifts it (policy data: lifecycle.legal_basis_lifts_stop).
    Row(
        ask("payment", "payment"),
        stored("card_number", STOPPED),
        False,
        "subject:stopped",
        Reason.SUBJECT_STOPPED,
    ),
    Row(
        ask("payment", "fraud_prevention"),
        stored("card_number", STOPPED),
        True,
        "category:card_number:purposes",
        None,
        False,
        View.FULL,
    ),
    Row(
        ask("legal", "fraud_prevention", LAW),
        stored("name", STOPPED),
        True,
        "category:name:purposes",
        None,
        False,
        View.FULL,
    ),
    # Consent: withdrawn and required refuse; a legal basis replaces consent where the policy
    # says so (third_party_provision), even a withdrawal.
    Row(
        ask("shipping", "product_shipping"),
        stored("name", consent=False),
        False,
        "purpose:product_shipping:withdrawn",
        Reason.CONSENT_WITHDRAWN,
    ),
    Row(
        ask("legal", "third_party_provision"),
        stored("name"),
        False,
        "purpose:third_party_provision:consent",
        Reason.CONSENT_REQUIRED,
    ),
    Row(
        ask("legal", "third_party_provision"),
        stored("name", consent=True),
        True,
        "purpose:third_party_provision:consent",
        None,
        False,
        View.FULL,
    ),
    Row(
        ask("legal", "third_party_provision", LAW),
        stored("name", consent=False),
        True,
        "purpose:third_party_provision:legal_basis:law_or_regulation",
        None,
        False,
        View.FULL,
    ),
    Row(
        ask("legal", "third_party_provision", LAW),
        stored("name", STOPPED),
        True,
        "purpose:third_party_provision:legal_basis:law_or_regulation",
        None,
        False,
        View.FULL,
    ),
]


@pytest.mark.parametrize("row", TABLE, ids=lambda r: f"{r.access.caller}-{r.rule}")
def test_the_table(row: Row) -> None:
    assert EVALUATOR.admit(row.access).allowed
    d = EVALUATOR.decide(row.access, row.item)
    assert (d.allowed, d.rule, d.reason) == (row.allowed, row.rule, row.reason)
    assert d.view is row.view
    if not d.allowed:
        assert d.reveals_existence is row.reveals


@pytest.mark.parametrize(
    ("access", "rule", "reason"),
    [
        (ask("shipping", "payment"), "caller:shipping:purposes", Reason.PERMISSION_DENIED),
        (ask("mallory", "payment"), "caller:unknown", Reason.PERMISSION_DENIED),
        (ask("payment", "payment", LAW), "caller:payment:legal_basis", Reason.LEGAL_BASIS_REFUSED),
        (
            Access(CallerName("payment"), operation=Operation.CORRECT),
            "caller:payment:operations",
            Reason.PERMISSION_DENIED,
        ),
    ],
)
def test_whole_request_refusals(access: Access, rule: str, reason: Reason) -> None:
    d = EVALUATOR.admit(access)
    assert (d.allowed, d.rule, d.reason) == (False, rule, reason)


def test_lifecycle_operations() -> None:
    correct = Access(CallerName("ops"), operation=Operation.CORRECT)
    export = Access(CallerName("ops"), operation=Operation.EXPORT)
    assert EVALUATOR.admit(correct).allowed
    assert EVALUATOR.decide(correct, stored("address")).allowed
    stopped = EVALUATOR.decide(correct, stored("address", STOPPED))
    assert (stopped.allowed, stopped.reason) == (False, Reason.SUBJECT_STOPPED)
    assert EVALUATOR.decide(export, stored("address", STOPPED)).allowed  # right of access
    assert EVALUATOR.decide(correct, shredded("address")).reason is Reason.SUBJECT_DELETED
    assert not EVALUATOR.decide(correct, UNKNOWN).reveals_existence
    lenient = ReadEvaluator(
        parse_policy(
            default_policy_text().replace(
                "correct_when_stopped = false", "correct_when_stopped = true"
            )
        )
    )
    assert lenient.decide(correct, stored("address", STOPPED)).allowed


def test_a_policy_without_legal_basis_replacing_consent_needs_consent() -> None:
    """ "A legal basis replaces consent" is data in the policy file, not code."""
    strict = ReadEvaluator(
        parse_policy(
            default_policy_text().replace(
                "legal_basis_replaces_consent = true", "legal_basis_replaces_consent = false"
            )
        )
    )
    d = strict.decide(ask("legal", "third_party_provision", LAW), stored("name"))
    assert (d.allowed, d.reason) == (False, Reason.CONSENT_REQUIRED)


# -- the property: a refused existing token answers as an unknown one does, byte for byte -------

CLAIMS = sorted((c.name, p) for c in POLICY.callers.values() for p in sorted(c.purposes))


@given(
    claim=st.sampled_from(CLAIMS),
    category=st.sampled_from(sorted(POLICY.categories)),
    existence=st.sampled_from([Existence.STORED, Existence.SHREDDED]),
    state=st.sampled_from([ACTIVE, STOPPED]),
    consent=st.sampled_from([None, True, False]),
    legal=st.sampled_from([None, *LegalBasis]),
)
@settings(max_examples=600, deadline=None)
def test_a_refusal_that_may_not_tell_is_the_unknown_tokens_answer(
    claim: tuple[CallerName, Purpose],
    category: Category,
    existence: Existence,
    state: SubjectState,
    consent: bool | None,
    legal: LegalBasis | None,
) -> None:
    caller, purpose = claim
    access = Access(caller, purpose, legal)
    if not EVALUATOR.admit(access).allowed:
        return  # refused whole: the same for every token
    item = (
        ItemFacts(existence, category, state, consent)
        if existence is Existence.STORED
        else ItemFacts(existence, category)
    )
    decision = EVALUATOR.decide(access, item)
    unknown = EVALUATOR.decide(access, UNKNOWN)
    wire = to_status_proto(EVALUATOR.refusal(access, unknown)).SerializeToString()
    if not decision.allowed and not decision.reveals_existence:
        got = to_status_proto(EVALUATOR.refusal(access, decision)).SerializeToString()
        assert got == wire
    # And whatever is refused for the category alone never tells: it reveals only lifecycle
    # facts of a token the caller could have read.
    if not POLICY.permits(caller, purpose, category).allowed:
        assert not decision.allowed
        assert not decision.reveals_existence
