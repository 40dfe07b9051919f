"""The policy in force, and putting a changed policy file in force without a restart.

One `PolicyReloader` per process holds the policy in force (with the digest of the file it came
from). `reload` reads the file again and validates it whole (`parse_policy`) before anything
changes: an invalid file is refused (one log line, an audited refusal, INVALID_ARGUMENT naming
the problem) and the policy in force stays. A valid, changed one is handed to `put_in_force`,
which swaps everything that reads the policy in one assignment (vault.app): a call already
under way finishes with the policy it started with, the next one gets the new one. Each change
is audited with the versions before and after; every later entry records the new version.

`PolicyAdministration` is the operators' side (PolicyService): who may look and reload (the
`policy` operation), and the reload that is announced to every other process (a notice, as a
revocation is: vault.storage.sql.notices), each of which then reloads its own file.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from vault.domain.context import RequestContext
from vault.domain.operations import authorize_operation
from vault.domain.policy import Policy
from vault.domain.policy_file import parse_policy
from vault.domain.ports import Clock
from vault.domain.stores import AuditLog
from vault.domain.types import Action, AuditEvent, CallerName, Outcome
from vault.errors import ConfigurationError, InvalidArgument

__all__ = [
    "POLICY_OPERATION",
    "PolicyAdministration",
    "PolicyChange",
    "PolicyInForce",
    "PolicyReloader",
    "policy_digest",
]

log = logging.getLogger(__name__)

POLICY_OPERATION = "policy"


def policy_digest(text: str) -> str:
    """What tells two policy files apart (two that give the same version, too)."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class PolicyInForce:
    policy: Policy
    digest: str

    def __str__(self) -> str:
        return f"{self.policy.name} v{self.policy.version} ({self.digest[:19]})"


@dataclass(frozen=True, slots=True)
class PolicyChange:
    before: PolicyInForce
    after: PolicyInForce

    @property
    def changed(self) -> bool:
        return self.before.digest != self.after.digest


class PolicyReloader:
    """The policy in force in this process, and its reload. Thread-safe: reloads are one at a
    time (a signal, an operator's call and a notice may come together)."""

    def __init__(
        self,
        *,
        current: PolicyInForce,
        read: Callable[[], str],
        put_in_force: Callable[[PolicyInForce], None],
        audit: AuditLog,
        announce: Callable[[Sequence[AuditEvent], str, datetime], None],
        clock: Clock,
        where: str = "",
        check: Callable[[Policy], None] = lambda _policy: None,
    ) -> None:
        self._current = current
        self._read = read
        # What the deployment refuses beyond the file's own rules (ConfigurationError): a
        # policy with which nobody could call under the TLS settings, say.
        self._check = check
        self._put_in_force = put_in_force
        self._audit = audit
        # Records the change's audit entries (if any) and tells every process that the file
        # with this digest is in force here, in one transaction.
        self._announce = announce
        self._clock = clock
        self._where = where  # this process, in audit entries and log lines
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PolicyReloader({self._current})"

    @property
    def current(self) -> PolicyInForce:
        return self._current

    def reload(self, by: CallerName, *, announce: bool = False, rule: str = "") -> PolicyChange:
        """Read the policy file again; put it in force if valid and changed. `announce`: tell
        every other process to read its own file again (changed here or not). Raises
        InvalidArgument (field `policy_file`) when the file cannot be read or is invalid; the
        policy in force then stays."""
        with self._lock:
            before = self._current
            try:
                text = self._read()
                policy = parse_policy(text)
                self._check(policy)
            except (ConfigurationError, OSError, UnicodeDecodeError) as exc:
                problem = _problem(exc)
                log.warning(
                    "policy file refused, %s stays in force%s: %s", before, self._where, problem
                )
                self._audit.append(
                    [self._event(by, Outcome.REFUSED, rule, f"refused: {problem}", before)]
                )
                raise InvalidArgument.one("policy_file", "policy_file.valid", problem) from None
            after = PolicyInForce(policy, policy_digest(text))
            if after.digest == before.digest:
                if announce:
                    # Unchanged here, but a process whose file lagged behind may catch up.
                    self._announce([], before.digest, self._clock())
                return PolicyChange(before, before)
            self._put_in_force(after)
            self._current = after
            event = self._event(by, Outcome.GRANTED, rule, f"{before} -> {after}", after)
            if announce:
                self._announce([event], after.digest, event.occurred_at)
            else:
                self._audit.append([event])
            log.warning("policy %s in force%s (was %s)", after, self._where, before)
            return PolicyChange(before, after)

    def _event(
        self, by: CallerName, outcome: Outcome, rule: str, what: str, decided: PolicyInForce
    ) -> AuditEvent:
        return AuditEvent(
            occurred_at=self._clock(),
            caller=by,
            action=Action.POLICY_RELOAD,
            outcome=outcome,
            rule=rule or "policy:reload",
            detail=f"policy {what}{self._where}",
            policy_version=decided.policy.version,
        )


def _problem(exc: ConfigurationError | OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, ConfigurationError):
        return exc.message
    if isinstance(exc, UnicodeDecodeError):
        return f"the policy file is not UTF-8 text (byte {exc.start})"
    where = f": {exc.filename}" if exc.filename else ""
    return f"the policy file cannot be read ({exc.strerror or type(exc).__name__}){where}"


class PolicyAdministration:
    """PolicyService: which policy is in force, and a reload announced to every process.
    Only callers with the `policy` operation; refusals and reloads are audited."""

    def __init__(self, *, reloader: PolicyReloader, audit: AuditLog, clock: Clock) -> None:
        self._reloader = reloader
        self._audit = audit
        self._clock = clock

    def __repr__(self) -> str:
        return "PolicyAdministration()"

    def show(self, ctx: RequestContext) -> PolicyInForce:
        self._authorize(ctx, Action.POLICY_SHOW)
        return self._reloader.current

    def reload(self, ctx: RequestContext) -> PolicyChange:
        rule = self._authorize(ctx, Action.POLICY_RELOAD)
        return self._reloader.reload(ctx.caller, announce=True, rule=rule)

    def _authorize(self, ctx: RequestContext, action: Action) -> str:
        policy = self._reloader.current.policy
        return authorize_operation(
            policy, self._audit, self._clock, ctx.caller, POLICY_OPERATION, action
        )
