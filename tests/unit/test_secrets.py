"""Secret: bytes that do not leak by accident; and the value types that carry them."""

from __future__ import annotations

import copy
import dataclasses
import hmac
import logging
import pickle
import weakref
from datetime import UTC, datetime
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.domain import secrets as secrets_module
from vault.domain.secrets import Secret
from vault.domain.types import (
    CallerName,
    Category,
    IdempotencyRecord,
    PlainValue,
    StoredDataKey,
    StoredValue,
    SubjectId,
    Token,
    TokenFormat,
    ValueKind,
    WrappedKey,
)

VALUE = b"hunter2-4111111111111111"


def _renderings(obj: object) -> list[str]:
    return [
        repr(obj),
        str(obj),
        f"{obj}",
        f"{obj!r}",
        f"{obj!s}",
        "%s" % (obj,),  # noqa: UP031  (the old formatting must be safe as well)
        "%r" % (obj,),  # noqa: UP031
        "{}".format(obj),  # noqa: UP032
        str([obj]),
        str({"k": obj}),
    ]


# -- Secret ---------------------------------------------------------------------------------------


def test_secret_renderings_are_redacted() -> None:
    secret = Secret(VALUE)
    for text in _renderings(secret):
        assert text == "Secret(<24 bytes redacted>)" or "Secret(<24 bytes redacted>)" in text
        assert "hunter2" not in text
        assert "4111" not in text
    assert f"{secret:>80}" == "Secret(<24 bytes redacted>)"
    assert f"{secret:x}" == "Secret(<24 bytes redacted>)"


@given(st.binary(min_size=1, max_size=64))
def test_secret_repr_never_shows_bytes(data: bytes) -> None:
    secret = Secret(data)
    assert repr(secret) == f"Secret(<{len(data)} bytes redacted>)"
    assert str(secret) == repr(secret)
    assert format(secret, "x") == repr(secret)


def test_secret_in_a_log_record_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("value=%s", Secret(VALUE))
    assert "hunter2" not in caplog.text
    assert "redacted" in caplog.text


def test_secret_reveal() -> None:
    secret = Secret(VALUE)
    assert secret.reveal() == VALUE
    assert isinstance(secret.reveal(), bytes)
    assert len(secret) == len(VALUE)
    assert Secret("héllo".encode()).reveal_text() == "héllo"


def test_secret_keeps_its_own_copy() -> None:
    source = bytearray(b"abc")
    secret = Secret(source)
    source[0] = ord("x")
    assert secret.reveal() == b"abc"
    assert Secret(memoryview(b"xyz")).reveal() == b"xyz"
    revealed = secret.reveal()
    secret.wipe()
    assert revealed == b"abc"  # reveal() hands out a copy; wipe() cannot reach it


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secret_cannot_be_pickled(protocol: int) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret(VALUE), protocol=protocol)


def test_secret_cannot_be_copied() -> None:
    secret = Secret(VALUE)
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.copy(secret)
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.deepcopy(secret)
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.deepcopy([secret])


def test_wipe_zeroes() -> None:
    secret = Secret(VALUE)
    secret.wipe()
    assert secret.reveal() == bytes(len(VALUE))
    assert len(secret) == len(VALUE)
    secret.wipe()  # twice is fine
    assert secret.reveal() == bytes(len(VALUE))
    empty = Secret(b"")
    empty.wipe()
    assert empty.reveal() == b""


def test_wipe_overwrites_the_buffer_in_place() -> None:
    secret = Secret(VALUE)
    buffer = secret._buf
    secret.wipe()
    assert secret._buf is buffer
    assert buffer == bytearray(len(VALUE))


def test_equality_between_secrets() -> None:
    assert Secret(b"abc") == Secret(b"abc")
    assert Secret(b"abc") != Secret(b"abd")
    assert Secret(b"abc") != Secret(b"abcd")
    assert Secret(b"") == Secret(b"")


def test_equality_only_between_secrets() -> None:
    secret = Secret(b"abc")
    assert secret.__eq__(b"abc") is NotImplemented
    assert secret != b"abc"
    assert b"abc" != secret  # noqa: SIM300  (the reflected comparison is under test)
    assert secret != bytearray(b"abc")
    assert secret != "abc"
    assert secret != None  # noqa: E711  (the == operator itself is under test)
    assert secret in [Secret(b"abc")]
    assert secret not in [b"abc"]


