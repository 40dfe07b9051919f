"""What free text and caller-supplied strings become before they reach the audit log.

A justification is a ticket or order number, stored in clear so that an auditor can read it.
People paste card numbers into such fields, with whatever separators their tools use
("4111.1111.1111.1111", "4111_1111/1111|1111"). PCI DSS 3.4.1 allows at most the last four
digits of a PAN to be displayed: a run of 13-19 digits, separated by any punctuation or spaces,
that passes the Luhn check and starts with a card issuer's prefix is masked, keeping its last
four digits. An order number that happens to pass Luhn but no issuer uses its prefix is kept:
refusing it would refuse legitimate requests, masking it would hide what an auditor needs.
"""

from __future__ import annotations

import re

from vault.domain.tokens import well_formed
from vault.domain.types import Token
from vault.domain.validation import luhn_valid

__all__ = ["audited_token", "has_issuer_prefix", "looks_like_pan", "mask_card_numbers"]


PAN_MIN, PAN_MAX = 13, 19  # ISO/IEC 7812-1 lengths of a primary account number
# Digits separated by at most three spaces or punctuation marks each.
_RUN = re.compile(r"[0-9](?:[^0-9A-Za-z]{0,3}[0-9])*")

# Issuer identification number ranges of the card networks (first digits of a PAN), inclusive.
_ISSUER_RANGES = (
    (4, 4),  # Visa
    (51, 55),  # Mastercard
    (2221, 2720),  # Mastercard 2-series
    (34, 34),  # American Express
    (37, 37),
    (300, 305),  # Diners Club
    (3095, 3095),
    (36, 36),
    (38, 39),
    (3528, 3589),  # JCB
    (6011, 6011),  # Discover
    (644, 649),
    (65, 65),
    (622126, 622925),
    (62, 62),  # UnionPay
    (81, 81),
    (50, 50),  # Maestro
    (56, 58),
    (639, 639),
    (67, 67),
    (2200, 2204),  # Mir
    (60, 60),  # RuPay
    (508, 508),
    (82, 82),
)


def has_issuer_prefix(digits: str) -> bool:
    for low, high in _ISSUER_RANGES:
        width = len(str(low))
        if len(digits) >= width and low <= int(digits[:width]) <= high:
            return True
    return False


def looks_like_pan(digits: str) -> bool:
    return PAN_MIN <= len(digits) <= PAN_MAX and luhn_valid(digits) and has_issuer_prefix(digits)


def mask_card_numbers(text: str) -> str:
    """`text` with every embedded card number masked to its last four digits."""
    out = list(text)
    for run in _RUN.finditer(text):
        places = [run.start() + i for i, ch in enumerate(run.group()) if ch.isdigit()]
        digits = "".join(text[p] for p in places)
        for start in range(len(digits) - PAN_MIN + 1):
            for length in range(PAN_MIN, min(PAN_MAX, len(digits) - start) + 1):
                if looks_like_pan(digits[start : start + length]):
                    for p in places[start : start + length - 4]:
                        out[p] = "*"
    return "".join(out)


def audited_token(token: str) -> Token:
    """How a caller-supplied token that resolved to nothing is written to the audit log.

    A card-shaped "token" that does not exist may be a real card number pasted by mistake: the
    audit keeps only its last four digits (PCI DSS 3.4.1). Anything that is not a token at all
    is never written (callers refuse it as INVALID_ARGUMENT first).
    """
    if len(token) == 16 and token.isascii() and token.isdigit():
        return Token("*" * 12 + token[-4:])
    if not well_formed(token):
        return Token("<malformed>")
    return Token(token)
