"""Retention rules: ISO 8601 periods on the calendar, due dates from recorded events, and the
policy file's [documents] and [retention] tables (the defaults and the mistakes refused)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.domain.documents import DocumentType
from vault.domain.policy import ValueRule
from vault.domain.policy_file import default_policy_text, load_policy, parse_policy
from vault.domain.retention import (
    Period,
    RetentionRule,
    Then,
    Trigger,
    due_date,
    retention_key_owner,
)
from vault.domain.types import Category, Purpose
from vault.errors import ConfigurationError

POLICY = load_policy()
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


# -- periods --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("P7Y", T0, T0.replace(year=2033)),
        ("P30D", T0, T0 + timedelta(days=30)),
        ("P1Y6M", T0, T0.replace(year=2028, month=5)),
        ("PT12H", T0, T0 + timedelta(hours=12)),
        ("P2W", T0, T0 + timedelta(days=14)),
        ("P0D", T0, T0),
        # A year after 29 February ends on 28 February; a month after 31 January, on its last.
        ("P1Y", T0.replace(year=2028, month=2, day=29), T0.replace(year=2029, month=2, day=28)),
        ("P1M", T0.replace(month=1, day=31), T0.replace(month=2, day=28)),
    ],
)
def test_a_period_runs_on_the_calendar(text: str, start: datetime, end: datetime) -> None:
    assert Period.parse(text).after(start) == end


@pytest.mark.parametrize("text", ["", "P", "PT", "7Y", "P7", "P-1D", "P1.5Y", "PT1D", "P1Y2"])
def test_what_is_not_a_period_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        Period.parse(text)


@given(
    st.sampled_from(["P7Y", "P5Y", "P30D", "P540D", "P1Y6M", "PT1H", "P1M"]),
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
    ),
)
def test_an_item_stored_before_the_limit_is_due(text: str, end: datetime) -> None:
    """The sweep asks for items stored before `before(now)`: each of them is due by now."""
    period = Period.parse(text)
    assert period.after(period.before(end)) <= end


# -- due dates ------------------------------------------------------------------------------------


def rule(trigger: Trigger, keep: str = "P30D") -> RetentionRule:
    return RetentionRule("documents.passport", trigger, Period.parse(keep))


def test_due_dates_follow_the_trigger() -> None:
    stored, verified, ended = T0, T0 + timedelta(days=3), T0 + timedelta(days=400)
    thirty = timedelta(days=30)
    assert due_date(rule(Trigger.UPLOAD), stored_at=stored) == stored + thirty
    assert due_date(rule(Trigger.VERIFIED), stored_at=stored, verified_at=verified) == (
        verified + thirty
    )
    # Never verified: kept no longer than the period after its upload.
    assert due_date(rule(Trigger.VERIFIED), stored_at=stored) == stored + thirty
    # The relationship goes on: no date yet.
    assert due_date(rule(Trigger.RELATIONSHIP_END), stored_at=stored) is None
    assert (
        due_date(rule(Trigger.RELATIONSHIP_END), stored_at=stored, relationship_ended_at=ended)
        == ended + thirty
    )


def test_retention_keys_are_per_rule_and_year_and_no_subject_can_name_one() -> None:
    owner = retention_key_owner("documents.passport", T0.replace(year=2033))
    assert owner == "#retention:documents.passport:2033"
    from vault.domain.types import SUBJECT_RE

    assert not SUBJECT_RE.fullmatch(owner)


# -- the default policy ---------------------------------------------------------------------------


def test_every_category_and_document_type_has_a_rule_with_its_source() -> None:
    for category in POLICY.categories.values():
        if category.kind is ValueRule.DOCUMENT:
            assert POLICY.category_rule(category.name) is None
            continue
        kept = POLICY.category_rule(category.name)
        assert kept is not None, category.name
        assert kept.source, category.name
        assert not kept.legal  # a field's values end with their subject
    for document_type in POLICY.documents.types:
        kept = POLICY.document_rule(document_type)
        assert kept is not None, document_type
        assert kept.source
    assert not [f for f in POLICY.check() if "retention" in f and f.startswith("warning")]


def test_identity_documents_are_kept_seven_years_after_the_relationship_ends() -> None:
    """Japan's Act on Prevention of Transfer of Criminal Proceeds (seven years from the end of
    the contract) is longer than FATF R.11's five years after the relationship ends."""
    for t in ("passport", "drivers_license", "residence_card", "my_number_card_front"):
        kept = POLICY.document_rule(DocumentType(t))
        assert kept is not None
        assert (kept.trigger, str(kept.keep), kept.then, kept.legal) == (
            Trigger.RELATIONSHIP_END,
            "P7Y",
            Then.SHRED,
            True,
        )
        assert kept.purposes == {Purpose("third_party_provision")}
        assert "Criminal Proceeds" in kept.source
        assert "FATF" in kept.source


