"""an index on user_tombstone.deleted_at: the impression writer asks only for deletions
newer than the lists it writes

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("user_tombstone", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_user_tombstone_deleted_at"), ["deleted_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("user_tombstone", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_tombstone_deleted_at"))
