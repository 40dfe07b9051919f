"""Token generation: opaque tokens and format-preserving card tokens."""

from __future__ import annotations

import base64
import re
import secrets as stdlib_secrets
from collections.abc import Iterator, Sequence
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.domain import tokens
from vault.domain.tokens import (
    OPAQUE_PREFIX,
    TOKEN_MAX_LENGTH,
    card_token,
    new_token,
    opaque_token,
    well_formed,
)
from vault.domain.types import TokenFormat
from vault.domain.validation import luhn_valid

OPAQUE_SHAPE = re.compile(r"tok_[a-z2-7]{26}")


def _with_check_digit(head: str) -> str:
    return next(head + d for d in "0123456789" if luhn_valid(head + d))


@st.composite
def valid_pans(draw: st.DrawFn, min_size: int = 12, max_size: int = 19) -> str:
    length = draw(st.integers(min_value=min_size, max_value=max_size))
    head = draw(st.text(alphabet="0123456789", min_size=length - 1, max_size=length - 1))
    return _with_check_digit(head)


# -- opaque tokens --------------------------------------------------------------------------------


def test_opaque_token_shape() -> None:
    token = opaque_token()
    assert OPAQUE_PREFIX == "tok_"
    assert OPAQUE_SHAPE.fullmatch(token)
    assert len(token) == 30 <= TOKEN_MAX_LENGTH
    assert well_formed(token)


def test_opaque_token_carries_128_bits() -> None:
    for _ in range(200):
        body = opaque_token().removeprefix(OPAQUE_PREFIX)
        raw = base64.b32decode(body.upper() + "======")
        assert len(raw) == 16
        # Canonical: re-encoding the 16 bytes gives the same text (no stray low bits).
        assert base64.b32encode(raw).decode().rstrip("=").lower() == body


def test_opaque_tokens_are_distinct() -> None:
    drawn = [opaque_token() for _ in range(20_000)]
    assert len(set(drawn)) == len(drawn)
    # Every base32 character turns up in the first 25 positions: no position is stuck.
    for i in range(25):
        assert {t[4 + i] for t in drawn} == set("abcdefghijklmnopqrstuvwxyz234567"), i


def test_opaque_token_comes_from_the_csprng() -> None:
    with mock.patch.object(stdlib_secrets, "token_bytes", return_value=bytes(16)) as draw:
        assert opaque_token() == "tok_" + "a" * 26
    draw.assert_called_once_with(16)


def test_new_token_opaque_ignores_the_value() -> None:
    token = new_token(TokenFormat.OPAQUE, "4111111111111111")
    assert OPAQUE_SHAPE.fullmatch(token)
    assert OPAQUE_SHAPE.fullmatch(new_token(TokenFormat.OPAQUE, None))


# -- card tokens ----------------------------------------------------------------------------------


def _assert_card_token(token: str, pan: str) -> None:
    assert len(token) == 16
    assert token.isascii()
    assert token.isdigit()
    assert luhn_valid(token)
    assert token[-4:] == pan[-4:]
    assert token != pan
    assert well_formed(token)


@given(valid_pans())
def test_card_token_properties(pan: str) -> None:
    _assert_card_token(card_token(pan), pan)


@given(valid_pans(min_size=16, max_size=16))
def test_card_token_of_a_16_digit_pan(pan: str) -> None:
    # A 16-digit Luhn-valid PAN has the very shape of its token: equality is possible.
    token = card_token(pan)
    _assert_card_token(token, pan)


@pytest.mark.parametrize(
    "pan",
    ["4111111111111111", "5555555555554444", "4000000000000002", "378282246310005"],
)
def test_card_token_of_known_test_cards(pan: str) -> None:
    for _ in range(50):
        _assert_card_token(card_token(pan), pan)


class _RiggedSecrets:
    """Stands in for the `secrets` module in `vault.domain.tokens`: its first draws spell out
    `digits`, so that the first candidate token is exactly the PAN."""

    def __init__(self, digits: str) -> None:
        self._rigged: Iterator[str] = iter(digits)
        self.calls = 0

    def choice(self, seq: Sequence[str]) -> str:
        self.calls += 1
        rigged = next(self._rigged, None)
        return rigged if rigged is not None else stdlib_secrets.choice(seq)


@given(valid_pans(min_size=16, max_size=16))
def test_card_token_is_never_the_pan_even_when_drawn(pan: str) -> None:
    rigged = _RiggedSecrets(pan[:11])
    with mock.patch.object(tokens, "secrets", rigged):
        token = card_token(pan)
    _assert_card_token(token, pan)
    assert rigged.calls == 22  # the first candidate equalled the PAN and was drawn again


def test_card_token_keeps_the_last_four_of_a_short_pan() -> None:
    pan = _with_check_digit("40000000000")  # 12 digits
    token = card_token(pan)
    _assert_card_token(token, pan)


def test_card_tokens_are_random() -> None:
    # About 36.5 random bits each: 500 draws collide with a probability near 1e-6.
    drawn = {card_token("4111111111111111") for _ in range(500)}
    assert len(drawn) == 500


def test_new_token_card_number() -> None:
    token = new_token(TokenFormat.CARD_NUMBER, "4111111111111111")
    _assert_card_token(token, "4111111111111111")


def test_new_token_card_number_needs_the_value() -> None:
    with pytest.raises(ValueError, match="needs the card number"):
        new_token(TokenFormat.CARD_NUMBER, None)


# -- well_formed ----------------------------------------------------------------------------------


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", min_size=26, max_size=26))
def test_well_formed_accepts_the_opaque_shape(body: str) -> None:
    assert well_formed("tok_" + body)


@given(st.text(alphabet="0123456789", min_size=16, max_size=16))
def test_well_formed_accepts_the_card_shape(digits: str) -> None:
    assert well_formed(digits)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tok_",
        "tok_" + "a" * 25,
        "tok_" + "a" * 27,
        "TOK_" + "a" * 26,
        "tok_" + "A" * 26,
        "tok_" + "a" * 25 + "1",  # 0, 1, 8, 9 are not base32
        "tok_" + "a" * 25 + "8",
        "tok-" + "a" * 26,
        "tk_" + "a" * 27,
        " tok_" + "a" * 26,
        "tok_" + "a" * 26 + "\n",
        "4" * 15,
        "4" * 17,
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111\n",
        "411111111111111a",
        "pdv_" + "a" * 26,
    ],
)
def test_well_formed_rejects_other_shapes(text: str) -> None:
    assert not well_formed(text)


def test_well_formed_rejects_non_ascii_digits() -> None:
    assert not well_formed("\u0661" * 16)
