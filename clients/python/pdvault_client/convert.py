"""Between the library's values and the API's messages, and the retry rule: shared by the
synchronous client (`pdvault_client.Client`) and the asyncio one (`pdvault_client.aio`)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from pdvault.v1 import common_pb2, document_service_pb2, key_service_pb2, token_service_pb2

from pdvault_client.errors import RATE_LIMITED, PdvaultError, from_status
from pdvault_client.types import (
    CacheStats,
    DeletedDocument,
    Detokenized,
    Document,
    Field,
    KeyStatus,
    LegalHold,
    Retention,
    RewrapStep,
    Sweep,
    Tokenized,
    Trimmed,
    VariantInfo,
)

RETRYABLE = frozenset({"UNAVAILABLE"})

VAULT_TOKEN_METADATA = "x-vault-token"  # noqa: S105  (a metadata key, not a secret)


def retry_pause(
    error: PdvaultError, attempt: int, attempts: int, backoff: float, left: float
) -> float | None:
    """How long to wait before attempt `attempt + 1` of `attempts`, or None not to retry:
    UNAVAILABLE, and a refusal over the caller's request rate (RESOURCE_EXHAUSTED, reason
    RATE_LIMITED) whose RetryInfo delay fits; within the attempts and the deadline (`left`
    seconds), with full jitter and at least the server's RetryInfo delay (AIP-194). An item
    quota's refusal is not retried: its window lasts minutes or hours."""
    rate_limited = (
        error.code.name == "RESOURCE_EXHAUSTED"
        and error.reason == RATE_LIMITED
        and error.retry_delay is not None
    )
    if (error.code.name not in RETRYABLE and not rate_limited) or attempt >= attempts:
        return None
    pause = random.uniform(0, backoff)  # noqa: S311  (jitter, not a secret)
    if error.retry_delay is not None:
        pause = max(pause, error.retry_delay)
    return None if pause >= left else pause


def value_message(value: str | bytes, category: str = "value") -> common_pb2.Value:
    try:
        if isinstance(value, bytes):
            return common_pb2.Value(binary=value)
        return common_pb2.Value(text=value)
    except (UnicodeError, ValueError):
        # The codec's error would carry the whole value: say what is wrong without it.
        raise ValueError(f"the {category} value is not valid UTF-8 text") from None


def tokenize_request(
    subject: str, fields: Sequence[Field], request_id: str | None
) -> token_service_pb2.TokenizeRequest:
    """A request id is generated when none is given: the caller reuses this request on every
    retry, so a retry after a timeout never creates a second set of tokens."""
    return token_service_pb2.TokenizeRequest(
        subject=subject,
        request_id=request_id or str(uuid.uuid4()),
        fields=[_field(f) for f in fields],
    )


def tokenized(response: token_service_pb2.TokenizeResponse) -> list[Tokenized]:
    return [Tokenized(r.token, r.category) for r in response.results]


def detokenize_request(
    tokens: Sequence[str], purpose: str, justification: str, legal_basis: str
) -> token_service_pb2.DetokenizeRequest:
    return token_service_pb2.DetokenizeRequest(
        tokens=list(tokens),
        purpose=purpose,
        justification=justification,
        legal_basis=legal_basis_value(legal_basis),
    )


def legal_basis_value(legal_basis: str | None) -> token_service_pb2.LegalBasis.ValueType:
    """`law_or_regulation` ... as the API's enum; none (empty) is LEGAL_BASIS_UNSPECIFIED."""
    basis = 0
    if legal_basis:
        try:
            basis = token_service_pb2.LegalBasis.Value(f"LEGAL_BASIS_{legal_basis.upper()}")
        except ValueError:
            raise ValueError(f"unknown legal basis {legal_basis!r}") from None
    return cast("token_service_pb2.LegalBasis.ValueType", basis)


def detokenized(response: token_service_pb2.DetokenizeResponse) -> list[Detokenized]:
    return [_result(r) for r in response.results]


def message_to_dict(message: Message) -> dict[str, Any]:
    """A message in the proto's JSON form, as a reader expects it: every field printed, its
    default too (a withdrawn consent shows `"granted": false` instead of no `granted` at all),
    and 64-bit integers as JSON numbers rather than the strings ProtoJSON allows."""
    out: dict[str, Any] = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, unquote_int64_if_possible=True
    )
    return out


def rewrap_step(answer: key_service_pb2.RewrapDataKeysResponse) -> RewrapStep:
    return RewrapStep(
        answer.rewrapped,
        answer.failed,
        answer.remaining,
        answer.target_version,
        answer.next_page_token,
    )


