"""Masked renderings of values: what a caller with a `masked` view sees."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.domain.masking import REDACTED, mask
from vault.domain.policy import Mask
from vault.domain.policy_file import load_policy
from vault.domain.types import Category, PlainValue


def masked(rule: Mask, text: str) -> str:
    return mask(rule, PlainValue.text(text))


# One case (at least) for every Mask kind: (mask, value, what it shows).
CASES: list[tuple[Mask, str, str]] = [
    (Mask.LAST4, "4111111111111111", "************1111"),
    (Mask.LAST4, "4111 1111 1111 1111", "************1111"),
    (Mask.LAST4, "4111-1111-1111-1111", "************1111"),
    (Mask.LAST4, "DE89 3704 0044 0532 0130 00", "******************3000"),
    (Mask.LAST4, "12345678", "****5678"),
    (Mask.LAST2, "+15551234567", "*********67"),
    (Mask.LAST2, "03-1234-5678", "********78"),
    (Mask.LAST2, "1234", "**34"),
    (Mask.EMAIL, "alice@example.com", "a***@example.com"),
    (Mask.EMAIL, "Alice.Smith+tag@example.com", "A***@example.com"),
    (Mask.EMAIL, "odd@local@example.com", "o***@example.com"),
    (Mask.INITIALS, "Ada Lovelace", "A. L."),
    (Mask.INITIALS, "Ada  King\tLovelace", "A. K. L."),
    (Mask.INITIALS, "山田 太郎", "山. 太."),
    (Mask.IP_PREFIX, "192.0.2.55", "192.0.0.0/16"),
    (Mask.IP_PREFIX, "10.250.3.4", "10.250.0.0/16"),
    (Mask.IP_PREFIX, "2001:db8:abcd:12::1", "2001:db8::/32"),
    (Mask.IP_PREFIX, "::1", "::/32"),
    (Mask.REDACTED, "1 Main St, Springfield", REDACTED),
    (Mask.REDACTED, "x", REDACTED),
]


def test_every_mask_kind_has_a_case() -> None:
    assert {m for m, _, _ in CASES} == set(Mask)


@pytest.mark.parametrize(("rule", "text", "shown"), CASES)
def test_mask(rule: Mask, text: str, shown: str) -> None:
    assert masked(rule, text) == shown


def test_redacted_text() -> None:
    assert REDACTED == "[redacted]"


@pytest.mark.parametrize("rule", list(Mask))
def test_binary_is_redacted_for_every_mask(rule: Mask) -> None:
    assert mask(rule, PlainValue.binary(b"\x89PNG 4111111111111111 alice@example.com")) == REDACTED


@pytest.mark.parametrize(
    ("rule", "text", "shown"),
    [
        # Fewer than 2n alphanumerics: nothing is shown, only as many stars.
        (Mask.LAST4, "1234567", "*******"),
        (Mask.LAST4, "12-34", "****"),
        (Mask.LAST4, "1", "*"),
        (Mask.LAST2, "123", "***"),
        (Mask.LAST2, "1", "*"),
        (Mask.LAST4, "", ""),
        (Mask.LAST4, "- -", ""),
    ],
)
def test_short_values_are_fully_masked(rule: Mask, text: str, shown: str) -> None:
    assert masked(rule, text) == shown


@pytest.mark.parametrize(
    ("rule", "text"),
    [
        (Mask.EMAIL, "@example.com"),
        (Mask.EMAIL, "not an address"),
        (Mask.EMAIL, ""),
        (Mask.INITIALS, ""),
        (Mask.INITIALS, "  \t "),
        (Mask.IP_PREFIX, "not an address"),
        (Mask.IP_PREFIX, "192.0.2.1/24"),
        (Mask.IP_PREFIX, ""),
    ],
)
def test_values_a_mask_cannot_read_are_redacted(rule: Mask, text: str) -> None:
    assert masked(rule, text) == REDACTED


@given(st.text(alphabet="0123456789", min_size=8, max_size=19))
def test_card_shows_only_the_last_four(pan: str) -> None:
    shown = masked(Mask.LAST4, pan)
    assert shown == "*" * (len(pan) - 4) + pan[-4:]
    assert [c for c in shown if c != "*"] == list(pan[-4:])


@given(st.text(alphabet="0123456789", min_size=8, max_size=19), st.sampled_from(" -"))
def test_card_separators_do_not_change_the_mask(pan: str, sep: str) -> None:
    grouped = sep.join(pan[i : i + 4] for i in range(0, len(pan), 4))
    assert masked(Mask.LAST4, grouped) == masked(Mask.LAST4, pan)


@given(st.text(alphabet="abcdefXYZ0123456789", max_size=7))
def test_last4_never_shows_a_short_value(text: str) -> None:
    assert masked(Mask.LAST4, text) == "*" * len(text)


@given(st.text(alphabet="abcdefXYZ0123456789", max_size=3))
def test_last2_never_shows_a_short_value(text: str) -> None:
    assert masked(Mask.LAST2, text) == "*" * len(text)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_last_n_shows_at_most_n_characters(text: str) -> None:
    for rule, n in ((Mask.LAST4, 4), (Mask.LAST2, 2)):
        shown = masked(rule, text)
        assert len(shown.replace("*", "")) <= n


def test_the_default_policy_masks() -> None:
    policy = load_policy()
    expected = {
        "card_number": Mask.LAST4,
        "bank_account": Mask.LAST4,
        "phone": Mask.LAST2,
        "email": Mask.EMAIL,
        "name": Mask.INITIALS,
        "card_holder": Mask.INITIALS,
        "ip_address": Mask.IP_PREFIX,
    }
    for name, rule in policy.categories.items():
        assert rule.mask is expected.get(name, Mask.REDACTED), name
    card = policy.categories[Category("card_number")]
    assert mask(card.mask, PlainValue.text("5555555555554444")) == "************4444"


def test_a_short_email_local_part_is_not_shown() -> None:
    assert mask(Mask.EMAIL, PlainValue.text("ab@example.com")) == "***@example.com"
