"""model lifecycle: training lock, worker claims and heartbeats, learning curves,
activation history, replicas, bundle sizes, item creation time

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("trigger", sa.String(length=16), nullable=False, server_default="manual")
        )
        batch_op.add_column(sa.Column("lock_key", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("worker", sa.String(length=128), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("data_watermark", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("curve", sa.JSON(), nullable=True))
        batch_op.create_unique_constraint("uq_job_lock_key", ["lock_key"])

    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("size_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )

    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "model_activation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("previous_version", sa.Integer(), nullable=True),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("model_activation", schema=None) as batch_op:
        batch_op.create_index("ix_model_activation_version", ["version"], unique=False)

    op.create_table(
        "replica",
        sa.Column("replica_id", sa.String(length=128), nullable=False),
        sa.Column("address", sa.String(length=256), nullable=False),
        sa.Column("serving_version", sa.Integer(), nullable=False),
        sa.Column("health", sa.String(length=16), nullable=False),
        sa.Column("backend", sa.String(length=32), nullable=False),
        sa.Column("device", sa.String(length=128), nullable=False),
        sa.Column("note", sa.String(length=512), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("replica_id"),
    )


def downgrade() -> None:
    op.drop_table("replica")
    with op.batch_alter_table("model_activation", schema=None) as batch_op:
        batch_op.drop_index("ix_model_activation_version")
    op.drop_table("model_activation")
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.drop_column("created_at")
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.drop_column("size_bytes")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_constraint("uq_job_lock_key", type_="unique")
        for column in (
            "curve",
            "data_watermark",
            "cancel_requested",
            "heartbeat_at",
            "attempts",
            "worker",
            "lock_key",
            "trigger",
        ):
            batch_op.drop_column(column)
