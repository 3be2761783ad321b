"""Training's losses: the full softmax's cross-entropy, fused for CPU speed, with the
``exclude_seen`` bans, and the sampled softmax with logQ correction; each a mean, or a
weighted mean where the events weigh differently (shared/config/events.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from shared.model.params import TrainingParams
from shared.model.sasrec import SASRec


class FullSoftmaxCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``h @ table.T`` against ``targets``, fused for CPU speed.

    The [T, N] logits are the largest tensor in training (25k positions x 3.4k items on
    ML-1M: 350 MB). Autograd's log_softmax keeps them and walks them several times in
    backward. Here the forward works through CHUNK rows at a time: logits of the chunk,
    softmax in place, minus the one-hot, and straight into the two gradient products, so
    the logits never leave the CPU cache and no [T, N] tensor exists; the backward only
    scales the saved gradients. Same value and gradients as
    ``F.cross_entropy(h @ table.T, targets)`` (tested against autograd). With ``weights``
    [T], the weighted mean: sum(weight x loss) / sum(weight), and the gradients to match.

    ``banned`` (optional): ``banned(start, stop)`` gives int64 [stop - start, M], the
    columns left out of each of those rows' softmax (their logit is -inf, their gradient
    0); it must not name a row's target. Asked per chunk, so the [T, M] index never exists
    as a whole either.
    """

    CHUNK = 256
    """Rows per step: 256 x 3,417 float32 logits = 3.5 MB, within a CPU's L3 cache
    (on this 2-core machine 256 to 2,048 rows time the same without exclude_seen)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        h: torch.Tensor,
        table: torch.Tensor,
        targets: torch.Tensor,
        banned: Callable[[int, int], torch.Tensor] | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        count = h.shape[0]
        grad_h = torch.empty_like(h)
        grad_table = torch.zeros_like(table)
        total = h.new_zeros(())
        chunk = FullSoftmaxCrossEntropy.CHUNK
        buffer = h.new_empty(min(chunk, count), table.shape[0])
        for start in range(0, count, chunk):
            stop = min(count, start + chunk)
            rows = torch.arange(stop - start, device=h.device)
            part, wanted = h[start:stop], targets[start:stop]
            logits = torch.mm(part, table.T, out=buffer[: stop - start])  # [C, N]
            if banned is not None:
                logits.scatter_(1, banned(start, stop), float("-inf"))
            picked = logits[rows, wanted]
            peak = logits.amax(dim=1, keepdim=True)  # finite: the target is never banned
            grad = logits.sub_(peak).exp_()  # one exp pass (logsumexp would add another)
            norm = grad.sum(dim=1, keepdim=True)
            losses = peak[:, 0] + norm[:, 0].log() - picked
            grad.div_(norm)  # softmax, in place
            grad[rows, wanted] -= 1.0
            if weights is not None:
                weight = weights[start:stop]
                losses = losses * weight
                grad.mul_(weight[:, None])
            total += losses.sum()
            torch.mm(grad, table, out=grad_h[start:stop])
            grad_table.addmm_(grad.T, part)
        scale = 1.0 / (count if weights is None else float(weights.sum()))
        ctx.save_for_backward(grad_h.mul_(scale), grad_table.mul_(scale))
        return total * scale

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None, None, None]:
        grad_h, grad_table = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad_h * grad_output, grad_table * grad_output, None, None, None


class PrefixBan:
    """The items each target position's input prefix holds, for ``exclude_seen``.

    inputs, targets: [B, L] (0 = no target). Rows follow ``targets != 0`` in row-major
    order, as ``hidden[targets != 0]`` does. ``rows(start, stop)`` gives int64
    [stop - start, 1 + L]: the prefix's items, 0 (padding) where there is nothing to ban
    and where the prefix holds the row's target itself (a repeat stays a valid answer).
    The first column is always 0, so padding is banned in every row. Built per chunk of
    the loss: a whole [T, 1 + L] index would be 41 MB for a 128 x 200 batch, copied
    three times.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        mask = targets != 0
        self.padded = F.pad(inputs, (1, 0))  # [B, 1 + L]: a leading padding column
        self.batch, self.position = mask.nonzero(as_tuple=True)
        self.targets = targets[mask]
        self.columns = torch.arange(inputs.shape[1] + 1, device=inputs.device)

    def __len__(self) -> int:
        return len(self.targets)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        prefix = self.padded[self.batch[start:stop]]  # [C, 1 + L], a fresh tensor
        later = self.columns[None, :] > self.position[start:stop, None] + 1
        repeat = prefix == self.targets[start:stop, None]
        return prefix.masked_fill_(later | repeat, 0)


