"""Training loop for the SASRec model (torch).

Cross-entropy over the whole catalogue at every position (the SASRec+ recipe), or a
sampled softmax with logQ correction for catalogues too large for it; AdamW with linear
warm-up; early stopping on validation NDCG@10 that keeps the best weights.

The same seed gives the same model. With ``time_budget_s`` the number of epochs is
planned after two epochs from the faster one's measured duration (logged); the run is
then deterministic for that number, and ``epochs`` set to it without a budget trains the
same model (the learning rate does not depend on the plan before then). A run that falls
behind its plan (a busy machine) stops at 108% of the budget with its best epoch.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from shared.config import ModelArchitecture
from shared.model.bundle import ModelConfig
from shared.model.item_features import ItemFeatures
from shared.model.params import TrainingParams
from shared.model.sasrec import SASRec
from worker.dataset import Ragged, Split
from worker.evaluation import evaluate
from worker.losses import batch_loss, sampling_distribution

log = logging.getLogger(__name__)


class Progress(Protocol):
    """Receives the fraction done, a message and, once per epoch, a learning-curve point
    (epoch, loss, val_ndcg@10 when evaluated, seconds)."""

    def __call__(
        self, fraction: float, message: str, point: dict[str, float] | None = None
    ) -> None: ...


def _log_progress(_fraction: float, message: str, point: dict[str, float] | None = None) -> None:
    log.info("%s", message)


@dataclass
class TrainResult:
    model: SASRec
    best_epoch: int
    epochs_run: int
    best_val_ndcg: float
    seconds: float
    epoch_log: list[dict[str, float]] = field(default_factory=list)
    planned_epochs: int = 0
    features: ItemFeatures | None = None
    """The property-token vocabulary the model learnt from (None: ids only)."""

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / max(1, self.epochs_run)


def model_config(params: TrainingParams, num_items: int, property_tokens: int = 0) -> ModelConfig:
    architecture = {name: getattr(params, name) for name in ModelArchitecture.model_fields}
    return ModelConfig(num_items=num_items, property_tokens=property_tokens, **architecture)


class Windows:
    """The training windows of a split's training sequences, as (start, end) positions in
    their flat array; a batch's int64 inputs and targets are built when it is asked for,
    so memory holds two integers a window, not max_len.

    Per user the newest window first: its last max_len events are the targets, each
    predicted from the events before it in the window. A user with more events gets up to
    ``windows`` windows (0: as many as it takes), each ending where the next newer one's
    targets begin, so every event is a target at most once. Every window has at least
    one target; a user with a single event has none.
    """

    def __init__(self, train: Ragged, max_len: int, windows: int = 1) -> None:
        self.flat, self.max_len, self.weights = train.flat, max_len, train.weights
        starts, ends = train.starts, train.ends
        count = np.maximum(0, -(-(ends - starts - 1) // max_len))
        if windows:
            count = np.minimum(count, windows)
        owner = np.repeat(np.arange(len(starts)), count)
        first = np.cumsum(count) - count
        k = np.arange(len(owner)) - np.repeat(first, count)
        self.ends = ends[owner] - k * max_len
        self.starts = np.maximum(starts[owner], self.ends - max_len - 1)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def lengths(self) -> np.ndarray:
        """Targets in each window."""
        return self.ends - self.starts - 1

    def batch(
        self, rows: np.ndarray | Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Inputs and next-item targets, int64 [B, L], left-padded to the batch's longest;
        and the targets' weights, float32 [B, L], when the events weigh differently."""
        starts, ends = self.starts[rows], self.ends[rows]
        width = int((ends - starts).max()) - 1
        inputs = np.zeros((len(starts), width), dtype=np.int64)
        targets = np.zeros((len(starts), width), dtype=np.int64)
        weights = None if self.weights is None else np.zeros((len(starts), width), np.float32)
        for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            window = self.flat[start:end]
            n = end - start - 1
            inputs[i, width - n :] = window[:-1]
            targets[i, width - n :] = window[1:]
            if weights is not None:
                assert self.weights is not None
                weights[i, width - n :] = self.weights[start + 1 : end]
        return inputs, targets, weights


