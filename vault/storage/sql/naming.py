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

Documents keep their unkeyed `subject_digest` (it is sealed into their associated data).
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Connection, select, update

from vault.domain.naming import NAMING_SCHEME
from vault.errors import ConfigurationError
from vault.storage.sql.database import Database
from vault.storage.tables import approval_requests, service_state, shredded_subjects, subjects

__all__ = ["MARKER", "convert_subject_digests"]

MARKER = "subject_names"
_PENDING = "converting"


def convert_subject_digests(db: Database, now: datetime) -> int:
    """Convert the stored digests once (idempotent); how many rows changed (0 once done).
    Raises ConfigurationError when the database was converted under another naming secret."""
    names = db.names
    done = f"{NAMING_SCHEME}:{names.fingerprint()}"

    def body(conn: Connection) -> int:
        conn.execute(
            db.insert_ignore(service_state).values(name=MARKER, value=_PENDING, changed_at=now)
        )
        value = conn.execute(
            select(service_state.c.value).where(service_state.c.name == MARKER).with_for_update()
        ).scalar_one()
        if value == done:
            return 0
        if value != _PENDING:
            raise ConfigurationError(
                "the database's subject digests were keyed by another naming secret than the key "
                "provider's (a replaced key file or naming key?): restore the one it was made "
                "with, or no shredded subject would be recognised any more"
            )
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
