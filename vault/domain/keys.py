"""The use cases of key administration: status, rotate, rewrap, trim.

They follow HashiCorp Vault Transit's ladder, whatever the provider: rotate adds a version (new
data keys use it), rewrap moves every wrapped data key to the latest version, trim raises
`min_decryption_version` to the oldest version still in use and then destroys the versions
below it. Trim refuses while any data key still needs a version it would destroy.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from vault.domain.approvals import DualControl
from vault.domain.context import RequestContext
from vault.domain.operations import authorize_operation
from vault.domain.policy import ApprovalAction, Policy
from vault.domain.ports import Clock, KekStatus, KeyProvider
from vault.domain.secrets import Secret
from vault.domain.stores import AuditLog, KeyInventory
from vault.domain.types import Action, AuditEvent, CallerName, Outcome, SubjectId
from vault.errors import FailedPrecondition, InvalidArgument, Reason

__all__ = [
    "MAX_REWRAP_BATCH",
    "CacheFigures",
    "KeyAdministration",
    "KeyReport",
    "RewrapProgress",
    "TrimResult",
    "VersionState",
    "version_state",
]


MAX_REWRAP_BATCH = 1000


@dataclass(frozen=True, slots=True)
class CacheFigures:
    """One process's data-key cache (each process keeps its own)."""

    entries: int
    hits: int
    misses: int
    evictions: int
    hit_rate: float
    max_entries: int
    max_age_seconds: float
    max_uses: int
    process_id: int = 0
    host: str = ""


class VersionState(enum.Enum):
    ACTIVE = "active"  # decrypts
    RETIRED = "retired"  # below min_decryption_version (reversible)
    DESTROYED = "destroyed"  # trimmed on purpose: its data keys are unreadable for ever
    UNKNOWN_TO_PROVIDER = "unknown_to_provider"  # newer than the provider's latest: wrong key


def version_state(kek: KekStatus, version: int) -> VersionState:
    if version > kek.latest_version:
        return VersionState.UNKNOWN_TO_PROVIDER
    if version < kek.min_available_version:
        return VersionState.DESTROYED
    if version < kek.min_decryption_version:
        return VersionState.RETIRED
    return VersionState.ACTIVE


@dataclass(frozen=True, slots=True)
class KeyReport:
    kek: KekStatus
    data_keys_by_version: dict[int, int]
    other_providers: dict[str, int]
    cache: CacheFigures | None

    def state_of(self, version: int) -> VersionState:
        return version_state(self.kek, version)


@dataclass(frozen=True, slots=True)
class TrimResult:
    """What a trim did: the versions it destroyed, or why it could destroy none older."""

    report: KeyReport
    destroyed: tuple[int, ...]
    still_in_use: dict[int, int]  # the oldest versions still wrapping data keys, and how many


@dataclass(frozen=True, slots=True)
class RewrapProgress:
    rewrapped: int
    failed: int
    remaining: int
    target_version: int
    next_after: SubjectId | None  # where the next batch starts; None when the pass is done


