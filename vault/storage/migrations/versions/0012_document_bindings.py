"""Documents name their subject by the keyed digest: what each document's content is bound to
(`binding`: `hmac`, or `sha256` with the old unkeyed digest kept only in `sealed_binding`), and
whether a tombstone's digest is keyed (`naming`). Rows from before have NULL in both and are
converted at start-up (vault.storage.sql.naming), not here: the conversion needs the naming
secret, which only the key provider holds.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("binding", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("sealed_binding", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("document_tombstones") as batch:
        batch.add_column(sa.Column("naming", sa.String(length=8), nullable=True))


def downgrade() -> None:
    # A converted document of before keyed digests opens only with its sealed binding (the
    # version before would read the keyed digest as its binding and answer DATA_LOSS).
    converted = op.get_bind().execute(
        sa.text("SELECT count(*) FROM documents WHERE binding = 'sha256'")
    )
    if converted.scalar_one():
        raise RuntimeError(
            "documents converted to keyed digests keep their binding only sealed in "
            "documents.sealed_binding: a downgrade below 0012 would make them unreadable"
        )
    with op.batch_alter_table("document_tombstones") as batch:
        batch.drop_column("naming")
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("sealed_binding")
        batch.drop_column("binding")
