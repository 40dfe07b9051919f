"""The default policy against the privacy policy it was written from.

Source: Engoo Privacy Policy (DMM.com LLC, last revised August 19, 2021), table "Forms and
purposes of use of personal information regarding retained personal data". Every one of its 13
rows has a test below that quotes the row and checks that the categories mapped to it allow
exactly the purposes the row lists, matched through the purposes' `text` in default.toml, and
nothing else. Where default.toml departs from the literal text it cites a [[decisions]] entry,
and each decision has a test of its own.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from vault.domain.access import Access, Existence, ItemFacts, ReadDecision, ReadEvaluator
from vault.domain.policy import Decision, Mask, Policy, ValueRule
from vault.domain.policy_file import default_policy_text, load_policy, parse_policy
from vault.domain.types import CallerName, Category, Purpose, SubjectState, TokenFormat, View
from vault.errors import ConfigurationError, Reason

# A caller that claims every purpose, added to the default policy so that every
# (purpose, category) pair gets a real decision from the read evaluator.
EVERY = CallerName("every_purpose")
DEMO_CALLERS = ("payment", "shipping", "support", "kyc", "legal", "ops", "security")
CONSENT_BOUND = frozenset(
    Purpose(p)
    for p in (
        "third_party_provision",
        "usage_analysis",
        "service_improvement",
        "new_service_planning",
    )
)


def read(
    policy: Policy,
    caller: CallerName,
    purpose: Purpose,
    category: Category,
    consents: frozenset[Purpose] | set[Purpose] = frozenset(),
) -> ReadDecision:
    """The read evaluator's decision for a stored value of an active subject who consented to
    `consents` (the same evaluator every read path of the server asks)."""
    facts = ItemFacts(Existence.STORED, category, SubjectState.ACTIVE, purpose in consents or None)
    return ReadEvaluator(policy).decide(Access(caller, purpose), facts)


def _with_every_purpose_caller() -> Policy:
    base = load_policy()
    names = ", ".join(f'"{p}"' for p in sorted(base.purposes))
    extra = f'\n[callers.{EVERY}]\ntext = "test only"\npurposes = [{names}]\nview = "full"\n'
    return parse_policy(default_policy_text() + extra)


POLICY = load_policy()
FULL = _with_every_purpose_caller()
ALL_PURPOSES = frozenset(FULL.purposes)


# -- the rows -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of the table.

    `text` is the row's purposes, verbatim. `phrases` are phrases of that text that are, word
    for word (case aside), the `text` of a purpose in default.toml. `decided` maps phrases the
    file reads differently to (purpose, decision id); `dropped` maps phrases it deliberately does
    not turn into a purpose to the decision id that says why. `refused` are purposes the row does
    not list, named for emphasis (every other purpose is checked as well).
    """

    number: int
    heading: str
    text: str
    categories: tuple[str, ...]
    phrases: tuple[str, ...]
    refused: tuple[str, ...]
    decided: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    dropped: Mapping[str, str] = field(default_factory=dict)


def _purpose_by_text(phrase: str) -> Purpose:
    matches = [p.name for p in FULL.purposes.values() if p.text.lower() == phrase.lower()]
    assert len(matches) == 1, f"no single purpose has the text {phrase!r}: {matches}"
    return matches[0]


def _check_row(row: Row) -> None:
    note_ids = {n.id for n in FULL.notes}
    mapped = {c.name for c in FULL.categories.values() if c.row == row.number}
    assert mapped == set(row.categories), f"row {row.number} maps to {sorted(mapped)}"

    expected: set[Purpose] = set()
    for phrase in row.phrases:
        assert phrase.lower() in row.text.lower(), f"{phrase!r} is not in row {row.number}"
        expected.add(_purpose_by_text(phrase))
    for phrase, (purpose, note) in row.decided.items():
        assert phrase.lower() in row.text.lower(), f"{phrase!r} is not in row {row.number}"
        assert note in note_ids
        expected.add(Purpose(purpose))
    for phrase, note in row.dropped.items():
        assert phrase.lower() in row.text.lower(), f"{phrase!r} is not in row {row.number}"
        assert note in note_ids

    for refused in row.refused:
        assert Purpose(refused) in ALL_PURPOSES
        assert Purpose(refused) not in expected

    for name in row.categories:
        category = Category(name)
        assert FULL.purposes_for(category) == expected, name
        for purpose in ALL_PURPOSES:
            # Consent is given for everything here: this checks the category dimension alone.
            decision = read(FULL, EVERY, purpose, category, consents=ALL_PURPOSES)
            assert decision.allowed is (purpose in expected), (name, purpose, decision)
            if purpose not in expected:
                assert decision.rule == f"category:{name}:purposes"
                assert decision.view is None
        for refused in row.refused:
            decision = read(FULL, EVERY, Purpose(refused), category, consents=ALL_PURPOSES)
            assert not decision.allowed
            assert f"purpose '{refused}' is not permitted for category '{name}'" in decision.message


