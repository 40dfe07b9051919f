"""A typed client for pdvault's TokenService: deadlines, safe retries, errors as exceptions."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from pdvault.v1 import (
    common_pb2,
    key_service_pb2,
    key_service_pb2_grpc,
    subject_service_pb2,
    subject_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)

from pdvault_client.errors import PdvaultError, from_rpc_error, from_status

T = TypeVar("T")

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})

# The largest message the client sends or accepts: the server's own limit (MAX_MESSAGE_BYTES in
# vault/transport/server.py, not imported: this library installs without the server). gRPC's
# default receive limit, 4 MiB, would refuse a batch the server is allowed to send.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)


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
class CacheStats:
    entries: int
    hits: int
    misses: int
    evictions: int
    hit_rate: float
    max_entries: int
    max_age_seconds: float
    max_uses: int
    # Each server process keeps its own cache: these figures are of this one.
    process_id: int = 0
    host: str = ""


@dataclass(frozen=True)
class KeyStatus:
    provider: str
    key_name: str
    latest_version: int
    min_decryption_version: int
    min_available_version: int
    data_keys_by_version: dict[int, int]
    other_provider_data_keys: int
    cache: CacheStats | None
    # version -> active | retired | destroyed | unknown_to_provider (see key_service.proto)
    version_states: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Trimmed:
    """What a trim did: the key after it, the versions destroyed, and when none could be,
    the oldest versions still wrapping data keys (rewrap them first)."""

    status: KeyStatus
    destroyed_versions: tuple[int, ...]
    still_in_use: dict[int, int]


@dataclass(frozen=True)
class RewrapStep:
    rewrapped: int
    failed: int
    remaining: int
    target_version: int
    next_page_token: str


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
        tls_ca: bytes | None = None,
        tls_server_name: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`tls_ca`: the PEM CA bundle that signed the server's certificate; with it the
        channel uses TLS (`tls_server_name` overrides the name checked in the certificate).
        Without it the channel is plaintext, which pdvault serves on loopback only. A channel
        given in `channel` is used as it is (set its message limits to MAX_MESSAGE_BYTES)."""
        if channel is None:
            options: list[tuple[str, str | int]] = list(CHANNEL_OPTIONS)
            if tls_ca is not None:
                if tls_server_name:
                    options.append(("grpc.ssl_target_name_override", tls_server_name))
                channel = grpc.secure_channel(
                    addr, grpc.ssl_channel_credentials(root_certificates=tls_ca), options=options
                )
            else:
                channel = grpc.insecure_channel(addr, options=options)
        self._channel = channel
        self._stub = token_service_pb2_grpc.TokenServiceStub(self._channel)
        self._key_stub = key_service_pb2_grpc.KeyServiceStub(self._channel)
        self._subject_stub = subject_service_pb2_grpc.SubjectServiceStub(self._channel)
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
        self,
        tokens: Sequence[str],
        purpose: str,
        *,
        justification: str = "",
        legal_basis: str = "",
    ) -> list[Detokenized]:
        """Resolve tokens for a purpose. Refused tokens come back with `error`, not raised.

        `legal_basis` (law_or_regulation, public_interest, public_function, legitimate_rights)
        states a legal exception; give it only when it applies: it is audited.
        """
        basis = 0
        if legal_basis:
            try:
                basis = token_service_pb2.LegalBasis.Value(f"LEGAL_BASIS_{legal_basis.upper()}")
            except ValueError:
                raise ValueError(f"unknown legal basis {legal_basis!r}") from None
        request = token_service_pb2.DetokenizeRequest(
            tokens=list(tokens),
            purpose=purpose,
            justification=justification,
            legal_basis=cast("token_service_pb2.LegalBasis.ValueType", basis),
        )
        response = self._call(self._stub.Detokenize, request)
        return [_result(r) for r in response.results]

    def subjects(self) -> SubjectAdmin:
        """The data-subject lifecycle (the SubjectService) for an operator caller."""
        return SubjectAdmin(self)

    def keys(self, *, vault_token: str | None = None) -> KeyAdmin:
        """Key administration (the KeyService) for an operator caller.

        `vault_token` is the operator's own HashiCorp Vault token, which rotate and trim need
        when pdvault runs on Vault Transit; it is sent with those calls only.
        """
        return KeyAdmin(self, vault_token)

    def _call(
        self,
        method: Callable[..., T],
        request: object,
        *,
        extra_metadata: tuple[tuple[str, str], ...] = (),
        retry: bool = True,
    ) -> T:
        deadline = time.monotonic() + self._timeout
        backoff = self._retry.initial_backoff
        metadata = self._metadata + extra_metadata
        attempts = self._retry.attempts if retry else 1
        for attempt in range(1, attempts + 1):
            remaining = deadline - time.monotonic()
            try:
                return method(request, timeout=max(remaining, 0.001), metadata=metadata)
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                pause = random.uniform(0, backoff)  # noqa: S311  (jitter, not a secret)
                if error.retry_delay is not None:
                    # The server's RetryInfo says how long to wait at least (AIP-194).
                    pause = max(pause, error.retry_delay)
                retryable = error.code in RETRYABLE and attempt < attempts
                if not retryable or time.monotonic() + pause >= deadline:
                    raise error from None
                self._sleep(pause)
                backoff = min(backoff * self._retry.multiplier, self._retry.max_backoff)
        raise AssertionError("unreachable")


def message_to_dict(message: Message) -> dict[str, Any]:
    """A message in the proto's JSON form, as a reader expects it: every field printed, its
    default too (a withdrawn consent shows `"granted": false` instead of no `granted` at all),
    and 64-bit integers as JSON numbers rather than the strings ProtoJSON allows."""
    out: dict[str, Any] = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, unquote_int64_if_possible=True
    )
    return out


