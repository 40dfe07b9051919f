"""Shreds that hold: audit rows name subjects by digest only (a shred no longer rewrites them,
and no row committed after a shred can name the subject), receipts of repeated shreds name the
earlier one, and check values recognise the key-encryption key the data keys were wrapped by.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ANONYMIZED = "sha256:"


def _digest(subject_id: str) -> str:
    # The same as vault.domain.types.subject_digest (copied: migrations do not import the app).
    return hashlib.sha256(b"pdvault.v1.subject\x00" + subject_id.encode()).hexdigest()


def upgrade() -> None:
    audit = sa.table("audit_events", sa.column("subject_id", sa.String))
    conn = op.get_bind()
    named = conn.execute(
        sa.select(audit.c.subject_id)
        .where(audit.c.subject_id.is_not(None), ~audit.c.subject_id.startswith(_ANONYMIZED))
        .distinct()
    ).scalars()
    for subject_id in list(named):
        conn.execute(
            sa.update(audit)
            .where(audit.c.subject_id == subject_id)
            .values(subject_id=_ANONYMIZED + _digest(subject_id))
        )
    with op.batch_alter_table("shredded_subjects") as batch_op:
        batch_op.add_column(sa.Column("previous_receipt_id", sa.String(length=36), nullable=True))
    op.create_table(
        "kek_checks",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("kek_version", sa.Integer(), nullable=False),
        sa.Column("wrapped_check", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", "kek_version", name=op.f("pk_kek_checks")),
    )


def downgrade() -> None:
    # Audit rows keep their digests: the ids they replaced are not recoverable, by design.
    op.drop_table("kek_checks")
    with op.batch_alter_table("shredded_subjects") as batch_op:
        batch_op.drop_column("previous_receipt_id")
