"""The SQL adapter of `ApprovalStore`: dual control's requests.

Every change of state is one conditional UPDATE (`WHERE state = <before>`, and the requester
and expiry conditions): on PostgreSQL a concurrent UPDATE of the same row waits for the first
to commit and then re-reads the row, finds the state changed and updates nothing; on SQLite
writers take the database's write lock first. Either way, exactly one of any number of
concurrent approvals moves a request out of pending.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, insert, select, update

from vault.domain.policy import ApprovalAction
from vault.domain.stores import ApprovalChange, ApprovalRecord, ApprovalState
from vault.domain.types import AuditEvent, CallerName
from vault.storage.sql import rows
from vault.storage.sql.database import Database
from vault.storage.tables import approval_requests

__all__ = ["SqlApprovalStore"]

_T = approval_requests.c


def _parameters(text: str) -> dict[str, str]:
    loaded = json.loads(text)
    return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def _dump(parameters: Mapping[str, str]) -> str:
    return json.dumps(dict(parameters), sort_keys=True)


def _record(r: Any) -> ApprovalRecord:
    return ApprovalRecord(
        request_id=r.request_id,
        action=ApprovalAction(r.action),
        parameters=_parameters(r.parameters),
        requested_by=CallerName(r.requested_by),
        created_at=r.created_at,
        expires_at=r.expires_at,
        state=ApprovalState(r.state),
        decided_by=CallerName(r.decided_by) if r.decided_by else None,
        decided_at=r.decided_at,
        outcome=r.outcome,
    )


class SqlApprovalStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"SqlApprovalStore({self._db.dialect})"

    def add_approval(self, record: ApprovalRecord, audit: Sequence[AuditEvent]) -> None:
        def body(conn: Connection) -> None:
            conn.execute(
                insert(approval_requests).values(
                    request_id=record.request_id,
                    action=record.action.value,
                    parameters=_dump(record.parameters),
                    requested_by=record.requested_by,
                    created_at=record.created_at,
                    expires_at=record.expires_at,
                    state=record.state.value,
                    decided_by=record.decided_by,
                    decided_at=record.decided_at,
                    outcome=record.outcome,
                )
            )
            rows.insert_audit(conn, audit)

        self._db.write(body)

    def approval(self, request_id: str) -> ApprovalRecord | None:
        stmt = select(approval_requests).where(_T.request_id == request_id)
        with self._db.read() as conn:
            r = conn.execute(stmt).first()
        return None if r is None else _record(r)

    def approvals(self, limit: int) -> list[ApprovalRecord]:
        stmt = (
            select(approval_requests)
            .order_by(_T.created_at.desc(), _T.request_id.desc())
            .limit(limit)
        )
        with self._db.read() as conn:
            return [_record(r) for r in conn.execute(stmt)]

    def change_approval(self, change: ApprovalChange, audit: Sequence[AuditEvent]) -> bool:
        conditions = [_T.request_id == change.request_id, _T.state == change.before.value]
        values: dict[str, Any] = {"state": change.after.value}
        if change.by is not None:
            conditions.append(_T.requested_by != change.by)
            values["decided_by"] = change.by
        if change.unexpired is True:
            conditions.append(_T.expires_at > change.at)
        elif change.unexpired is False:
            conditions.append(_T.expires_at <= change.at)
        if change.by is not None or change.unexpired is False:
            values["decided_at"] = change.at
        if change.outcome is not None:
            values["outcome"] = change.outcome
        if change.parameters is not None:
            values["parameters"] = _dump(change.parameters)

        def body(conn: Connection) -> bool:
            done = conn.execute(update(approval_requests).where(*conditions).values(**values))
            if done.rowcount != 1:
                return False
            rows.insert_audit(conn, audit)
            return True

        return self._db.write(body)