ROW_1 = Row(
    number=1,
    heading="Name",
    text=(
        "Personal inquiries, product shipping, payment, customer support, prevention and "
        "investigation of and countermeasures against unauthorized use, provision to sellers as "
        "shipping address information for products in DMM Marketplace, notice of changes to our "
        "website, introducing new services on our website, performance of other tasks necessary "
        "for transactions, mailing and sending advertisements for our services and the like as "
        "well as those of other companies, provision to third parties."
    ),
    categories=("name",),
    phrases=(
        "Personal inquiries",
        "product shipping",
        "payment",
        "customer support",
        "prevention and investigation of and countermeasures against unauthorized use",
        "provision to sellers as shipping address information for products in DMM Marketplace",
        "notice of changes to our website",
        "introducing new services on our website",
        "performance of other tasks necessary for transactions",
        "mailing and sending advertisements for our services and the like as well as those of "
        "other companies",
        "provision to third parties",
    ),
    refused=("identity_verification", "user_notifications", "usage_analysis"),
)

ROW_2 = Row(
    number=2,
    heading="Address",
    text=(
        "Personal inquiries, product shipping, payment, customer support, prevention and "
        "investigation of and countermeasures against unauthorized use, provision to sellers as "
        "shipping address information for products in DMM Marketplace, introducing new services "
        "on our website, performance of other tasks necessary for transactions, mailing and "
        "sending advertisements for."
    ),
    categories=("address",),
    phrases=(
        "Personal inquiries",
        "product shipping",
        "payment",
        "customer support",
        "prevention and investigation of and countermeasures against unauthorized use",
        "provision to sellers as shipping address information for products in DMM Marketplace",
        "introducing new services on our website",
        "performance of other tasks necessary for transactions",
    ),
    decided={"mailing and sending advertisements for.": ("advertising", "address-row-cut-off")},
    refused=("third_party_provision", "service_change_notices", "user_notifications"),
)

ROW_3 = Row(
    number=3,
    heading="Telephone number",
    text=(
        "Personal inquiries, product shipping, payment, customer support, prevention and "
        "investigation of and countermeasures against unauthorized use, performance of other "
        "tasks necessary for transactions, provision to third parties."
    ),
    categories=("phone",),
    phrases=(
        "Personal inquiries",
        "product shipping",
        "payment",
        "customer support",
        "prevention and investigation of and countermeasures against unauthorized use",
        "performance of other tasks necessary for transactions",
        "provision to third parties",
    ),
    refused=("advertising", "marketplace_shipping_provision", "service_change_notices"),
)

ROW_4 = Row(
    number=4,
    heading="Email address",
    text=(
        "Personal inquiries, payment, customer support, prevention and investigation of and "
        "countermeasures against unauthorized use, performance of other tasks necessary for "
        "transactions, notice of changes to our website, notification messages for the user, "
        "provision to third parties."
    ),
    categories=("email",),
    phrases=(
        "Personal inquiries",
        "payment",
        "customer support",
        "prevention and investigation of and countermeasures against unauthorized use",
        "performance of other tasks necessary for transactions",
        "notice of changes to our website",
        "notification messages for the user",
        "provision to third parties",
    ),
    refused=("product_shipping", "new_service_introduction", "advertising"),
)

ROW_5 = Row(
    number=5,
    heading="Credit card information (name, number, expiration date)",
    text=(
        "Personal inquiries, payment, customer support, prevention and investigation of and "
        "countermeasures against unauthorized use, performance of other tasks necessary for "
        "transactions, notice of changes to our website."
    ),
    categories=("card_number", "card_holder", "card_expiry"),
    phrases=(
        "Personal inquiries",
        "payment",
        "customer support",
        "prevention and investigation of and countermeasures against unauthorized use",
        "performance of other tasks necessary for transactions",
        "notice of changes to our website",
    ),
    refused=("product_shipping", "third_party_provision", "advertising"),
)

ROW_6 = Row(
    number=6,
    heading="Bank account information (name, account number, etc.)",
    text=(
        "Payment of advertising fees, proceeds, remuneration, and the like, customer support, "
        "performance of other tasks necessary for transactions."
    ),
    categories=("bank_account",),
    phrases=("customer support", "performance of other tasks necessary for transactions"),
    decided={
        "Payment of advertising fees, proceeds, remuneration, and the like": (
            "payment",
            "bank-account-payment",
        )
    },
    refused=("product_shipping", "advertising", "personal_inquiries"),
)

ROW_7 = Row(
    number=7,
    heading=(
        "Official documents for identity verification or age verification "
        "(driver's license, insurance card, etc.)"
    ),
    text="Identity verification, name verification.",
    categories=("identity_document",),
    phrases=("Identity verification", "name verification"),
    refused=("payment", "customer_support", "fraud_prevention"),
)

ROW_8 = Row(
    number=8,
    heading="Transaction details",
    text=(
        "Product shipping, payment, customer support, prevention and investigation of and "
        "countermeasures against unauthorized use, other tasks necessary for transactions, "
        "provision to third parties."
    ),
    categories=("transaction_details",),
    phrases=(
        "Product shipping",
        "payment",
        "customer support",
        "prevention and investigation of and countermeasures against unauthorized use",
        "provision to third parties",
    ),
    decided={"other tasks necessary for transactions": ("transaction_tasks", "row-8-other-tasks")},
    refused=("personal_inquiries", "advertising", "marketplace_shipping_provision"),
)

