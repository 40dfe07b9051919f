"""Validation of values by category, with the categories of the default policy."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.domain.policy import CategoryRule, ValueRule
from vault.domain.policy_file import load_policy
from vault.domain.secrets import Secret
from vault.domain.types import Category, PlainValue, ValueKind
from vault.domain.validation import Rule, RuleBroken, luhn_valid, validate

TODAY = date(2026, 11, 24)
POLICY = load_policy()


def cat(name: str) -> CategoryRule:
    return POLICY.categories[Category(name)]


def ok(category: str, text: str) -> str:
    """Validate `text` and return the normalized text."""
    return validate(cat(category), PlainValue.text(text), today=TODAY).data.reveal_text()


def broken(category: str, value: PlainValue) -> Rule:
    with pytest.raises(RuleBroken) as excinfo:
        validate(cat(category), value, today=TODAY)
    rule = excinfo.value.rule
    assert str(excinfo.value) == rule.name
    assert rule.name.startswith(f"{category}.")
    assert rule.description
    return rule


def refused(category: str, text: str) -> str:
    """Validate `text`, expect a broken rule whose description does not repeat the value."""
    rule = broken(category, PlainValue.text(text))
    if len(text.strip()) >= 3:  # shorter ones may be a word of a description ("+")
        assert text not in rule.description
        assert text.strip() not in rule.description
    return rule.name


def test_every_value_rule_but_binary_is_used_by_the_default_policy() -> None:
    """Binary values are for policies that want them; the default's documents go through the
    DocumentService."""
    assert {c.kind for c in POLICY.categories.values()} == set(ValueRule) - {ValueRule.BINARY}


# -- card numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("4111111111111111", "4111111111111111"),
        ("4111 1111 1111 1111", "4111111111111111"),
        ("4111-1111-1111-1111", "4111111111111111"),
        ("4111 - 1111 - 1111 - 1111", "4111111111111111"),
        ("5555555555554444", "5555555555554444"),
        ("378282246310005", "378282246310005"),  # 15-digit American Express test number
        ("400000000002", "400000000002"),  # 12 digits, the shortest allowed
        ("4000000000000000006", "4000000000000000006"),  # 19 digits, the longest allowed
    ],
)
def test_card_number_accepted(text: str, normalized: str) -> None:
    assert ok("card_number", text) == normalized


def test_card_number_unchanged_value_is_returned_as_is() -> None:
    value = PlainValue.text("4111111111111111")
    assert validate(cat("card_number"), value, today=TODAY) is value


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("4111111111111112", "card_number.luhn"),
        ("4111 1111 1111 1121", "card_number.luhn"),
        ("41111111117", "card_number.length"),  # 11 digits
        ("41111111111111111113", "card_number.length"),  # 20 digits
        ("4111a11111111111", "card_number.digits"),
        ("4111.1111.1111.1111", "card_number.digits"),
        ("+4111111111111111", "card_number.digits"),
        ("\u0664\u0661\u0661\u0661" * 3, "card_number.digits"),  # Arabic-Indic digits
        (" - - ", "card_number.digits"),
    ],
)
def test_card_number_refused(text: str, rule: str) -> None:
    assert refused("card_number", text) == rule


@st.composite
def valid_pans(draw: st.DrawFn) -> str:
    length = draw(st.integers(min_value=12, max_value=19))
    head = draw(st.text(alphabet="0123456789", min_size=length - 1, max_size=length - 1))
    check = next(d for d in "0123456789" if luhn_valid(head + d))
    return head + check


@given(valid_pans(), st.data())
def test_card_number_luhn_property(pan: str, data: st.DataObject) -> None:
    assert ok("card_number", pan) == pan
    grouped = " ".join(pan[i : i + 4] for i in range(0, len(pan), 4))
    assert ok("card_number", grouped) == pan
    # Changing one digit always breaks the Luhn check.
    i = data.draw(st.integers(min_value=0, max_value=len(pan) - 1))
    digit = data.draw(st.sampled_from([d for d in "0123456789" if d != pan[i]]))
    assert refused("card_number", pan[:i] + digit + pan[i + 1 :]) == "card_number.luhn"


def test_luhn_valid() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert luhn_valid("0")


# -- card expiry ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("12/25", "12/25"),
        ("01/30", "01/30"),
        ("12/2025", "12/25"),
        ("07/2031", "07/31"),
    ],
)
def test_card_expiry_accepted(text: str, normalized: str) -> None:
    assert ok("card_expiry", text) == normalized


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("00/25", "card_expiry.month"),
        ("13/25", "card_expiry.month"),
        ("99/2025", "card_expiry.month"),
        ("1/25", "card_expiry.format"),
        ("12-25", "card_expiry.format"),
        ("12/025", "card_expiry.format"),
        ("12/25/01", "card_expiry.format"),
        ("1225", "card_expiry.format"),
        ("Dec 2025", "card_expiry.format"),
    ],
)
def test_card_expiry_refused(text: str, rule: str) -> None:
    assert refused("card_expiry", text) == rule


def test_card_expiry_refuses_non_ascii_digits() -> None:
    assert refused("card_expiry", "\u0661\u0662/\u0662\u0665") == "card_expiry.format"


# -- email ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("alice@example.com", "alice@example.com"),
        ("Alice.Smith+tag@Example.COM", "Alice.Smith+tag@example.com"),
        ("o'brien@mail.example.co.jp", "o'brien@mail.example.co.jp"),
        ("x" * 64 + "@example.com", "x" * 64 + "@example.com"),
    ],
)
def test_email_accepted(text: str, normalized: str) -> None:
    assert ok("email", text) == normalized


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("alice", "email.syntax"),
        ("alice@", "email.syntax"),
        ("@example.com", "email.syntax"),
        ("alice@example", "email.syntax"),
        ("alice smith@example.com", "email.syntax"),
        ("alice@@example.com", "email.syntax"),
        ("alice@-example.com", "email.syntax"),
        ("alice@example..com", "email.syntax"),
        ("alice@ex_ample.com", "email.syntax"),
        ("x" * 65 + "@example.com", "email.local_part"),
        ("x" * 250 + "@e.co", "email.max_bytes"),
    ],
)
def test_email_refused(text: str, rule: str) -> None:
    assert refused("email", text) == rule


# -- phone ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("+81 3-1234-5678", "+81312345678"),
        ("(03) 1234.5678", "0312345678"),
        ("+1 (555) 123-4567", "+15551234567"),
        ("1234567", "1234567"),
        ("+123456789012345", "+123456789012345"),
    ],
)
def test_phone_accepted(text: str, normalized: str) -> None:
    assert ok("phone", text) == normalized


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("123456", "phone.length"),
        ("+1234567890123456", "phone.length"),
        ("+", "phone.digits"),
        ("++81312345678", "phone.digits"),
        ("81+312345678", "phone.digits"),
        ("+81 3 CALL NOW", "phone.digits"),
        ("0312345678 ext 9", "phone.digits"),
        ("\uff10\uff13\uff11\uff12\uff13\uff14\uff15\uff16", "phone.digits"),  # full-width
    ],
)
def test_phone_refused(text: str, rule: str) -> None:
    assert refused("phone", text) == rule


# -- date of birth --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1990-01-31", "1900-01-01", "2024-02-29", "2026-11-24"])
def test_date_of_birth_accepted(text: str) -> None:
    assert ok("date_of_birth", text) == text


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("2026-11-25", "date_of_birth.range"),  # tomorrow
        ("2999-01-01", "date_of_birth.range"),
        ("1899-12-31", "date_of_birth.range"),
        ("2023-02-30", "date_of_birth.format"),
        ("2023-02-29", "date_of_birth.format"),
        ("1990-13-01", "date_of_birth.format"),
        ("1990/01/31", "date_of_birth.format"),
        ("31-01-1990", "date_of_birth.format"),
        ("1990-1-31", "date_of_birth.format"),
        ("19900131", "date_of_birth.format"),
        ("1990-01-31T00:00", "date_of_birth.max_bytes"),
    ],
)
def test_date_of_birth_refused(text: str, rule: str) -> None:
    assert refused("date_of_birth", text) == rule


def test_date_of_birth_is_relative_to_today() -> None:
    value = PlainValue.text("2026-11-25")
    later = date(2026, 11, 25)
    assert validate(cat("date_of_birth"), value, today=later).data.reveal_text() == "2026-11-25"


# -- IP address -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("::ffff:192.0.2.1", "::ffff:c000:201"),
        ("::1", "::1"),
    ],
)
def test_ip_address_accepted(text: str, normalized: str) -> None:
    assert ok("ip_address", text) == normalized


@pytest.mark.parametrize(
    "text",
    [
        "256.1.1.1",
        "192.168.001.1",
        "192.168.1",
        "example.com",
        "2001:db8:::1",
        "2001:db8::g",
        "192.0.2.1/24",
    ],
)
def test_ip_address_refused(text: str) -> None:
    assert refused("ip_address", text) == "ip_address.syntax"


def test_ip_address_refuses_arbitrary_scope_ids() -> None:
    assert refused("ip_address", "::1%a b\x01c") == "ip_address.syntax"


# -- text -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "text", "normalized"),
    [
        ("name", "Ada Lovelace", "Ada Lovelace"),
        ("name", "山田 太郎", "山田 太郎"),
        ("name", "Jose\u0301", "Jos\u00e9"),  # NFC
        ("address", "1 Main St\nSpringfield", "1 Main St\nSpringfield"),
        ("transaction_details", "order 42\tpaid", "order 42\tpaid"),
        ("bank_account", "DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 00"),
        ("user_agent", "Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (X11; Linux x86_64)"),
    ],
)
def test_text_accepted(category: str, text: str, normalized: str) -> None:
    assert ok(category, text) == normalized


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("Ada\x00Lovelace", "name.printable"),
        ("Ada\x1b[31mLovelace", "name.printable"),
        ("Ada\x7fLovelace", "name.printable"),
        ("Ada\rLovelace", "name.printable"),
        ("Ada\ue000Lovelace", "name.printable"),  # private use
        ("Ada\U000e0080Lovelace", "name.printable"),  # unassigned
        (" Ada Lovelace", "name.whitespace"),
        ("\tAda Lovelace", "name.whitespace"),
        ("Ada Lovelace ", "name.whitespace"),
        ("Ada Lovelace\n", "name.whitespace"),
        ("\u3000Ada Lovelace", "name.whitespace"),  # ideographic space
        ("   ", "name.whitespace"),
    ],
)
def test_text_refused(text: str, rule: str) -> None:
    assert refused("name", text) == rule


def test_text_max_bytes_counts_bytes() -> None:
    limit = cat("name").max_bytes
    assert limit == 256
    assert ok("name", "a" * limit) == "a" * limit
    assert refused("name", "a" * (limit + 1)) == "name.max_bytes"
    # 86 three-byte characters: 258 bytes, though only 86 characters.
    rule = broken("name", PlainValue.text("\u3042" * 86))
    assert rule == Rule("name.max_bytes", "must be at most 256 bytes")


def test_text_max_bytes_holds_after_normalization() -> None:
    text = "\u0958" * 85  # 255 bytes; 510 bytes after NFC
    try:
        normalized = ok("name", text)
    except RuleBroken:
        return
    assert len(normalized.encode()) <= cat("name").max_bytes


def test_invalid_utf8_text_is_refused() -> None:
    value = PlainValue(ValueKind.TEXT, Secret(b"Ada \xff"))
    assert broken("name", value).name == "name.utf8"


# -- binary values --------------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


@pytest.mark.parametrize(
    "category",
    sorted(c for c, r in POLICY.categories.items() if r.kind is not ValueRule.DOCUMENT),
)
def test_binary_refused_for_non_document_categories(category: str) -> None:
    value = PlainValue.binary(b"\x01\x02" * 4)
    assert broken(category, value) == Rule(
        f"{category}.text_only", "must be text; binary values are for categories of kind binary"
    )


def test_binary_accepted_for_identity_document() -> None:
    value = PlainValue.binary(PNG)
    assert validate(cat("identity_document"), value, today=TODAY) is value


def test_identity_document_size_limit() -> None:
    limit = cat("identity_document").max_bytes
    assert limit == 1024 * 1024
    big = PlainValue.binary(b"\x00" * limit)
    assert validate(cat("identity_document"), big, today=TODAY) is big
    too_big = PlainValue.binary(b"\x00" * (limit + 1))
    assert broken("identity_document", too_big).name == "identity_document.max_bytes"


def test_identity_document_text_is_kept_as_is() -> None:
    assert ok("identity_document", "scan-reference: 42") == "scan-reference: 42"


# -- empty values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("category", sorted(POLICY.categories))
def test_empty_value_refused(category: str) -> None:
    empty = Rule(f"{category}.empty", "must not be empty")
    assert broken(category, PlainValue.text("")) == empty
    assert broken(category, PlainValue.binary(b"")) == empty


# -- properties -----------------------------------------------------------------------------------


def broken_or_none(category: str, text: str) -> Rule | None:
    try:
        validate(cat(category), PlainValue.text(text), today=TODAY)
    except RuleBroken as exc:
        return exc.rule
    return None


MARKER = "QZXJVK"  # appears in no description


@settings(max_examples=150)
@given(
    st.sampled_from(sorted(POLICY.categories)),
    st.text(max_size=20),
    st.text(max_size=20),
)
def test_descriptions_never_contain_the_value(category: str, before: str, after: str) -> None:
    rule = broken_or_none(category, before + MARKER + after)
    if rule is not None:
        assert MARKER not in rule.description
        assert MARKER not in rule.name
        assert rule.name.startswith(f"{category}.")


@settings(max_examples=150)
@given(st.sampled_from(sorted(POLICY.categories)), st.text(min_size=1, max_size=20))
def test_normalization_is_idempotent(category: str, text: str) -> None:
    rule = cat(category)
    try:
        once = validate(rule, PlainValue.text(text), today=TODAY)
    except RuleBroken:
        return
    twice = validate(rule, once, today=TODAY)
    assert twice.data == once.data
    assert twice.kind is ValueKind.TEXT


def test_invisible_format_characters_are_refused_but_joiners_kept() -> None:
    rules = load_policy().categories
    name = rules[Category("name")]
    with pytest.raises(RuleBroken) as err:
        validate(name, PlainValue.text("Ann\u202eLee"), date(2026, 11, 24))
    assert err.value.rule.name == "name.printable"
    kept = validate(name, PlainValue.text("Ann\u200dLee"), date(2026, 11, 24))
    assert kept.data.reveal_text() == "Ann\u200dLee"


def test_text_documents_refuse_control_characters() -> None:
    doc = load_policy().categories[Category("identity_document")]
    with pytest.raises(RuleBroken):
        validate(doc, PlainValue.text("page\x00one"), date(2026, 11, 24))
