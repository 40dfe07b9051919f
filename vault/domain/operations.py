"""The gate of every operator use case: the policy's `operations` of the caller."""

from __future__ import annotations

from vault.domain.policy import Policy
from vault.domain.ports import Clock
from vault.domain.stores import AuditLog
from vault.domain.types import Action, AuditEvent, CallerName, Outcome
from vault.errors import PermissionDenied

__all__ = ["authorize_operation"]


def authorize_operation(
    policy: Policy,
    audit: AuditLog,
    clock: Clock,
    caller: CallerName,
    operation: str,
    action: Action,
) -> str:
    """The rule that lets `caller` do `operation`. A caller without it MUST be refused after
    its refusal is audited (the action it tried, the rule that refused it): PermissionDenied."""
    d = policy.may_operate(caller, operation)
    if not d.allowed:
        audit.append(
            [
                AuditEvent(
                    occurred_at=clock(),
                    caller=caller,
                    action=action,
                    outcome=Outcome.REFUSED,
                    rule=d.rule,
                )
            ]
        )
        raise PermissionDenied(d.reason, rule=d.rule)
    return d.rule
