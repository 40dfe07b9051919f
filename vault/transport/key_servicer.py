"""The KeyService's servicer: proto -> domain, one use case, domain -> proto."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pdvault.v1 import key_service_pb2

from vault.domain.keys import KeyAdministration, KeyReport, VersionState
from vault.domain.secrets import Secret
from vault.domain.types import (
    SUBJECT_RE,
    SubjectId,
)
from vault.errors import InvalidArgument
from vault.transport.rpc import Call, Method

__all__ = ["VAULT_TOKEN_METADATA", "KeyServicer", "operator_token"]


VAULT_TOKEN_METADATA = "x-vault-token"  # noqa: S105  (a metadata key, not a secret)


@contextmanager
def operator_token(call: Call) -> Iterator[Secret | None]:
    """The operator's own Vault token from the metadata, for one call; wiped after it."""
    presented = call.header(VAULT_TOKEN_METADATA)
    token = Secret(presented.encode()) if presented else None
    try:
        yield token
    finally:
        if token is not None:
            token.wipe()


_VERSION_STATES = {
    VersionState.ACTIVE: key_service_pb2.KEY_VERSION_STATE_ACTIVE,
    VersionState.RETIRED: key_service_pb2.KEY_VERSION_STATE_RETIRED,
    VersionState.DESTROYED: key_service_pb2.KEY_VERSION_STATE_DESTROYED,
    VersionState.UNKNOWN_TO_PROVIDER: key_service_pb2.KEY_VERSION_STATE_UNKNOWN_TO_PROVIDER,
}


def _status_out(report: KeyReport) -> key_service_pb2.KeyStatus:
    kek = report.kek
    out = key_service_pb2.KeyStatus(
        provider=kek.provider,
        key_name=kek.key_name,
        latest_version=kek.latest_version,
        min_decryption_version=kek.min_decryption_version,
        min_available_version=kek.min_available_version,
        versions=[
            key_service_pb2.KeyVersionUsage(
                version=v, data_keys=n, state=_VERSION_STATES[report.state_of(v)]
            )
            for v, n in report.data_keys_by_version.items()
        ],
        other_provider_data_keys=sum(report.other_providers.values()),
    )
    if report.cache is not None:
        c = report.cache
        out.cache.CopyFrom(
            key_service_pb2.KeyCacheStats(
                entries=c.entries,
                hits=c.hits,
                misses=c.misses,
                evictions=c.evictions,
                hit_rate=c.hit_rate,
                max_entries=c.max_entries,
                max_age_seconds=c.max_age_seconds,
                max_uses=c.max_uses,
                process_id=c.process_id,
                host=c.host,
            )
        )
    return out


class KeyServicer:
    def __init__(self, admin: KeyAdministration) -> None:
        self._admin = admin

    def methods(self) -> dict[str, Method[Any, Any]]:
        k = key_service_pb2
        return {
            "GetKeyStatus": Method("GetKeyStatus", k.GetKeyStatusRequest, self.get_key_status),
            "RotateKey": Method("RotateKey", k.RotateKeyRequest, self.rotate_key),
            "RewrapDataKeys": Method(
                "RewrapDataKeys", k.RewrapDataKeysRequest, self.rewrap_data_keys
            ),
            "TrimKeyVersions": Method(
                "TrimKeyVersions", k.TrimKeyVersionsRequest, self.trim_key_versions
            ),
        }

    def get_key_status(
        self, request: key_service_pb2.GetKeyStatusRequest, call: Call
    ) -> key_service_pb2.GetKeyStatusResponse:
        report = self._admin.status(call.ctx)
        return key_service_pb2.GetKeyStatusResponse(status=_status_out(report))

    def rotate_key(
        self, request: key_service_pb2.RotateKeyRequest, call: Call
    ) -> key_service_pb2.RotateKeyResponse:
        with operator_token(call) as admin:
            report = self._admin.rotate(call.ctx, admin)
        return key_service_pb2.RotateKeyResponse(status=_status_out(report))

    def rewrap_data_keys(
        self, request: key_service_pb2.RewrapDataKeysRequest, call: Call
    ) -> key_service_pb2.RewrapDataKeysResponse:
        after = _page_after(request.page_token) if request.page_token else None
        progress = self._admin.rewrap(call.ctx, request.batch_size or 100, after)
        token = _page_token(progress.next_after) if progress.next_after else ""
        return key_service_pb2.RewrapDataKeysResponse(
            rewrapped=progress.rewrapped,
            failed=progress.failed,
            remaining=progress.remaining,
            target_version=progress.target_version,
            next_page_token=token,
        )

    def trim_key_versions(
        self, request: key_service_pb2.TrimKeyVersionsRequest, call: Call
    ) -> key_service_pb2.TrimKeyVersionsResponse:
        with operator_token(call) as admin:
            done = self._admin.trim(call.ctx, request.min_version or None, admin)
        return key_service_pb2.TrimKeyVersionsResponse(
            status=_status_out(done.report),
            destroyed_versions=list(done.destroyed),
            still_in_use=[
                key_service_pb2.KeyVersionUsage(
                    version=v, data_keys=n, state=_VERSION_STATES[done.report.state_of(v)]
                )
                for v, n in sorted(done.still_in_use.items())
            ],
        )


def _page_token(after: SubjectId) -> str:
    return base64.urlsafe_b64encode(after.encode()).decode().rstrip("=")


def _page_after(token: str) -> SubjectId:
    """The subject a next_page_token names. Strict: a token this call did not give is refused,
    never read as "start over" (base64 decoders skip characters they do not know)."""
    refused = InvalidArgument.one(
        "page_token", "page_token.invalid", "must be a next_page_token of this call"
    )
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        after = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise refused from None
    if not SUBJECT_RE.fullmatch(after) or _page_token(SubjectId(after)) != token:
        raise refused
    return SubjectId(after)
