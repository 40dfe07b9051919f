"""The one-time conversion of a database's subject digests to keyed digests.

Databases from before keyed digests name subjects by the unkeyed SHA-256 of their id in
`subjects.subject_digest`, `shredded_subjects` and settled shred approvals; a dictionary of ids
reverses those. At start-up, the first process converts them, in one transaction, to the keyed
digest of the same subject (vault.domain.naming: a function of the unkeyed one, so the ids of
shredded subjects are not needed), and records it in `service_state`. The marker row is
inserted and then locked first, so replicas starting together convert exactly once; a
restored backup from before the conversion has no marker, and is converted at its first start.

The marker also keeps the fingerprint of the naming secret: a start with another naming secret
(a new key file, another Transit key) would no longer recognise any shredded subject, and is
refused instead.

Documents and their tombstones are converted by `convert_document_digests`, after the
subjects (a tombstone's digest is told keyed or not by `shredded_subjects`, keyed by then).
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Connection, bindparam, select, update

from vault.domain.naming import NAMING_SCHEME
from vault.errors import ConfigurationError
from vault.storage.sql.database import Database
from vault.storage.sql.documents import KEYED, LEGACY_BINDING
from vault.storage.tables import (
    approval_requests,
    document_tombstones,
    documents,
    service_state,
    shredded_subjects,
    subjects,
)

__all__ = ["DOCUMENTS_MARKER", "MARKER", "convert_document_digests", "convert_subject_digests"]

MARKER = "subject_names"
DOCUMENTS_MARKER = "document_names"
_PENDING = "converting"
_ANOTHER_NAMING_KEY = (
    "the database's subject digests were keyed by another naming secret than the key "
    "provider's (a replaced key file or naming key?): restore the one it was made with, or no "
    "shredded subject would be recognised any more"
)


def _lock_marker(conn: Connection, db: Database, name: str, done: str, now: datetime) -> str:
    """Insert the marker row if missing, then lock it (replicas starting together wait here);
    its value. Refuses a marker left by another naming secret."""
    conn.execute(db.insert_ignore(service_state).values(name=name, value=_PENDING, changed_at=now))
    value: str = conn.execute(
        select(service_state.c.value).where(service_state.c.name == name).with_for_update()
    ).scalar_one()
    if value not in (done, _PENDING):
        raise ConfigurationError(_ANOTHER_NAMING_KEY)
    return value


def convert_subject_digests(db: Database, now: datetime) -> int:
    """Convert the stored digests once (idempotent); how many rows changed (0 once done).
    Raises ConfigurationError when the database was converted under another naming secret."""
    names = db.names
    done = f"{NAMING_SCHEME}:{names.fingerprint()}"

    def body(conn: Connection) -> int:
        if _lock_marker(conn, db, MARKER, done, now) == done:
            return 0
        changed = 0
        for subject_id, digest in conn.execute(
            select(subjects.c.subject_id, subjects.c.subject_digest)
        ).all():
            keyed = names.digest(subject_id)
            if keyed != digest:
                conn.execute(
                    update(subjects).where(subjects.c.subject_id == subject_id),
                    {"subject_digest": keyed},
                )
                changed += 1
        for (digest,) in conn.execute(select(shredded_subjects.c.subject_digest)).all():
            conn.execute(
                update(shredded_subjects).where(shredded_subjects.c.subject_digest == digest),
                {"subject_digest": names.from_unkeyed(digest)},
            )
            changed += 1
        for request_id, text in conn.execute(
            select(approval_requests.c.request_id, approval_requests.c.parameters)
        ).all():
            parameters = json.loads(text)
            if isinstance(parameters, dict) and "subject_digest" in parameters:
                parameters["subject_digest"] = names.from_unkeyed(parameters["subject_digest"])
                conn.execute(
                    update(approval_requests).where(approval_requests.c.request_id == request_id),
                    {"parameters": json.dumps(parameters, sort_keys=True)},
                )
                changed += 1
        conn.execute(
            update(service_state).where(service_state.c.name == MARKER),
            {"value": done, "changed_at": now},
        )
        return changed

    return db.write(body)


def convert_document_digests(db: Database, now: datetime) -> int:
    """Convert documents and tombstones that name their subject by the unkeyed digest (rows
    with NULL `binding` / `naming`: stored before 0012, or by an older version during a
    rollout) to the keyed digest; how many rows changed (0 when there are none). Run after
    `convert_subject_digests`. Raises ConfigurationError for another naming secret.

    Each legacy document keeps what its content is bound to (the unkeyed digest) only sealed
    under a key derived from the naming secret (vault.crypto.bindings), in the same UPDATE
    that replaces its digest: in one transaction, so a process killed in the middle leaves
    every row as it was, and each row, before or after, says how to open it."""
    names, seal = db.names, db.bindings
    done = f"{NAMING_SCHEME}:{names.fingerprint()}"

    def body(conn: Connection) -> int:
        marked = _lock_marker(conn, db, DOCUMENTS_MARKER, done, now)
        legacy = conn.execute(
            select(documents.c.document_id, documents.c.subject_digest).where(
                documents.c.binding.is_(None)
            )
        ).all()
        if legacy:
            conn.execute(
                update(documents)
                .where(documents.c.document_id == bindparam("d"))
                .values(
                    subject_digest=bindparam("k"),
                    binding=LEGACY_BINDING,
                    sealed_binding=bindparam("s"),
                ),
                [
                    {
                        "d": d.document_id,
                        "k": names.from_unkeyed(d.subject_digest),
                        "s": seal.seal(d.document_id, d.subject_digest),
                    }
                    for d in legacy
                ],
            )
        # A tombstone of a shred made since keyed digests already holds the receipt's keyed
        # digest, which `shredded_subjects` holds too (rows that are never deleted); every
        # other one holds the unkeyed digest.
        shred = shredded_subjects.alias("shred")
        tombs = conn.execute(
            select(
                document_tombstones.c.document_id,
                document_tombstones.c.subject_digest,
                shred.c.subject_digest.label("keyed"),
            )
            .select_from(
                document_tombstones.outerjoin(
                    shred, shred.c.subject_digest == document_tombstones.c.subject_digest
                )
            )
            .where(document_tombstones.c.naming.is_(None))
        ).all()
        if tombs:
            conn.execute(
                update(document_tombstones)
                .where(document_tombstones.c.document_id == bindparam("d"))
                .values(subject_digest=bindparam("k"), naming=KEYED),
                [
                    {
                        "d": t.document_id,
                        "k": t.subject_digest
                        if t.keyed is not None
                        else names.from_unkeyed(t.subject_digest),
                    }
                    for t in tombs
                ],
            )
        if marked != done:
            conn.execute(
                update(service_state).where(service_state.c.name == DOCUMENTS_MARKER),
                {"value": done, "changed_at": now},
            )
        return len(legacy) + len(tombs)

    return db.write(body)
