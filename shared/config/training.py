"""The worker's and training's settings (RECSERVE_WORKER__*, RECSERVE_TRAINING__*):
queues, retraining triggers, and the defaults a training job starts from."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
    residual: Literal["plain", "gated"] = "plain"
    """How each block's attention and FFN outputs join the residual stream: added as they
    are (SASRec), or scaled element-wise by a learnt sigmoid gate of the branch's
    normalised input first (LiGR's gated residual, the layer eSASRec builds on)."""
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
    id_dropout: float = Field(0.2, ge=0.0, lt=1.0)
    """Catalogues with item properties only: the share of items whose id embedding each
    training step leaves out (per history event and per scored row), so that an item
    known by its properties alone (one with no events yet) gets a vector on the same
    scale as the others (shared/model/item_features.py)."""


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