def test_an_insurance_card_goes_thirty_days_after_verification() -> None:
    kept = POLICY.document_rule(DocumentType.HEALTH_INSURANCE_CARD)
    assert kept is not None
    assert (kept.trigger, str(kept.keep), kept.legal) == (Trigger.VERIFIED, "P30D", False)


def test_the_back_of_a_my_number_card_is_never_a_type() -> None:
    assert DocumentType.MY_NUMBER_CARD_BACK not in POLICY.documents.types
    with pytest.raises(ConfigurationError, match="My Number"):
        parse_policy(
            default_policy_text().replace(
                'types = ["passport",', 'types = ["my_number_card_back", "passport",'
            )
        )


def test_the_document_limits() -> None:
    assert POLICY.documents.category == Category("identity_document")
    assert POLICY.documents.max_bytes == 20 * 1024 * 1024
    assert (POLICY.documents.max_pixels, POLICY.documents.max_pages) == (50_000_000, 20)


# -- mistakes in the policy file ------------------------------------------------------------------

BASE = """
[purposes.used]
text = "used"
[purposes.legal]
text = "answering an authority"
[categories.name]
purposes = ["used"]
[categories.identity_document]
kind = "document"
purposes = ["used"]
"""


@pytest.mark.parametrize(
    ("tables", "complaint"),
    [
        ('[retention.categories.name]\ntrigger = "upload"\n', "needs a trigger and a keep"),
        ('[retention.categories.name]\ntrigger = "later"\nkeep = "P1Y"\n', "'later' is not one"),
        ('[retention.categories.name]\ntrigger = "upload"\nkeep = "7 years"\n', "ISO 8601"),
        (
            '[retention.categories.name]\ntrigger = "upload"\nkeep = "P1Y"\nlegal = true\n'
            'purposes = ["legal"]\n',
            "end with their subject",
        ),
        ('[retention.categories.nobody]\ntrigger = "upload"\nkeep = "P1Y"\n', "unknown category"),
        (
            '[retention.categories.identity_document]\ntrigger = "upload"\nkeep = "P1Y"\n',
            "per document type",
        ),
        (
            '[retention.documents.passport]\ntrigger = "upload"\nkeep = "P1Y"\nlegal = true\n',
            "names the purposes",
        ),
        (
            '[retention.documents.passport]\ntrigger = "upload"\nkeep = "P1Y"\n'
            'purposes = ["legal"]\n',
            "only a legal duty",
        ),
        (
            '[retention.documents.passport]\ntrigger = "upload"\nkeep = "P1Y"\n'
            'purposes = ["unheard_of"]\nlegal = true\n',
            "unknown purpose",
        ),
        ('[retention.documents.scroll]\ntrigger = "upload"\nkeep = "P1Y"\n', "'scroll' is not"),
        ('[retention.things.x]\ntrigger = "upload"\nkeep = "P1Y"\n', "retention.things"),
        (
            '[retention.categories.name]\ntrigger = "upload"\nkeep = "P1Y"\nx = 1\n',
            "unknown settings x",
        ),
        ('[documents]\ncategory = "name"\n', "must be of kind document"),
        ("[documents]\nmax_bytes = 0\n", "max_bytes"),
    ],
)
def test_a_mistake_is_named(tables: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        parse_policy(BASE + tables)
    assert complaint in str(err.value)


def test_a_policy_without_a_document_category_accepts_no_documents() -> None:
    policy = parse_policy(
        '[purposes.used]\ntext = "used"\n[categories.name]\npurposes = ["used"]\n'
    )
    assert policy.documents.types == frozenset()
