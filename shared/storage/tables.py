"""Database schema (SQLModel). Migrations in shared/migrations create it.

Each entity has a Base (the fields callers set), a Create (what an API accepts)
and the table class; the gRPC layer converts table rows to protobuf itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

BIGINT = BigInteger().with_variant(Integer(), "sqlite")
"""Ids, versions and watermarks: 64-bit on PostgreSQL (SQLite's INTEGER is 64-bit, and
only an INTEGER primary key autoincrements there)."""


def bigint_key() -> Any:
    """An autoincrementing 64-bit primary key."""
    return Field(default=None, sa_column=Column(BIGINT, primary_key=True, autoincrement=True))


def bigint(default: int | None = 0, *, index: bool = False) -> Any:
    """A 64-bit column; NULL allowed when the default is None."""
    return Field(
        default=default,
        sa_column=Column(BIGINT, nullable=default is None, default=default, index=index),
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(when: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands timezone-aware columns back
    without their zone; every time recserve stores is UTC)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class ModelStatus(StrEnum):
    TRAINING = "training"
    READY = "ready"
    ACTIVE = "active"
    RETIRED = "retired"
    FAILED = "failed"
    PRUNED = "pruned"
    """The bundle was deleted by the retention rule; the row keeps the metrics."""


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobKind(StrEnum):
    TRAIN = "train"
    BUILD_ENGINE = "build-engine"
    ONLINE_METRICS = "online-metrics"


class JobTrigger(StrEnum):
    MANUAL = "manual"
    """StartTraining or `recserve train`."""
    SCHEDULE = "schedule"
    """The retraining schedule (worker.retrain_every_s)."""
    VOLUME = "volume"
    """Enough new feedback since the active model's watermark (worker.retrain_after_events)."""


TRAINING_LOCK = "train"
"""Job.lock_key of the one queued or running training job (unique in the database)."""


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
    recommendation_id: str | None = Field(default=None, max_length=64)
    """The served list this event responds to (RecommendResponse.recommendation_id)."""


class FeedbackEventCreate(FeedbackEventBase):
    pass


class FeedbackEvent(FeedbackEventBase, table=True):
    __tablename__ = "feedback_event"
    __table_args__ = (Index("ix_feedback_user_time", "user_id", "event_time"),)

    id: int | None = bigint_key()
    received_time: datetime = Field(default_factory=utcnow)


# --- online measurement ------------------------------------------------------------------


class Impression(SQLModel, table=True):
    """A served list: what a user was shown, by which model version and experiment arm.
    Written in batches off the request path; a Feedback event that names its
    recommendation_id is attributed to it."""

    __tablename__ = "impression"

    id: int | None = bigint_key()
    recommendation_id: str = Field(max_length=64, unique=True)
    user_id: str = Field(max_length=256, index=True)
    items: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    model_version: int = bigint()
    arm: str = Field(default="", max_length=32)
    """"" when no traffic split is set; else the arm's name ("v3")."""
    served_at: datetime = Field(default_factory=utcnow, index=True)
    shadow_version: int | None = bigint(None)
    """The shadow candidate that also ranked this request, if one did."""
    shadow_overlap: float | None = None
    """Share of the served list that the shadow's list of the same length also holds."""
    shadow_ms: float | None = None
    """The shadow's own time to rank, in milliseconds."""
    rules: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    """The business rules that moved items of this list (shared/model/rules.py): per
    effect, the item, the rule, its source and what it did; NULL when none applied."""


class TrafficArm(SQLModel, table=True):
    """The traffic split every server replica applies: each row an arm (a model version
    and its share of users) or the shadow candidate (``shadow`` true, ``weight`` the
    share of requests it also scores). No rows: the active version serves everyone."""

    __tablename__ = "traffic_arm"

    version: int = Field(sa_column=Column(BIGINT, primary_key=True, autoincrement=False))
    weight: float
    shadow: bool = False


