"""The subject lifecycle: subject digests and state times, consents, shred tombstones, and the
legal basis of a detokenize in the audit.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _digest(subject_id: str) -> str:
    # The same as vault.domain.types.subject_digest (copied: migrations do not import the app).
    return hashlib.sha256(b"pdvault.v1.subject\x00" + subject_id.encode()).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("subjects") as batch_op:
        batch_op.add_column(sa.Column("subject_digest", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True)
        )
    conn = op.get_bind()
    subjects = sa.table("subjects", sa.column("subject_id"), sa.column("subject_digest"))
    for (subject_id,) in conn.execute(sa.select(subjects.c.subject_id)).all():
        conn.execute(
            sa.update(subjects)
            .where(subjects.c.subject_id == subject_id)
            .values(subject_digest=_digest(subject_id))
        )
    with op.batch_alter_table("subjects") as batch_op:
        batch_op.alter_column("subject_digest", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(
            batch_op.f("uq_subjects_subject_digest"), ["subject_digest"]
        )

    op.create_table(
        "consents",
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["subjects.subject_id"],
            name=op.f("fk_consents_subject_id_subjects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subject_id", "purpose", name=op.f("pk_consents")),
    )
    op.create_table(
        "shredded_subjects",
        sa.Column("subject_digest", sa.String(length=64), nullable=False),
        sa.Column("receipt_id", sa.String(length=36), nullable=False),
        sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shredded_by", sa.String(length=64), nullable=False),
        sa.Column("values_destroyed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("subject_digest", name=op.f("pk_shredded_subjects")),
    )
    op.create_table(
        "shredded_tokens",
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("receipt_id", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_shredded_tokens")),
    )
    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.add_column(sa.Column("legal_basis", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.drop_column("legal_basis")
    op.drop_table("shredded_tokens")
    op.drop_table("shredded_subjects")
    op.drop_table("consents")
    with op.batch_alter_table("subjects") as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_subjects_subject_digest"), type_="unique")
        batch_op.drop_column("state_changed_at")
        batch_op.drop_column("subject_digest")