class SubjectAdmin:
    """The SubjectService, through a Client. Answers are plain dicts (the proto's JSON form,
    defaults included, see `message_to_dict`), ready to print or store; the export contains
    values: handle it as the data it is."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = client._subject_stub

    def __repr__(self) -> str:
        return "SubjectAdmin()"

    def _do(
        self, method: Callable[..., Any], request: object, retry: bool = True
    ) -> dict[str, Any]:
        answer = self._client._call(method, request, retry=retry)
        return message_to_dict(answer)

    def get(self, subject: str) -> dict[str, Any]:
        return self._do(
            self._stub.GetSubject, subject_service_pb2.GetSubjectRequest(subject=subject)
        )

    def stop(self, subject: str) -> dict[str, Any]:
        return self._do(
            self._stub.StopSubject, subject_service_pb2.StopSubjectRequest(subject=subject)
        )

    def resume(self, subject: str) -> dict[str, Any]:
        return self._do(
            self._stub.ResumeSubject, subject_service_pb2.ResumeSubjectRequest(subject=subject)
        )

    def shred(self, subject: str) -> dict[str, Any]:
        """Crypto-shred; idempotent, so a retry returns the same receipt."""
        return self._do(
            self._stub.ShredSubject, subject_service_pb2.ShredSubjectRequest(subject=subject)
        )

    def export(self, subject: str) -> dict[str, Any]:
        return self._do(
            self._stub.ExportSubject, subject_service_pb2.ExportSubjectRequest(subject=subject)
        )

    def consent(self, subject: str, purpose: str, granted: bool) -> dict[str, Any]:
        return self._do(
            self._stub.SetConsent,
            subject_service_pb2.SetConsentRequest(
                subject=subject, purpose=purpose, granted=granted
            ),
        )

    def correct(self, token: str, value: str | bytes) -> dict[str, Any]:
        v = (
            common_pb2.Value(binary=value)
            if isinstance(value, bytes)
            else common_pb2.Value(text=value)
        )
        return self._do(
            self._stub.CorrectValue, subject_service_pb2.CorrectValueRequest(token=token, value=v)
        )


class KeyAdmin:
    """The KeyService, through a Client. Rotate is never retried: a retry could rotate twice."""

    def __init__(self, client: Client, vault_token: str | None) -> None:
        self._client = client
        self._admin = (("x-vault-token", vault_token),) if vault_token else ()

    def __repr__(self) -> str:
        return "KeyAdmin()"

    def status(self) -> KeyStatus:
        answer = self._client._call(
            self._client._key_stub.GetKeyStatus, key_service_pb2.GetKeyStatusRequest()
        )
        return _key_status(answer.status)

    def rotate(self) -> KeyStatus:
        answer = self._client._call(
            self._client._key_stub.RotateKey,
            key_service_pb2.RotateKeyRequest(),
            extra_metadata=self._admin,
            retry=False,
        )
        return _key_status(answer.status)

    def rewrap_batch(self, batch_size: int = 100, page_token: str = "") -> RewrapStep:
        """One batch; pass the returned `next_page_token` to the next call until it is empty."""
        answer = self._client._call(
            self._client._key_stub.RewrapDataKeys,
            key_service_pb2.RewrapDataKeysRequest(batch_size=batch_size, page_token=page_token),
        )
        return RewrapStep(
            answer.rewrapped,
            answer.failed,
            answer.remaining,
            answer.target_version,
            answer.next_page_token,
        )

    def trim(self, min_version: int | None = None) -> Trimmed:
        answer = self._client._call(
            self._client._key_stub.TrimKeyVersions,
            key_service_pb2.TrimKeyVersionsRequest(min_version=min_version or 0),
            extra_metadata=self._admin,
        )
        return Trimmed(
            _key_status(answer.status),
            tuple(answer.destroyed_versions),
            {u.version: u.data_keys for u in answer.still_in_use},
        )


_VERSION_STATES = {
    key_service_pb2.KEY_VERSION_STATE_ACTIVE: "active",
    key_service_pb2.KEY_VERSION_STATE_RETIRED: "retired",
    key_service_pb2.KEY_VERSION_STATE_DESTROYED: "destroyed",
    key_service_pb2.KEY_VERSION_STATE_UNKNOWN_TO_PROVIDER: "unknown_to_provider",
}


def _key_status(s: key_service_pb2.KeyStatus) -> KeyStatus:
    cache = None
    if s.HasField("cache"):
        c = s.cache
        cache = CacheStats(
            c.entries,
            c.hits,
            c.misses,
            c.evictions,
            c.hit_rate,
            c.max_entries,
            c.max_age_seconds,
            c.max_uses,
            c.process_id,
            c.host,
        )
    return KeyStatus(
        s.provider,
        s.key_name,
        s.latest_version,
        s.min_decryption_version,
        s.min_available_version,
        {v.version: v.data_keys for v in s.versions},
        s.other_provider_data_keys,
        cache,
        {v.version: _VERSION_STATES.get(v.state, "") for v in s.versions},
    )


def _field(f: Field) -> token_service_pb2.TokenizeField:
    try:
        value = (
            common_pb2.Value(binary=f.value)
            if isinstance(f.value, bytes)
            else common_pb2.Value(text=f.value)
        )
    except (UnicodeError, ValueError):
        # The codec's error would carry the whole value: say what is wrong without it.
        raise ValueError(f"the {f.category} value is not valid UTF-8 text") from None
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