def test_equality_is_constant_time() -> None:
    # vault.domain.secrets calls hmac.compare_digest through the hmac module.
    assert "hmac" in vars(secrets_module)
    with mock.patch.object(hmac, "compare_digest", wraps=hmac.compare_digest) as compare:
        assert Secret(b"abc") == Secret(b"abc")
        assert Secret(b"abc") != Secret(b"xyz")
    assert compare.call_count == 2


@given(st.binary(max_size=32), st.binary(max_size=32))
def test_equality_matches_the_bytes(a: bytes, b: bytes) -> None:
    assert (Secret(a) == Secret(b)) is (a == b)
    assert (Secret(a) != Secret(b)) is (a != b)


def test_secret_is_unhashable() -> None:
    secret = Secret(VALUE)
    with pytest.raises(TypeError):
        hash(secret)
    with pytest.raises(TypeError):
        _ = {secret}
    with pytest.raises(TypeError):
        _ = {secret: 1}


def test_secret_has_no_dict_but_allows_weak_references() -> None:
    secret = Secret(VALUE)
    assert not hasattr(secret, "__dict__")
    with pytest.raises(AttributeError):
        secret.extra = 1  # type: ignore[attr-defined]
    assert weakref.ref(secret)() is secret


# -- the value types ------------------------------------------------------------------------------


def test_plain_value_repr_hides_the_value() -> None:
    for value in (PlainValue.text(VALUE.decode()), PlainValue.binary(VALUE)):
        for text in _renderings(value):
            assert "hunter2" not in text
            assert "4111" not in text
            assert "redacted" in text


def test_plain_value_constructors() -> None:
    text = PlainValue.text("héllo")
    assert text.kind is ValueKind.TEXT
    assert text.data.reveal() == "héllo".encode()
    binary = PlainValue.binary(b"\x00\xff")
    assert binary.kind is ValueKind.BINARY
    assert binary.data.reveal() == b"\x00\xff"


def test_plain_value_equality_and_hashing() -> None:
    assert PlainValue.text("abc") == PlainValue.text("abc")
    assert PlainValue.text("abc") != PlainValue.binary(b"abc")
    with pytest.raises(TypeError):
        hash(PlainValue.text("abc"))


def test_plain_value_cannot_be_pickled_or_copied() -> None:
    value = PlainValue.text("secret")
    with pytest.raises(TypeError):
        pickle.dumps(value)
    with pytest.raises(TypeError):
        copy.deepcopy(value)
    with pytest.raises(TypeError):
        dataclasses.asdict(value)


def test_stored_value_repr_hides_the_ciphertext() -> None:
    ciphertext = b"CIPHERTEXT\x00\x01\x02" + VALUE
    stored = StoredValue(
        Token("tok_" + "a" * 26),
        SubjectId("user-42"),
        Category("card_number"),
        TokenFormat.OPAQUE,
        ciphertext,
    )
    for text in _renderings(stored):
        assert "CIPHERTEXT" not in text
        assert "hunter2" not in text
        assert repr(ciphertext) not in text
        assert "ciphertext" not in text
        assert "tok_" + "a" * 26 in text  # the rest is shown


def test_wrapped_key_and_idempotency_reprs_hide_key_material() -> None:
    wrapped = WrappedKey("local", 3, b"WRAPPEDKEYBLOB")
    stored_key = StoredDataKey(SubjectId("user-42"), wrapped, 7)
    record = IdempotencyRecord(
        caller=CallerName("payment"),
        request_id="0b8e7d1e-7c1a-4a53-9d0b-0d2b6f7f0a11",
        subject=SubjectId("user-42"),
        fingerprint=b"FINGERPRINTBYTES",
        tokens=((Token("tok_" + "b" * 26), Category("name")),),
        created_at=datetime(2026, 11, 24, tzinfo=UTC),
    )
    for obj in (wrapped, stored_key, record):
        text = repr(obj)
        assert "WRAPPEDKEYBLOB" not in text
        assert "FINGERPRINTBYTES" not in text
        assert "blob" not in text
        assert "fingerprint" not in text
    assert "kek_version=3" in repr(wrapped)


@pytest.mark.parametrize("size", [1, 16, 4096, 4097, 1 << 20])
def test_wipe_buffer_zeroes_the_same_memory(size: int) -> None:
    """Small buffers take the slice path, large ones memset: both write into the buffer
    itself (a view taken before sees the zeros), never into a copy."""
    from vault.domain.secrets import wipe_buffer

    buf = bytearray(b"\xa5" * size)
    view = memoryview(buf)
    wipe_buffer(buf)
    assert view.tobytes() == bytes(size)
    view.release()
    assert len(buf) == size
