"""A typed client for pdvault's TokenService: deadlines, safe retries, errors as exceptions."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
from pdvault.v1 import common_pb2, token_service_pb2, token_service_pb2_grpc

from pdvault_client.errors import PdvaultError, from_rpc_error, from_status

T = TypeVar("T")

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True)
class Field:
    """One value to tokenize. `value` is text or bytes; `card_token` asks for a 16-digit token."""

    category: str
    value: str | bytes
    card_token: bool = False

    def __repr__(self) -> str:  # a value never reaches a repr
        return f"Field(category={self.category!r}, value=<redacted>, card_token={self.card_token})"


@dataclass(frozen=True)
class Tokenized:
    token: str
    category: str


@dataclass(frozen=True)
class Detokenized:
    """One token's result: `value` (full view), `masked`, or `error` (an exception, not raised)."""

    token: str
    category: str = ""
    value: str | bytes | None = None
    masked: str | None = None
    error: PdvaultError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        shown = "<redacted>" if self.value is not None else None
        return (
            f"Detokenized(token={self.token!r}, category={self.category!r}, value={shown}, "
            f"masked={self.masked!r}, error={self.error!r})"
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Retries on UNAVAILABLE with exponential backoff and full jitter, within the deadline."""

    attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0


class Client:
    """pdvault's TokenService. Thread-safe; close it (or use `with`) to release the channel."""

    def __init__(
        self,
        addr: str,
        api_key: str,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        channel: grpc.Channel | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._channel = channel or grpc.insecure_channel(addr)
        self._stub = token_service_pb2_grpc.TokenServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"Client(timeout={self._timeout})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def tokenize(
        self, subject: str, fields: Sequence[Field], *, request_id: str | None = None
    ) -> list[Tokenized]:
        """Store the fields of one subject; one token per field, in order.

        A request id is generated when none is given and reused on every retry, so a retry
        after a timeout never creates a second set of tokens.
        """
        request = token_service_pb2.TokenizeRequest(
            subject=subject,
            request_id=request_id or str(uuid.uuid4()),
            fields=[_field(f) for f in fields],
        )
        response = self._call(self._stub.Tokenize, request)
        return [Tokenized(r.token, r.category) for r in response.results]

    def detokenize(
        self, tokens: Sequence[str], purpose: str, *, justification: str = ""
    ) -> list[Detokenized]:
        """Resolve tokens for a purpose. Refused tokens come back with `error`, not raised."""
        request = token_service_pb2.DetokenizeRequest(
            tokens=list(tokens), purpose=purpose, justification=justification
        )
        response = self._call(self._stub.Detokenize, request)
        return [_result(r) for r in response.results]

    def _call(self, method: Callable[..., T], request: object) -> T:
        deadline = time.monotonic() + self._timeout
        backoff = self._retry.initial_backoff
        for attempt in range(1, self._retry.attempts + 1):
            remaining = deadline - time.monotonic()
            try:
                return method(request, timeout=max(remaining, 0.001), metadata=self._metadata)
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                pause = random.uniform(0, backoff)  # noqa: S311  (jitter, not a secret)
                retryable = error.code in RETRYABLE and attempt < self._retry.attempts
                if not retryable or time.monotonic() + pause >= deadline:
                    raise error from None
                self._sleep(pause)
                backoff = min(backoff * self._retry.multiplier, self._retry.max_backoff)
        raise AssertionError("unreachable")


def _field(f: Field) -> token_service_pb2.TokenizeField:
    value = (
        common_pb2.Value(binary=f.value)
        if isinstance(f.value, bytes)
        else common_pb2.Value(text=f.value)
    )
    fmt = (
        token_service_pb2.TOKEN_FORMAT_CARD_NUMBER
        if f.card_token
        else token_service_pb2.TOKEN_FORMAT_OPAQUE
    )
    return token_service_pb2.TokenizeField(category=f.category, value=value, token_format=fmt)


def _result(r: token_service_pb2.DetokenizeResult) -> Detokenized:
    which = r.WhichOneof("result")
    if which == "error":
        return Detokenized(r.token, error=from_status(r.error))
    if which == "masked":
        return Detokenized(r.token, r.category, masked=r.masked)
    kind = r.value.WhichOneof("kind")
    value: str | bytes = r.value.binary if kind == "binary" else r.value.text
    return Detokenized(r.token, r.category, value=value)