def batch_loss(
    model: SASRec,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    params: TrainingParams,
    inputs: torch.Tensor,
    q: torch.Tensor | None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """hidden [B, L, D], targets and inputs [B, L] (0 = no target) -> scalar loss.
    ``q``: the sampled loss's sampling distribution over rows 0..N. ``weights`` [B, L]:
    each target's weight (shared/config/events.py); the loss is then the weighted mean."""
    mask = targets != 0
    h = model.query(hidden[mask])  # [T, D]
    y = targets[mask]  # [T]
    w = None if weights is None else weights[mask]  # [T]
    table = model.output_table()
    if params.loss == "ce":
        if params.exclude_seen:
            # Every row of the table; column 0 (padding) is banned in every row.
            ban = PrefixBan(inputs, targets)
            return FullSoftmaxCrossEntropy.apply(h, table, y, ban.rows, w)
        # Rows 1..N only: the padding row is never a target nor a candidate.
        return FullSoftmaxCrossEntropy.apply(h, table[1:], y - 1, None, w)
    assert q is not None, "the sampled loss needs its sampling distribution"
    return sampled_softmax(h, table, y, params.num_negatives, q, inputs, targets, w)


SEEN_MASK_CELLS = 64_000_000


def sampling_distribution(popularity: np.ndarray) -> np.ndarray:
    """q over rows 0..N (q[0] = 0): half uniform, half proportional to popularity, from
    which the sampled softmax draws its negatives. The uniform half keeps the tail in the
    negatives; the popular half supplies the hard ones."""
    counts = np.asarray(popularity, dtype=np.float64).copy()
    counts[0] = 0.0
    n = len(counts) - 1
    uniform = np.full(len(counts), 1.0 / max(1, n))
    uniform[0] = 0.0
    popular = counts / counts.sum() if counts.sum() > 0 else uniform
    return 0.5 * uniform + 0.5 * popular


def sampled_softmax(
    h: torch.Tensor,
    table: torch.Tensor,
    y: torch.Tensor,
    count: int,
    q: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax with logQ correction: ``count`` negatives drawn from ``q`` (shared
    by the batch), every logit (the target's too) minus log q of its item. A draw of the
    row's own target stays in (removing such "accidental hits" biases the gradient
    toward popular targets); with that, as ``count`` grows the gradient becomes the full
    softmax's. Negatives the row's window holds (other than its target) are masked, as
    ``exclude_seen`` bans them from the full softmax, while a [B, N] mask fits in
    SEEN_MASK_CELLS.
    """
    negatives = torch.multinomial(q, count, replacement=True)  # [K]
    log_q = q.log()
    positive = (h * table[y]).sum(-1, keepdim=True) - log_q[y][:, None]  # [T, 1]
    negative = h @ table[negatives].T - log_q[negatives][None, :]  # [T, K]
    if inputs.shape[0] * table.shape[0] <= SEEN_MASK_CELLS:
        batch, _ = (targets != 0).nonzero(as_tuple=True)
        seen = torch.zeros(inputs.shape[0], table.shape[0], dtype=torch.bool, device=h.device)
        seen.scatter_(1, inputs, True)  # [B, N + 1]: the items of each row's window
        hit = seen[batch][:, negatives] & (negatives[None, :] != y[:, None])  # [T, K]
        negative = negative.masked_fill(hit, float("-inf"))
    logits = torch.cat([positive, negative], dim=1)
    first = torch.zeros(len(y), dtype=torch.long, device=h.device)
    if weights is None:
        return F.cross_entropy(logits, first)
    return (F.cross_entropy(logits, first, reduction="none") * weights).sum() / weights.sum()
