"""The tables. No column ever holds a plaintext value or an unwrapped key.

Data keys live in their own table, apart from the ciphertexts they protect (never the same row).
Every schema change goes through an Alembic migration in `vault/storage/migrations`; a test
checks that the migrations and these definitions agree.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.engine import Dialect

__all__ = ["NAMING", "UtcDateTime"]


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on PostgreSQL and on SQLite (which has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

subjects = Table(
    "subjects",
    metadata,
    Column("subject_id", String(128), primary_key=True),
    # SHA-256 of the id: how the shred log (kept outside this database) names a subject.
    Column("subject_digest", String(64), nullable=False, unique=True),
    # active | stopped (a shredded subject has no row: only its digest is kept)
    Column("state", String(16), nullable=False, server_default="active"),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("state_changed_at", UtcDateTime()),
)

consents = Table(
    "consents",
    metadata,
    Column(
        "subject_id",
        String(128),
        ForeignKey("subjects.subject_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("purpose", String(64), primary_key=True),
    # True: consent given; False: withdrawn (discontinuation of use).
    Column("granted", Boolean, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

shredded_subjects = Table(
    "shredded_subjects",
    metadata,
    Column("subject_digest", String(64), primary_key=True),
    Column("receipt_id", String(36), nullable=False),
    Column("shredded_at", UtcDateTime(), nullable=False),
    Column("shredded_by", String(64), nullable=False),
    Column("values_destroyed", Integer, nullable=False),
    # A shred that found data under an id already shredded (a restored copy) names the earlier
    # receipt here; this row then holds the latest receipt.
    Column("previous_receipt_id", String(36)),
    Column("documents_destroyed", Integer, nullable=False, server_default="0"),
    # JSON list of the documents the shred kept under a legal duty or hold: id, type, rule,
    # until (the receipt says what was not destroyed, and why).
    Column("retained", Text, nullable=False, server_default="[]"),
)

# Tokens services still hold after their subject was shredded: they resolve to "deleted".
shredded_tokens = Table(
    "shredded_tokens",
    metadata,
    Column("token", String(64), primary_key=True),
    Column("category", String(64), nullable=False),
    Column("receipt_id", String(36), nullable=False),
    # shred (the subject was crypto-shredded) | retention (the value's period ended)
    Column("cause", String(16), nullable=False, server_default="shred"),
)

data_keys = Table(
    "data_keys",
    metadata,
    Column(
        "subject_id",
        String(128),
        ForeignKey("subjects.subject_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("provider", String(32), nullable=False),
    Column("kek_version", Integer, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    # Encryptions made under this key, against the NIST SP 800-38D limit of 2^32.
    Column("encryptions", BigInteger, nullable=False, server_default="0"),
    Column("created_at", UtcDateTime(), nullable=False),
    Index(None, "kek_version"),
)

token_values = Table(
    "token_values",
    metadata,
    Column("token", String(64), primary_key=True),
    Column(
        "subject_id",
        String(128),
        ForeignKey("subjects.subject_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("category", String(64), nullable=False),
    Column("token_format", String(16), nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index(None, "subject_id"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("occurred_at", UtcDateTime(), nullable=False),
    Column("caller", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("rule", String(128), nullable=False),
    Column("token", String(64)),
    # The subject as `sha256:<digest>`, never its id: a shred need not rewrite audit rows.
    Column("subject_id", String(128)),
    Column("category", String(64)),
    Column("purpose", String(64)),
    Column("view", String(16)),
    Column("justification", String(256)),
    Column("request_id", String(36)),
    Column("detail", String(256)),
    Column("legal_basis", String(32)),
    # The Merkle log (vault.storage.sql.audit_log): the entry's place, gap-free from 0 (never a
    # database sequence, which leaves gaps on rollback), and its RFC 9162 leaf hash.
    Column("seq", BigInteger, unique=True),
    Column("leaf_hash", LargeBinary),
    Column("policy_version", Integer),
    Index(None, "token"),
    Index(None, "subject_id"),
    Index(None, "occurred_at"),
)

# The Merkle log's head: one row, locked by every append (appends are serialized, so the
# sequence has no gap and the tree no fork, with any number of replicas).
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("size", BigInteger, nullable=False),
    # The right edge of the tree (vault.domain.merkle.MerkleTree.to_bytes); NULL: empty.
    Column("frontier", LargeBinary),
    Column("root", LargeBinary),
    Column("updated_at", UtcDateTime()),
)

# Signed checkpoints (C2SP tlog-checkpoint in a signed note), also written to a file outside
# the database (PDV_AUDIT_CHECKPOINTS).
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True),
    Column("root", LargeBinary, nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

# One check value per key-encryption-key version that wrapped data keys: a random key wrapped
# under that version. At start-up each is unwrapped; a key file or Transit key that cannot open
# them is not the one the data keys were wrapped by, and pdvault refuses to start.
kek_checks = Table(
    "kek_checks",
    metadata,
    Column("provider", String(32), primary_key=True),
    Column("kek_version", Integer, primary_key=True),
    Column("wrapped_check", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("caller", String(64), primary_key=True),
    Column("request_id", String(36), primary_key=True),
    Column("subject_id", String(128), nullable=False),
    Column("fingerprint", LargeBinary, nullable=False),
    # JSON list of [token, category] pairs: the first answer, returned again on a retry.
    Column("response", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index(None, "created_at"),
)

# What a write tells every pdvault process to forget, in the write's transaction: kind
# `subject_key` (key: a shredded subject's digest) or `api_keys` (key: a key id). PostgreSQL
# also NOTIFYs each; SQLite's processes poll for rows past the last seq they saw.
notices = Table(
    "notices",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("key", String(128), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index(None, "created_at"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("caller", String(64), nullable=False),
    Column("key_hash", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime()),
    # When it last authenticated a call (written from memory about once a minute).
    Column("last_used_at", UtcDateTime()),
)

# Dual control's requests (vault.domain.approvals): each waits for a second operator.
# `parameters` (JSON) is what it takes to carry the step out, never a value or a secret; a
# settled shred's subject id is replaced by its digest. Every change of `state` is one
# conditional UPDATE (WHERE state = ...): of concurrent approvals, exactly one wins.
approval_requests = Table(
    "approval_requests",
    metadata,
    Column("request_id", String(32), primary_key=True),
    Column("action", String(32), nullable=False),
    Column("parameters", Text, nullable=False),
    Column("requested_by", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("state", String(16), nullable=False),
    Column("decided_by", String(64)),
    Column("decided_at", UtcDateTime()),
    Column("outcome", String(256)),
    Index(None, "created_at"),
)

# Documents (vault.domain.documents). A retained document (kept after its subject's shred
# under a legal duty or hold) has no subject_id, and its variants' keys are wrapped under a
# retention key (`key_owner`, a data key of a reserved owner `#retention:<rule>:<year>`).
documents = Table(
    "documents",
    metadata,
    Column("document_id", String(32), primary_key=True),
    # No cascade: a shred decides, document by document, what is destroyed and what is kept.
    Column("subject_id", String(128), ForeignKey("subjects.subject_id")),
    Column("subject_digest", String(64), nullable=False),
    Column("document_type", String(32), nullable=False),
    Column("uploaded_by", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("scan_state", String(16), nullable=False),
    Column("scan_engine", String(128), nullable=False, server_default=""),
    Column("scan_signature", String(128)),
    Column("key_owner", String(160), nullable=False),
    Column("retention_rule", String(96)),
    Column("due_at", UtcDateTime()),
    Column("verified_at", UtcDateTime()),
    Column("masked_statement", Boolean, nullable=False, server_default=false()),
    Column("pages", Integer),
    # What the content is bound to (DV1's binding; vault.crypto.bindings): `hmac`, the keyed
    # `subject_digest`; `sha256`, the unkeyed digest of a document stored before keyed digests,
    # kept only in `sealed_binding` (under a key derived from the naming secret; the document
    # id as associated data). NULL: stored by a version before 0012, bound to `subject_digest`
    # still unkeyed; converted at start-up (vault.storage.sql.naming).
    Column("binding", String(8)),
    Column("sealed_binding", LargeBinary),
    Index(None, "subject_id"),
    Index(None, "due_at"),
    Index(None, "key_owner"),
)

document_variants = Table(
    "document_variants",
    metadata,
    Column(
        "document_id",
        String(32),
        ForeignKey("documents.document_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("variant", String(16), primary_key=True),
    Column("media_type", String(32), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("segments", Integer, nullable=False),
    Column("blob_id", String(40), nullable=False),
    Column("format", String(8), nullable=False),
    Column("header", LargeBinary, nullable=False),
    # The variant's random key, wrapped under its owner's data key (never in the clear).
    Column("wrapped_key", LargeBinary, nullable=False),
)

document_holds = Table(
    "document_holds",
    metadata,
    Column("hold_id", String(36), primary_key=True),
    Column(
        "document_id",
        String(32),
        ForeignKey("documents.document_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("reason", String(200), nullable=False),
    Column("placed_by", String(64), nullable=False),
    Column("placed_at", UtcDateTime(), nullable=False),
    Index(None, "document_id"),
)

# What is kept of a destroyed document: it answers "deleted" to a caller who could read it.
document_tombstones = Table(
    "document_tombstones",
    metadata,
    Column("document_id", String(32), primary_key=True),
    Column("document_type", String(32), nullable=False),
    Column("subject_digest", String(64), nullable=False),
    Column("destroyed_at", UtcDateTime(), nullable=False),
    Column("cause", String(16), nullable=False),
    # `hmac`: `subject_digest` is the keyed digest. NULL: written by a version before 0012
    # (unkeyed, or keyed by a shred); converted at start-up (vault.storage.sql.naming).
    Column("naming", String(8)),
)

# Blobs being written (an upload not yet committed) or doomed (their document destroyed, the
# segments not yet deleted): the sweep deletes what a killed process left.
document_blobs = Table(
    "document_blobs",
    metadata,
    Column("blob_id", String(40), primary_key=True),
    Column("state", String(16), nullable=False),  # writing | doomed
    Column("since", UtcDateTime(), nullable=False),
)

# The database blob store: sealed segments, by blob id and index. No subject id, no name.
document_segments = Table(
    "document_segments",
    metadata,
    Column("blob_id", String(40), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("ciphertext", LargeBinary, nullable=False),
)

# Items counted against callers' item quotas (vault.domain.quotas), one row per caller, purpose
# and fixed window (its first second, Unix time). Counted by one conditional upsert, so that
# two replicas can never both pass a limit. Names only: no token, no subject.
quota_usage = Table(
    "quota_usage",
    metadata,
    Column("caller", String(64), primary_key=True),
    Column("purpose", String(64), primary_key=True),
    Column("window_start", BigInteger, primary_key=True),
    Column("used", BigInteger, nullable=False),
)

# Facts about the whole database, one row each. `subject_names`: the naming scheme of the
# subject digests (`subjects`, `shredded_subjects`, settled shred approvals) and the
# fingerprint of the naming secret that keyed them; written, row locked, by the one-time
# conversion at start-up (vault.storage.sql.naming).
service_state = Table(
    "service_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
)
