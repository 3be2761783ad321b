"""Evaluating models: the promotion rule, the active model on a new split, a registered
version re-evaluated (`recserve evaluate`), explanation faithfulness and debiased
re-ranking, all through the bundle's ONNX graph as the server runs it."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shared.config import Settings
from shared.model import bundle as bundle_format
from shared.model.params import TrainingParams
from shared.storage import event_store, item_store, model_store
from shared.storage.engine import engine_for, session_scope
from shared.storage.tables import ModelVersion
from shared.wire.errors import FailedPrecondition, RecserveError
from worker.dataset import Split, leave_one_out, snapshot
from worker.evaluation import Scorer, evaluate, popularity_scorer

log = logging.getLogger(__name__)


def should_activate(
    params: TrainingParams, metrics: dict[str, float], *, has_active: bool
) -> tuple[bool, str]:
    """The promotion rule, with the reason in words."""
    if params.activate == "never":
        return False, "not activated (activate=never)"
    if params.activate == "always":
        return True, "activated (activate=always)"
    ndcg = metrics["ndcg@10"]
    if ndcg <= metrics["pop_ndcg@10"]:
        return False, f"not activated: ndcg@10 {ndcg:.4f} does not beat popularity"
    if not has_active:
        return True, "activated: no model was active"
    if ndcg <= metrics["active_ndcg@10"]:
        return False, (
            f"not activated: ndcg@10 {ndcg:.4f} does not beat the active model's "
            f"{metrics['active_ndcg@10']:.4f} on the same split"
        )
    return (
        True,
        f"activated: ndcg@10 {ndcg:.4f} beats the active model's {metrics['active_ndcg@10']:.4f}",
    )


def evaluate_active(settings: Settings, engine: Engine, split: Split) -> dict[str, float]:
    """The active model's metrics on this split (prefix active_), or {} when none is active
    or its bundle cannot be loaded."""
    with session_scope(engine) as session:
        active = model_store.get_active_model(session)
    if active is None:
        return {}
    try:
        loaded = bundle_format.load(settings.bundle_path(active.artifact_path))
    except RecserveError as exc:
        log.warning("active model %s cannot be evaluated: %s", active.version, exc)
        return {}
    metrics = evaluate(
        bundle_scorer(loaded, split.vocab.items),
        split.test,
        split.num_items,
        prefix="active_",
        sampled=False,
    )
    metrics["active_version"] = float(active.version or 0)
    return metrics


def bundle_scorer(loaded: bundle_format.Bundle, items: Sequence[str]) -> Scorer:
    """Scores histories given in the rows of ``items`` with a bundle's ONNX graph.

    Items the bundle has never seen are dropped from histories and score -inf.
    """
    import onnxruntime as ort

    from shared.model.histories import left_pad

    session = ort.InferenceSession(str(loaded.onnx_path), providers=["CPUExecutionProvider"])
    to_bundle = bundle_rows(loaded, items)
    known = to_bundle >= 0

    def score(histories: Sequence[np.ndarray]) -> np.ndarray:
        mapped = [to_bundle[h][to_bundle[h] > 0] for h in histories]
        batch = left_pad(mapped, loaded.config.max_len)
        _, scores = session.run(None, {"history": batch})
        out = np.full((len(histories), len(to_bundle)), -np.inf, dtype=np.float32)
        out[:, known] = scores[:, to_bundle[known]]
        return out

    return score


def row_labels(session: Session, items: Sequence[str]) -> list[frozenset[str]] | None:
    """Each split row's catalogue labels (row 0 and unlabelled items: empty), or None
    when no item has labels."""
    labelled = item_store.labelled_items(session)
    if not labelled:
        return None
    empty: frozenset[str] = frozenset()
    return [empty] + [labelled.get(item, empty) for item in items]


def bundle_rows(loaded: bundle_format.Bundle, items: Sequence[str]) -> np.ndarray:
    """int64 [len(items)+1]: the bundle's row of each split row (row 0 -> 0; items the
    bundle has never seen -> -1)."""
    rows = loaded.row_of()
    return np.array([0] + [rows.get(item, -1) for item in items], dtype=np.int64)


def explanation_faithfulness(
    loaded: bundle_format.Bundle, split: Split, users: int, newest: int, seed: int = 0
) -> dict[str, float]:
    """shared.model.explain.deletion_test on ``users`` test users drawn at random (fixed seed),
    with the bundle's ONNX graph: the explanations a server computes for this version."""
    import onnxruntime as ort

    from shared.model.explain import deletion_test

    session = ort.InferenceSession(str(loaded.onnx_path), providers=["CPUExecutionProvider"])

    def encode(batch: np.ndarray) -> np.ndarray:
        (states,) = session.run(["state"], {"history": batch})
        return np.asarray(states)

    to_bundle = bundle_rows(loaded, split.vocab.items)
    rng = np.random.default_rng(seed)
    count = len(split.test.targets)
    picks = rng.choice(count, size=min(users, count), replace=False)
    histories = []
    for user in picks:
        mapped = to_bundle[split.test.histories[user]]
        histories.append(mapped[mapped > 0])
    return deletion_test(
        encode, loaded.item_embeddings, histories, loaded.config.max_len, rng, newest
    )