_QUESTIONS = "responding to your questions or asking our own questions of you"

ROW_9 = Row(
    number=9,
    heading="IP address",
    text=(
        "Prevention and investigation of and countermeasures against unauthorized use, "
        "responding to your questions or asking our own questions of you"
    ),
    categories=("ip_address",),
    phrases=("Prevention and investigation of and countermeasures against unauthorized use",),
    decided={_QUESTIONS: ("personal_inquiries", "questions-are-personal-inquiries")},
    refused=("advertising", "customer_support", "third_party_provision"),
)

ROW_10 = Row(
    number=10,
    heading="User agents (browser used, device information, etc.)",
    text=(
        "Prevention and investigation of and countermeasures against unauthorized use, "
        "responding to your questions or asking our own questions of you."
    ),
    categories=("user_agent",),
    phrases=("Prevention and investigation of and countermeasures against unauthorized use",),
    decided={_QUESTIONS: ("personal_inquiries", "questions-are-personal-inquiries")},
    refused=("advertising", "multiple_login_detection", "customer_support"),
)

ROW_11 = Row(
    number=11,
    heading="Any information voluntarily entered by you",
    text=(
        "Customer identification, provision of content from registration, provision to third "
        "parties."
    ),
    categories=("voluntary_information",),
    phrases=(
        "Customer identification",
        "provision of content from registration",
        "provision to third parties",
    ),
    refused=("advertising", "customer_support", "identity_verification"),
)

ROW_12 = Row(
    number=12,
    heading="Other information collected automatically when you visit our website",
    text=(
        "User authentication at login and logout, transfer of member information during any "
        "service transitions, multiple login detection, determining whether to allow use of "
        "sample videos, prevention and investigation of and countermeasures against "
        "unauthorized use."
    ),
    categories=("automatic_information",),
    phrases=(
        "User authentication at login and logout",
        "transfer of member information during any service transitions",
        "multiple login detection",
        "determining whether to allow use of sample videos",
        "prevention and investigation of and countermeasures against unauthorized use",
    ),
    refused=("personal_inquiries", "usage_analysis", "third_party_provision"),
)

ROW_13 = Row(
    number=13,
    heading="Any other information provided with your advance consent",
    text=(
        "Limited to analysis of service usage, service improvement, and as reference for "
        "planning new services, as well as purposes of use indicated at the time the "
        "information is collected."
    ),
    categories=("consented_information",),
    phrases=(
        "analysis of service usage",
        "service improvement",
        "as reference for planning new services",
    ),
    dropped={
        "purposes of use indicated at the time the information is collected": (
            "row-13-collection-time-purposes"
        )
    },
    refused=("third_party_provision", "advertising", "new_service_introduction"),
)

ROWS = (
    ROW_1, ROW_2, ROW_3, ROW_4, ROW_5, ROW_6, ROW_7,
    ROW_8, ROW_9, ROW_10, ROW_11, ROW_12, ROW_13,
)  # fmt: skip


def test_row_01_name() -> None:
    """Row 1, "Name": "Personal inquiries, product shipping, payment, customer support,
    prevention and investigation of and countermeasures against unauthorized use, provision to
    sellers as shipping address information for products in DMM Marketplace, notice of changes to
    our website, introducing new services on our website, performance of other tasks necessary for
    transactions, mailing and sending advertisements for our services and the like as well as
    those of other companies, provision to third parties."
    """
    _check_row(ROW_1)


def test_row_02_address() -> None:
    """Row 2, "Address": "Personal inquiries, product shipping, payment, customer support,
    prevention and investigation of and countermeasures against unauthorized use, provision to
    sellers as shipping address information for products in DMM Marketplace, introducing new
    services on our website, performance of other tasks necessary for transactions, mailing and
    sending advertisements for."  (decision: address-row-cut-off)
    """
    _check_row(ROW_2)


def test_row_03_telephone_number() -> None:
    """Row 3, "Telephone number": "Personal inquiries, product shipping, payment, customer
    support, prevention and investigation of and countermeasures against unauthorized use,
    performance of other tasks necessary for transactions, provision to third parties."
    """
    _check_row(ROW_3)


def test_row_04_email_address() -> None:
    """Row 4, "Email address": "Personal inquiries, payment, customer support, prevention and
    investigation of and countermeasures against unauthorized use, performance of other tasks
    necessary for transactions, notice of changes to our website, notification messages for the
    user, provision to third parties."
    """
    _check_row(ROW_4)


def test_row_05_credit_card_information() -> None:
    """Row 5, "Credit card information (name, number, expiration date)": "Personal inquiries,
    payment, customer support, prevention and investigation of and countermeasures against
    unauthorized use, performance of other tasks necessary for transactions, notice of changes to
    our website."  (decision: card-row-split)
    """
    _check_row(ROW_5)


def test_row_06_bank_account_information() -> None:
    """Row 6, "Bank account information (name, account number, etc.)": "Payment of advertising
    fees, proceeds, remuneration, and the like, customer support, performance of other tasks
    necessary for transactions."  (decision: bank-account-payment)
    """
    _check_row(ROW_6)
    shipping = read(
        POLICY, CallerName("shipping"), Purpose("product_shipping"), Category("bank_account")
    )
    assert not shipping.allowed
    assert shipping.rule == "category:bank_account:purposes"


