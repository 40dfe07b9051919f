"""Documents: records, sealed variants, segments (the database blob store), legal holds,
tombstones and blob marks; receipts that say what a shred kept; expired value tombstones.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shredded_subjects") as batch:
        batch.add_column(
            sa.Column("documents_destroyed", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("retained", sa.Text(), nullable=False, server_default="[]"))
    with op.batch_alter_table("shredded_tokens") as batch:
        batch.add_column(
            sa.Column("cause", sa.String(length=16), nullable=False, server_default="shred")
        )
    op.create_table(
        "documents",
        sa.Column("document_id", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=True),
        sa.Column("subject_digest", sa.String(length=64), nullable=False),
        sa.Column("document_type", sa.String(length=32), nullable=False),
        sa.Column("uploaded_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scan_state", sa.String(length=16), nullable=False),
        sa.Column("scan_engine", sa.String(length=128), nullable=False, server_default=""),
        sa.Column("scan_signature", sa.String(length=128), nullable=True),
        sa.Column("key_owner", sa.String(length=160), nullable=False),
        sa.Column("retention_rule", sa.String(length=96), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("masked_statement", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("pages", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["subjects.subject_id"],
            name=op.f("fk_documents_subject_id_subjects"),
        ),
        sa.PrimaryKeyConstraint("document_id", name=op.f("pk_documents")),
    )
    op.create_index(op.f("ix_documents_subject_id"), "documents", ["subject_id"])
    op.create_index(op.f("ix_documents_due_at"), "documents", ["due_at"])
    op.create_index(op.f("ix_documents_key_owner"), "documents", ["key_owner"])
    op.create_table(
        "document_variants",
        sa.Column("document_id", sa.String(length=32), nullable=False),
        sa.Column("variant", sa.String(length=16), nullable=False),
        sa.Column("media_type", sa.String(length=32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("blob_id", sa.String(length=40), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("header", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.document_id"],
            name=op.f("fk_document_variants_document_id_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("document_id", "variant", name=op.f("pk_document_variants")),
    )
    op.create_table(
        "document_holds",
        sa.Column("hold_id", sa.String(length=36), nullable=False),
        sa.Column("document_id", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("placed_by", sa.String(length=64), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.document_id"],
            name=op.f("fk_document_holds_document_id_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("hold_id", name=op.f("pk_document_holds")),
    )
    op.create_index(op.f("ix_document_holds_document_id"), "document_holds", ["document_id"])
    op.create_table(
        "document_tombstones",
        sa.Column("document_id", sa.String(length=32), nullable=False),
        sa.Column("document_type", sa.String(length=32), nullable=False),
        sa.Column("subject_digest", sa.String(length=64), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cause", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("document_id", name=op.f("pk_document_tombstones")),
    )
    op.create_table(
        "document_blobs",
        sa.Column("blob_id", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("blob_id", name=op.f("pk_document_blobs")),
    )
    op.create_table(
        "document_segments",
        sa.Column("blob_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("blob_id", "seq", name=op.f("pk_document_segments")),
    )


def downgrade() -> None:
    for table in (
        "document_segments",
        "document_blobs",
        "document_tombstones",
        "document_holds",
        "document_variants",
    ):
        op.drop_table(table)
    op.drop_index(op.f("ix_documents_key_owner"), table_name="documents")
    op.drop_index(op.f("ix_documents_due_at"), table_name="documents")
    op.drop_index(op.f("ix_documents_subject_id"), table_name="documents")
    op.drop_table("documents")
    with op.batch_alter_table("shredded_tokens") as batch:
        batch.drop_column("cause")
    with op.batch_alter_table("shredded_subjects") as batch:
        batch.drop_column("retained")
        batch.drop_column("documents_destroyed")
