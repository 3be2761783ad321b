"""Training defaults that adapt to the data: the recipe a job uses when it is not told.

A job's parameters come from four places, strongest first: the job's own parameters
(only those it was given are stored with it), the deployment's settings file or
environment (``RECSERVE_TRAINING__...``), this rule, and the settings' defaults. The rule
only fills parameters that neither of the first two set, and every value is logged in
the job with where it came from and why (``Choice``); the model version keeps that
table. ``auto: false`` turns the rule off.

The rule reads three figures of the training data: the number of items N, the mean
events per user, and the 90th percentile of history length.

- **History length (max_len):** the 90th percentile of user history length, rounded up to
  a multiple of 10 and kept within 20..200. A longer window than most users have costs
  time and teaches nothing (Beauty's p90 is 14 events, ML-1M's 400).
- **Dense data (mean >= 50 events per user, ML-1M):** the recipe measured on ML-1M
  (docs/experiments.md): dropout 0.2 without attention dropout, lr 4e-3 on a cosine.
- **Sparse data (e-commerce, Amazon Beauty and Games):** dropout 0.5, as SASRec used for
  its Amazon sets (few events per user: a model of the same width over-fits the tail fast
  without it), and lr 3e-3 on a cosine: in equal time on Beauty it was far ahead of 1e-3
  (validation NDCG@10 0.0197 against 0.0089 after four epochs), and d_model 128 did not
  pay for its doubled epoch time.
- **The loss:** the full softmax (cross-entropy over every item, SASRec+) while an epoch's
  softmax stays affordable: training targets x N below FULL_SOFTMAX_BUDGET multiply-adds
  per dimension. Above it, a sampled softmax over ``num_negatives`` negatives drawn from
  a mix of uniform and popularity sampling, each logit corrected by minus log of its
  sampling probability (logQ), which is what keeps a sampled softmax unbiased toward
  popular items; the negatives grow with the catalogue (up to 8,192).
- **Validation sample:** early stopping and the best epoch are judged on VALIDATION_USERS
  users (a seeded random choice); every other user trains on its second-to-last event
  instead of holding it out (the test, every user's last event, is never trained on).
  On short histories that event is a large share of a user's training signal and the one
  nearest the test in time.
- **Schedule:** cosine decay over a 55-minute time budget (3,300 s), up to 400 epochs,
  with early stopping after 20 evaluations without a better validation NDCG@10, counted
  only from half-way through the planned epochs (small data stops long before the
  budget). Validation peaks early at the cosine's high rates and then wanders; the best
  models come as the rate decays. On ML-1M a patience counted from the start stopped
  training at epoch 51 of 103 (best 31), before the decay, 0.0044 NDCG@10 under a run
  that went on.

The rule was measured in equal-time arms on ML-1M, Amazon Beauty and Amazon Games
(docs/experiments.md); none of it names a data set, only its size and density.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.model.params import TrainingParams

FULL_SOFTMAX_BUDGET = 6.0e9
"""Targets x items per epoch up to which the full softmax is used (ML-1M: 1.0e6 targets x
3,416 items = 3.4e9; Amazon Games: 0.19e6 x 23,715 = 4.6e9; Amazon Beauty: 0.23e6 x
54,542 = 1.3e10). Above it a full-softmax epoch takes more than about a minute on two
cores; on Beauty the sampled softmax over 4,096 negatives reached a higher validation
NDCG@10 in equal time (0.0151 against 0.0113 after 12 minutes: docs/experiments.md)."""
DENSE_EVENTS_PER_USER = 50.0
BUDGET_S = 3300.0
VALIDATION_USERS = 4096
"""Users whose second-to-last event validates: a validation NDCG@10 near 0.04 over this
many users has a standard error of about 0.002, well under the gains early stopping
judges, and every other user's newest training event is kept."""


@dataclass(frozen=True)
class DataStats:
    users: int
    items: int
    events: int
    mean_length: float
    p90_length: int
    targets: int
    """Training targets in an epoch (every event after a user's first, before the split)."""

    @classmethod
    def of(cls, lengths: Iterable[int], items: int) -> DataStats:
        array = np.fromiter(lengths, dtype=np.int64)
        if len(array) == 0:
            return cls(0, items, 0, 0.0, 0, 0)
        return cls(
            users=len(array),
            items=items,
            events=int(array.sum()),
            mean_length=float(array.mean()),
            p90_length=int(np.percentile(array, 90)),
            targets=int(np.maximum(array - 3, 0).sum()),
        )

    def describe(self) -> str:
        return (
            f"{self.users:,} users, {self.items:,} items, {self.events:,} events, "
            f"{self.mean_length:.1f} per user (p90 {self.p90_length})"
        )


