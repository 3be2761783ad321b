from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeleteUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class DeleteUserResponse(_message.Message):
    __slots__ = ("events", "impressions", "flags", "import_reports", "deleted_at_ms")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    IMPORT_REPORTS_FIELD_NUMBER: _ClassVar[int]
    DELETED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    events: int
    impressions: int
    flags: int
    import_reports: int
    deleted_at_ms: int
    def __init__(self, events: _Optional[int] = ..., impressions: _Optional[int] = ..., flags: _Optional[int] = ..., import_reports: _Optional[int] = ..., deleted_at_ms: _Optional[int] = ...) -> None: ...

class ExportUserRequest(_message.Message):
    __slots__ = ("user_id", "page_token", "page_size")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_token: str
    page_size: int
    def __init__(self, user_id: _Optional[str] = ..., page_token: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class ExportUserResponse(_message.Message):
    __slots__ = ("json", "next_page_token")
    JSON_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    json: str
    next_page_token: str
    def __init__(self, json: _Optional[str] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListAuditEntriesRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("at_ms", "action", "subject", "by", "detail_json")
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    at_ms: int
    action: str
    subject: str
    by: str
    detail_json: str
    def __init__(self, at_ms: _Optional[int] = ..., action: _Optional[str] = ..., subject: _Optional[str] = ..., by: _Optional[str] = ..., detail_json: _Optional[str] = ...) -> None: ...

class ListAuditEntriesResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

class Rule(_message.Message):
    __slots__ = ("kind", "label", "factor", "max_items", "item_id", "slot")
    KIND_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    FACTOR_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    label: str
    factor: float
    max_items: int
    item_id: str
    slot: int
    def __init__(self, kind: _Optional[str] = ..., label: _Optional[str] = ..., factor: _Optional[float] = ..., max_items: _Optional[int] = ..., item_id: _Optional[str] = ..., slot: _Optional[int] = ...) -> None: ...

class RuleSet(_message.Message):
    __slots__ = ("name", "rules", "active_from_ms", "active_until_ms", "description", "updated_ms", "updated_by", "active")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FROM_MS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    name: str
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    active_from_ms: int
    active_until_ms: int
    description: str
    updated_ms: int
    updated_by: str
    active: bool
    def __init__(self, name: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., active_from_ms: _Optional[int] = ..., active_until_ms: _Optional[int] = ..., description: _Optional[str] = ..., updated_ms: _Optional[int] = ..., updated_by: _Optional[str] = ..., active: _Optional[bool] = ...) -> None: ...

class ListRuleSetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRuleSetsResponse(_message.Message):
    __slots__ = ("rule_sets",)
    RULE_SETS_FIELD_NUMBER: _ClassVar[int]
    rule_sets: _containers.RepeatedCompositeFieldContainer[RuleSet]
    def __init__(self, rule_sets: _Optional[_Iterable[_Union[RuleSet, _Mapping]]] = ...) -> None: ...

class PutRuleSetRequest(_message.Message):
    __slots__ = ("rule_set",)
    RULE_SET_FIELD_NUMBER: _ClassVar[int]
    rule_set: RuleSet
    def __init__(self, rule_set: _Optional[_Union[RuleSet, _Mapping]] = ...) -> None: ...

class DeleteRuleSetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteRuleSetResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class TrafficArm(_message.Message):
    __slots__ = ("version", "weight")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    version: int
    weight: float
    def __init__(self, version: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class SetTrafficSplitRequest(_message.Message):
    __slots__ = ("arms", "shadow_version", "shadow_share")
    ARMS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SHARE_FIELD_NUMBER: _ClassVar[int]
    arms: _containers.RepeatedCompositeFieldContainer[TrafficArm]
    shadow_version: int
    shadow_share: float
    def __init__(self, arms: _Optional[_Iterable[_Union[TrafficArm, _Mapping]]] = ..., shadow_version: _Optional[int] = ..., shadow_share: _Optional[float] = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PromoteArmRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class OnlineMetric(_message.Message):
    __slots__ = ("model_version", "arm", "computed_at_ms", "window_hours", "impressions", "ctr", "hit_rate", "attributed_share", "shadow_requests", "shadow_overlap", "shadow_p50_ms")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_HOURS_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    CTR_FIELD_NUMBER: _ClassVar[int]
    HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    SHADOW_P50_MS_FIELD_NUMBER: _ClassVar[int]
    model_version: int
    arm: str
    computed_at_ms: int
    window_hours: float
    impressions: int
    ctr: float
    hit_rate: float
    attributed_share: float
    shadow_requests: int
    shadow_overlap: float
    shadow_p50_ms: float
    def __init__(self, model_version: _Optional[int] = ..., arm: _Optional[str] = ..., computed_at_ms: _Optional[int] = ..., window_hours: _Optional[float] = ..., impressions: _Optional[int] = ..., ctr: _Optional[float] = ..., hit_rate: _Optional[float] = ..., attributed_share: _Optional[float] = ..., shadow_requests: _Optional[int] = ..., shadow_overlap: _Optional[float] = ..., shadow_p50_ms: _Optional[float] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("arms", "shadow_version", "shadow_share", "metrics")
    ARMS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SHARE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    arms: _containers.RepeatedCompositeFieldContainer[TrafficArm]
    shadow_version: int
    shadow_share: float
    metrics: _containers.RepeatedCompositeFieldContainer[OnlineMetric]
    def __init__(self, arms: _Optional[_Iterable[_Union[TrafficArm, _Mapping]]] = ..., shadow_version: _Optional[int] = ..., shadow_share: _Optional[float] = ..., metrics: _Optional[_Iterable[_Union[OnlineMetric, _Mapping]]] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("version", "status", "metrics", "artifact_path", "data_watermark", "config_json", "checksum", "created_at_ms", "job_id", "activated_at_ms", "size_bytes")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    status: str
    metrics: _containers.ScalarMap[str, float]
    artifact_path: str
    data_watermark: int
    config_json: str
    checksum: str
    created_at_ms: int
    job_id: int
    activated_at_ms: int
    size_bytes: int
    def __init__(self, version: _Optional[int] = ..., status: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., artifact_path: _Optional[str] = ..., data_watermark: _Optional[int] = ..., config_json: _Optional[str] = ..., checksum: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., job_id: _Optional[int] = ..., activated_at_ms: _Optional[int] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "active_version")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    active_version: int
    def __init__(self, models: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., active_version: _Optional[int] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class BundleFile(_message.Message):
    __slots__ = ("name", "size_bytes", "sha256", "ok")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    name: str
    size_bytes: int
    sha256: str
    ok: bool
    def __init__(self, name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., ok: _Optional[bool] = ...) -> None: ...

class Activation(_message.Message):
    __slots__ = ("version", "previous_version", "activated_at_ms", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: int
    previous_version: int
    activated_at_ms: int
    reason: str
    def __init__(self, version: _Optional[int] = ..., previous_version: _Optional[int] = ..., activated_at_ms: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ModelDetails(_message.Message):
    __slots__ = ("model", "files", "problem", "activations", "training")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    model: ModelVersion
    files: _containers.RepeatedCompositeFieldContainer[BundleFile]
    problem: str
    activations: _containers.RepeatedCompositeFieldContainer[Activation]
    training: _containers.RepeatedCompositeFieldContainer[ParamChoice]
    def __init__(self, model: _Optional[_Union[ModelVersion, _Mapping]] = ..., files: _Optional[_Iterable[_Union[BundleFile, _Mapping]]] = ..., problem: _Optional[str] = ..., activations: _Optional[_Iterable[_Union[Activation, _Mapping]]] = ..., training: _Optional[_Iterable[_Union[ParamChoice, _Mapping]]] = ...) -> None: ...

class ParamChoice(_message.Message):
    __slots__ = ("name", "value_json", "source", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    value_json: str
    source: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., value_json: _Optional[str] = ..., source: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ActivateModelRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class RollbackModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListActivationsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListActivationsResponse(_message.Message):
    __slots__ = ("activations",)
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    activations: _containers.RepeatedCompositeFieldContainer[Activation]
    def __init__(self, activations: _Optional[_Iterable[_Union[Activation, _Mapping]]] = ...) -> None: ...

class PruneModelsRequest(_message.Message):
    __slots__ = ("keep", "dry_run")
    KEEP_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    keep: int
    dry_run: bool
    def __init__(self, keep: _Optional[int] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class PruneModelsResponse(_message.Message):
    __slots__ = ("pruned", "freed_bytes")
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    pruned: _containers.RepeatedScalarFieldContainer[int]
    freed_bytes: int
    def __init__(self, pruned: _Optional[_Iterable[int]] = ..., freed_bytes: _Optional[int] = ...) -> None: ...

class EpochPoint(_message.Message):
    __slots__ = ("epoch", "loss", "val_ndcg_at_10", "seconds")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_NDCG_AT_10_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    loss: float
    val_ndcg_at_10: float
    seconds: float
    def __init__(self, epoch: _Optional[int] = ..., loss: _Optional[float] = ..., val_ndcg_at_10: _Optional[float] = ..., seconds: _Optional[float] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "kind", "status", "progress", "message", "error", "params_json", "created_at_ms", "started_at_ms", "finished_at_ms", "model_version", "log", "trigger", "worker", "attempts", "heartbeat_at_ms", "cancel_requested", "curve", "resolved")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CURVE_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    id: int
    kind: str
    status: str
    progress: float
    message: str
    error: str
    params_json: str
    created_at_ms: int
    started_at_ms: int
    finished_at_ms: int
    model_version: int
    log: _containers.RepeatedScalarFieldContainer[str]
    trigger: str
    worker: str
    attempts: int
    heartbeat_at_ms: int
    cancel_requested: bool
    curve: _containers.RepeatedCompositeFieldContainer[EpochPoint]
    resolved: _containers.RepeatedCompositeFieldContainer[ParamChoice]
    def __init__(self, id: _Optional[int] = ..., kind: _Optional[str] = ..., status: _Optional[str] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., error: _Optional[str] = ..., params_json: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., started_at_ms: _Optional[int] = ..., finished_at_ms: _Optional[int] = ..., model_version: _Optional[int] = ..., log: _Optional[_Iterable[str]] = ..., trigger: _Optional[str] = ..., worker: _Optional[str] = ..., attempts: _Optional[int] = ..., heartbeat_at_ms: _Optional[int] = ..., cancel_requested: _Optional[bool] = ..., curve: _Optional[_Iterable[_Union[EpochPoint, _Mapping]]] = ..., resolved: _Optional[_Iterable[_Union[ParamChoice, _Mapping]]] = ...) -> None: ...

class StartTrainingRequest(_message.Message):
    __slots__ = ("params_json",)
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    params_json: str
    def __init__(self, params_json: _Optional[str] = ...) -> None: ...

class GetTrainingOptionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrainingOption(_message.Message):
    __slots__ = ("name", "type", "default_json", "minimum", "maximum", "exclusive_minimum", "exclusive_maximum", "choices", "help", "nullable", "source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_JSON_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_MINIMUM_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    NULLABLE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    default_json: str
    minimum: float
    maximum: float
    exclusive_minimum: bool
    exclusive_maximum: bool
    choices: _containers.RepeatedScalarFieldContainer[str]
    help: str
    nullable: bool
    source: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., default_json: _Optional[str] = ..., minimum: _Optional[float] = ..., maximum: _Optional[float] = ..., exclusive_minimum: _Optional[bool] = ..., exclusive_maximum: _Optional[bool] = ..., choices: _Optional[_Iterable[str]] = ..., help: _Optional[str] = ..., nullable: _Optional[bool] = ..., source: _Optional[str] = ...) -> None: ...

class BuildEngineRequest(_message.Message):
    __slots__ = ("version", "precision")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    version: int
    precision: str
    def __init__(self, version: _Optional[int] = ..., precision: _Optional[str] = ...) -> None: ...

class TrainingOptions(_message.Message):
    __slots__ = ("options",)
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    options: _containers.RepeatedCompositeFieldContainer[TrainingOption]
    def __init__(self, options: _Optional[_Iterable[_Union[TrainingOption, _Mapping]]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class GetServerStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsSample(_message.Message):
    __slots__ = ("at_ms", "recommend_qps", "latency_p50_ms", "latency_p99_ms", "error_rate", "feedback_events_per_s", "mean_batch_size", "loop_lag_max_ms", "gc_ms", "mean_run_ms")
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    RECOMMEND_QPS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_EVENTS_PER_S_FIELD_NUMBER: _ClassVar[int]
    MEAN_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOOP_LAG_MAX_MS_FIELD_NUMBER: _ClassVar[int]
    GC_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_RUN_MS_FIELD_NUMBER: _ClassVar[int]
    at_ms: int
    recommend_qps: float
    latency_p50_ms: float
    latency_p99_ms: float
    error_rate: float
    feedback_events_per_s: float
    mean_batch_size: float
    loop_lag_max_ms: float
    gc_ms: float
    mean_run_ms: float
    def __init__(self, at_ms: _Optional[int] = ..., recommend_qps: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., error_rate: _Optional[float] = ..., feedback_events_per_s: _Optional[float] = ..., mean_batch_size: _Optional[float] = ..., loop_lag_max_ms: _Optional[float] = ..., gc_ms: _Optional[float] = ..., mean_run_ms: _Optional[float] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("replica_id", "address", "serving_version", "health", "backend", "device", "last_seen_ms", "uptime_s", "alive", "note")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    address: str
    serving_version: int
    health: str
    backend: str
    device: str
    last_seen_ms: int
    uptime_s: float
    alive: bool
    note: str
    def __init__(self, replica_id: _Optional[str] = ..., address: _Optional[str] = ..., serving_version: _Optional[int] = ..., health: _Optional[str] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., last_seen_ms: _Optional[int] = ..., uptime_s: _Optional[float] = ..., alive: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...

class ServerStats(_message.Message):
    __slots__ = ("recommend_qps", "latency_p50_ms", "latency_p99_ms", "error_rate", "mean_batch_size", "feedback_events_per_s", "backend", "device", "active_version", "requests_total", "feedback_events_total", "uptime_s", "cached_users", "batches_total", "batched_histories_total", "state_cache_hits", "configured_version", "note", "replica_id", "series", "replicas", "history_cache_bytes", "label_cache_entries", "calls_in_progress", "streams_open")
    RECOMMEND_QPS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MEAN_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_EVENTS_PER_S_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_EVENTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    CACHED_USERS_FIELD_NUMBER: _ClassVar[int]
    BATCHES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BATCHED_HISTORIES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    STATE_CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_VERSION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LABEL_CACHE_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CALLS_IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STREAMS_OPEN_FIELD_NUMBER: _ClassVar[int]
    recommend_qps: float
    latency_p50_ms: float
    latency_p99_ms: float
    error_rate: float
    mean_batch_size: float
    feedback_events_per_s: float
    backend: str
    device: str
    active_version: int
    requests_total: int
    feedback_events_total: int
    uptime_s: float
    cached_users: int
    batches_total: int
    batched_histories_total: int
    state_cache_hits: int
    configured_version: int
    note: str
    replica_id: str
    series: _containers.RepeatedCompositeFieldContainer[StatsSample]
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    history_cache_bytes: int
    label_cache_entries: int
    calls_in_progress: int
    streams_open: int
    def __init__(self, recommend_qps: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., error_rate: _Optional[float] = ..., mean_batch_size: _Optional[float] = ..., feedback_events_per_s: _Optional[float] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., active_version: _Optional[int] = ..., requests_total: _Optional[int] = ..., feedback_events_total: _Optional[int] = ..., uptime_s: _Optional[float] = ..., cached_users: _Optional[int] = ..., batches_total: _Optional[int] = ..., batched_histories_total: _Optional[int] = ..., state_cache_hits: _Optional[int] = ..., configured_version: _Optional[int] = ..., note: _Optional[str] = ..., replica_id: _Optional[str] = ..., series: _Optional[_Iterable[_Union[StatsSample, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ..., history_cache_bytes: _Optional[int] = ..., label_cache_entries: _Optional[int] = ..., calls_in_progress: _Optional[int] = ..., streams_open: _Optional[int] = ...) -> None: ...

class GetUserHistoryRequest(_message.Message):
    __slots__ = ("user_id", "limit")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    limit: int
    def __init__(self, user_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryEvent(_message.Message):
    __slots__ = ("item_id", "title", "kind", "timestamp_ms")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    kind: str
    timestamp_ms: int
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., kind: _Optional[str] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class UserHistory(_message.Message):
    __slots__ = ("user_id", "events")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    events: _containers.RepeatedCompositeFieldContainer[HistoryEvent]
    def __init__(self, user_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[HistoryEvent, _Mapping]]] = ...) -> None: ...

class CatalogueItem(_message.Message):
    __slots__ = ("item_id", "title", "labels", "available", "in_catalogue", "created_at_ms", "in_model", "properties", "properties_version")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    IN_CATALOGUE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    IN_MODEL_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_VERSION_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    available: bool
    in_catalogue: bool
    created_at_ms: int
    in_model: bool
    properties: _containers.RepeatedCompositeFieldContainer[Property]
    properties_version: int
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., available: _Optional[bool] = ..., in_catalogue: _Optional[bool] = ..., created_at_ms: _Optional[int] = ..., in_model: _Optional[bool] = ..., properties: _Optional[_Iterable[_Union[Property, _Mapping]]] = ..., properties_version: _Optional[int] = ...) -> None: ...

class Property(_message.Message):
    __slots__ = ("key", "categories", "number", "text")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    key: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    number: float
    text: str
    def __init__(self, key: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ..., number: _Optional[float] = ..., text: _Optional[str] = ...) -> None: ...

class UpsertItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[CatalogueItem]
    def __init__(self, items: _Optional[_Iterable[_Union[CatalogueItem, _Mapping]]] = ...) -> None: ...

class UpsertItemsResponse(_message.Message):
    __slots__ = ("created", "updated")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    created: int
    updated: int
    def __init__(self, created: _Optional[int] = ..., updated: _Optional[int] = ...) -> None: ...

class ListItemsRequest(_message.Message):
    __slots__ = ("query", "limit", "unavailable_only", "item_ids")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    query: str
    limit: int
    unavailable_only: bool
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, query: _Optional[str] = ..., limit: _Optional[int] = ..., unavailable_only: _Optional[bool] = ..., item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListItemsResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[CatalogueItem]
    def __init__(self, items: _Optional[_Iterable[_Union[CatalogueItem, _Mapping]]] = ...) -> None: ...

class SetItemAvailabilityRequest(_message.Message):
    __slots__ = ("item_ids", "available")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    available: bool
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., available: _Optional[bool] = ...) -> None: ...

class SetItemAvailabilityResponse(_message.Message):
    __slots__ = ("updated",)
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    updated: int
    def __init__(self, updated: _Optional[int] = ...) -> None: ...
