"""Retention: how long each document type and each field category is kept, and from when.

A rule says: from which event the period runs (`Trigger`), how long it is (`Period`, an ISO 8601
duration), and what happens when it ends (`Then`). A rule may be a legal duty (`legal`): then a
document under it survives its subject's Account Deletion, sealed under a key the rule owns,
readable only for the purposes the rule names, until the period ends. The rules are in the
policy file (`[retention.documents.<type>]`, `[retention.categories.<category>]`), each with
its source; docs/retention.md explains the defaults.

The dates are computed here, from facts pdvault records (upload, verification, the end of the
relationship), never typed in: a sweep on a restored backup computes the same dates again and
destroys the same data again.
"""

from __future__ import annotations

import calendar
import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from vault.domain.types import Purpose

__all__ = [
    "RETENTION_SUBJECT_PREFIX",
    "Period",
    "RetentionRule",
    "Then",
    "Trigger",
    "due_date",
    "retention_key_owner",
]


class Trigger(enum.Enum):
    """The event the period runs from."""

    UPLOAD = "upload"  # when the document or value was stored
    # When the verification flow marked the document verified (MarkDocumentVerified). A
    # document never verified is kept no longer than the period after its upload.
    VERIFIED = "verified"
    # The end of the business relationship: the subject's Account Stop or Account Deletion
    # (a resumed account's relationship goes on, and the date is cleared).
    RELATIONSHIP_END = "relationship_end"


class Then(enum.Enum):
    SHRED = "shred"  # destroy the document (its keys and segments), or the value
    # Documents: destroy the original, keep the sanitized copy (images only; a document
    # without one is shredded whole).
    KEEP_SANITIZED = "keep_sanitized"


_PERIOD_RE = re.compile(
    r"P(?:(?P<years>\d{1,3})Y)?(?:(?P<months>\d{1,4})M)?(?:(?P<weeks>\d{1,4})W)?"
    r"(?:(?P<days>\d{1,5})D)?(?:T(?:(?P<hours>\d{1,6})H)?(?:(?P<minutes>\d{1,7})M)?"
    r"(?:(?P<seconds>\d{1,9})S)?)?"
)


@dataclass(frozen=True, slots=True)
class Period:
    """An ISO 8601 duration (`P7Y`, `P30D`, `P1Y6M`, `PT12H`): calendar years and months,
    then an exact time. `P1Y` after 29 February ends on 28 February."""

    years: int = 0
    months: int = 0
    exact: timedelta = timedelta(0)
    text: str = "P0D"

    @classmethod
    def parse(cls, text: str) -> Period:
        m = _PERIOD_RE.fullmatch(text)
        if m is None or text in ("P", "PT") or text.endswith("T"):
            raise ValueError(f"'{text}' is not an ISO 8601 duration such as P7Y, P30D or PT12H")
        n = {k: int(v) if v else 0 for k, v in m.groupdict().items()}
        exact = timedelta(
            weeks=n["weeks"],
            days=n["days"],
            hours=n["hours"],
            minutes=n["minutes"],
            seconds=n["seconds"],
        )
        return cls(n["years"], n["months"], exact, text)

    def after(self, start: datetime) -> datetime:
        month0 = start.month - 1 + self.months + 12 * self.years
        year, month = start.year + month0 // 12, month0 % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return start.replace(year=year, month=month, day=day) + self.exact

    def before(self, end: datetime) -> datetime:
        """The latest start whose period has ended by `end` (calendar months back, day
        clamped): an item stored at or before it is due."""
        start = end - self.exact
        month0 = start.month - 1 - self.months - 12 * self.years
        year, month = start.year + month0 // 12, month0 % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return start.replace(year=year, month=month, day=day)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """One rule of the policy file, named `documents.<type>` or `categories.<category>`."""

    name: str
    trigger: Trigger
    keep: Period
    then: Then = Then.SHRED
    # A legal duty to keep: a document under this rule survives its subject's Account
    # Deletion until the period ends (documents only).
    legal: bool = False
    # What a document kept after its subject's deletion may still be read for (with a stated
    # legal basis): answering an authority.
    purposes: frozenset[Purpose] = frozenset()
    source: str = ""


def due_date(
    rule: RetentionRule,
    *,
    stored_at: datetime,
    verified_at: datetime | None = None,
    relationship_ended_at: datetime | None = None,
) -> datetime | None:
    """When the period of `rule` ends for an item with these facts; None while it has not
    started (the relationship goes on)."""
    if rule.trigger is Trigger.UPLOAD:
        return rule.keep.after(stored_at)
    if rule.trigger is Trigger.VERIFIED:
        return rule.keep.after(verified_at if verified_at is not None else stored_at)
    if relationship_ended_at is None:
        return None
    return rule.keep.after(relationship_ended_at)


# Retention keys are data keys of reserved owners that no subject id can spell (the subject
# syntax has no '#'): one per rule and year of the due date, so a year's key is destroyed once
# the last document it kept is swept.
RETENTION_SUBJECT_PREFIX = "#retention:"


def retention_key_owner(rule: str, due: datetime) -> str:
    return f"{RETENTION_SUBJECT_PREFIX}{rule}:{due.year}"
