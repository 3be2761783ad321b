"""Database schema (SQLModel). Migrations in shared/migrations create it.

Each entity has a Base (the fields callers set), a Create (what an API accepts)
and the table class; the gRPC layer converts table rows to protobuf itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, String, Text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class ModelStatus(StrEnum):
    TRAINING = "training"
    READY = "ready"
    ACTIVE = "active"
    RETIRED = "retired"
    FAILED = "failed"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobKind(StrEnum):
    TRAIN = "train"
    EVALUATE = "evaluate"
    EXPORT = "export"
    BUILD_ENGINE = "build-engine"


# --- feedback events -------------------------------------------------------------------


class FeedbackEventBase(SQLModel):
    event_id: str = Field(max_length=128, unique=True)
    """The client's idempotency key."""
    user_id: str = Field(max_length=256)
    item_id: str = Field(max_length=256)
    kind: str = Field(default="click", max_length=32)
    value: float = 1.0
    event_time: datetime
    """When it happened (timezone-aware; stored in UTC)."""


class FeedbackEventCreate(FeedbackEventBase):
    pass


class FeedbackEvent(FeedbackEventBase, table=True):
    __tablename__ = "feedback_event"
    __table_args__ = (Index("ix_feedback_user_time", "user_id", "event_time"),)

    # SQLite only autoincrements INTEGER PRIMARY KEY, PostgreSQL needs BIGINT for big logs.
    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    received_time: datetime = Field(default_factory=utcnow)


# --- catalogue ---------------------------------------------------------------------------


class ItemBase(SQLModel):
    item_id: str = Field(primary_key=True, max_length=256)
    title: str = Field(default="", max_length=1024)
    labels: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    available: bool = True
    """Unavailable items are never recommended."""


class Item(ItemBase, table=True):
    __tablename__ = "item"


# --- model versions ----------------------------------------------------------------------


class ModelVersionBase(SQLModel):
    # Plain strings in the database (no native enum types to migrate).
    status: ModelStatus = Field(
        default=ModelStatus.TRAINING, sa_column=Column(String(16), nullable=False, index=True)
    )
    metrics: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON))
    artifact_path: str = Field(default="", max_length=1024)
    data_watermark: int = 0
    """Highest feedback_event.id the model was trained on."""
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    checksum: str = Field(default="", max_length=128)
    job_id: int | None = None


class ModelVersion(ModelVersionBase, table=True):
    __tablename__ = "model_version"

    version: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    activated_at: datetime | None = None


# --- jobs --------------------------------------------------------------------------------


class JobBase(SQLModel):
    kind: JobKind = Field(default=JobKind.TRAIN, sa_column=Column(String(16), nullable=False))
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class JobCreate(JobBase):
    pass


class Job(JobBase, table=True):
    __tablename__ = "job"

    id: int | None = Field(default=None, primary_key=True)
    status: JobStatus = Field(
        default=JobStatus.QUEUED, sa_column=Column(String(16), nullable=False, index=True)
    )
    progress: float = 0.0
    message: str = Field(default="", max_length=1024)
    error: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    log: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    celery_id: str = Field(default="", max_length=64)
    model_version: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
