"""Explanations: which of a user's history events support a recommended item.

Leave-one-out through the model itself. For a history of L events (the newest max_len the
model reads) the model encodes L+1 histories in one batched run: the full one and each
with one event removed. An event's weight for an item is how much the item's score drops
when that event is left out: positive weights support the item, negative ones speak
against it. The weights are the model's own behaviour, not a separate heuristic, so the
top-weighted event is by construction the one whose removal lowers the item's score most;
``recserve evaluate --explanations`` measures the stricter property that it also lowers
the item's rank more than removing a random event does.

Only the newest ``server.explain_events`` events (50) can explain; older ones stay in
every variant. Cost: one model run over 51 histories and a [51, D] x [D, K] product per
request, paid only when the request asks for explanations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from shared.model.histories import left_pad

Encode = Callable[[np.ndarray], np.ndarray]
"""int64 [B, L] left-padded model rows -> float32 [B, D] user states."""

DEFAULT_TOP = 3
"""Events returned per recommended item."""


DEFAULT_NEWEST = 50
"""Events that can explain an item: the newest of the history (older ones stay in every
variant). Bounds an explained request's cost at one run of DEFAULT_NEWEST + 1 histories."""


def candidate_offset(history: np.ndarray, newest: int | None) -> int:
    """Position of the first event that may explain (the newest ``newest`` may)."""
    return 0 if newest is None else max(0, len(history) - newest)


def leave_one_out_variants(history: np.ndarray, newest: int | None = None) -> np.ndarray:
    """int64 [1+C, L], left-padded: the full ``history`` (model rows, oldest first), then
    the history without event j, for each of the C candidate events j (the newest
    ``newest``, or all), oldest first."""
    start = candidate_offset(history, newest)
    variants = [history] + [np.delete(history, j) for j in range(start, len(history))]
    return left_pad(variants)


def leave_one_out_states(
    encode: Encode, history: np.ndarray, newest: int | None = None
) -> np.ndarray:
    """float32 [1+C, D]: the states of leave_one_out_variants, in one run."""
    return encode(leave_one_out_variants(history, newest))


def support_weights(states: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
    """float32 [L, K]: for each history event j and item k, the score of k with the full
    history minus its score without event j. ``states`` from leave_one_out_states;
    ``item_vectors`` [K, D] the items' output embeddings."""
    scores = states @ item_vectors.T  # [L+1, K]
    return np.asarray(scores[0][None, :] - scores[1:])


def top_support(
    weights: np.ndarray, top: int = DEFAULT_TOP, offset: int = 0
) -> list[list[tuple[int, float]]]:
    """Per item (column of ``weights``): up to ``top`` (event position in the history,
    weight) with a positive weight, the largest first. ``offset``: the history position
    of the first candidate event (candidate_offset), where row 0 of ``weights`` points."""
    picked: list[list[tuple[int, float]]] = []
    for column in weights.T:
        order = np.argsort(-column, kind="stable")[:top]
        picked.append([(offset + int(j), float(column[j])) for j in order if column[j] > 0])
    return picked


def deletion_test(
    encode: Encode,
    item_embeddings: np.ndarray,
    histories: Sequence[np.ndarray],
    max_len: int,
    rng: np.random.Generator,
    newest: int | None = DEFAULT_NEWEST,
) -> dict[str, float]:
    """The deletion test of explanation faithfulness, over users' histories (model rows,
    oldest first; users with fewer than 2 events are skipped).

    For each user: the top recommendation (seen items excluded) and its explanation's top
    event, as a request with ``explain`` computes them (among the ``newest`` events); then
    two separate model runs read the history without that event, and without a random
    other event of the whole history. Returns the share
    of users where removing the top event lowers the item's score more
    (``score_share``), where it pushes the item further down the ranking of unseen items
    (``rank_share``, strictly; a tie, such as the item staying first both times, does not
    count), the mean score drops and the mean ranks after each removal (0 = first).
    """
    names = ("score_share", "rank_share", "drop_top", "drop_random", "rank_top", "rank_random")
    totals = dict.fromkeys(("users", *names), 0.0)
    for full in histories:
        history = full[-max_len:]
        if len(history) < 2:
            continue
        states = leave_one_out_states(encode, history, newest)
        served = states[0] @ item_embeddings.T
        served[0] = -np.inf
        served[history] = -np.inf  # seen items are never recommended
        item = int(np.argmax(served))
        weights = support_weights(states, item_embeddings[[item]])[:, 0]
        top = candidate_offset(history, newest) + int(np.argmax(weights))
        other = int(rng.choice([j for j in range(len(history)) if j != top]))
        removed = [np.delete(history, top), np.delete(history, other)]
        after = np.stack([encode(left_pad([h]))[0] for h in removed]) @ item_embeddings.T
        after[:, 0] = -np.inf
        after[:, history] = -np.inf
        drops = served[item] - after[:, item]
        ranks = (after > after[:, [item]]).sum(axis=1)
        totals["users"] += 1
        totals["score_share"] += float(drops[0] > drops[1])
        totals["rank_share"] += float(ranks[0] > ranks[1])
        totals["drop_top"] += float(drops[0])
        totals["drop_random"] += float(drops[1])
        totals["rank_top"] += float(ranks[0])
        totals["rank_random"] += float(ranks[1])
    users = max(1.0, totals["users"])
    return {k: v if k == "users" else v / users for k, v in totals.items()}
