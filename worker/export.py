"""ONNX export, the torch/ONNX Runtime parity check, and writing the bundle."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.model import bundle as bundle_format
from shared.model.item_features import MAX_TOKENS, ItemFeatures
from shared.model.next_items import NextItems
from shared.model.sasrec import InferenceGraph, ItemEncoderGraph, SASRec
from shared.wire.errors import ParityError

log = logging.getLogger(__name__)
OPSET = 17
EXTRA_TOKENS = bundle_format.EXTRA_TOKENS
PARITY_ATOL = 1e-4


def export_onnx(model: SASRec, path: Path) -> None:
    """Writes the inference graph with dynamic batch size and history length.

    Input ``history`` int64 [batch, length] (left-padded, length <= max_len);
    outputs ``state`` float32 [batch, D] and ``scores`` float32 [batch, N+1].
    """
    model = model.eval().cpu()
    example = torch.randint(1, model.config.num_items + 1, (2, min(8, model.config.max_len)))
    inputs: tuple[torch.Tensor, ...] = (example,)
    names = ["history"]
    axes = {"history": {0: "batch", 1: "length"}, "state": {0: "batch"}, "scores": {0: "batch"}}
    if model.property_embedding is not None:
        inputs = (example, torch.zeros((3, MAX_TOKENS), dtype=torch.long))
        names.append(EXTRA_TOKENS)
        axes[EXTRA_TOKENS] = {0: "extra"}
    # The wrapper in eval mode too: the exporter restores the wrapper's mode afterwards,
    # and a wrapper left in training mode would put the model back in training.
    torch.onnx.export(
        InferenceGraph(model).eval(),
        inputs,
        str(path),
        input_names=names,
        output_names=["state", "scores"],
        dynamic_axes=axes,
        opset_version=OPSET,
        dynamo=False,
    )


def check_parity(model: SASRec, onnx_path: Path, *, trials: int = 4, seed: int = 0) -> float:
    """Runs fresh random histories through torch and ONNX Runtime; returns the max abs
    difference of the scores. Raises ParityError when it exceeds PARITY_ATOL
    relative to the score scale."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    model = model.eval().cpu()
    worst = 0.0
    for trial in range(trials):
        batch = int(rng.integers(1, 9))
        length = int(rng.integers(1, model.config.max_len + 1)) if trial else model.config.max_len
        extra = rng.integers(0, max(2, model.config.property_tokens), size=(3, MAX_TOKENS))
        rows = model.config.num_items + (len(extra) if model.property_embedding else 0)
        history = rng.integers(1, rows + 1, size=(batch, length))
        pads = rng.integers(0, length, size=batch)
        for i, pad in enumerate(pads):
            history[i, :pad] = 0
        feeds = {"history": history.astype(np.int64)}
        given = None
        if model.property_embedding is not None:
            feeds[EXTRA_TOKENS] = extra.astype(np.int64)
            given = torch.from_numpy(feeds[EXTRA_TOKENS])
        with torch.no_grad():
            expected = model.score(model.encode_last(torch.from_numpy(history), given)).numpy()
        state, scores = session.run(None, feeds)
        scale = max(1.0, float(np.abs(expected).max()))
        diff = float(np.abs(scores - expected).max())
        worst = max(worst, diff / scale)
    if worst > PARITY_ATOL:
        raise ParityError(
            f"the exported model.onnx and torch disagree: max relative difference "
            f"{worst:.2e}, more than {PARITY_ATOL:.0e}; the bundle was not written"
        )
    return worst


