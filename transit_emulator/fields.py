"""Request fields as Vault's framework reads them, and Go's encodings.

TypeInt/TypeBool accept numbers, bools or strings; JSON ``null`` means unset
(``shared/reference/vault-transit.md`` section 1). The wording of conversion errors is [?]:
Vault says ``error converting input <v> for field "<k>": <Go error>``.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any

from transit_emulator.errors import VaultError, user_error

JSON = dict[str, Any]

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64 = {c: i for i, c in enumerate(_ALPHABET)}


class Base64Error(ValueError):
    """Go's ``base64.CorruptInputError``."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"illegal base64 data at input byte {offset}")


def _assemble(values: list[int]) -> bytes:
    number = 0
    for i, value in enumerate(values):
        number |= value << (18 - 6 * i)
    return number.to_bytes(3, "big")[: len(values) - 1]


def go_b64decode(text: str) -> bytes:
    """``base64.StdEncoding.DecodeString``: padding required, CR/LF skipped, Go error offsets."""
    src = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    si, n = 0, len(src)
    while True:
        quantum: list[int] = []
        while len(quantum) < 4:
            if si == n:
                if not quantum:
                    return bytes(out)
                raise Base64Error(si - len(quantum))
            ch = src[si]
            si += 1
            if ch in _B64:
                quantum.append(_B64[ch])
                continue
            if ch in (10, 13):
                continue
            if ch != ord("=") or len(quantum) < 2:
                raise Base64Error(si - 1)
            if len(quantum) == 2:  # "==" expected; the first "=" is consumed
                while si < n and src[si] in (10, 13):
                    si += 1
                if si == n:
                    raise Base64Error(n)
                if src[si] != ord("="):
                    raise Base64Error(si - 1)
                si += 1
            while si < n and src[si] in (10, 13):
                si += 1
            if si < n:
                raise Base64Error(si)
            return bytes(out + _assemble(quantum))
        out += _assemble(quantum)


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def go_type(value: object) -> str:
    """The Go type name ``%T`` would print for a value decoded by Vault's JSON parser."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "json.Number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    return "map[string]interface {}"


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_nano(ts: float) -> str:
    """Go's ``time.Time`` JSON form (RFC 3339, fraction without trailing zeros), in UTC."""
    moment = datetime.fromtimestamp(ts, UTC)
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def _conversion_error(key: str, value: object, reason: str) -> VaultError:
    return user_error(f'error converting input {value} for field "{key}": {reason}')


def get_str(body: JSON, key: str, default: str = "") -> tuple[str, bool]:
    value = body.get(key)
    if value is None:
        return default, False
    if isinstance(value, bool):
        return ("1" if value else "0"), True
    if isinstance(value, (str, int, float)):
        return str(value), True
    raise _conversion_error(key, value, f"expected type 'string', got {go_type(value)}")


def get_int(body: JSON, key: str, default: int = 0) -> tuple[int, bool]:
    value = body.get(key)
    if value is None:
        return default, False
    if isinstance(value, bool):
        return int(value), True
    if isinstance(value, int):
        return value, True
    if isinstance(value, float) and value.is_integer():
        return int(value), True
    if isinstance(value, str):
        try:
            return int(value), True
        except ValueError:
            pass
    raise _conversion_error(key, value, f"cannot parse '{value}' as int")


def get_bool(body: JSON, key: str, default: bool = False) -> tuple[bool, bool]:
    value = body.get(key)
    if value is None:
        return default, False
    if isinstance(value, bool):
        return value, True
    if isinstance(value, (int, float)):
        return value != 0, True
    if isinstance(value, str):
        truth = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}
        if value.lower() in truth:
            return truth[value.lower()], True
    raise _conversion_error(key, value, f"cannot parse '{value}' as bool")


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def get_duration(body: JSON, key: str) -> tuple[int, bool]:
    """TypeDurationSecond: ``3600``, ``"3600"`` or a Go duration such as ``"1h30m"``."""
    value = body.get(key)
    if value is None:
        return 0, False
    if isinstance(value, str) and value and not value.lstrip("-").isdigit():
        parts = _DURATION_PART.findall(value)
        if "".join(a + b for a, b in parts) != value:
            raise _conversion_error(key, value, f'time: invalid duration "{value}"')
        return int(sum(float(a) * _DURATION_UNITS[b] for a, b in parts)), True
    return get_int(body, key)


def b64_param(body: JSON, name: str) -> bytes:
    """A base64 top-level field (``context``, ``nonce``); 400 ``failed to base64-decode <f>``."""
    value, _ = get_str(body, name)
    try:
        return go_b64decode(value)
    except Base64Error:
        raise user_error(f"failed to base64-decode {name}") from None


def unknown_params_warning(body: JSON, known: set[str]) -> list[str]:
    ignored = sorted(k for k in body if k not in known)
    if not ignored:
        return []
    return [f"Endpoint ignored these unrecognized parameters: [{' '.join(ignored)}]"]  # [?]
