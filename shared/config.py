"""recserve settings: one pydantic-settings object, built by entry points and passed down.

Every field can be set from the environment with the ``RECSERVE_`` prefix; nested
sections use a double underscore, e.g. ``RECSERVE_SERVER__PORT=50051`` or
``RECSERVE_TRAINING__EPOCHS=30``. ``RECSERVE_CONFIG=path.toml`` names an optional
TOML file with the same structure (environment variables win over it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class ServerSettings(BaseModel):
    """The gRPC server (`recserve serve`)."""

    host: str = "127.0.0.1"
    """Interface to listen on. Use 0.0.0.0 to accept remote callers."""
    port: int = Field(50051, ge=0, le=65535)
    """TCP port; 0 picks a free one (tests)."""
    workers: int = Field(1, ge=1, le=64)
    """Server processes sharing the port through SO_REUSEPORT."""
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    """The server's asyncio event loop. auto: uvloop when it is installed (it is a
    dependency on Linux and macOS), else the standard loop."""
    backend: Literal["auto", "onnxruntime", "tensorrt", "torch-cuda", "noop"] = "auto"
    """Inference backend. auto: TensorRT when `tensorrt` imports and a CUDA device is present,
    torch on CUDA when only torch and a GPU are present, else ONNX Runtime on CPU.
    noop: answers with zero user states without running the model (the gRPC ceiling of
    `recserve bench serve`)."""
    intra_op_threads: int = Field(0, ge=0, le=256)
    """ONNX Runtime threads per inference; 0 means one per core. 1 (with the automatic
    max_inflight_batches: one run per core at once) gives the model alone more throughput
    on the 2-core AMD machine (2,000-2,500 against 850-1,800 histories/s) and more
    mixed-traffic throughput, but less cold-traffic throughput beside gRPC: see
    docs/benchmarks.md."""

    @property
    def run_threads(self) -> int:
        """Intra-op threads of one model run: intra_op_threads, or one per core when 0."""
        return self.intra_op_threads or os.cpu_count() or 1

    max_k: int = Field(1000, ge=1)
    """Largest k a Recommend call may ask for."""
    max_history_items: int = Field(1000, ge=1)
    """Largest inline history a Recommend call may carry."""
    max_list_items: int = Field(10000, ge=1)
    """Largest exclude or candidate list a Recommend call may carry."""
    max_feedback_batch: int = Field(10000, ge=1)
    """Most events one Feedback request may carry."""
    max_batch_requests: int = Field(256, ge=1, le=100_000)
    """Most requests one RecommendBatch call may carry."""
    max_batch_size: int = Field(64, ge=1, le=4096)
    """Most histories the dynamic batcher runs through the model at once."""
    max_batch_run_ms: float = Field(15.0, ge=0.0, le=10_000.0)
    """A batch also holds no more histories than recent runs say fit in this long. On a
    CPU a model run costs about the same per history from batch 8 up (2-core AMD EPYC,
    histories of 200: 0.75 ms each at 8, 0.80 at 64), so a batch of 64 (50 ms) would only
    make every request behind it wait; on a GPU a history costs microseconds and batches
    stay full. 0: max_batch_size alone."""
    use_item_index: bool = True
    """Rank with a bundle's approximate top-k index when it carries one (large
    catalogues, see training.index_min_items); False: always score every item."""
    max_batch_wait_ms: float = Field(2.0, ge=0.0, le=1000.0)
    """How long a partly filled batch waits for more requests, only while the server is
    busy (a run ended within the last 50 ms): larger batches under load, and no wait for
    a lone request on an idle server, which goes straight to the model. 0: never wait."""
    max_inflight_batches: int = Field(0, ge=0, le=64)
    """Batches the model runs at once. 0 (auto): on the CPU, enough runs of
    intra_op_threads threads to fill this process's share of the cores; on a GPU, 1."""
    lone_runs: int = Field(1, ge=0, le=64)
    """On the CPU, runs of a lone request beside the batches: a request that finds no
    request queued but every batch slot busy runs at once in one of these, instead of
    waiting a whole run to then run alone (a small run leaves cores idle, so two overlap
    well). Once requests queue, they are batched as usual. 0: never."""
    history_cache_max_bytes: int = Field(256 * 2**20, ge=0)
    """Memory the cached user histories may take, by their measured size (the least
    recently used are dropped beyond it; a user of 512 events takes about 60 kB). 0
    turns the cache off."""
    label_cache_max_entries: int = Field(10_000, ge=1)
    """Label filters' model rows kept per (model version, label), least recently used
    dropped beyond it; clients choose the labels they send, so this bounds their memory."""
    max_explained_per_call: int = Field(32, ge=0, le=100_000)
    """Most requests of one RecommendBatch call that may ask for explanations: each costs
    a model run over one history per explained event plus one. A larger call gets
    INVALID_ARGUMENT."""
    history_ttl_s: float = Field(300.0, ge=0.0)
    """Cached histories older than this are re-read from the database: a safety net
    behind the cross-replica invalidations (server/invalidation.py). 0 disables expiry."""
    invalidation: bool = True
    """Send and receive cross-replica cache invalidations (server/invalidation.py). Turn
    it off only for a single server process on PostgreSQL (it then saves a pg_notify per
    commit) or to measure what it costs."""
    invalidation_poll_s: float = Field(0.05, gt=0.0)
    """Cross-replica cache invalidation on databases without LISTEN/NOTIFY (SQLite with
    several server processes): how often each process looks for events stored by the
    others. On PostgreSQL invalidations are pushed (LISTEN/NOTIFY) and this is unused."""
    state_cache_users: int = Field(100_000, ge=0)
    """Users whose encoded state (per model version and history version) is kept, so a
    returning user whose history has not changed costs only the scoring. 0 disables it."""
    popularity_debias: float = Field(0.0, ge=0.0, le=4.0)
    """Re-ranking weight w: items are ranked by score - w * log(share of training
    events), which lifts less popular items (shared/model/rerank.py; `recserve evaluate
    --rerank` measures the accuracy/coverage trade-off). 0 (default): the model's own
    ranking. Above 0 every item is scored (the approximate index is not used)."""
    log_impressions: bool = True
    """Log every served list (user, items, model version, arm) in the impression table,
    in batches off the request path, and name it with a recommendation_id that Feedback
    can send back: the online metrics and A/B arms are computed from it."""
    max_queued_impressions: int = Field(100_000, ge=1)
    """Impressions waiting for their batch write; beyond it they are dropped (counted)."""
    exploration_slots: int = Field(0, ge=0, le=100)
    """Places at the end of every list given to items new since the served model was
    trained (catalogue entries it does not know, most recently popular first), until
    the next retraining learns them. 0 (default): off."""
    exploration_window_h: float = Field(24.0, gt=0.0)
    """The window of events that ranks new items for the exploration slot."""
    explain_events: int = Field(50, ge=1, le=10_000)
    """The newest history events that may explain an item (older ones stay in every
    leave-one-out variant): an explained request costs one model run over this many + 1
    histories."""
    explain_top: int = Field(3, ge=1, le=50)
    """History events listed per item when a Recommend asks for explanations."""
    swap_warm_users: int = Field(20_000, ge=0)
    """Before a hot swap, the incoming model encodes this many of the most recently served
    users (those whose histories are in memory), so that returning users do not all miss
    the state cache at once when it starts serving. 0 turns it off."""
    swap_warm_s: float = Field(30.0, ge=0.0, le=3600.0)
    """The longest that encoding may delay a hot swap: it runs only while no request
    waits for the model, so a saturated server swaps after this with the users encoded
    so far."""
    model_poll_s: float = Field(2.0, gt=0.0)
    """How often the server checks the database for a newly activated model."""
    wal_checkpoint_s: float = Field(1.0, ge=0.0)
    """SQLite: how often the server checkpoints the write-ahead log on a thread of its own,
    so that no Feedback commit pays for a checkpoint (server/checkpoints.py). 0: SQLite's
    automatic checkpoints, inside commits."""
    admin_token: SecretStr | None = None
    """A bearer token of the admin role, ``name=secret`` (one more entry of admin_tokens)."""
    read_tokens: list[SecretStr] = []
    """Bearer tokens of the read role (Recommend, RecommendBatch), each ``name=secret``:
    the name is what logs and audits show, the secret what a client sends. JSON list in
    the environment: RECSERVE_SERVER__READ_TOKENS='["shop-frontend=..."]'. Once any token
    of any role (or a client CA) is configured, a role with no tokens is closed."""
    write_tokens: list[SecretStr] = []
    """Bearer tokens of the write role (Feedback, FeedbackStream; and read), name=secret."""
    admin_tokens: list[SecretStr] = []
    """Bearer tokens of the admin role (every ModelAdmin method; and read and write),
    name=secret."""
    anonymous_roles: list[Literal["read", "write", "admin"]] = []
    """Roles open to callers without a credential once authentication is configured
    (logged as a warning at start-up). Empty (the default): every call needs one."""
    client_cert_roles: dict[str, Literal["read", "write", "admin"]] = {}
    """mTLS: the role a client certificate verified against tls_client_ca grants, by its
    subject's common name (CN). Empty (the default): certificates grant no role, and
    callers also need a token."""
    insecure: bool = False
    """Allow listening on a non-loopback address with no authentication (a trusted
    network, or a sidecar that authenticates callers). Without it such a server refuses
    to start (`recserve serve --insecure` sets it). TLS alone does not count."""
    tls_cert: Path | None = None
    """PEM certificate chain of the server; with tls_key, the server speaks TLS only."""
    tls_key: Path | None = None
    """PEM private key of tls_cert."""
    tls_client_ca: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mTLS)."""
    max_concurrent_rpcs: int = Field(24, ge=1)
    """Unary RPCs in progress at once in one server process (counted once a call's request
    has arrived; streams, health checks and reflection are not counted); beyond it a
    call gets RESOURCE_EXHAUSTED at once. This is what keeps an overloaded server fast for the
    calls it accepts: every call's Python work runs on one event loop, and calls beyond
    what it can take would otherwise wait in gRPC's queue, where no other check sees them.
    24 holds about 30 ms of work on the 2-core machines this was measured on; raise it
    with the cores (model runs) per process."""
    max_streams_per_caller: int = Field(32, ge=1, le=100_000)
    """Client streams (FeedbackStream) one caller may hold open at once: a token's name,
    or everyone without a token together. Beyond it a stream gets RESOURCE_EXHAUSTED."""
    max_streams_per_connection: int = Field(1000, ge=1, le=100_000)
    """HTTP/2 streams (calls of any kind) one client connection may have open at once
    (gRPC's max_concurrent_streams). A client that opens more than this at once on a new
    connection, before it has read the server's settings, gets some refused (UNAVAILABLE,
    safe to retry), so the default leaves room for bursts of several hundred calls; the
    per-caller stream cap and the unary slots bound the work."""
    stream_idle_timeout_s: float = Field(10.0, gt=0.0, le=86_400.0)
    """A client stream that sends no message for this long is ended (DEADLINE_EXCEEDED);
    the messages it sent before are stored."""
    keepalive_time_s: float = Field(60.0, gt=0.0)
    """How often the server pings an idle connection to see it is alive."""
    keepalive_timeout_s: float = Field(20.0, gt=0.0)
    """How long a keepalive ping may go unanswered before the connection is closed."""
    max_connection_idle_s: float = Field(300.0, ge=0.0)
    """A connection with no call for this long is closed (GOAWAY; clients reconnect on
    their next call). 0: never."""
    max_connection_age_s: float = Field(3600.0, ge=0.0)
    """A connection older than this is asked to go away, so that clients spread again
    over replicas added since; its calls get max_connection_age_grace_s. 0: never."""
    max_connection_age_grace_s: float = Field(60.0, ge=0.0)
    """How long calls on a connection past its age may still finish before it closes."""
    max_queued_histories: int = Field(0, ge=0)
    """Histories waiting for a model run; beyond it Recommend gets RESOURCE_EXHAUSTED at
    once instead of queueing. 0 (auto): 4 full batches per model run that may be in
    flight, a few milliseconds of work."""
    max_queue_wait_ms: float = Field(30.0, ge=0.0)
    """Admission control: a Recommend is refused (RESOURCE_EXHAUSTED, at once) when the
    work already waiting for the model would delay it longer than this, as estimated
    from recent model runs. 0 turns the check off (only max_queued_histories bounds it)."""
    max_queued_events: int = Field(100_000, ge=1)
    """Feedback events waiting for a commit; beyond it Feedback gets RESOURCE_EXHAUSTED."""
    default_deadline_s: float = Field(10.0, gt=0.0)
    """Deadline of a call that sets none; its work is dropped once it passes."""
    db_threads: int = Field(8, ge=1, le=256)
    """Threads for database reads (histories, admin calls), apart from the model runs'
    threads, so that a slow database does not stall users served from the caches."""
    drain_s: float = Field(3.0, ge=0.0)
    """On SIGTERM: how long health says NOT_SERVING while calls are still served, so
    load balancers stop sending before the server stops listening."""
    feedback_commit_batch: int = Field(5000, ge=1)
    """Most events the group-commit writer puts in one transaction."""
    grace_s: float = Field(5.0, ge=0.0)
    """On SIGTERM, how long in-flight calls may finish before the server stops."""
    max_message_mb: int = Field(16, ge=1, le=1024)
    """Largest gRPC message, in MiB, in either direction."""
    keep_ready_models: int = Field(3, ge=0)
    """Bundle retention: besides the active version and the one active before it, the
    newest this many ready versions keep their bundles; `recserve models prune` (and
    PruneModels) deletes the rest."""
    replica_report_s: float = Field(5.0, gt=0.0)
    """How often a server records its health and served version in the database, for
    the deployment-wide view of GetServerStats and the console."""
    replica_stale_s: float = Field(20.0, gt=0.0)
    """A replica that has not reported for this long is shown as lost; after ten times
    this its row is removed."""


class WorkerSettings(BaseModel):
    """Celery workers (`recserve worker`)."""

    queue: str = "recserve"
    """Queue for CPU jobs (train, evaluate, export)."""
    gpu_queue: str = "recserve-gpu"
    """Queue for TensorRT engine builds; a GPU worker listens here."""
    concurrency: int = Field(1, ge=1, le=64)
    """Jobs one worker runs at once."""
    task_time_limit_s: int = Field(6 * 3600, ge=10)
    """A job running longer than this is killed and marked failed."""
    torch_threads: int = Field(0, ge=0)
    """Threads torch uses for training; 0 means one per core."""
    heartbeat_s: float = Field(10.0, gt=0.0)
    """How often a running job records a sign of life (job.heartbeat_at)."""
    job_lost_after_s: float = Field(120.0, gt=0.0)
    """A running job without a heartbeat for this long is lost (its worker died or
    stalled): the reaper requeues it as a new attempt, or fails it after max_attempts.
    Must exceed heartbeat_s by a wide margin."""
    max_attempts: int = Field(3, ge=1, le=100)
    """Attempts a job gets when its workers are lost one after another; the attempt after
    the last lost one fails the job."""
    queue_timeout_s: float = Field(3600.0, gt=0.0)
    """A job still queued this long after it was (re)queued fails, which frees the
    training lock: its message was lost by the broker, or no worker listens."""
    reap_every_s: float = Field(30.0, gt=0.0)
    """How often workers and servers look for jobs whose worker died."""
    retrain_every_s: float = Field(0.0, ge=0.0)
    """Retraining schedule: when the newest training job is older than this, beat starts
    one. 0 turns the schedule off. Runs under `recserve beat` or `recserve worker --beat`."""
    retrain_after_events: int = Field(0, ge=0)
    """Volume trigger: start a training job once this many feedback events have arrived
    since the newer of the active model's and the last training job's watermark. 0 turns
    it off. Checked by beat every trigger_check_s."""
    online_metrics_every_s: float = Field(900.0, ge=0.0)
    """How often beat has a worker compute the online metrics (CTR, hit rate, shadow
    overlap per version and arm) from the impression log; 0 turns it off."""
    retain_events_days: float = Field(0.0, ge=0.0)
    """Feedback events whose event time is older than this many days are deleted by the
    retention task on beat's schedule. 0 (the default): events are kept forever."""
    retain_impressions_days: float = Field(90.0, ge=0.0)
    """Impressions (served lists) older than this many days are deleted by the retention
    task; 0 keeps them forever."""
    retention_every_s: float = Field(3600.0, gt=0.0)
    """How often beat has a worker apply the retention of events and impressions."""
    online_metrics_window_h: float = Field(24.0, gt=0.0)
    """The window of impressions and feedback the online metrics cover."""
    trigger_check_s: float = Field(60.0, gt=0.0)
    """How often beat checks the schedule and the volume trigger (and reaps lost jobs)."""
    build_engines: bool = False
    """After a training job registers a version, queue a TensorRT engine build for it on
    gpu_queue (a GPU worker builds it for its own GPU; BuildEngine does it by hand)."""
    engine_precision: Literal["fp32", "fp16", "bf16"] = "fp16"
    """The precision of the engines build_engines queues."""
    publish_retries: int = Field(2, ge=0, le=20)
    """Attempts to reach the broker when queueing a job before StartTraining answers
    UNAVAILABLE (and marks the job failed)."""


