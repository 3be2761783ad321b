"""The training half of `recserve bench scale`, in a process of its own so that its peak
RSS is the training's: stream the snapshot, split, pick the recipe, time a fixed number
of optimiser steps, then export the bundle with its item index.

python -m bench.scale_train --data-dir DIR --steps N --output train.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.config import Settings
from shared.model.params import parse_training_params
from shared.model.sasrec import SASRec
from shared.storage import event_store
from shared.storage.engine import engine_for, session_scope
from worker.dataset import EvalSet, leave_one_out, snapshot
from worker.export import write_bundle
from worker.losses import batch_loss, sampling_distribution
from worker.pipeline import INDEX_CALIBRATION_USERS, encode_states, peak_rss_mb
from worker.recipe import apply_recipe
from worker.training import Windows, length_buckets, model_config


def timed_steps(model: Any, split: Any, params: Any, steps: int) -> tuple[int, float]:
    """``steps`` training steps after a first untimed one (it pays one-off costs), as the
    worker trains: (targets trained on, seconds)."""
    windows = Windows(split.train, params.max_len, params.windows)
    q = torch.from_numpy(sampling_distribution(split.popularity)).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate)
    batches = length_buckets(windows.lengths, params.batch_size, np.random.default_rng(0))
    model.train()
    targets, timed = 0, 0.0
    for step, rows in enumerate(batches[: steps + 1]):
        began = time.perf_counter()
        x, y, _ = windows.batch(rows)
        x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
        loss = batch_loss(model, model(x_t), y_t, params, x_t, q)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step:
            timed += time.perf_counter() - began
            targets += int((y != 0).sum())
    return targets, timed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    settings = Settings(data_dir=args.data_dir)
    torch.set_num_threads(settings.worker.torch_threads or 2)
    torch.manual_seed(0)
    engine = engine_for(settings)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recserve-scale-") as scratch:
        with session_scope(engine) as session:
            watermark = event_store.max_event_row(session)
            sequences = snapshot(
                event_store.user_event_pages(session, watermark=watermark), Path(scratch)
            )
        snapshot_s = time.perf_counter() - started
        split = leave_one_out(sequences)
        params, decisions, _ = apply_recipe(
            parse_training_params(settings, {}), set(), sequences.lengths, split.num_items
        )
        print("\n".join(decisions), flush=True)
        model = SASRec(model_config(params, split.num_items))
        targets, timed = timed_steps(model, split, params, args.steps)
        training_rss = peak_rss_mb()
        model.eval()
        users = len(split.valid.targets)
        calibrated = min(INDEX_CALIBRATION_USERS, users // 2)
        calibration = encode_states(model, split.valid.head(calibrated))
        later = slice(calibrated, calibrated + 1000)  # users the index was not calibrated on
        held_out = EvalSet(split.valid.histories[later], split.valid.targets[later])
        np.save(args.data_dir / "heldout_states.npy", encode_states(model, held_out))
        bundle = args.data_dir / "models" / "scale"
        started_export = time.perf_counter()
        _, metrics = write_bundle(
            bundle,
            model=model,
            vocab=split.vocab.items,
            popularity=split.popularity,
            metrics={},
            index_states=calibration,
        )
        export_s = time.perf_counter() - started_export
    engine.dispose()
    result = {
        "loss": params.loss,
        "num_negatives": params.num_negatives,
        "max_len": params.max_len,
        "snapshot_s": snapshot_s,
        "train_steps": args.steps,
        "train_events_per_s": targets / timed if timed else 0.0,
        "peak_rss_mb": training_rss,
        "export_s": export_s,
        "index_build_s": metrics.get("ann_build_seconds", 0.0),
        "bundle": str(bundle),
    }
    args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
