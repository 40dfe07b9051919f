"""The policy reload's rules, without a server (issue #12 §5): validate first, refuse an invalid
file and keep the policy in force, swap only a changed one, audit each step with the versions,
and let only callers with the `policy` operation look or reload."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vault.domain.context import RequestContext
from vault.domain.policy import Policy
from vault.domain.policy_admin import (
    PolicyAdministration,
    PolicyInForce,
    PolicyReloader,
    policy_digest,
)
from vault.domain.policy_file import default_policy_text, parse_policy
from vault.domain.types import Action, AuditEvent, CallerName, Outcome
from vault.errors import ConfigurationError, InvalidArgument, PermissionDenied
from vault.storage.memory import MemoryAuditLog, MemoryState

TEXT = default_policy_text()
V2 = TEXT.replace("version = 1\n", "version = 2\n", 1)


class World:
    def __init__(self) -> None:
        self.file = TEXT
        self.state = MemoryState()
        self.audit = MemoryAuditLog(self.state)
        self.swapped: list[PolicyInForce] = []
        self.announced: list[tuple[list[AuditEvent], str]] = []
        self.refuse: str | None = None
        self.reloader = PolicyReloader(
            current=PolicyInForce(parse_policy(TEXT), policy_digest(TEXT)),
            read=lambda: self.file,
            put_in_force=self.swapped.append,
            audit=self.audit,
            announce=lambda events, digest, _now: self.announced.append((list(events), digest)),
            clock=lambda: datetime(2026, 11, 29, tzinfo=UTC),
            where=" (process 1 on test)",
            check=self.check,
        )
        self.admin = PolicyAdministration(
            reloader=self.reloader, audit=self.audit, clock=lambda: datetime.now(UTC)
        )

    def check(self, _policy: Policy) -> None:
        if self.refuse:
            raise ConfigurationError(self.refuse)


def test_an_unchanged_file_changes_nothing() -> None:
    w = World()
    change = w.reloader.reload(CallerName("system:sighup"))
    assert not change.changed
    assert w.swapped == []
    assert w.state.audit == []


def test_a_changed_file_is_swapped_in_and_audited_with_both_versions() -> None:
    w = World()
    w.file = V2
    change = w.reloader.reload(CallerName("system:sighup"))
    assert change.changed
    assert (change.before.policy.version, change.after.policy.version) == (1, 2)
    assert w.swapped == [change.after]
    assert w.reloader.current is change.after
    [event] = w.state.audit
    assert (event.action, event.outcome, event.caller) == (
        Action.POLICY_RELOAD,
        Outcome.GRANTED,
        "system:sighup",
    )
    assert event.policy_version == 2
    assert event.detail is not None
    assert "engoo-privacy-policy v1 (sha256:" in event.detail
    assert "-> engoo-privacy-policy v2 (sha256:" in event.detail
    assert event.detail.endswith("(process 1 on test)")


@pytest.mark.parametrize(
    ("text", "refuse", "problem"),
    [
        ("[policy\n", None, "policy file is not valid TOML"),
        (TEXT.replace("version = 1\n", "version = 0\n", 1), None, "policy.version"),
        (V2, "nobody could call", "nobody could call"),
    ],
)
def test_an_invalid_file_is_refused_and_the_policy_in_force_stays(
    text: str, refuse: str | None, problem: str
) -> None:
    w = World()
    before = w.reloader.current
    w.file, w.refuse = text, refuse
    with pytest.raises(InvalidArgument) as refused:
        w.reloader.reload(CallerName("ops"), announce=True)
    [violation] = refused.value.violations
    assert violation.field == "policy_file"
    assert problem in violation.description
    assert w.reloader.current is before
    assert w.swapped == []
    assert w.announced == []
    [event] = w.state.audit
    assert event.outcome is Outcome.REFUSED
    assert event.policy_version == 1  # the policy that stays
    assert event.detail is not None
    assert problem in event.detail


def test_a_file_that_is_not_utf8_is_refused() -> None:
    w = World()

    def latin1() -> str:
        return b"[policy]\nname = 'caf\xe9'\n".decode("utf-8")

    w.reloader._read = latin1
    with pytest.raises(InvalidArgument) as refused:
        w.reloader.reload(CallerName("system:sighup"))
    assert "not UTF-8 text (byte 20)" in refused.value.message


def test_an_unreadable_file_is_refused_too() -> None:
    w = World()

    def missing() -> str:
        raise FileNotFoundError(2, "No such file or directory", "/etc/pdvault/policy.toml")

    w.reloader._read = missing
    with pytest.raises(InvalidArgument) as refused:
        w.reloader.reload(CallerName("system:sighup"))
    assert "cannot be read (No such file or directory): /etc/pdvault/policy.toml" in str(
        refused.value.message
    )


def test_operators_reload_with_an_announcement_others_are_refused_and_audited() -> None:
    w = World()
    w.file = V2
    with pytest.raises(PermissionDenied) as denied:
        w.admin.reload(RequestContext.system("payment"))
    assert denied.value.rule == "caller:payment:operations"
    with pytest.raises(PermissionDenied):
        w.admin.show(RequestContext.system("support"))
    assert [(e.caller, e.action, e.outcome) for e in w.state.audit] == [
        ("payment", Action.POLICY_RELOAD, Outcome.REFUSED),
        ("support", Action.POLICY_SHOW, Outcome.REFUSED),
    ]
    assert w.admin.show(RequestContext.system("ops")).policy.version == 1
    change = w.admin.reload(RequestContext.system("ops"))
    assert change.changed
    [([event], digest)] = w.announced  # recorded with the notice, not appended on its own
    assert digest == change.after.digest == policy_digest(V2)
    assert event.caller == "ops"
    assert event.rule == "caller:ops:operations"
    assert len(w.state.audit) == 2
    # Again, unchanged here: announced all the same (a lagging process catches up), unaudited.
    again = w.admin.reload(RequestContext.system("ops"))
    assert not again.changed
    assert w.announced[1] == ([], policy_digest(V2))
    assert len(w.state.audit) == 2