def length_buckets(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Batches of sequences of similar length, in random order.

    Sorting by length (random among equals) before cutting batches means a batch is padded
    only to its own longest window, which roughly halves the work on long-tailed data.
    """
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def torch_scorer(
    model: SASRec, device: torch.device
) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    from shared.model.histories import left_pad

    def score(histories: Sequence[np.ndarray]) -> np.ndarray:
        batch = torch.from_numpy(left_pad(histories, model.config.max_len)).to(device)
        with torch.no_grad():
            return model.score(model.encode_last(batch)).float().cpu().numpy()

    return score


def train(
    split: Split,
    params: TrainingParams,
    *,
    progress: Progress | None = None,
    device: torch.device | None = None,
    properties: tuple[ItemFeatures, np.ndarray] | None = None,
) -> TrainResult:
    """Trains on ``split``; with ``properties`` (the catalogue's token vocabulary and its
    table over the split's items, int64 [N+1, T]), the model learns from them too."""
    report = progress or _log_progress
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    model = _new_model(params, split.num_items, properties).to(device)
    windows = Windows(split.train, model.config.max_len, params.windows)
    if len(windows) == 0:
        raise ValueError("no training sequences: every user needs at least 2 events")
    q = torch.from_numpy(sampling_distribution(split.popularity)).float().to(device)
    steps_per_epoch = -(-len(windows) // params.batch_size)
    planned = params.epochs
    optimizer, schedule, scheduler = _optimizing(model, params, steps_per_epoch)
    started = time.perf_counter()
    best = _Best(copy.deepcopy(model.state_dict()))
    epoch_log: list[dict[str, float]] = []
    epoch = 0
    while epoch < planned:
        epoch += 1
        loss = _epoch(model, windows, params, rng, device, q, (optimizer, scheduler))
        entry: dict[str, float] = {"epoch": epoch, "loss": loss}
        if epoch % params.eval_every == 0 or epoch == planned:
            entry["val_ndcg@10"] = _validate(model, split, device)
            best.offer(
                entry["val_ndcg@10"], epoch, model, counts=epoch > params.patience_from * planned
            )
        elapsed = time.perf_counter() - started
        entry["seconds"] = elapsed
        epoch_log.append(entry)
        if params.time_budget_s and epoch == min(PLAN_AFTER, planned):
            planned = _plan_from_budget(params, epoch, planned, epoch_log, report)
            schedule.total_steps = planned * steps_per_epoch
        best.report(report, entry, planned)
        if best.stale >= params.patience:
            report(epoch / planned, f"early stop at epoch {epoch}: best epoch {best.epoch}")
            break
        if params.time_budget_s and elapsed >= OVERRUN * params.time_budget_s:
            report(epoch / planned, f"stopped at epoch {epoch}: past the time budget")
            break
    model.load_state_dict(best.state)
    model.eval()
    return TrainResult(
        model=model,
        best_epoch=best.epoch,
        epochs_run=epoch,
        best_val_ndcg=best.ndcg,
        seconds=time.perf_counter() - started,
        epoch_log=epoch_log,
        planned_epochs=planned,
        features=properties[0] if properties else None,
    )


def _new_model(
    params: TrainingParams, num_items: int, properties: tuple[ItemFeatures, np.ndarray] | None
) -> SASRec:
    """A fresh model, with its items' property tokens when ``properties`` are given."""
    model = SASRec(model_config(params, num_items, properties[0].size if properties else 0))
    if properties is not None:
        model.item_tokens.copy_(torch.from_numpy(properties[1]))
    return model


def _optimizing(
    model: SASRec, params: TrainingParams, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, Schedule, Any]:
    """AdamW and the learning-rate schedule over the planned epochs."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay,
        betas=(0.9, 0.98),
    )  # fmt: skip
    schedule = Schedule(params, steps_per_epoch, params.epochs * steps_per_epoch)
    return optimizer, schedule, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


@dataclass
class _Best:
    """The best validation so far, its epoch and weights, and the evaluations since it
    (counted only once the patience applies)."""

    state: dict[str, Any]
    ndcg: float = -1.0
    epoch: int = 0
    stale: int = 0

    def report(self, report: Callable[..., None], entry: dict[str, float], planned: int) -> None:
        """The epoch's line and learning-curve point, with the best so far."""
        epoch = int(entry["epoch"])
        eta = entry["seconds"] / epoch * (planned - epoch)
        report(
            epoch / planned,
            f"epoch {epoch}/{planned} loss {entry['loss']:.4f} "
            f"val ndcg@10 {entry.get('val_ndcg@10', float('nan')):.4f} "
            f"best {self.ndcg:.4f}@{self.epoch} eta<={eta:.0f}s",
            dict(entry),
        )

    def offer(self, ndcg: float, epoch: int, model: SASRec, *, counts: bool) -> None:
        if ndcg > self.ndcg:
            self.ndcg, self.epoch, self.stale = ndcg, epoch, 0
            self.state = copy.deepcopy(model.state_dict())
        elif counts:
            self.stale += 1


def _epoch(
    model: SASRec,
    windows: Windows,
    params: TrainingParams,
    rng: np.random.Generator,
    device: torch.device,
    q: torch.Tensor,
    optimizing: tuple[torch.optim.Optimizer, Any],
) -> float:
    """One pass over the training windows in length buckets; the mean loss."""
    optimizer, scheduler = optimizing
    model.train()
    total, batches = 0.0, 0
    for idx in length_buckets(windows.lengths, params.batch_size, rng):
        x, y, w = windows.batch(idx)
        x_t = torch.from_numpy(x).to(device)
        y_t = torch.from_numpy(y).to(device)
        w_t = None if w is None else torch.from_numpy(w).to(device)
        hidden = model(x_t)  # [B, L, D]
        loss = batch_loss(model, hidden, y_t, params, x_t, q, w_t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        total += float(loss.detach())
        batches += 1
    return total / max(1, batches)


def _validate(model: SASRec, split: Split, device: torch.device) -> float:
    """NDCG@10 on the validation users, full ranking, seen items filtered."""
    model.eval()
    val = evaluate(
        torch_scorer(model, device), split.valid, split.num_items, ks=(10,), sampled=False,
        unfiltered=False,
    )  # fmt: skip
    return val.get("ndcg@10", 0.0)


def _plan_from_budget(
    params: TrainingParams,
    epoch: int,
    planned: int,
    epoch_log: list[dict[str, float]],
    report: Callable[..., None],
) -> int:
    """The epochs that fit the time budget, from the fastest epoch so far."""
    durations = np.diff([0.0, *(e["seconds"] for e in epoch_log)])
    epoch_s = float(durations.min())
    left = params.time_budget_s - epoch_log[-1]["seconds"]
    planned = max(epoch, min(params.epochs, epoch + int(left / epoch_s)))
    report(
        epoch / planned,
        f"time budget {params.time_budget_s:.0f}s: {planned} epochs planned (an epoch "
        f"took {epoch_s:.1f}s; epochs={planned} without a budget trains the same model)",
    )
    return planned


PLAN_AFTER = 2
"""A time budget becomes a number of epochs after this many, from the fastest of them
(the first pays one-off costs; either may have shared the machine)."""
OVERRUN = 1.08
"""A budgeted run stops once it has taken this much of its time budget."""


class Schedule:
    """The learning-rate factor per step: a linear warm-up over warmup_steps, then constant
    (``lr_schedule="constant"``), or held at the peak to the end of epoch PLAN_AFTER and
    then a cosine decay to 2% of the peak at ``total_steps``.

    ``total_steps`` may be set once epoch PLAN_AFTER is over (the time budget is turned
    into epochs with the measured epoch durations): the factor up to then does not depend
    on it, so a budgeted run equals a run with that many epochs and no budget.
    """

    def __init__(self, params: TrainingParams, steps_per_epoch: int, total_steps: int) -> None:
        self.warmup = max(1, params.warmup_steps)
        self.cosine = params.lr_schedule == "cosine"
        self.hold = max(self.warmup, PLAN_AFTER * steps_per_epoch)
        self.total_steps = total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if not self.cosine or step < self.hold:
            return 1.0
        done = min(1.0, (step - self.hold) / max(1, self.total_steps - self.hold))
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * done))