class KeyAdministration:
    """Key operations for callers the policy allows `keys`. Every call is audited.

    Invariants: rewrap MUST only replace a wrapping it read (a concurrent rewrap or a shred is
    never overwritten) and is idempotent and resumable batch by batch; trim MUST refuse while a
    data key of this provider is wrapped under a version below the new floor.
    """

    def __init__(
        self,
        *,
        policy: Policy,
        inventory: KeyInventory,
        audit: AuditLog,
        keys: KeyProvider,
        clock: Clock,
        cache_figures: Callable[[], CacheFigures | None] = lambda: None,
        dual_control: DualControl | None = None,
    ) -> None:
        self._policy = policy
        self._dual = dual_control
        self._inventory = inventory
        self._audit_log = audit
        self._keys = keys
        self._clock = clock
        self._cache_figures = cache_figures

    def status(self, ctx: RequestContext) -> KeyReport:
        self._authorize(ctx.caller, Action.KEY_STATUS)
        return self._report(self._keys.status(ctx))

    def rotate(self, ctx: RequestContext, admin: Secret | None) -> KeyReport:
        caller = ctx.caller
        self._authorize(caller, Action.KEY_ROTATE)
        before = self._keys.status(ctx)
        after = self._keys.rotate(ctx, admin)
        self._audit(
            caller, Action.KEY_ROTATE, f"v{before.latest_version} -> v{after.latest_version}"
        )
        return self._report(after)

    def rewrap(
        self, ctx: RequestContext, batch_size: int, after: SubjectId | None = None
    ) -> RewrapProgress:
        """Move one batch of data keys to the latest version; call again with `next_after`
        until it is None. Keys that fail are passed over, never retried in a loop."""
        caller = ctx.caller
        self._authorize(caller, Action.KEY_REWRAP)
        if not 1 <= batch_size <= MAX_REWRAP_BATCH:
            raise InvalidArgument.one(
                "batch_size", "batch_size.range", f"must be from 1 to {MAX_REWRAP_BATCH}"
            )
        target = self._keys.status(ctx).latest_version
        batch = self._inventory.data_keys_to_rewrap(self._keys.name, target, batch_size, after)
        fresh = self._keys.rewrap(ctx, [(k.subject, k.wrapped) for k in batch]) if batch else []
        updates = [(old, new) for old, new in zip(batch, fresh, strict=True) if new is not None]
        failed = len(batch) - len(updates)
        detail = f"{len(updates)} data keys to v{target}" + (f", {failed} failed" if failed else "")
        replaced = self._inventory.replace_wrapped_keys(
            updates, [self._event(caller, Action.KEY_REWRAP, detail)] if batch else []
        )
        left = sum(
            n
            for (p, v), n in self._inventory.kek_version_counts().items()
            if p == self._keys.name and v < target
        )
        next_after = batch[-1].subject if len(batch) == batch_size else None
        return RewrapProgress(replaced, failed, left, target, next_after)

    def trim(
        self, ctx: RequestContext, min_version: int | None, admin: Secret | None
    ) -> TrimResult:
        """Retire and destroy the versions below `min_version` (default: the oldest version
        still in use). Says what it destroyed, and when nothing, which versions keep it."""
        caller = ctx.caller
        self._authorize(caller, Action.KEY_TRIM)
        status = self._keys.status(ctx)
        in_use = self._usage()
        oldest = min(in_use) if in_use else status.latest_version
        floor = oldest if min_version is None else min_version
        if not 1 <= floor <= status.latest_version:
            raise InvalidArgument.one(
                "min_version",
                "min_version.range",
                f"must be from 1 to the latest version {status.latest_version}",
            )
        blocking = {v: n for v, n in in_use.items() if v < floor}
        if blocking:
            counts = ", ".join(f"{n} on v{v}" for v, n in sorted(blocking.items()))
            self._audit(caller, Action.KEY_TRIM, f"refused: data keys still use {counts}", False)
            raise FailedPrecondition(
                f"cannot retire versions below v{floor}: data keys still use them ({counts}); "
                "run pdv keys rewrap first",
                reason=Reason.KEY_VERSION_IN_USE,
            )
        keeping = {floor: in_use[floor]} if floor in in_use else {}
        already = max(status.min_available_version, 1)
        destroyed = tuple(range(already, floor))
        if not destroyed and floor <= status.min_decryption_version:
            self._audit(caller, Action.KEY_TRIM, f"nothing to trim below v{floor}")
            return TrimResult(self._report(status), (), keeping)
        if self._dual is not None:
            # Held for a second operator when the policy says so (PCI DSS 3.7.6); the
            # approval carries out exactly this floor.
            self._dual.hold(
                ctx,
                ApprovalAction.KEYS_TRIM,
                {"min_version": str(floor)},
                f"retire versions below v{floor}",
            )
        # Recorded before it happens: destroying key versions must never go unrecorded.
        self._audit(caller, Action.KEY_TRIM, f"requested: retire versions below v{floor}")
        if floor > status.min_decryption_version:
            status = self._keys.set_min_decryption_version(ctx, floor, admin)
        if floor > status.min_available_version:
            status = self._keys.trim(ctx, floor, admin)
        self._audit(caller, Action.KEY_TRIM, f"versions below v{floor} retired and destroyed")
        return TrimResult(self._report(status), destroyed, keeping)

    # -- helpers ------------------------------------------------------------------------------

    def _usage(self) -> dict[int, int]:
        counts = self._inventory.kek_version_counts()
        return {v: n for (p, v), n in counts.items() if p == self._keys.name}

    def _report(self, kek: KekStatus) -> KeyReport:
        counts = self._inventory.kek_version_counts()
        mine = {v: n for (p, v), n in counts.items() if p == self._keys.name}
        others: dict[str, int] = {}
        for (p, _v), n in counts.items():
            if p != self._keys.name:
                others[p] = others.get(p, 0) + n
        return KeyReport(kek, dict(sorted(mine.items())), others, self._cache_figures())

    def _authorize(self, caller: CallerName, action: Action) -> None:
        authorize_operation(self._policy, self._audit_log, self._clock, caller, "keys", action)

    def _audit(self, caller: CallerName, action: Action, detail: str, granted: bool = True) -> None:
        self._audit_log.append([self._event(caller, action, detail, granted)])

    def _event(
        self,
        caller: CallerName,
        action: Action,
        detail: str | None,
        granted: bool = True,
        rule: str | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            occurred_at=self._clock(),
            caller=caller,
            action=action,
            outcome=Outcome.GRANTED if granted else Outcome.REFUSED,
            rule=rule or f"caller:{caller}:operations",
            detail=detail,
        )