def test_row_07_official_identity_documents() -> None:
    """Row 7, "Official documents for identity verification or age verification (driver's
    license, insurance card, etc.)": "Identity verification, name verification."
    """
    _check_row(ROW_7)
    payment = read(POLICY, CallerName("payment"), Purpose("payment"), Category("identity_document"))
    assert not payment.allowed
    assert payment.rule == "category:identity_document:purposes"


def test_row_08_transaction_details() -> None:
    """Row 8, "Transaction details": "Product shipping, payment, customer support, prevention
    and investigation of and countermeasures against unauthorized use, other tasks necessary for
    transactions, provision to third parties."  (decision: row-8-other-tasks)
    """
    _check_row(ROW_8)


def test_row_09_ip_address() -> None:
    """Row 9, "IP address": "Prevention and investigation of and countermeasures against
    unauthorized use, responding to your questions or asking our own questions of you"
    (decision: questions-are-personal-inquiries)
    """
    _check_row(ROW_9)
    ads = read(FULL, EVERY, Purpose("advertising"), Category("ip_address"))
    assert not ads.allowed
    assert ads.rule == "category:ip_address:purposes"


def test_row_10_user_agents() -> None:
    """Row 10, "User agents (browser used, device information, etc.)": "Prevention and
    investigation of and countermeasures against unauthorized use, responding to your questions
    or asking our own questions of you."  (decision: questions-are-personal-inquiries)
    """
    _check_row(ROW_10)


def test_row_11_voluntary_information() -> None:
    """Row 11, "Any information voluntarily entered by you": "Customer identification, provision
    of content from registration, provision to third parties."
    """
    _check_row(ROW_11)


def test_row_12_automatic_information() -> None:
    """Row 12, "Other information collected automatically when you visit our website": "User
    authentication at login and logout, transfer of member information during any service
    transitions, multiple login detection, determining whether to allow use of sample videos,
    prevention and investigation of and countermeasures against unauthorized use."
    (decision: automatic-information)
    """
    _check_row(ROW_12)


def test_row_13_consented_information() -> None:
    """Row 13, "Any other information provided with your advance consent": "Limited to analysis of
    service usage, service improvement, and as reference for planning new services, as well as
    purposes of use indicated at the time the information is collected."
    (decision: row-13-collection-time-purposes)
    """
    _check_row(ROW_13)


def test_the_rows_cover_the_whole_table() -> None:
    assert [r.number for r in ROWS] == list(range(1, 14))
    covered = {c for r in ROWS for c in r.categories}
    with_row = {c.name for c in POLICY.categories.values() if c.row is not None}
    assert covered == with_row
    # The only category without a row is date_of_birth (decision: date-of-birth-has-no-row).
    assert set(POLICY.categories) - with_row == {"date_of_birth"}


def test_every_purpose_comes_from_a_row() -> None:
    used: set[Purpose] = {_purpose_by_text(p) for r in ROWS for p in r.phrases}
    used |= {Purpose(p) for r in ROWS for p, _ in r.decided.values()}
    assert used == set(POLICY.purposes)


def test_category_texts_name_their_rows() -> None:
    for row in ROWS:
        for name in row.categories:
            text = POLICY.categories[Category(name)].text
            assert text.startswith(row.heading), (name, text)


# -- the decisions --------------------------------------------------------------------------------


def _note_ids_in_file() -> list[str]:
    doc = tomllib.loads(default_policy_text())
    return [str(d["id"]) for d in doc["decisions"]]


def test_every_decision_is_loaded() -> None:
    ids = _note_ids_in_file()
    assert len(ids) == len(set(ids)) == 21
    assert [n.id for n in POLICY.notes] == ids
    assert all(n.about and n.text for n in POLICY.notes)


def test_decision_date_of_birth_only_identity_verification() -> None:
    """date-of-birth-has-no-row: stored, read only for identity_verification."""
    dob = POLICY.categories[Category("date_of_birth")]
    assert dob.row is None
    assert dob.purposes == {"identity_verification"}
    assert dob.kind is ValueRule.DATE_OF_BIRTH
    assert dob.mask is Mask.REDACTED
    kyc = read(
        POLICY, CallerName("kyc"), Purpose("identity_verification"), Category("date_of_birth")
    )
    assert kyc.allowed
    assert kyc.view is View.FULL
    assert kyc.rule == "category:date_of_birth:purposes"
    for purpose in ALL_PURPOSES - {"identity_verification"}:
        decision = read(FULL, EVERY, purpose, Category("date_of_birth"), ALL_PURPOSES)
        assert not decision.allowed, purpose
    name_check = read(
        POLICY, CallerName("kyc"), Purpose("name_verification"), Category("date_of_birth")
    )
    assert not name_check.allowed


def test_decision_address_allows_advertising() -> None:
    """address-row-cut-off: advertising yes; third parties and change notices no."""
    address = Category("address")
    assert read(FULL, EVERY, Purpose("advertising"), address).allowed
    for purpose in ("third_party_provision", "service_change_notices"):
        decision = read(FULL, EVERY, Purpose(purpose), address, ALL_PURPOSES)
        assert not decision.allowed
        assert decision.rule == "category:address:purposes"