def trimmed(answer: key_service_pb2.TrimKeyVersionsResponse) -> Trimmed:
    return Trimmed(
        key_status(answer.status),
        tuple(answer.destroyed_versions),
        {u.version: u.data_keys for u in answer.still_in_use},
    )


_VERSION_STATES = {
    key_service_pb2.KEY_VERSION_STATE_ACTIVE: "active",
    key_service_pb2.KEY_VERSION_STATE_RETIRED: "retired",
    key_service_pb2.KEY_VERSION_STATE_DESTROYED: "destroyed",
    key_service_pb2.KEY_VERSION_STATE_UNKNOWN_TO_PROVIDER: "unknown_to_provider",
}


def key_status(s: key_service_pb2.KeyStatus) -> KeyStatus:
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
    value = value_message(f.value, f.category)
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


# -- documents ------------------------------------------------------------------------------------

_DOCUMENT_TYPE = "DOCUMENT_TYPE_"
_VARIANT = "DOCUMENT_VARIANT_"

# The document types the API names, in its order: passport, drivers_license, ...
DOCUMENT_TYPES: tuple[str, ...] = tuple(
    name.removeprefix(_DOCUMENT_TYPE).lower()
    for name in (v.name for v in document_service_pb2.DocumentType.DESCRIPTOR.values)
    if name != f"{_DOCUMENT_TYPE}UNSPECIFIED"
)
VARIANTS: tuple[str, ...] = tuple(
    name.removeprefix(_VARIANT).lower()
    for name in (v.name for v in document_service_pb2.DocumentVariant.DESCRIPTOR.values)
    if name != f"{_VARIANT}UNSPECIFIED"
)


def document_type_value(name: str) -> document_service_pb2.DocumentType.ValueType:
    if name not in DOCUMENT_TYPES:
        raise ValueError(f"unknown document type {name!r} (one of: {', '.join(DOCUMENT_TYPES)})")
    return document_service_pb2.DocumentType.Value(_DOCUMENT_TYPE + name.upper())


def variant_value(name: str) -> document_service_pb2.DocumentVariant.ValueType:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r} (one of: {', '.join(VARIANTS)})")
    return document_service_pb2.DocumentVariant.Value(_VARIANT + name.upper())


def _enum_name(enum: Any, number: int, prefix: str) -> str:
    """`passport` for DOCUMENT_TYPE_PASSPORT; "" for the zero value; a number this client does
    not know yet (a newer server) as its number, rather than failing the whole answer."""
    try:
        name: str = enum.Name(number)
    except ValueError:
        return str(number)
    return "" if name.endswith("_UNSPECIFIED") else name.removeprefix(prefix).lower()


def _when(message: Message, field: str) -> datetime | None:
    """A Timestamp field as an aware UTC datetime, or None when it is not set."""
    if not message.HasField(field):
        return None
    ts = cast("timestamp_pb2.Timestamp", getattr(message, field))
    return ts.ToDatetime(tzinfo=UTC)


def document(d: document_service_pb2.Document) -> Document:
    r = d.retention
    return Document(
        id=d.document_id,
        subject=d.subject,
        subject_digest=d.subject_digest,
        type=_enum_name(document_service_pb2.DocumentType, d.document_type, _DOCUMENT_TYPE),
        media_type=d.media_type,
        created_at=_when(d, "created_at"),
        uploaded_by=d.uploaded_by,
        scan_state=_enum_name(document_service_pb2.ScanState, d.scan_state, "SCAN_STATE_"),
        scan_engine=d.scan_engine,
        variants=tuple(
            VariantInfo(
                _enum_name(document_service_pb2.DocumentVariant, v.variant, _VARIANT),
                v.media_type,
                v.size,
            )
            for v in d.variants
        ),
        retention=Retention(
            r.rule, r.trigger, r.keep, r.then, r.legal, _when(r, "due_at"), r.source
        ),
        holds=tuple(legal_hold(h) for h in d.holds),
        verified_at=_when(d, "verified_at"),
        retained=d.retained,
        pages=d.pages,
        insurer_number_masked=d.insurer_number_masked,
    )


def legal_hold(h: document_service_pb2.LegalHold) -> LegalHold:
    return LegalHold(h.hold_id, h.reason, h.placed_by, _when(h, "placed_at"))


def deleted_document(answer: document_service_pb2.DeleteDocumentResponse) -> DeletedDocument:
    return DeletedDocument(answer.document_id, _when(answer, "destroyed_at"))


def sweep(answer: document_service_pb2.SweepRetentionResponse) -> Sweep:
    return Sweep(
        answer.sweep_id,
        answer.documents_destroyed,
        answer.originals_destroyed,
        answer.documents_held,
        answer.values_erased,
        answer.blobs_deleted,
        answer.retention_keys_destroyed,
        answer.documents_redestroyed,
    )