def evaluate_model_version(
    settings: Settings,
    version: int | None = None,
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    explanations: int = 0,
    rerank: Sequence[float] = (),
) -> dict[str, object]:
    """Re-evaluates a registered model (default: the active one) on the leave-one-out
    split of the events up to its data watermark, beside popularity on the same split.

    Returns {"version", "watermark", "users", "items", "model": {...}, "popularity": {...}}
    with HR@K, NDCG@K and MRR under full ranking (seen items filtered) and 100 sampled
    negatives (fixed seed), and with ``explanations`` > 0 "explanations": the deletion
    test of explanation faithfulness on that many users (explanation_faithfulness), and
    with ``rerank`` weights "rerank": {weight: metrics} of the popularity-debiased
    ranking (shared/model/rerank.py) at each weight, full ranking only.
    """
    engine = engine_for(settings)
    try:
        with session_scope(engine) as session:
            model = _model_to_evaluate(session, version)
            loaded = bundle_format.load(settings.bundle_path(model.artifact_path))
            with tempfile.TemporaryDirectory(prefix="recserve-evaluate-") as scratch:
                pages = event_store.user_event_pages(
                    session, watermark=model.data_watermark, negative=settings.events.negative
                )
                split = leave_one_out(snapshot(pages, Path(scratch)))
                labels = row_labels(session, split.vocab.items)
                result = _evaluate_on(settings, loaded, split, labels, ks, explanations, rerank)
    finally:
        engine.dispose()
    return {
        "version": model.version,
        "watermark": model.data_watermark,
        "users": len(split.test.targets),
        "items": split.num_items,
        **result,
    }


def _model_to_evaluate(session: Session, version: int | None) -> ModelVersion:
    if version is not None:
        return model_store.get_model_version(session, version=version)
    model = model_store.get_active_model(session)
    if model is None:
        raise FailedPrecondition(
            "no model version is active, so there is nothing to evaluate by default; "
            "pass --version (recserve models list shows them)"
        )
    return model


def _evaluate_on(
    settings: Settings,
    loaded: bundle_format.Bundle,
    split: Split,
    labels: list[frozenset[str]] | None,
    ks: Sequence[int],
    explanations: int,
    rerank: Sequence[float],
) -> dict[str, object]:
    """The model beside popularity on ``split``; explanations and re-ranking when asked."""
    scorer = bundle_scorer(loaded, split.vocab.items)
    common: dict[str, Any] = {"ks": ks, "popularity": split.popularity, "labels": labels}
    result: dict[str, object] = {
        "model": evaluate(scorer, split.test, split.num_items, **common),
        "popularity": evaluate(
            popularity_scorer(split.popularity), split.test, split.num_items, **common
        ),
    }
    if explanations:
        newest = settings.server.explain_events
        result["explanations"] = explanation_faithfulness(loaded, split, explanations, newest)
    if rerank:
        result["rerank"] = {
            f"{weight:g}": evaluate(
                debiased_scorer(scorer, split.popularity, weight),
                split.test,
                split.num_items,
                sampled=False,
                unfiltered=False,
                **common,
            )  # fmt: skip
            for weight in rerank
        }
    return result


def debiased_scorer(scorer: Scorer, popularity: np.ndarray, weight: float) -> Scorer:
    """``scorer`` re-ranked by popularity debiasing at ``weight`` (shared/model/rerank.py)."""
    from shared.model.rerank import debias, log_share

    shares = log_share(popularity)

    def score(histories: Sequence[np.ndarray]) -> np.ndarray:
        return debias(np.asarray(scorer(histories)), shares, weight)

    return score
