"""integrity: 64-bit ids, versions and watermarks on PostgreSQL; one active model version
enforced by a partial unique index; when a job was last queued; activations in progress

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

# (table, column, nullable): INTEGER on PostgreSQL before, BIGINT after. SQLite's
# INTEGER is 64-bit already.
WIDENED = [
    ("impression", "model_version", False),
    ("impression", "shadow_version", True),
    ("traffic_arm", "version", False),
    ("online_metric", "id", False),
    ("online_metric", "model_version", False),
    ("online_metric", "impressions", False),
    ("online_metric", "clicked", False),
    ("online_metric", "shadow_requests", False),
    ("model_version", "version", False),
    ("model_version", "data_watermark", False),
    ("model_version", "job_id", True),
    ("model_activation", "id", False),
    ("model_activation", "version", False),
    ("model_activation", "previous_version", True),
    ("replica", "serving_version", False),
    ("job", "id", False),
    ("job", "model_version", True),
    ("job", "data_watermark", True),
]
SEQUENCES = [
    ("online_metric", "id"),
    ("model_version", "version"),
    ("model_activation", "id"),
    ("job", "id"),
]


def upgrade() -> None:
    # Before the index: should a database hold several active rows, the most recently
    # activated stays active and the others are retired.
    op.execute(
        "UPDATE model_version SET status = 'retired' WHERE status = 'active' AND version <> "
        "(SELECT version FROM model_version WHERE status = 'active' "
        "ORDER BY activated_at DESC, version DESC LIMIT 1)"
    )
    op.create_index(
        "ux_model_version_one_active",
        "model_version",
        ["status"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE job SET queued_at = created_at WHERE status = 'queued'")
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("activating_since", sa.DateTime(timezone=True), nullable=True)
        )
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, nullable in WIDENED:
        op.alter_column(
            table,
            column,
            type_=sa.BigInteger(),
            existing_type=sa.Integer(),
            existing_nullable=nullable,
        )
    for table, column in SEQUENCES:
        op.execute(
            f"ALTER SEQUENCE IF EXISTS {table}_{column}_seq AS bigint MAXVALUE 9223372036854775807"
        )


def downgrade() -> None:
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.drop_column("activating_since")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("queued_at")
    op.drop_index("ux_model_version_one_active", table_name="model_version")