class ModelArchitecture(BaseModel):
    """The architecture of a SASRec-family model: one definition for training's defaults
    (TrainingSettings) and a bundle's saved config (shared.model.bundle.ModelConfig)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    max_len: int = Field(50, ge=2, le=4096)
    """Most recent events the model reads."""
    d_model: int = Field(64, ge=8, le=1024)
    """Width of the embeddings and the Transformer (a multiple of n_heads)."""
    n_heads: int = Field(2, ge=1, le=64)
    """Attention heads per block."""
    n_blocks: int = Field(2, ge=1, le=16)
    """Transformer blocks."""
    dropout: float = Field(0.2, ge=0.0, lt=0.9)
    """Dropout on embeddings, residual branches and the FFN."""
    attention_dropout: float | None = Field(None, ge=0.0, lt=0.9)
    """Dropout on the attention weights; None: the same as ``dropout``. 0 trains ~15%
    faster on CPU (the [B, H, L, L] dropout mask is the costliest op after the softmax)."""
    ffn_mult: int = Field(4, ge=1, le=16)
    """FFN width as a multiple of d_model."""
    activation: Literal["gelu", "swiglu"] = "gelu"
    """FFN activation."""
    positions: Literal["learned", "rotary"] = "rotary"
    """rotary (RoPE) in every attention layer, or learned position embeddings added to the
    items. Either way positions count from the newest event, so padding a history to any
    length changes nothing. Rotary gained 0.012-0.014 validation NDCG@10 on ML-1M at equal
    epochs and about the same cost (docs/experiments.md)."""
    similarity: Literal["dot", "cosine"] = "dot"
    """How a user state scores an item: dot product, or cosine similarity over a
    temperature (unit-length states and item rows; the state, scoring table and ONNX
    scores carry that scaling, so scores = state @ item_embeddings.T either way)."""
    temperature: float = Field(0.05, gt=0.0, le=10.0)
    """cosine only: the temperature dividing the logits."""


class TrainingSettings(ModelArchitecture):
    """Defaults of a training job; StartTraining parameters override them."""

    # The docstrings below become each field's description (GetTrainingOptions, the
    # console's training form).
    model_config = ConfigDict(use_attribute_docstrings=True)

    auto: bool = True
    """Fill every parameter that neither the job nor the settings set from the data's
    size and density (worker/recipe.py; each choice is logged in the job). False: the
    defaults below as they are."""
    epochs: int = Field(200, ge=1, le=10000)
    """Upper bound on epochs; early stopping usually ends training sooner."""
    batch_size: int = Field(128, ge=1, le=4096)
    """Training windows per optimiser step."""
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    """AdamW's peak learning rate (after warm-up)."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW's decoupled weight decay."""
    warmup_steps: int = Field(100, ge=0)
    """Steps of linear learning-rate warm-up."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """After warm-up: constant, or cosine decay to 2% over the epochs (or the time budget)."""
    patience: int = Field(5, ge=1)
    """Epochs without a better validation NDCG@10 before training stops."""
    patience_from: float = Field(0.0, ge=0.0, le=1.0)
    """Share of the planned epochs before which no evaluation counts against the patience
    (a cosine's early, high-rate epochs wander; its best models come as the rate decays).
    Training stops at the earliest after this share plus ``patience`` evaluations."""
    eval_every: int = Field(1, ge=1)
    """Epochs between validation runs."""
    time_budget_s: float = Field(0.0, ge=0.0)
    """Train for about this many seconds: the number of epochs (and a cosine schedule's
    length) is planned from a timed probe before training, so the run stays deterministic
    for that number of epochs; 0: no budget, `epochs` decides."""
    seed: int = 42
    """Seed of the weight initialisation, batch order and dropout."""
    loss: Literal["ce", "sampled"] = "ce"
    """ce: full softmax over the catalogue. sampled: sampled softmax, for huge catalogues."""
    num_negatives: int = Field(256, ge=1)
    """Negatives per batch for the sampled loss."""
    windows: int = Field(0, ge=0)
    """Training windows per user: 1 trains on each user's newest max_len events only; more
    also trains on the max_len events before those, and so on; 0 (the default): all of a
    user's events, so heavy users' older events are targets too (on ML-1M 1.5x the
    targets per epoch, and better at equal training time)."""
    validation_users: int = Field(0, ge=0)
    """Users whose second-to-last event validates (early stopping, the best epoch), a
    seeded random choice; every other user trains on that event. 0: every user validates
    (the classic leave-one-out split). The test is every user's last event either way."""
    exclude_flagged: bool = True
    """Leave out the events of flagged users (suspected bots found by `recserve import`;
    the flagged_user table). The job logs how many users and events it left out."""
    index_min_items: int = Field(100_000, ge=0)
    """Bundles of catalogues with at least this many items carry an approximate top-k
    index (faiss IVF, recall@10 >= 0.95 against exact), which the server then uses
    instead of scoring every item; 0: never. The default is where the index became the
    faster of the two in `recserve bench scale` (docs/benchmarks.md)."""
    exclude_seen: bool = True
    """ce loss: leave the items already in the input prefix (other than the target) out of
    each position's softmax, as serving and the filtered evaluation leave them out of the
    ranking. The model then spends no capacity pushing seen items down. The default;
    turn it off when callers rank with ``allow_seen`` and want seen items ranked too."""


class TelemetrySettings(BaseModel):
    """Metrics, logs and traces of every recserve process."""

    metrics_port: int = Field(9464, ge=0, le=65535)
    """HTTP port of the Prometheus /metrics endpoint of a server or worker; 0 turns it
    off. Processes on one host need different ports (`recserve up` assigns them); a port
    that is taken is logged and metrics are then not exported, the process keeps running."""
    metrics_host: str = "127.0.0.1"
    """Interface the /metrics endpoint listens on. Loopback by default, so metrics are
    not exposed beyond the host; the container image sets 0.0.0.0 for a Prometheus on the
    same container network (deploy/compose.yaml publishes only gRPC)."""
    log_format: Literal["text", "json"] = "text"
    """json: one JSON object per line (time, level, logger, message, request_id, ...)."""
    access_log: bool = False
    """Log one line per RPC (method, status, milliseconds, request id) at INFO."""
    tracing: bool = False
    """OpenTelemetry traces of every RPC through opentelemetry-instrumentation-grpc
    (install recserve[tracing]); exported over OTLP to OTEL_EXPORTER_OTLP_ENDPOINT."""


class ClientSettings(BaseModel):
    """How recserve's own clients (the CLI, the console, benchmarks) reach a server."""

    token: SecretStr | None = None
    """Bearer token sent with every call (default for --token)."""
    tls_ca: Path | None = None
    """PEM CA bundle to verify the server with; set it (or tls_cert) to use TLS."""
    tls_cert: Path | None = None
    """PEM client certificate, for servers that require mTLS."""
    tls_key: Path | None = None
    """PEM key of tls_cert."""
    tls_server_name: str | None = None
    """Expected name in the server's certificate when it differs from the target host."""


class Settings(BaseSettings):
    """All recserve settings. See the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="RECSERVE_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path("./var")
    """Where the embedded configuration keeps its database, broker and bundles."""
    database_url: str = ""
    """Any SQLAlchemy URL. Empty: SQLite at {data_dir}/recserve.db."""
    broker_url: str = ""
    """Celery broker. Empty: kombu's SQLAlchemy transport on {data_dir}/broker.db."""
    models_dir: Path | None = None
    """Where bundles are written. Empty: {data_dir}/models. Shared storage when distributed."""
    log_level: str = "INFO"

    server: ServerSettings = ServerSettings()
    worker: WorkerSettings = WorkerSettings()
    training: TrainingSettings = TrainingSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    client: ClientSettings = ClientSettings()
    db_connect_timeout_s: float = Field(5.0, gt=0.0)
    """Seconds to wait for a database connection before the call fails (UNAVAILABLE)."""
    db_statement_timeout_s: float = Field(30.0, gt=0.0)
    """PostgreSQL statement_timeout of every connection."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("RECSERVE_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def db_url(self) -> str:
        """The database URL, password included: never print it (use safe_db_url)."""
        return self.database_url or f"sqlite:///{self.data_dir / 'recserve.db'}"

    @property
    def safe_db_url(self) -> str:
        """The database URL with its password masked, for logs and reports."""
        from sqlalchemy.engine import make_url

        return make_url(self.db_url).render_as_string(hide_password=True)

    @property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def bundles_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    def bundle_path(self, artifact_path: str) -> Path:
        """Where a model version's bundle lives: artifact paths are stored relative to the
        models directory (absolute ones, from older versions, are used as they are)."""
        path = Path(artifact_path)
        return path if path.is_absolute() else self.bundles_dir / path

    @property
    def embedded_broker(self) -> bool:
        """True when the broker is the SQLite file of the embedded configuration."""
        return self.broker.startswith("sqla+sqlite")
