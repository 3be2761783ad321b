"""online measurement: impressions, attributed events, traffic splits, online metrics;
catalogue change times

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_item_updated_at"), ["updated_at"], unique=False)
    with op.batch_alter_table("feedback_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recommendation_id", sa.String(length=64), nullable=True))
    op.create_table(
        "impression",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("recommendation_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=256), nullable=False),
        sa.Column("items", sa.JSON(), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("arm", sa.String(length=32), nullable=False),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shadow_version", sa.Integer(), nullable=True),
        sa.Column("shadow_overlap", sa.Float(), nullable=True),
        sa.Column("shadow_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("recommendation_id"),
    )
    with op.batch_alter_table("impression", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_impression_served_at"), ["served_at"], unique=False)
    op.create_table(
        "traffic_arm",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_table(
        "online_metric",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("arm", sa.String(length=32), nullable=False),
        sa.Column("window_hours", sa.Float(), nullable=False),
        sa.Column("impressions", sa.Integer(), nullable=False),
        sa.Column("clicked", sa.Integer(), nullable=False),
        sa.Column("ctr", sa.Float(), nullable=False),
        sa.Column("hit_rate", sa.Float(), nullable=False),
        sa.Column("attributed_share", sa.Float(), nullable=False),
        sa.Column("shadow_requests", sa.Integer(), nullable=False),
        sa.Column("shadow_overlap", sa.Float(), nullable=False),
        sa.Column("shadow_p50_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("online_metric", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_online_metric_computed_at"), ["computed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("online_metric", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_online_metric_computed_at"))
    op.drop_table("online_metric")
    op.drop_table("traffic_arm")
    with op.batch_alter_table("impression", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_impression_served_at"))
    op.drop_table("impression")
    with op.batch_alter_table("feedback_event", schema=None) as batch_op:
        batch_op.drop_column("recommendation_id")
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_item_updated_at"))
        batch_op.drop_column("updated_at")
