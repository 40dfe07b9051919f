"""Validation of values by category: each broken rule is a violation naming the field and rule.

Validators receive the value and return its normalized form (a card number without spaces, an
email with a lower-case domain). A violation's description never repeats the value.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from vault.domain.policy import CategoryRule, ValueRule
from vault.domain.types import PlainValue, ValueKind

__all__ = ["Rule", "RuleBroken", "luhn_valid", "validate"]


@dataclass(frozen=True, slots=True)
class Rule:
    """A broken rule: `name` is stable (`card_number.luhn`), `description` is for people."""

    name: str
    description: str


class RuleBroken(Exception):
    def __init__(self, rule: Rule) -> None:
        super().__init__(rule.name)
        self.rule = rule


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def validate(category: CategoryRule, value: PlainValue, today: date) -> PlainValue:
    """Check `value` against `category`'s rules and return it normalized.

    Raises RuleBroken with the first rule the value breaks.
    """
    size = len(value.data)
    if size == 0:
        raise RuleBroken(Rule(f"{category.name}.empty", "must not be empty"))
    if size > category.max_bytes:
        raise RuleBroken(
            Rule(f"{category.name}.max_bytes", f"must be at most {category.max_bytes} bytes")
        )
    if value.kind is ValueKind.BINARY:
        if category.kind not in (ValueRule.BINARY, ValueRule.DOCUMENT):
            raise RuleBroken(
                Rule(
                    f"{category.name}.text_only",
                    "must be text; binary values are for categories of kind binary",
                )
            )
        return value
    try:
        text = value.data.reveal_text()
    except UnicodeDecodeError:
        raise RuleBroken(Rule(f"{category.name}.utf8", "must be valid UTF-8")) from None
    normalized = _TEXT_RULES[category.kind](text, category.name, today)
    if normalized == text:
        return value
    # Normalizing can lengthen a value (NFC expands some characters): check the size again.
    if len(normalized.encode("utf-8")) > category.max_bytes:
        raise RuleBroken(
            Rule(f"{category.name}.max_bytes", f"must be at most {category.max_bytes} bytes")
        )
    return PlainValue.text(normalized)


def _broken(name: str, description: str) -> RuleBroken:
    return RuleBroken(Rule(name, description))


# Zero-width joiners shape some scripts' names; every other format character (bidi overrides,
# zero-width spaces) can disguise a value and is refused.
_ALLOWED_FORMAT = frozenset("\u200c\u200d")


def _no_controls(text: str, cat: str) -> None:
    for ch in text:
        # Cc: control; Cf: format (bidi, zero-width); Cs/Co/Cn: surrogate, private, unassigned.
        kind = unicodedata.category(ch)
        if kind in {"Cc", "Cs", "Co", "Cn"} and ch not in "\n\t":
            raise _broken(f"{cat}.printable", "must not contain control characters")
        if kind == "Cf" and ch not in _ALLOWED_FORMAT:
            raise _broken(f"{cat}.printable", "must not contain invisible format characters")


def _printable(text: str, cat: str, _today: date) -> str:
    if text != text.strip():
        raise _broken(f"{cat}.whitespace", "must not start or end with white space")
    _no_controls(text, cat)
    return unicodedata.normalize("NFC", text)


def _card_number(text: str, cat: str, _today: date) -> str:
    digits = re.sub(r"[ -]", "", text)
    if not digits.isascii() or not digits.isdigit():
        raise _broken(f"{cat}.digits", "must contain only digits (spaces and dashes are ignored)")
    if not 12 <= len(digits) <= 19:
        raise _broken(f"{cat}.length", "must have 12 to 19 digits")
    if not luhn_valid(digits):
        raise _broken(f"{cat}.luhn", "fails the Luhn check digit")
    return digits


_EXPIRY_RE = re.compile(r"([0-9]{2})/([0-9]{2}|[0-9]{4})")


def _card_expiry(text: str, cat: str, _today: date) -> str:
    m = _EXPIRY_RE.fullmatch(text.strip())
    if not m:
        raise _broken(f"{cat}.format", "must be MM/YY or MM/YYYY")
    month = int(m.group(1))
    if not 1 <= month <= 12:
        raise _broken(f"{cat}.month", "must have a month from 01 to 12")
    year = m.group(2)
    return f"{month:02d}/{year[-2:]}"


# RFC 5321/5322 in the practical subset mail systems accept (the WHATWG "valid email" rule).
_EMAIL_RE = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)


def _email(text: str, cat: str, _today: date) -> str:
    if len(text) > 254 or not _EMAIL_RE.fullmatch(text):
        raise _broken(f"{cat}.syntax", "must be an address of the form local@domain.tld")
    local, domain = text.rsplit("@", 1)
    if len(local) > 64:
        raise _broken(f"{cat}.local_part", "must have a local part of at most 64 characters")
    return f"{local}@{domain.lower()}"


def _phone(text: str, cat: str, _today: date) -> str:
    compact = re.sub(r"[ .()-]", "", text)
    plus = compact.startswith("+")
    digits = compact[1:] if plus else compact
    if not digits.isascii() or not digits.isdigit():
        raise _broken(
            f"{cat}.digits",
            "must be digits with an optional leading + (spaces, dots, dashes, parentheses ignored)",
        )
    if not 7 <= len(digits) <= 15:
        raise _broken(f"{cat}.length", "must have 7 to 15 digits (ITU-T E.164)")
    return ("+" if plus else "") + digits


def _date_of_birth(text: str, cat: str, today: date) -> str:
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            raise ValueError
        born = date.fromisoformat(text)
    except ValueError:
        raise _broken(f"{cat}.format", "must be a real date written YYYY-MM-DD") from None
    if born.year < 1900 or born > today:
        raise _broken(f"{cat}.range", "must be from 1900-01-01 to today")
    return text


def _ip_address(text: str, cat: str, _today: date) -> str:
    if "%" in text:  # an IPv6 zone is local to one host, and would let any text through
        raise _broken(f"{cat}.syntax", "must be an IPv4 or IPv6 address without a zone")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _broken(f"{cat}.syntax", "must be an IPv4 or IPv6 address") from None


def _as_given(text: str, cat: str, _today: date) -> str:
    _no_controls(text, cat)
    return text


_TEXT_RULES: dict[ValueRule, Callable[[str, str, date], str]] = {
    ValueRule.TEXT: _printable,
    ValueRule.BINARY: _as_given,
    ValueRule.DOCUMENT: _as_given,
    ValueRule.CARD_NUMBER: _card_number,
    ValueRule.CARD_EXPIRY: _card_expiry,
    ValueRule.EMAIL: _email,
    ValueRule.PHONE: _phone,
    ValueRule.DATE_OF_BIRTH: _date_of_birth,
    ValueRule.IP_ADDRESS: _ip_address,
}
