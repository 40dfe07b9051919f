"""A holder for bytes that must not leak: values and key material.

Python cannot reliably wipe memory: `bytes` objects are immutable and may be copied by the
interpreter, by libraries (gRPC, protobuf, cryptography) and by the allocator. `Secret` keeps its
bytes in a `bytearray` so that `wipe()` can overwrite this copy, and makes the common accidental
leaks impossible by construction: its repr and str are redacted, it refuses pickling and copying,
and it does not compare equal to plain bytes. It is a guard against mistakes, not against an
attacker who can read the process's memory.
"""

from __future__ import annotations

import ctypes
import hmac
from typing import NoReturn

__all__ = ["Secret", "wipe_buffer"]


_SMALL = 4096


def wipe_buffer(buf: bytearray) -> None:
    """Overwrite a bytearray with zeros in place, at memory speed (a document is megabytes).
    A small one (a value, a key) by a slice assignment of the same length, which writes into
    the same buffer: ctypes' array set-up cost more than the wipe (issue 14's profile of a
    100-token detokenize: 1.8 µs per value)."""
    n = len(buf)
    if n <= _SMALL:
        buf[:] = bytes(n)
    else:
        ctypes.memset((ctypes.c_char * n).from_buffer(buf), 0, n)


class Secret:
    """Bytes with a redacted repr, no pickling and a best-effort `wipe()`."""

    __slots__ = ("__weakref__", "_buf")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._buf = bytearray(data)

    def reveal(self) -> bytes:
        """The bytes themselves. Call only where they are used, never to log or format them."""
        return bytes(self._buf)

    def reveal_text(self) -> str:
        return self._buf.decode("utf-8")

    def __len__(self) -> int:
        return len(self._buf)

    def wipe(self) -> None:
        """Overwrite this copy with zeros (other copies may exist; see the module docstring)."""
        wipe_buffer(self._buf)

    def __repr__(self) -> str:
        return f"Secret(<{len(self._buf)} bytes redacted>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._buf, other._buf)

    __hash__ = None  # type: ignore[assignment]  # mutable and secret: never a dict key

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise TypeError("a Secret cannot be copied; pass the object itself")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError("a Secret cannot be copied; pass the object itself")
