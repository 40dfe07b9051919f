"""Notices: what a write tells every pdvault process to forget (a shredded subject's data key,
changed API keys), in the transaction of the write. PostgreSQL also NOTIFYs them; SQLite's
processes poll the table.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notices",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_notices")),
    )
    op.create_index(op.f("ix_notices_created_at"), "notices", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_notices_created_at"), table_name="notices")
    op.drop_table("notices")
