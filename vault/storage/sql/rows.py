"""Rows to records and back, and the statements of the hot path, built once (constructing a
statement costs more than SQLAlchemy's compiled-statement cache saves when it is rebuilt on
every call)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    LargeBinary,
    String,
    bindparam,
    cast,
    false,
    insert,
    null,
    select,
    true,
    union_all,
    update,
)

from vault.domain.audit_log import entry_bytes
from vault.domain.merkle import MerkleTree, leaf_hash
from vault.domain.naming import KEYED_PREFIX
from vault.domain.stores import ApiKeyRecord, ShreddedRecord
from vault.domain.types import (
    Action,
    AuditEvent,
    CallerName,
    Category,
    LegalBasis,
    Outcome,
    Purpose,
    RetainedDocument,
    StoredDataKey,
    SubjectId,
    SubjectState,
    Token,
    View,
    WrappedKey,
)
from vault.errors import IntegrityError
from vault.storage.sql.prepared import prepared
from vault.storage.tables import (
    audit_events,
    audit_head,
    consents,
    data_keys,
    shredded_tokens,
    subjects,
    token_values,
)

__all__ = [
    "COUNT_ENCRYPTIONS",
    "DATA_KEYS",
    "INSERT_VALUES",
    "LOOKUP",
    "POLICY_VERSION",
    "api_key",
    "audit_event",
    "audited_subject",
    "data_key",
    "insert_audit",
    "receipt",
    "retained_json",
]


DATA_KEYS = (
    select(data_keys, subjects.c.state)
    .join(subjects, subjects.c.subject_id == data_keys.c.subject_id)
    .where(data_keys.c.subject_id.in_(bindparam("ids", expanding=True)))
)
_consent = consents.alias("consent")
# One statement for live and shredded tokens: a token that exists, one that is refused, one
# whose subject was shredded and one that never existed all run the same statement.
LOOKUP = union_all(
    select(
        token_values.c.token,
        token_values.c.subject_id,
        token_values.c.category,
        token_values.c.token_format,
        token_values.c.ciphertext,
        data_keys.c.provider,
        data_keys.c.kek_version,
        data_keys.c.wrapped_key,
        data_keys.c.encryptions,
        subjects.c.state,
        _consent.c.granted,
        false().label("shredded"),
    )
    .join(data_keys, data_keys.c.subject_id == token_values.c.subject_id)
    .join(subjects, subjects.c.subject_id == token_values.c.subject_id)
    .outerjoin(
        _consent,
        (_consent.c.subject_id == token_values.c.subject_id)
        & (_consent.c.purpose == bindparam("purpose")),
    )
    .where(token_values.c.token.in_(bindparam("tokens", expanding=True))),
    select(
        shredded_tokens.c.token,
        cast(null(), String),
        shredded_tokens.c.category,
        # The tombstone's cause (shred | retention) where a live row has its token format.
        shredded_tokens.c.cause,
        cast(null(), LargeBinary),
        # Where a live row has its provider: the receipt (a moved value's document id).
        shredded_tokens.c.receipt_id,
        null(),
        cast(null(), LargeBinary),
        null(),
        cast(null(), String),
        null(),
        true(),
    ).where(shredded_tokens.c.token.in_(bindparam("tokens", expanding=True))),
)
COUNT_ENCRYPTIONS = (
    update(data_keys)
    .where(
        data_keys.c.subject_id == bindparam("s"),
        data_keys.c.encryptions + bindparam("n") <= bindparam("limit"),
    )
    .values(encryptions=data_keys.c.encryptions + bindparam("n"))
)
INSERT_VALUES = insert(token_values)
_INSERT_AUDIT = insert(audit_events)
# The audit head's row, locked for the append (appends are serialized on it), and its move: built
# once like the rest of the hot path (issue 14's profile: rebuilding these two on every call was
# a quarter of insert_audit's time).
_LOCK_AUDIT_HEAD = (
    select(audit_head.c.size, audit_head.c.frontier).where(audit_head.c.id == 1).with_for_update()
)
_MOVE_AUDIT_HEAD = (
    update(audit_head)
    .where(audit_head.c.id == 1)
    .values(
        size=bindparam("new_size", type_=audit_head.c.size.type),
        frontier=bindparam("new_frontier", type_=audit_head.c.frontier.type),
        root=bindparam("new_root", type_=audit_head.c.root.type),
        updated_at=bindparam("new_updated_at", type_=audit_head.c.updated_at.type),
    )
)


def data_key(r: Any) -> StoredDataKey:
    state = getattr(r, "state", None)
    return StoredDataKey(
        SubjectId(r.subject_id),
        WrappedKey(r.provider, r.kek_version, bytes(r.wrapped_key)),
        r.encryptions,
        SubjectState(state) if state else SubjectState.ACTIVE,
    )


def receipt(r: Any) -> ShreddedRecord:
    return ShreddedRecord(
        r.subject_digest,
        r.receipt_id,
        r.shredded_at,
        CallerName(r.shredded_by),
        r.values_destroyed,
        r.previous_receipt_id,
        r.documents_destroyed,
        tuple(
            RetainedDocument(
                d["document_id"],
                d["document_type"],
                d["rule"],
                datetime.fromisoformat(d["until"]) if d.get("until") else None,
            )
            for d in json.loads(r.retained or "[]")
        ),
    )


def retained_json(retained: Sequence[RetainedDocument]) -> str:
    return json.dumps(
        [
            {
                "document_id": d.document_id,
                "document_type": d.document_type,
                "rule": d.rule,
                "until": d.until.isoformat() if d.until else None,
            }
            for d in retained
        ],
        sort_keys=True,
    )


def api_key(r: Any) -> ApiKeyRecord:
    return ApiKeyRecord(r.key_id, CallerName(r.caller), bytes(r.key_hash), r.revoked_at is not None)


def audit_event(r: Any) -> AuditEvent:
    return AuditEvent(
        occurred_at=r.occurred_at,
        caller=CallerName(r.caller),
        action=Action(r.action),
        outcome=Outcome(r.outcome),
        rule=r.rule,
        token=Token(r.token) if r.token else None,
        subject=SubjectId(r.subject_id) if r.subject_id else None,
        category=Category(r.category) if r.category else None,
        purpose=Purpose(r.purpose) if r.purpose else None,
        view=View(r.view) if r.view else None,
        justification=r.justification,
        request_id=r.request_id,
        detail=r.detail,
        legal_basis=LegalBasis(r.legal_basis) if r.legal_basis else None,
        subject_ref=r.subject_id if r.subject_id else None,
        policy_version=getattr(r, "policy_version", None),
        seq=getattr(r, "seq", None),
    )


def audited_subject(event: AuditEvent) -> str | None:
    """How an audit row names a subject: by the digest keyed by its data key (`subject_ref`),
    or a shred's receipt digest (`hmac:` keyed by the naming secret; `sha256:` in entries from
    before keyed digests and in documents' entries); never by id. An event that names a subject but
    carries no ref is stored without one (an unkeyed digest could be reversed by a dictionary
    of ids)."""
    if event.subject_ref is not None:
        return event.subject_ref
    if event.subject is not None and event.subject.startswith(("sha256:", KEYED_PREFIX)):
        return event.subject
    return None


POLICY_VERSION = "pdvault_policy_version"  # an engine execution option: the policy in force


def insert_audit(conn: Connection, events: Sequence[AuditEvent]) -> None:
    """Append `events` to the Merkle log in the caller's transaction: lock the head (appends
    are serialized across every process and replica), give each entry the next place and its
    leaf hash, and move the head. Rolled back with the transaction, gaps and all."""
    if not events:
        return
    # On the driver's cursor (vault.storage.sql.prepared): every write transaction and every
    # group commit runs these three (issue 14: SQLAlchemy's execution of them was most of the
    # append's CPU).
    (head,) = prepared(conn.dialect, _LOCK_AUDIT_HEAD).all(conn, {})
    tree = MerkleTree.from_bytes(bytes(head.frontier)) if head.frontier else MerkleTree()
    if tree.size != head.size:
        raise IntegrityError("the audit log's head is inconsistent; run pdv audit verify")
    in_force = conn.get_execution_options().get(POLICY_VERSION)
    version = None if in_force is None else int(in_force)
    new_rows = []
    for e in events:
        # The policy version that decided it: the event's own, or the one in force.
        decided_by = e.policy_version if e.policy_version is not None else version
        seq = tree.size
        subject = audited_subject(e)
        leaf = leaf_hash(entry_bytes(e, seq, subject, decided_by))
        tree.append(leaf)
        new_rows.append(
            {
                "occurred_at": e.occurred_at,
                "caller": e.caller,
                "action": e.action.value,
                "outcome": e.outcome.value,
                "rule": e.rule,
                "token": e.token,
                "subject_id": subject,
                "category": e.category,
                "purpose": e.purpose,
                "view": e.view.value if e.view else None,
                "justification": e.justification,
                "request_id": e.request_id,
                "detail": e.detail,
                "legal_basis": e.legal_basis.value if e.legal_basis else None,
                "seq": seq,
                "leaf_hash": leaf,
                "policy_version": decided_by,
            }
        )
    # The INSERT names the columns the rows carry (the keys of the first: all are alike).
    prepared(conn.dialect, _INSERT_AUDIT, tuple(new_rows[0])).run_many(conn, new_rows)
    prepared(conn.dialect, _MOVE_AUDIT_HEAD).run(
        conn,
        {
            "new_size": tree.size,
            "new_frontier": tree.to_bytes(),
            "new_root": tree.root(),
            "new_updated_at": max(e.occurred_at for e in events),
        },
    )