def test_decision_bank_account_payment() -> None:
    """bank-account-payment: the payment caller reads bank accounts in full for payment."""
    decision = read(POLICY, CallerName("payment"), Purpose("payment"), Category("bank_account"))
    assert decision.allowed
    assert decision.view is View.FULL


def test_decision_questions_are_personal_inquiries() -> None:
    """questions-are-personal-inquiries: ip_address and user_agent for personal_inquiries."""
    for name in ("ip_address", "user_agent"):
        decision = read(
            POLICY, CallerName("support"), Purpose("personal_inquiries"), Category(name)
        )
        assert decision.allowed
        assert decision.view is View.MASKED


def test_decision_card_row_split() -> None:
    """card-row-split: three categories with one row's purposes, each validated and masked."""
    names = [Category(n) for n in ("card_number", "card_holder", "card_expiry")]
    rules = [POLICY.categories[n] for n in names]
    assert {r.row for r in rules} == {5}
    assert len({r.purposes for r in rules}) == 1
    assert [r.kind for r in rules] == [
        ValueRule.CARD_NUMBER,
        ValueRule.TEXT,
        ValueRule.CARD_EXPIRY,
    ]
    assert [r.mask for r in rules] == [Mask.LAST4, Mask.INITIALS, Mask.REDACTED]
    assert rules[0].token_formats == {TokenFormat.OPAQUE, TokenFormat.CARD_NUMBER}
    assert rules[1].token_formats == rules[2].token_formats == {TokenFormat.OPAQUE}
    for forbidden in ("card_security_code", "cvv", "cvc", "cid", "cvv2", "cvc2"):
        assert Category(forbidden) not in POLICY.categories


@pytest.mark.parametrize("name", ["card_security_code", "cvv", "cvc", "cid", "cvv2", "cvc2"])
def test_decision_card_security_code_categories_are_rejected(name: str) -> None:
    text = (
        '[purposes.payment]\ntext = "payment"\n'
        f'[categories.{name}]\nkind = "text"\npurposes = ["payment"]\n'
    )
    with pytest.raises(ConfigurationError) as excinfo:
        parse_policy(text)
    assert f"categories.{name}" in excinfo.value.message
    assert "PCI DSS 3.3.1" in excinfo.value.message


def test_decision_consent_bound_purposes_are_exactly_four() -> None:
    """third-party-provision-consent and row-13-collection-time-purposes."""
    bound = {p.name for p in POLICY.purposes.values() if p.consent_required}
    assert bound == CONSENT_BOUND


@pytest.mark.parametrize(
    ("purpose", "category"),
    [
        ("third_party_provision", "name"),
        ("third_party_provision", "phone"),
        ("third_party_provision", "email"),
        ("third_party_provision", "transaction_details"),
        ("third_party_provision", "voluntary_information"),
        ("usage_analysis", "consented_information"),
        ("service_improvement", "consented_information"),
        ("new_service_planning", "consented_information"),
    ],
)
def test_decision_consent_bound_purpose(purpose: str, category: str) -> None:
    p, c = Purpose(purpose), Category(category)
    refused = read(FULL, EVERY, p, c)
    assert not refused.allowed
    assert refused.rule == f"purpose:{purpose}:consent"
    assert "consent" in refused.message
    assert refused.reason is Reason.CONSENT_REQUIRED
    assert refused.view is None

    other = next(iter(CONSENT_BOUND - {p}))
    assert not read(FULL, EVERY, p, c, consents=frozenset({other})).allowed

    allowed = read(FULL, EVERY, p, c, consents=frozenset({p}))
    assert allowed.allowed
    assert allowed.rule == f"purpose:{purpose}:consent"
    assert allowed.view is View.FULL


def test_consent_does_not_open_what_the_category_refuses() -> None:
    decision = read(
        FULL,
        EVERY,
        Purpose("third_party_provision"),
        Category("card_number"),
        consents=frozenset({Purpose("third_party_provision")}),
    )
    assert not decision.allowed
    assert decision.rule == "category:card_number:purposes"


def test_purposes_without_consent_ignore_consents() -> None:
    plain = read(FULL, EVERY, Purpose("payment"), Category("card_number"))
    assert plain.allowed
    assert plain.rule == "category:card_number:purposes"
    assert read(FULL, EVERY, Purpose("payment"), Category("card_number"), ALL_PURPOSES) == plain


def test_decision_row_8_other_tasks() -> None:
    assert "transaction_tasks" in POLICY.purposes_for(Category("transaction_details"))


def test_decision_automatic_information() -> None:
    """automatic-information: IP address and user agent follow their own rows, not row 12."""
    auto = POLICY.purposes_for(Category("automatic_information"))
    for name in ("ip_address", "user_agent"):
        assert POLICY.categories[Category(name)].row in {9, 10}
        assert POLICY.purposes_for(Category(name)) != auto