class OnlineMetric(SQLModel, table=True):
    """Online figures of one model version (and arm) over a window of impressions, from
    the worker's online-metrics job."""

    __tablename__ = "online_metric"

    id: int | None = bigint_key()
    computed_at: datetime = Field(default_factory=utcnow, index=True)
    model_version: int = bigint()
    arm: str = Field(default="", max_length=32)
    window_hours: float
    impressions: int = bigint()
    clicked: int = bigint()
    """Impressions with at least one attributed event."""
    ctr: float
    hit_rate: float
    """Share of impressions where the user later acted on a listed item, attributed or not."""
    attributed_share: float
    """Share of the window's events that named a known recommendation_id."""
    shadow_requests: int = bigint()
    shadow_overlap: float = 0.0
    shadow_p50_ms: float = 0.0


# --- catalogue ---------------------------------------------------------------------------


class ItemBase(SQLModel):
    item_id: str = Field(primary_key=True, max_length=256)
    title: str = Field(default="", max_length=1024)
    labels: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    available: bool = True
    """Unavailable items are never recommended."""
    properties: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    """Typed properties (shared/model/properties.py); the categorical ones are also
    among ``labels`` as ``key:value``."""
    properties_version: int = 0
    """Counts the changes of ``properties`` (0: never set)."""


class Item(ItemBase, table=True):
    __tablename__ = "item"

    created_at: datetime | None = Field(default_factory=utcnow)
    updated_at: datetime | None = Field(default_factory=utcnow, index=True)
    """Last change of any field: servers reload labels and new items when it moves."""


class FlaggedUser(SQLModel, table=True):
    """A user whose events training leaves out (training.exclude_flagged): suspected bots
    found by `recserve import`'s data-quality pass."""

    __tablename__ = "flagged_user"

    user_id: str = Field(primary_key=True, max_length=256)
    reason: str = Field(max_length=64)
    detail: str = Field(default="", max_length=256)
    flagged_at: datetime = Field(default_factory=utcnow)


class UserTombstone(SQLModel, table=True):
    """A deleted user (DeleteUser): an event of theirs whose time is before
    ``deleted_at`` (the server's receipt time of the deletion) is never stored again, so a
    replayed event or a re-imported old file cannot bring their data back. Never purged."""

    __tablename__ = "user_tombstone"

    user_id: str = Field(primary_key=True, max_length=256)
    deleted_at: datetime = Field(default_factory=utcnow, index=True)
    deleted_by: str = Field(default="", max_length=64)


class AuditEntry(SQLModel, table=True):
    """Who did what to whose data: a user deleted or exported (the token's name, when,
    how many rows)."""

    __tablename__ = "audit_entry"

    id: int | None = bigint_key()
    at: datetime = Field(default_factory=utcnow, index=True)
    action: str = Field(max_length=32)
    subject: str = Field(default="", max_length=256)
    by: str = Field(default="", max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


# --- model versions ----------------------------------------------------------------------


class ModelVersionBase(SQLModel):
    # Plain strings in the database (no native enum types to migrate).
    status: ModelStatus = Field(
        default=ModelStatus.TRAINING, sa_column=Column(String(16), nullable=False, index=True)
    )
    metrics: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON))
    artifact_path: str = Field(default="", max_length=1024)
    data_watermark: int = bigint()
    """Highest feedback_event.id the model was trained on."""
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    checksum: str = Field(default="", max_length=128)
    job_id: int | None = bigint(None)
    size_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    """Bytes of the bundle on disk."""


ONE_ACTIVE_INDEX = "ux_model_version_one_active"


