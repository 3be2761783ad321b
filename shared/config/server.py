"""The server's settings (RECSERVE_SERVER__*): listening, authentication, admission,
batching, caches and limits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr


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
    max_similar_query_items: int = Field(20, ge=1, le=1000)
    """Most query items (a cart) one SimilarItems call may name."""
    max_feedback_batch: int = Field(10000, ge=1)
    """Most events one Feedback request may carry."""
    max_batch_requests: int = Field(256, ge=1, le=100_000)
    """Most requests one RecommendBatch call may carry."""
    max_batch_size: int = Field(64, ge=1, le=4096)
    """Most histories the dynamic batcher runs through the model at once."""
    max_batch_run_ms: float = Field(15.0, ge=0.0, le=10_000.0)
    """A batch also holds no more histories than recent runs say fit in this long (or in
    twice a single run, where a starved machine makes that longer: batching is then
    needed most). On a CPU a model run costs about the same per history from batch 8 up,
    so a very large batch would only make every request behind it wait; on a GPU a
    history costs microseconds and batches stay full. 0: max_batch_size alone."""
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
    similar_transitions: bool = True
    """SimilarItems blends the model with the training transitions its bundle carries
    (what viewers of the query items went on to; server/pipeline/similar.py). False: the
    model alone ranks, through the item index where the bundle has one."""
    log_impressions: bool = True
    """Log every served list (user, items, model version, arm) in the impression table,
    in batches off the request path, and name it with a recommendation_id that Feedback
    can send back: the online metrics and A/B arms are computed from it."""
    max_queued_impressions: int = Field(100_000, ge=1)
    """Impressions waiting for their batch write; beyond it they are dropped (counted)."""
    impression_flush_ms: float = Field(500.0, gt=0.0, le=60_000.0)
    """The longest the queued impressions wait for their write (server/impressions.py);
    they are written sooner, as soon as impression_flush_rows wait."""
    impression_flush_rows: int = Field(100, ge=1, le=100_000)
    """Impressions that, once queued, are written at once. Each write holds the
    interpreter for its rows' work, so under load short, frequent writes stall requests
    least (at 8 callers the p99 was 21 ms with writes of about 100 rows against 26 ms with
    writes of about 500); at low traffic the time bound writes twice a second,
    where ten writes a second cost 7-10% of cold throughput at 1-2 callers."""
    http_enabled: bool = False
    """The HTTP/JSON door (server/http.py, docs/http.md) beside gRPC, on ``http_port``.
    Off by default. Beyond loopback it needs tokens (HTTP callers authenticate with
    ``Authorization: Bearer``; client certificates are for gRPC)."""
    http_port: int = Field(8080, ge=0, le=65535)
    """The HTTP/JSON door's port (0 picks a free one)."""
    http_cors_origins: list[str] = []
    """Origins a browser may call the HTTP door from ("*" for any). Empty (default): no
    CORS headers, so browsers refuse cross-origin calls."""
    shown_cap: int = Field(0, ge=0, le=1000)
    """Shown-item capping: an item shown to a user this many times in the last
    ``shown_window_h`` hours with no event of the user on it since is left out of that
    user's lists (a request can override it, or switch it off). Counted when a list is
    served, on this replica at once and on the others through the impression log within
    2 s (so across replicas it needs ``log_impressions``). 0 (default): off."""
    shown_window_h: float = Field(24.0, gt=0.0, le=720.0)
    """The window of shown-item capping, in hours."""
    shown_cache_users: int = Field(10_000, ge=1)
    """Users whose recent showings this replica keeps (LRU); a user beyond it is read
    from the impression log again on their next capped request."""
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