def test_decision_marketing_notices() -> None:
    """marketing-notices: email has notifications, not introductions; address the reverse."""
    email = POLICY.purposes_for(Category("email"))
    address = POLICY.purposes_for(Category("address"))
    assert "user_notifications" in email
    assert "new_service_introduction" not in email
    assert "new_service_introduction" in address
    assert "user_notifications" not in address


def test_check_returns_every_decision_note_id() -> None:
    findings = POLICY.check()
    for note_id in _note_ids_in_file():
        assert sum(f.startswith(f"decision {note_id} (") for f in findings) == 1, note_id
    assert not [f for f in findings if f.startswith("warning:")]
    assert len(findings) == len(POLICY.notes)


def test_check_warns_about_unused_names() -> None:
    policy = parse_policy(
        """
        [purposes.used]
        text = "used"
        [purposes.unused]
        text = "unused"
        [categories.lonely]
        purposes = []
        [categories.fine]
        purposes = ["used"]
        [callers.svc]
        purposes = ["unused"]
        [[decisions]]
        id = "one"
        about = "fine"
        text = "a note"
        """
    )
    assert policy.check() == [
        "decision one (fine): a note",
        "warning: category 'lonely' has no purpose",
        "warning: purpose 'unused' permits no category",
        "warning: caller 'svc' may claim 'unused', which permits no category",
        "warning: category 'lonely' has no retention rule: its values are kept until their "
        "subject is deleted",
        "warning: category 'fine' has no retention rule: its values are kept until their "
        "subject is deleted",
    ]


# -- the demo callers -----------------------------------------------------------------------------

CLAIMS: dict[str, set[str]] = {
    "payment": {"payment", "fraud_prevention", "transaction_tasks"},
    "shipping": {"product_shipping", "marketplace_shipping_provision"},
    "support": {"customer_support", "personal_inquiries"},
    "kyc": {"identity_verification", "name_verification"},
    "legal": {"third_party_provision", "fraud_prevention"},
    "ops": set(),
    "security": set(),
}


def test_the_demo_callers() -> None:
    assert set(POLICY.callers) == set(DEMO_CALLERS)


@pytest.mark.parametrize("caller", DEMO_CALLERS)
def test_may_claim(caller: str) -> None:
    name = CallerName(caller)
    assert POLICY.callers[name].purposes == CLAIMS[caller]
    for purpose in POLICY.purposes:
        decision = POLICY.may_claim(name, purpose)
        assert decision.rule == f"caller:{caller}:purposes"
        assert decision.view is None
        assert decision.allowed is (purpose in CLAIMS[caller]), purpose
        if not decision.allowed:
            may = ", ".join(sorted(CLAIMS[caller])) or "none"
            assert decision.reason == (
                f"caller '{caller}' may not claim purpose '{purpose}' (it may claim: {may})"
            )


def test_may_claim_refusal_names_what_the_caller_may_claim() -> None:
    decision = POLICY.may_claim(CallerName("support"), Purpose("payment"))
    assert not decision.allowed
    assert decision.reason.endswith("(it may claim: customer_support, personal_inquiries)")
    ops = POLICY.may_claim(CallerName("ops"), Purpose("payment"))
    assert ops.reason.endswith("(it may claim: none)")


def test_may_claim_unknown_caller_and_purpose() -> None:
    unknown = POLICY.may_claim(CallerName("mallory"), Purpose("payment"))
    assert unknown == Decision(False, "caller:unknown", "caller 'mallory' is not in the policy")
    bad = POLICY.may_claim(CallerName("payment"), Purpose("world_domination"))
    assert bad == Decision(
        False, "purpose:unknown", "purpose 'world_domination' is not in the policy"
    )


@pytest.mark.parametrize(
    ("caller", "purpose", "category", "view"),
    [
        ("payment", "payment", "card_number", View.FULL),
        ("payment", "fraud_prevention", "ip_address", View.FULL),
        ("payment", "transaction_tasks", "bank_account", View.FULL),
        ("shipping", "product_shipping", "address", View.FULL),
        ("shipping", "marketplace_shipping_provision", "name", View.FULL),
        ("support", "customer_support", "card_number", View.MASKED),
        ("support", "personal_inquiries", "email", View.MASKED),
        ("kyc", "identity_verification", "identity_document", View.FULL),
        ("kyc", "name_verification", "identity_document", View.FULL),
    ],
)
def test_may_read_view(caller: str, purpose: str, category: str, view: View) -> None:
    decision = read(POLICY, CallerName(caller), Purpose(purpose), Category(category))
    assert decision.allowed
    assert decision.view is view
    assert decision.rule == f"category:{category}:purposes"
    assert decision.message == f"purpose '{purpose}' is permitted for category '{category}'"


def test_support_sees_everything_masked() -> None:
    support = CallerName("support")
    for purpose in CLAIMS["support"]:
        for category in POLICY.categories_for(Purpose(purpose)):
            decision = read(POLICY, support, Purpose(purpose), category)
            assert decision.allowed
            assert decision.view is View.MASKED


