"""Token generation. A token is random, never derived from its value; uniqueness is enforced by
the store's primary key, and a collision is retried, never trusted to luck."""

from __future__ import annotations

import base64
import re
import secrets

from vault.domain.types import Token, TokenFormat
from vault.domain.validation import luhn_valid

__all__ = [
    "OPAQUE_PREFIX",
    "TOKEN_MAX_LENGTH",
    "card_token",
    "new_token",
    "opaque_token",
    "well_formed",
]


OPAQUE_PREFIX = "tok_"
_OPAQUE_RE = re.compile(r"tok_[a-z2-7]{26}")
_CARD_RE = re.compile(r"[0-9]{16}")
TOKEN_MAX_LENGTH = 64


def opaque_token() -> Token:
    """`tok_` + 26 base32 characters: 128 bits from the OS CSPRNG."""
    raw = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
    return Token(OPAQUE_PREFIX + raw)


def card_token(pan: str) -> Token:
    """A 16-digit, Luhn-valid token ending in the PAN's last four digits, never equal to the PAN.

    Digits 1-11 are random, digit 12 is chosen to make the whole number pass the Luhn check, and
    13-16 are the PAN's last four: about 36.5 bits of randomness. The PAN's own length is not
    kept (tokens are always 16 digits), so a token reveals only what a masked PAN shows.
    """
    last4 = pan[-4:]
    while True:
        head = "".join(secrets.choice("0123456789") for _ in range(11))
        for check in "0123456789":
            candidate = head + check + last4
            if luhn_valid(candidate):
                break
        if candidate != pan:
            return Token(candidate)


def new_token(fmt: TokenFormat, normalized_value: str | None) -> Token:
    if fmt is TokenFormat.CARD_NUMBER:
        if normalized_value is None:
            raise ValueError("a card-number token needs the card number")
        return card_token(normalized_value)
    return opaque_token()


def well_formed(token: str) -> bool:
    """Whether `token` has the shape of a token pdvault issues (says nothing about existence)."""
    return bool(_OPAQUE_RE.fullmatch(token) or _CARD_RE.fullmatch(token))
