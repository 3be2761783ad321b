"""The training loop: the fused loss is exact, and a seed fixes the model."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shared import synthetic
from shared.model.params import TrainingParams
from shared.model.sasrec import SASRec
from tests.conftest import TINY_SPEC, TINY_TRAINING
from worker.dataset import Ragged, UserSequences, leave_one_out
from worker.losses import (
    FullSoftmaxCrossEntropy,
    PrefixBan,
    sampled_softmax,
    sampling_distribution,
)
from worker.training import Schedule, Windows, model_config, train


def test_fused_cross_entropy_matches_autograd() -> None:
    torch.manual_seed(0)
    h = torch.randn(37, 8, dtype=torch.float64, requires_grad=True)
    table = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 11, (37,))

    expected = F.cross_entropy(h @ table.T, targets)
    grad_h, grad_table = torch.autograd.grad(3.0 * expected, (h, table))
    fused = FullSoftmaxCrossEntropy.apply(h, table, targets)
    fused_h, fused_table = torch.autograd.grad(3.0 * fused, (h, table))

    assert torch.allclose(fused, expected)
    assert torch.allclose(fused_h, grad_h)
    assert torch.allclose(fused_table, grad_table)


def _split():  # type: ignore[no-untyped-def]
    sequences: dict[str, list[str]] = defaultdict(list)
    for event in synthetic.events(TINY_SPEC):
        sequences[event.user_id].append(event.item_id)
    return leave_one_out(sequences)


@pytest.mark.parametrize("loss", ["ce", "sampled"])
def test_same_seed_gives_the_same_model(loss: str) -> None:
    params = TrainingParams(**{**TINY_TRAINING.model_dump(), "epochs": 2, "loss": loss})
    split = _split()
    first = train(split, params, device=torch.device("cpu")).model.state_dict()
    second = train(split, params, device=torch.device("cpu")).model.state_dict()
    other = train(split, params.model_copy(update={"seed": 7}), device=torch.device("cpu"))
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(
        first["item_embedding.weight"], other.model.state_dict()["item_embedding.weight"]
    )


def test_time_budget_plans_epochs_from_the_first_and_matches_a_run_without_one() -> None:
    base = {**TINY_TRAINING.model_dump(), "lr_schedule": "cosine", "patience": 100}
    split = _split()
    cpu = torch.device("cpu")
    # A tiny epoch takes well under a second: the plan is capped by epochs, not the budget.
    budgeted = train(split, TrainingParams(**{**base, "epochs": 3, "time_budget_s": 3600.0}))
    plain = train(split, TrainingParams(**{**base, "epochs": 3, "time_budget_s": 0.0}), device=cpu)
    assert budgeted.planned_epochs == plain.planned_epochs == 3 == budgeted.epochs_run
    first, second = budgeted.model.state_dict(), plain.model.state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    # A budget the first epoch already spends stops the run there, with its best epoch.
    spent = train(split, TrainingParams(**{**base, "epochs": 3, "time_budget_s": 1e-6}), device=cpu)
    assert spent.epochs_run == 1 and spent.best_epoch == 1


def test_patience_counts_only_from_its_share_of_the_planned_epochs() -> None:
    # A learning rate too small to move the ranking: no evaluation after the first is better.
    frozen = {**TINY_TRAINING.model_dump(), "epochs": 10, "patience": 1, "learning_rate": 1e-9}
    split, cpu = _split(), torch.device("cpu")
    at_once = train(split, TrainingParams(**frozen), device=cpu)
    assert at_once.epochs_run == 2 and at_once.best_epoch == 1
    later = train(split, TrainingParams(**{**frozen, "patience_from": 0.6}), device=cpu)
    assert later.epochs_run == 7, "epochs 2-6 are within the first 60% of 10 and do not count"
    assert later.best_epoch == 1


def test_schedule_does_not_depend_on_the_plan_before_it_is_made() -> None:
    params = TrainingParams(**{**TINY_TRAINING.model_dump(), "lr_schedule": "cosine"})
    early, late = Schedule(params, 50, 300), Schedule(params, 50, 5_000)
    held = 2 * 50  # the plan is made after two epochs
    assert [early(s) for s in range(held)] == [late(s) for s in range(held)]
    assert early(0) == pytest.approx(1 / params.warmup_steps) and early(held - 1) == 1.0
    assert early(150) < late(150) < 1.0 and early(10_000) == pytest.approx(0.02)
    constant = Schedule(params.model_copy(update={"lr_schedule": "constant"}), 50, 100)
    assert constant(10_000) == 1.0


def test_attention_dropout_defaults_to_dropout() -> None:
    params = TrainingParams(dropout=0.3)
    model = SASRec(model_config(params, num_items=5))
    assert model.blocks[0].attn.dropout.p == 0.3
    model = SASRec(model_config(params.model_copy(update={"attention_dropout": 0.0}), 5))
    assert model.blocks[0].attn.dropout.p == 0.0
    assert model.blocks[0].ffn.dropout.p == 0.3


def test_seen_before_bans_the_prefix_but_never_the_target() -> None:
    # Left-padded: user A watched 3, 5, 3 (a repeat), user B only 4.
    inputs = torch.tensor([[3, 5, 3], [0, 0, 4]])
    targets = torch.tensor([[5, 3, 7], [0, 0, 2]])
    ban = PrefixBan(inputs, targets)
    rows = ban.rows(0, len(ban))
    assert [sorted(set(r.tolist()) - {0}) for r in rows] == [[3], [5], [3, 5], [4]]
    assert (rows[:, 0] == 0).all()  # padding is banned in every row
    assert torch.equal(torch.cat([ban.rows(0, 1), ban.rows(1, 3), ban.rows(3, 4)]), rows)


def test_fused_cross_entropy_with_banned_columns_matches_masked_autograd() -> None:
    torch.manual_seed(0)
    h = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    table = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([1, 2, 3, 4, 5])
    banned = torch.tensor([[0, 2], [0, 0], [0, 1], [0, 5], [0, 3]])
    logits = (h @ table.T).scatter(1, banned, float("-inf"))
    expected = F.cross_entropy(logits, targets)
    grad_h, grad_table = torch.autograd.grad(expected, (h, table))
    fused = FullSoftmaxCrossEntropy.apply(h, table, targets, lambda a, b: banned[a:b])
    fused_h, fused_table = torch.autograd.grad(fused, (h, table))
    assert torch.allclose(fused, expected)
    assert torch.allclose(fused_h, grad_h)
    assert torch.allclose(fused_table, grad_table)
    assert fused.item() < F.cross_entropy(h @ table.T, targets).item()


def test_exclude_seen_trains() -> None:
    params = TrainingParams(**{**TINY_TRAINING.model_dump(), "epochs": 2, "exclude_seen": True})
    result = train(_split(), params, device=torch.device("cpu"))
    assert result.epochs_run == 2 and result.best_val_ndcg > 0


def test_fused_cross_entropy_across_several_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FullSoftmaxCrossEntropy, "CHUNK", 4)
    torch.manual_seed(1)
    h = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    table = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 7, (10,))
    expected = F.cross_entropy(h @ table.T, targets)
    grads = torch.autograd.grad(2.0 * expected, (h, table))
    fused = FullSoftmaxCrossEntropy.apply(h, table, targets)
    fused_grads = torch.autograd.grad(2.0 * fused, (h, table))
    assert torch.allclose(fused, expected)
    assert all(torch.allclose(a, b) for a, b in zip(fused_grads, grads, strict=True))


def test_byte_mask_dropout_keeps_the_rate_and_masks_the_gradient_alike() -> None:
    from shared.model.sasrec import Dropout

    torch.manual_seed(3)
    layer = Dropout(0.2)
    x = torch.ones(200, 500, requires_grad=True)
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.01  # rate 51/256 = 0.1992
    assert torch.allclose(y[kept], torch.full_like(y[kept], 256 / 205))
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(grad != 0, kept)
    torch.manual_seed(3)
    assert torch.equal(layer(x), y)  # the seed repeats the mask
    layer.eval()
    assert torch.equal(layer(x), x)


def test_training_windows_cover_older_events_once() -> None:
    flat = np.r_[np.arange(1, 8), [9, 8], [5]]
    train = Ragged(flat, np.array([0, 7, 9]), np.array([7, 9, 10]))  # the last: 1 event
    windows = Windows(train, 3)
    assert windows.lengths.tolist() == [3, 1]
    inputs, targets, _ = windows.batch([0, 1])
    assert inputs.tolist() == [[4, 5, 6], [0, 0, 9]]
    assert targets.tolist() == [[5, 6, 7], [0, 0, 8]]
    windows = Windows(train, 3, windows=0)
    inputs, targets, _ = windows.batch(np.arange(len(windows)))
    assert inputs.tolist() == [[4, 5, 6], [1, 2, 3], [0, 0, 9]]
    assert targets.tolist() == [[5, 6, 7], [2, 3, 4], [0, 0, 8]]
    assert Windows(train, 3, windows=2).batch([0, 1, 2])[1].tolist() == targets.tolist()
    short = Windows(train, 3, windows=0).batch([2])  # a batch is as wide as its longest
    assert short[0].tolist() == [[9]] and short[1].tolist() == [[8]]


def test_sampled_softmax_gradient_approaches_the_full_softmax_with_logq() -> None:
    """With many draws from a skewed q, the logQ-corrected sampled softmax has the full
    softmax's gradient; without the correction it would favour the popular items."""
    torch.manual_seed(0)
    n, dim, rows = 40, 8, 6
    table = torch.randn(n + 1, dim)
    h = torch.randn(rows, dim, requires_grad=True)
    y = torch.randint(1, n + 1, (rows,))
    counts = np.arange(n + 1, dtype=np.float64) ** 2  # very skewed popularity
    q = torch.from_numpy(sampling_distribution(counts)).float()
    assert q[0] == 0 and abs(float(q.sum()) - 1) < 1e-5
    inputs = torch.zeros(rows, 1, dtype=torch.long)  # padding only: nothing seen
    targets = y[:, None]
    sampled_softmax(h, table, y, 400_000, q, inputs, targets).backward()
    sampled_grad = h.grad.clone()
    h.grad = None
    F.cross_entropy(h @ table[1:].T, y - 1).backward()
    full_grad = h.grad
    assert torch.allclose(sampled_grad, full_grad, atol=0.01), (
        (sampled_grad - full_grad).abs().max()
    )