def test_may_read_refusal_names_what_the_purpose_permits() -> None:
    decision = read(
        POLICY, CallerName("shipping"), Purpose("product_shipping"), Category("card_number")
    )
    assert not decision.allowed
    assert decision.view is None
    assert decision.rule == "category:card_number:purposes"
    permitted = ", ".join(POLICY.categories_for(Purpose("product_shipping")))
    assert permitted == "address, name, phone, transaction_details"
    assert decision.message == (
        "purpose 'product_shipping' is not permitted for category 'card_number' "
        f"(it permits: {permitted})"
    )
    assert decision.reason is Reason.TOKEN_REFUSED
    assert not decision.reveals_existence  # it answers as an unknown token does


@pytest.mark.parametrize(
    ("caller", "purpose", "category"),
    [
        ("ops", "payment", "card_number"),  # ops claims nothing
        ("support", "payment", "card_number"),  # not a purpose support claims
        ("mallory", "payment", "card_number"),  # not a caller
        ("payment", "payment", "no_such_category"),
    ],
)
def test_may_read_without_a_rule(caller: str, purpose: str, category: str) -> None:
    decision = read(POLICY, CallerName(caller), Purpose(purpose), Category(category))
    assert (decision.allowed, decision.rule, decision.message) == (
        False,
        "policy:no-rule",
        "no rule allows this read",
    )


def test_views_override_per_category() -> None:
    policy = parse_policy(
        """
        [purposes.p]
        text = "p"
        [categories.a]
        purposes = ["p"]
        [categories.b]
        purposes = ["p"]
        [callers.c]
        purposes = ["p"]
        view = "masked"
        views = { b = "full" }
        """
    )
    c, p = CallerName("c"), Purpose("p")
    assert read(policy, c, p, Category("a")).view is View.MASKED
    assert read(policy, c, p, Category("b")).view is View.FULL


TOKENIZE: dict[str, set[str]] = {
    "payment": {
        "card_number", "card_holder", "card_expiry", "bank_account", "name", "email", "phone",
        "address",
    },
    "shipping": {"name", "address", "phone"},
    "support": set(),
    "kyc": set(POLICY.categories),
    "legal": set(),
    "ops": set(),
    "security": set(),
}  # fmt: skip


@pytest.mark.parametrize("caller", DEMO_CALLERS)
def test_may_tokenize(caller: str) -> None:
    name = CallerName(caller)
    for category in POLICY.categories:
        decision = POLICY.may_tokenize(name, category)
        assert decision.rule == f"caller:{caller}:tokenize"
        assert decision.allowed is (category in TOKENIZE[caller]), category
        if not decision.allowed:
            assert decision.reason == f"caller '{caller}' may not store category '{category}'"


def test_kyc_may_store_everything_support_nothing() -> None:
    assert POLICY.callers[CallerName("kyc")].tokenize == set(POLICY.categories)
    assert POLICY.callers[CallerName("support")].tokenize == frozenset()
    unknown = POLICY.may_tokenize(CallerName("mallory"), Category("name"))
    assert unknown == Decision(False, "caller:unknown", "caller 'mallory' is not in the policy")


def test_policy_header() -> None:
    assert POLICY.name == "engoo-privacy-policy"
    assert POLICY.version == 1
    assert "August 19, 2021" in POLICY.source


def test_categories_for_and_purposes_for() -> None:
    assert POLICY.categories_for(Purpose("name_verification")) == ["identity_document"]
    assert POLICY.categories_for(Purpose("no_such_purpose")) == []
    assert POLICY.purposes_for(Category("no_such_category")) == frozenset()


# -- parse_policy errors --------------------------------------------------------------------------