def recipe_for(stats: DataStats) -> list[tuple[str, Any, str]]:
    """(parameter, value, reason) for every parameter the rule decides, for ``stats``."""
    choices: list[tuple[str, Any, str]] = []
    max_len = min(200, max(20, 10 * math.ceil(stats.p90_length / 10)))
    choices.append(("max_len", max_len, f"90% of histories hold <= {stats.p90_length} events"))
    dense = stats.mean_length >= DENSE_EVENTS_PER_USER
    density = f"{stats.mean_length:.1f} events per user"
    dropout, learning_rate = (0.2, 4e-3) if dense else (0.5, 3e-3)
    kind = ">=" if dense else "<"
    why = f"{'dense' if dense else 'sparse'} data ({density} {kind} {DENSE_EVENTS_PER_USER:g})"
    choices += [
        ("dropout", dropout, why),
        ("attention_dropout", 0.0, why),
        ("learning_rate", learning_rate, why),
        ("n_heads", 1, why),
    ]
    softmax_cost = float(stats.targets) * stats.items
    if softmax_cost <= FULL_SOFTMAX_BUDGET:
        choices.append(
            ("loss", "ce", f"full softmax affordable: {softmax_cost:.1e} target x items per epoch")
        )
    else:
        negatives = int(min(8192, max(1024, 2 ** round(math.log2(stats.items / 16)))))
        reason = f"{softmax_cost:.1e} target x items per epoch is over {FULL_SOFTMAX_BUDGET:.0e}"
        choices += [
            ("loss", "sampled", reason),
            ("num_negatives", negatives, f"about 1/16 of {stats.items:,} items"),
        ]
    if stats.users > VALIDATION_USERS:
        choices.append(
            (
                "validation_users",
                VALIDATION_USERS,
                f"{VALIDATION_USERS:,} of {stats.users:,} users validate; the others train on "
                "their second-to-last event",
            )
        )
    schedule = "a cosine over the time budget, with early stopping"
    choices += [
        ("lr_schedule", "cosine", schedule),
        ("time_budget_s", BUDGET_S, schedule),
        ("epochs", 400, schedule),
        ("patience", 20, schedule),
        ("patience_from", 0.5, "the patience counts once half the cosine is run"),
        ("windows", 0, "every event is a target once"),
        ("positions", "rotary", "rotary positions (docs/experiments.md)"),
    ]
    return choices


GIVEN, SETTINGS, RECIPE, DEFAULT = "given", "settings", "recipe", "default"


@dataclass(frozen=True)
class Choice:
    """Where one resolved training parameter came from, and why."""

    name: str
    value: Any
    source: str
    """given (the job's own), settings (RECSERVE_TRAINING__ or the settings file), recipe
    (this rule, from the data), or default (the settings' default, left as it is)."""
    reason: str = ""


def apply_recipe(
    params: TrainingParams,
    given: Iterable[str],
    lengths: Sequence[int] | np.ndarray,
    items: int,
    *,
    from_settings: Iterable[str] = (),
) -> tuple[TrainingParams, list[str], list[Choice]]:
    """``params`` with the rule's values for every parameter neither ``given`` to the job
    nor set in the settings (``from_settings``); one log line per decision; and every
    parameter's value with its source."""
    stats = DataStats.of(lengths, items)
    lines = [f"data: {stats.describe()}"]
    given, from_settings = set(given), set(from_settings) - set(given)
    decided: dict[str, str] = {}
    updates: dict[str, Any] = {}
    if params.auto:
        for name, value, reason in recipe_for(stats):
            if name in given or name in from_settings:
                where = "given to the job" if name in given else "set in the settings"
                lines.append(f"recipe: {name}={getattr(params, name)!r} ({where})")
                continue
            updates[name] = value
            decided[name] = reason
            lines.append(f"recipe: {name}={value!r} ({reason})")
    else:
        lines.append("recipe: auto is off; the settings' defaults are used as they are")
    resolved = params.model_copy(update=updates)
    choices = [
        Choice(
            name,
            getattr(resolved, name),
            GIVEN if name in given
            else SETTINGS if name in from_settings
            else RECIPE if name in decided
            else DEFAULT,
            decided.get(name, ""),
        )
        for name in type(resolved).model_fields
    ]  # fmt: skip
    return resolved, lines, choices