def test_sampled_softmax_masks_the_window_but_not_the_target() -> None:
    torch.manual_seed(1)
    table = torch.randn(6, 4)
    h = torch.randn(1, 4)
    q = torch.tensor([0.0, 0.2, 0.2, 0.2, 0.2, 0.2])
    inputs = torch.tensor([[0, 2, 3]])
    targets = torch.tensor([[0, 0, 1]])
    y = torch.tensor([1])
    torch.manual_seed(5)
    drawn = torch.multinomial(q, 64, replacement=True)
    logits = table @ h[0] - q.clamp_min(1e-30).log()
    kept = [k for k in drawn.tolist() if k not in (2, 3)]  # items 2 and 3: in the window
    assert 0 < len(kept) < 64 and 1 in kept, "the draw holds window items and the target"
    expected = -logits[1] + torch.logsumexp(logits[[1, *kept]], dim=0)
    torch.manual_seed(5)
    loss = sampled_softmax(h, table, y, 64, q, inputs, targets)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(sampled_softmax(h, table, y, 64, q, inputs, targets)) > 0.0


@pytest.mark.parametrize("banned", [False, True])
def test_weighted_fused_cross_entropy_is_the_weighted_mean(
    banned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each target's loss times its weight, over the sum of the weights; the gradients
    match autograd's on that expression, across several chunks."""
    monkeypatch.setattr(FullSoftmaxCrossEntropy, "CHUNK", 8)
    torch.manual_seed(1)
    h = torch.randn(29, 6, dtype=torch.float64, requires_grad=True)
    table = torch.randn(13, 6, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, 13, (29,))
    weights = torch.rand(29, dtype=torch.float64) * 2.0 + 0.05
    ban = torch.zeros(29, 2, dtype=torch.long)  # column 0 (padding) in every row
    ban[:, 1] = torch.where(targets == 5, 0, 5)  # and item 5, unless it is the target
    logits = h @ table.T
    if banned:
        logits = logits.scatter(1, ban, float("-inf"))
    each = F.cross_entropy(logits, targets, reduction="none")
    expected = (each * weights).sum() / weights.sum()
    grad_h, grad_table = torch.autograd.grad(expected, (h, table))
    rule = (lambda a, b: ban[a:b]) if banned else None
    fused = FullSoftmaxCrossEntropy.apply(h, table, targets, rule, weights)
    fused_h, fused_table = torch.autograd.grad(fused, (h, table))
    assert torch.allclose(fused, expected)
    assert torch.allclose(fused_h, grad_h)
    assert torch.allclose(fused_table, grad_table)
    # Even weights are the unweighted loss exactly: the scale of the weights is free.
    even = FullSoftmaxCrossEntropy.apply(h, table, targets, rule, torch.full_like(weights, 0.1))
    plain = FullSoftmaxCrossEntropy.apply(h, table, targets, rule)
    assert torch.allclose(even, plain)


def test_weighted_sampled_softmax_is_the_weighted_mean() -> None:
    torch.manual_seed(2)
    h = torch.randn(6, 4)
    table = torch.randn(9, 4)
    inputs = torch.tensor([[0, 1, 2], [3, 4, 5]])
    targets = torch.tensor([[1, 2, 6], [4, 5, 7]])
    y = targets[targets != 0]
    q = torch.from_numpy(sampling_distribution(np.arange(9.0))).float()
    weights = torch.tensor([1.0, 0.1, 0.5, 1.0, 1.0, 0.1])
    torch.manual_seed(3)
    weighted = sampled_softmax(h, table, y, 16, q, inputs, targets, weights)
    torch.manual_seed(3)
    unweighted = sampled_softmax(h, table, y, 16, q, inputs, targets)
    torch.manual_seed(3)
    even = sampled_softmax(h, table, y, 16, q, inputs, targets, torch.full((6,), 0.3))
    assert torch.allclose(even, unweighted)
    assert not torch.allclose(weighted, unweighted)


def test_windows_carry_each_targets_weight() -> None:
    flat = np.arange(1, 11, dtype=np.int32)
    weights = np.linspace(0.1, 1.0, 10, dtype=np.float32)
    train = Ragged(flat, np.array([0, 7]), np.array([7, 10]), weights)
    inputs, targets, w = Windows(train, 3, windows=0).batch(np.arange(3))
    assert w is not None and w.shape == targets.shape
    for row in range(len(targets)):
        for col in range(targets.shape[1]):
            target = targets[row, col]
            expected = 0.0 if target == 0 else weights[target - 1]
            assert w[row, col] == pytest.approx(expected), (row, col)
    assert Windows(Ragged(flat, np.array([0]), np.array([10])), 3).batch([0])[2] is None


def test_a_heavier_kind_teaches_more() -> None:
    """Item 2 follows item 1 as a purchase (weight 1.0) for 30 users, item 3 follows it as
    a view (weight 0.1) for 30 others: weighted, the model learns 2 ten times as likely as
    3 after 1 (the logit gap heads for log 10); unweighted, about as likely."""
    sequences = {f"u{n:02d}": ["i1", "i2" if n < 30 else "i3"] for n in range(60)}
    weights = np.asarray([w for n in range(60) for w in (1.0, 1.0 if n < 30 else 0.1)], np.float32)
    unweighted = UserSequences.from_mapping(sequences)
    weighted = UserSequences(unweighted.flat, unweighted.offsets, unweighted.vocab, weights)
    params = TrainingParams(
        **{**TINY_TRAINING.model_dump(), "epochs": 60, "patience": 100, "dropout": 0.0}
    )
    row = unweighted.vocab.rows()
    gaps = []
    for sequences_ in (weighted, unweighted):
        model = train(leave_one_out(sequences_), params, device=torch.device("cpu")).model.eval()
        with torch.no_grad():
            scores = model.score(model.encode_last(torch.tensor([[row["i1"]]])))[0]
        gaps.append(float(scores[row["i2"]] - scores[row["i3"]]))
    assert 1.0 < gaps[0] < math.log(10.0) + 0.7, gaps  # on its way to log 10
    assert abs(gaps[1]) < 0.5, gaps