_P = '[purposes.payment]\ntext = "payment"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            _P + '[categories.name]\npurposes = ["payment", "gossip"]\n',
            "categories.name.purposes: unknown purpose 'gossip'",
            id="unknown-purpose-in-category",
        ),
        pytest.param(
            _P + '[callers.svc]\npurposes = ["gossip"]\n',
            "callers.svc.purposes: unknown purpose 'gossip'",
            id="unknown-purpose-in-caller",
        ),
        pytest.param(
            _P + '[callers.svc]\ntokenize = ["diary"]\n',
            "callers.svc.tokenize: unknown category 'diary'",
            id="unknown-category-in-caller-tokenize",
        ),
        pytest.param(
            _P + '[callers.svc]\nviews = { diary = "full" }\n',
            "callers.svc.views: unknown category 'diary'",
            id="unknown-category-in-caller-views",
        ),
        pytest.param(
            _P + '[categories.name]\nkind = "blob"\n',
            "categories.name.kind: 'blob' is not one of text, binary, document, card_number",
            id="bad-kind",
        ),
        pytest.param(
            _P + '[categories.name]\nmask = "hidden"\n',
            "categories.name.mask: 'hidden' is not one of last4, last2, email",
            id="bad-mask",
        ),
        pytest.param(
            _P + '[categories.name]\ntoken_formats = ["fpe"]\n',
            "categories.name.token_formats: 'fpe' is not one of opaque, card_number",
            id="bad-token-format",
        ),
        pytest.param(
            _P + '[callers.svc]\nview = "partial"\n',
            "callers.svc.view: 'partial' is not one of full, masked",
            id="bad-view",
        ),
        pytest.param(
            _P + '[categories.name]\n[callers.svc]\nviews = { name = "partial" }\n',
            "callers.svc.views.name: 'partial' is not one of full, masked",
            id="bad-view-per-category",
        ),
        pytest.param(
            '[purposes.payment]\nconsent_required = "yes"\n',
            "purposes.payment.consent_required: must be true or false",
            id="bad-bool",
        ),
        pytest.param(
            _P + "[categories.name]\nmax_bytes = 0\n",
            "categories.name.max_bytes: must be an integer from 1 to 4194304",
            id="max-bytes-zero",
        ),
        pytest.param(
            _P + "[categories.name]\nmax_bytes = 4194305\n",
            "categories.name.max_bytes: must be an integer from 1 to 4194304",
            id="max-bytes-too-large",
        ),
        pytest.param(
            _P + '[categories.name]\nmax_bytes = "10"\n',
            "categories.name.max_bytes: must be an integer from 1 to 4194304",
            id="max-bytes-not-int",
        ),
        pytest.param(
            _P + '[categories.name]\npurposes = "payment"\n',
            "categories.name.purposes: must be a list of names",
            id="purposes-not-a-list",
        ),
        pytest.param(
            _P + "[callers.svc]\ntokenize = [1]\n",
            "callers.svc.tokenize: must be a list of names",
            id="tokenize-not-names",
        ),
        pytest.param(
            _P + '[categories.CardNumber]\nkind = "text"\n',
            "categories.CardNumber: names are lower_snake_case",
            id="category-name-not-snake-case",
        ),
        pytest.param(
            '[purposes."bad-name"]\ntext = "x"\n',
            "purposes.bad-name: names are lower_snake_case",
            id="purpose-name-not-snake-case",
        ),
        pytest.param(
            _P + "[callers.Payment]\n",
            "callers.Payment: names are lower_snake_case",
            id="caller-name-not-snake-case",
        ),
        pytest.param(
            _P + "[categories._x]\n",
            "categories._x: names are lower_snake_case",
            id="name-starting-with-underscore",
        ),
        pytest.param(
            _P + f"[categories.{'a' * 65}]\n",
            f"categories.{'a' * 65}: names are lower_snake_case, 1-64 characters",
            id="name-too-long",
        ),
        pytest.param(
            _P + "[categories]\nname = 3\n",
            "categories.name: must be a table",
            id="category-not-a-table",
        ),
        pytest.param(
            'purposes = "payment"\n',
            "purposes: must be a table",
            id="purposes-not-a-table",
        ),
        pytest.param(
            'policy = "x"\n',
            "policy: must be a table",
            id="policy-not-a-table",
        ),
    ],
)
def test_parse_policy_errors_name_the_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        parse_policy(text)
    assert excinfo.value.message.startswith("policy file is invalid: ")
    assert expected in excinfo.value.message
    assert excinfo.value.reason is Reason.CONFIGURATION


def test_parse_policy_invalid_toml() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        parse_policy('[purposes.payment\ntext = "payment"\n')
    assert excinfo.value.message.startswith("policy file is not valid TOML: ")
    assert "line 1" in excinfo.value.message


def test_parse_policy_reports_every_error_at_once() -> None:
    text = (
        _P
        + '[categories.name]\nkind = "blob"\npurposes = ["gossip"]\n'
        + '[callers.svc]\nview = "partial"\ntokenize = ["diary"]\n'
    )
    with pytest.raises(ConfigurationError) as excinfo:
        parse_policy(text)
    message = excinfo.value.message
    for part in (
        "categories.name.kind",
        "categories.name.purposes: unknown purpose 'gossip'",
        "callers.svc.view",
        "callers.svc.tokenize: unknown category 'diary'",
    ):
        assert part in message
    assert message.count("; ") == 3


def test_parse_policy_defaults() -> None:
    policy = parse_policy(_P + '[categories.name]\npurposes = ["payment"]\n[callers.svc]\n')
    category = policy.categories[Category("name")]
    assert category.kind is ValueRule.TEXT
    assert category.mask is Mask.REDACTED
    assert category.max_bytes == 4096
    assert category.row is None
    assert category.token_formats == {TokenFormat.OPAQUE}
    caller = policy.callers[CallerName("svc")]
    assert caller.view is View.MASKED
    assert caller.purposes == frozenset()
    assert caller.tokenize == frozenset()
    assert policy.purposes[Purpose("payment")].consent_required is False
    assert policy.name == "unnamed"
    assert policy.version == 1
    assert policy.notes == ()


def test_tokenize_star_means_every_category() -> None:
    policy = parse_policy(_P + '[categories.a]\n[categories.b]\n[callers.svc]\ntokenize = ["*"]\n')
    assert policy.callers[CallerName("svc")].tokenize == {"a", "b"}


def test_the_empty_policy_parses() -> None:
    policy = parse_policy("")
    assert not policy.purposes
    assert not policy.categories
    assert not policy.callers


def test_parse_policy_decisions_must_be_tables() -> None:
    with pytest.raises(ConfigurationError, match="decisions"):
        parse_policy('decisions = ["not a table"]\n')


def test_parse_policy_version_must_be_an_integer() -> None:
    with pytest.raises(ConfigurationError, match=r"policy\.version"):
        parse_policy('[policy]\nversion = "two"\n')
