"""Callers' credentials as operators manage them: a new API key for a caller of the policy
(printed once, stored as a hash), a second one alongside the first (rotation), revocation, the
list (names, key ids, created, last used, revoked), and the very first operator key.

Callers, their purposes and views live in the policy file; their keys live in the database.
Operators are callers with the `callers` operation. A revocation reaches every process within a
second (a notice in its transaction: PostgreSQL NOTIFY, SQLite's one-second poll), not at the
key table's next refresh. Every step is audited, never with a key or its hash.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from vault.domain.approvals import DualControl
from vault.domain.callers import issue_api_key
from vault.domain.context import RequestContext
from vault.domain.operations import authorize_operation
from vault.domain.policy import ApprovalAction, Policy
from vault.domain.ports import Clock
from vault.domain.stores import AuditLog, CredentialStore, KeyInfo
from vault.domain.types import Action, AuditEvent, CallerName, Outcome
from vault.errors import (
    ConfigurationError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Reason,
)

__all__ = ["CALLERS_OPERATION", "CallerAdministration", "NewKey", "bootstrap_operator"]

CALLERS_OPERATION = "callers"
_KEY_ID_RE = re.compile(r"[a-z2-7]{16}")


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key as issued: `key` is shown once and never stored."""

    caller: CallerName
    key_id: str
    key: str


class CallerAdministration:
    def __init__(
        self,
        *,
        policy: Policy,
        credentials: CredentialStore,
        audit: AuditLog,
        clock: Clock,
        changed: Callable[[], None] = lambda: None,
        dual_control: DualControl | None = None,
    ) -> None:
        self.policy = policy
        self._dual = dual_control
        self._credentials = credentials
        self._audit = audit
        self._clock = clock
        # This process reads the key table again at once; the others hear the notice.
        self._changed = changed

    def __repr__(self) -> str:
        return "CallerAdministration()"

    def add_key(self, ctx: RequestContext, caller: str, rotation: bool = False) -> NewKey:
        """A new key for `caller`, valid alongside the ones it has (`rotation`: says so in the
        audit; revoke the old one once its users moved)."""
        action = Action.CALLER_KEY_ROTATE if rotation else Action.CALLER_KEY_ADD
        self._authorize(ctx, action)
        name = self._known(caller)
        key, record = issue_api_key(name)
        event = self._event(ctx, action, f"caller {name}: key {record.key_id} issued")
        self._credentials.add_api_key(record, [event], self._clock())
        self._changed()
        return NewKey(name, record.key_id, key)

    def revoke(self, ctx: RequestContext, caller: str, key_id: str) -> None:
        self._authorize(ctx, Action.CALLER_KEY_REVOKE)
        if not _KEY_ID_RE.fullmatch(key_id):
            raise InvalidArgument.one(
                "key_id", "key_id.syntax", "must be a key id: 16 base32 characters"
            )
        name = CallerName(caller)
        if self._dual is not None and self.policy.dual_control.requires(
            ApprovalAction.CALLER_REVOKE
        ):
            # Nothing to approve for a key that is not live: say so now, not after approval.
            if not any(
                k.key_id == key_id and k.caller == name and k.revoked_at is None
                for k in self._credentials.key_infos()
            ):
                raise NotFound(
                    f"caller '{caller}' has no live key {key_id}", reason=Reason.SUBJECT_UNKNOWN
                )
            self._dual.hold(
                ctx,
                ApprovalAction.CALLER_REVOKE,
                {"caller": name, "key_id": key_id},
                f"revoke key {key_id} of caller {name}",
            )
        event = self._event(ctx, Action.CALLER_KEY_REVOKE, f"caller {name}: key {key_id} revoked")
        if not self._credentials.revoke(name, key_id, self._clock(), [event]):
            raise NotFound(
                f"caller '{caller}' has no live key {key_id}", reason=Reason.SUBJECT_UNKNOWN
            )
        self._changed()

    def list_keys(self, ctx: RequestContext) -> list[KeyInfo]:
        self._authorize(ctx, Action.CALLER_LIST)
        found = self._credentials.key_infos()
        self._audit.append([self._event(ctx, Action.CALLER_LIST, f"{len(found)} keys")])
        return found

    def _known(self, caller: str) -> CallerName:
        if CallerName(caller) not in self.policy.callers:
            raise InvalidArgument.one(
                "caller",
                "caller.unknown",
                "must be a caller of the policy: " + ", ".join(sorted(self.policy.callers)),
            )
        return CallerName(caller)

    def _authorize(self, ctx: RequestContext, action: Action) -> None:
        authorize_operation(
            self.policy, self._audit, self._clock, ctx.caller, CALLERS_OPERATION, action
        )

    def _event(self, ctx: RequestContext, action: Action, detail: str) -> AuditEvent:
        return AuditEvent(
            occurred_at=self._clock(),
            caller=ctx.caller,
            action=action,
            outcome=Outcome.GRANTED,
            rule=f"caller:{ctx.caller}:operations",
            detail=detail,
        )


def bootstrap_operator(
    policy: Policy, credentials: CredentialStore, audit: AuditLog, clock: Clock, caller: str
) -> NewKey:
    """The very first operator key, against the database (no server, no existing key needed):
    only for a caller with the `callers` operation, and only while no such caller has a live
    key (then operators issue keys through CallerService)."""
    operators = sorted(c.name for c in policy.callers.values() if CALLERS_OPERATION in c.operations)
    if not operators:
        raise ConfigurationError(
            "no caller of the policy has the callers operation: add it to an operator's entry"
        )
    if caller not in operators:
        raise ConfigurationError(
            f"'{caller}' may not manage callers; the policy's operators are: {', '.join(operators)}"
        )
    live = credentials.callers_with_keys() & set(operators)
    if live:
        raise FailedPrecondition(
            f"operator {', '.join(sorted(live))} already has a key: issue more with pdv caller add",
            reason=Reason.CONFIGURATION,
        )
    key, record = issue_api_key(CallerName(caller))
    event = AuditEvent(
        occurred_at=clock(),
        caller=CallerName("system:bootstrap"),
        action=Action.CALLER_KEY_ADD,
        outcome=Outcome.GRANTED,
        rule="bootstrap:first-operator",
        detail=f"caller {caller}: key {record.key_id} issued",
    )
    credentials.add_api_key(record, [event], clock())
    return NewKey(CallerName(caller), record.key_id, key)