class ModelVersion(ModelVersionBase, table=True):
    __tablename__ = "model_version"
    # At most one active version, enforced by the database itself (a partial unique index).
    __table_args__ = (
        Index(
            ONE_ACTIVE_INDEX,
            "status",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    version: int | None = bigint_key()
    created_at: datetime = Field(default_factory=utcnow)
    activated_at: datetime | None = None
    activating_since: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    """Set while an ActivateModel loads this version (before the database names it
    active): pruning leaves such a version alone."""


class ModelActivation(SQLModel, table=True):
    """One activation: which version became active, replacing which, and why."""

    __tablename__ = "model_activation"

    id: int | None = bigint_key()
    version: int = bigint(index=True)
    previous_version: int | None = bigint(None)
    activated_at: datetime = Field(default_factory=utcnow)
    reason: str = Field(default="", max_length=256)


# --- replicas ----------------------------------------------------------------------------


class Replica(SQLModel, table=True):
    """A server process of the deployment, as it last reported itself (every few seconds)."""

    __tablename__ = "replica"

    replica_id: str = Field(primary_key=True, max_length=128)
    address: str = Field(default="", max_length=256)
    serving_version: int = bigint()
    health: str = Field(default="NOT_SERVING", max_length=16)
    backend: str = Field(default="", max_length=32)
    device: str = Field(default="", max_length=128)
    note: str = Field(default="", max_length=512)
    started_at: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)


# --- rules and changes ------------------------------------------------------------------


class RuleSetRow(SQLModel, table=True):
    """A named set of business rules (shared/model/rules.py) and its schedule."""

    __tablename__ = "rule_set"

    name: str = Field(primary_key=True, max_length=64)
    rules: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    description: str = Field(default="", max_length=512)
    active_from: datetime | None = None
    active_until: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    updated_by: str = Field(default="", max_length=64)


class Change(SQLModel, table=True):
    """A change every server replica must apply beside new events (a rule set put or
    deleted): replicas on PostgreSQL hear of it by NOTIFY, the others poll this table."""

    __tablename__ = "change"

    id: int | None = bigint_key()
    topic: str = Field(max_length=32)
    subject: str = Field(default="", max_length=256)
    origin: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, index=True)


# --- jobs --------------------------------------------------------------------------------


class JobBase(SQLModel):
    kind: JobKind = Field(default=JobKind.TRAIN, sa_column=Column(String(16), nullable=False))
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    trigger: JobTrigger = Field(
        default=JobTrigger.MANUAL, sa_column=Column(String(16), nullable=False, default="manual")
    )


class JobCreate(JobBase):
    pass


class Job(JobBase, table=True):
    __tablename__ = "job"
    __table_args__ = (UniqueConstraint("lock_key", name="uq_job_lock_key"),)

    id: int | None = bigint_key()
    status: JobStatus = Field(
        default=JobStatus.QUEUED, sa_column=Column(String(16), nullable=False, index=True)
    )
    progress: float = 0.0
    message: str = Field(default="", max_length=1024)
    error: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    log: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    celery_id: str = Field(default="", max_length=64)
    model_version: int | None = bigint(None)
    created_at: datetime = Field(default_factory=utcnow)
    queued_at: datetime | None = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    """When the job was last queued (created, or requeued by the reaper after its worker
    was lost): a job still queued ``worker.queue_timeout_s`` later fails."""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lock_key: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    """TRAINING_LOCK while a training job is queued or running, else NULL: the database
    lets at most one job hold it."""
    worker: str = Field(default="", max_length=128)
    """host:pid of the worker that claimed the job."""
    attempts: int = 0
    """Claims by a worker, and the fencing token of the running attempt: every write of
    an attempt (heartbeat, progress, result, model version, activation) names it, and the
    database refuses the writes of an attempt that is no longer the current one."""
    heartbeat_at: datetime | None = None
    """Last sign of life of the worker running the job; the reaper fails stale ones."""
    cancel_requested: bool = False
    data_watermark: int | None = bigint(None)
    """Highest feedback row id the job trained on."""
    curve: list[dict[str, float]] = Field(default_factory=list, sa_column=Column(JSON))
    """Per epoch: epoch, loss, val_ndcg@10 (when evaluated), seconds."""
    resolved: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    """Every training parameter as the running attempt resolved it: name, value, source
    (given, settings, recipe, default) and the recipe's reason. ``params`` holds only
    those the job was given."""