def export_item_encoder(model: SASRec, path: Path) -> float:
    """Writes item_encoder.onnx (a model with properties): ``tokens`` int64 [batch, T] ->
    ``vectors`` float32 [batch, D]; returns its parity with torch on random tokens (max
    relative difference), or raises ParityError."""
    import onnxruntime as ort

    model = model.eval().cpu()
    assert model.property_embedding is not None
    graph = ItemEncoderGraph(model).eval()
    size = model.config.property_tokens
    example = torch.randint(0, size, (2, MAX_TOKENS))
    torch.onnx.export(
        graph, (example,), str(path), input_names=["tokens"], output_names=["vectors"],
        dynamic_axes={"tokens": {0: "batch"}, "vectors": {0: "batch"}},
        opset_version=OPSET, dynamo=False,
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tokens = np.random.default_rng(0).integers(0, size, size=(16, MAX_TOKENS))
    tokens[0] = 0  # an item with no known token
    with torch.no_grad():
        expected = graph(torch.from_numpy(tokens)).numpy()
    (vectors,) = session.run(None, {"tokens": tokens.astype(np.int64)})
    worst = float(np.abs(vectors - expected).max()) / max(1.0, float(np.abs(expected).max()))
    if worst > PARITY_ATOL:
        raise ParityError(
            f"the exported {path.name} and torch disagree: max relative difference "
            f"{worst:.2e}, more than {PARITY_ATOL:.0e}; the bundle was not written"
        )
    return worst


def write_index(directory: Path, model: SASRec, index_states: np.ndarray) -> dict[str, Any]:
    """The approximate top-k index of the model's items, calibrated on ``index_states``,
    saved in ``directory``; returns its figures for the metrics (ann_*)."""
    from shared.model.ann import ItemIndex

    index = ItemIndex.build(model.output_table().detach().numpy(), index_states)
    index.save(directory)
    log.info("item index: %s", index.meta)
    return {
        "ann_recall@10": index.meta.recall_at_10,
        "ann_nprobe": index.meta.nprobe,
        "ann_nlist": index.meta.nlist,
        "ann_build_seconds": index.meta.build_seconds,
    }


def write_bundle(
    directory: Path,
    *,
    model: SASRec,
    vocab: list[str],
    popularity: np.ndarray,
    metrics: dict[str, Any],
    index_states: np.ndarray | None = None,
    features: ItemFeatures | None = None,
    next_items: NextItems | None = None,
) -> tuple[str, dict[str, Any]]:
    """Writes a complete bundle into ``directory`` (replaced if present); returns its
    checksum and the metrics as written: ``metrics`` with the ONNX/torch parity (max
    relative difference, onnx_parity_max_rel_diff) and the index's figures (ann_*).

    With ``index_states`` (float32 [S, D], user states of the training data) the bundle
    also carries an approximate top-k index of the items (shared/model/ann.py), calibrated on
    those states; its recall and size join the metrics. A model with item properties also
    writes ``features`` (its token vocabulary) and the item encoder; ``next_items``, the
    training transitions, are written for SimilarItems.

    The files go to a temporary sibling first and are renamed into place, so a reader
    never sees half a bundle.
    """
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = model.eval().cpu()
    (tmp / bundle_format.CONFIG).write_text(model.config.model_dump_json(indent=2))
    (tmp / bundle_format.VOCAB).write_text(json.dumps(vocab))
    np.save(tmp / bundle_format.EMBEDDINGS, model.output_table().detach().numpy())
    (tmp / bundle_format.POPULARITY).write_text(json.dumps(popularity.tolist()))
    torch.save(model.state_dict(), tmp / bundle_format.WEIGHTS)
    export_onnx(model, tmp / bundle_format.ONNX)
    parity = check_parity(model, tmp / bundle_format.ONNX)
    metrics = {**metrics, "onnx_parity_max_rel_diff": parity}
    if model.property_embedding is not None:
        assert features is not None, "a model with properties needs its token vocabulary"
        (tmp / bundle_format.FEATURES).write_text(json.dumps(features.to_json()))
        encoder = export_item_encoder(model, tmp / bundle_format.ENCODER)
        metrics["encoder_parity_max_rel_diff"] = encoder
    if next_items is not None:
        next_items.save(tmp / bundle_format.NEXT_ITEMS)
    if index_states is not None:
        metrics.update(write_index(tmp, model, index_states))
    (tmp / bundle_format.METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    checksum = bundle_format.write_checksums(tmp)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    log.info("bundle written to %s (parity %.2e)", directory, parity)
    return checksum, metrics
