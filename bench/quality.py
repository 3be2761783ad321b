"""`recserve bench quality`: import a data set, train, evaluate; print a table, write JSON.

Training runs in this process (the same pipeline a Celery worker runs), so the wall
time measured is the training itself.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from shared import crud
from shared.config import Settings
from shared.db import engine_for, migrate, session_scope
from shared.importers import import_file
from shared.models import JobCreate

KS = (1, 5, 10, 20)


def run_quality_bench(
    settings: Settings,
    data: Path,
    *,
    fmt: str | None,
    params: dict[str, Any],
    output: Path | None,
) -> dict[str, Any]:
    from worker.pipeline import evaluate_model_version, run_train_job

    migrate(settings.db_url)
    engine = engine_for(settings)
    started = time.perf_counter()
    summary = import_file(engine, data, fmt=fmt)
    import_s = time.perf_counter() - started
    print(
        f"imported {data}: {summary.stored:,} new, {summary.duplicates:,} already stored "
        f"({import_s:.1f}s)"
    )
    with session_scope(engine) as session:
        job = crud.create_job(session, job=JobCreate(params={**params, "activate": "always"}))
        job_id = int(job.id or 0)
    started = time.perf_counter()
    version = run_train_job(settings, job_id)
    wall = time.perf_counter() - started
    with session_scope(engine) as session:
        model = crud.get_model_version(session, version=int(version or 0))
    engine.dispose()
    evaluation = evaluate_model_version(settings, model.version, ks=KS)
    m = model.metrics
    result: dict[str, Any] = {
        "data": str(data),
        "version": model.version,
        "params": model.config.get("training", {}),
        "model_config": model.config.get("model", {}),
        "users": evaluation["users"],
        "items": evaluation["items"],
        "epochs": int(m.get("epochs", 0)),
        "best_epoch": int(m.get("best_epoch", 0)),
        "train_seconds": m.get("train_seconds", 0.0),
        "seconds_per_epoch": m.get("seconds_per_epoch", 0.0),
        "job_wall_seconds": wall,
        "import_seconds": import_s,
        "model": evaluation["model"],
        "popularity": evaluation["popularity"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    print_quality_table(result)
    out = output or Path("bench-results") / f"quality-{data.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(f"\nwrote {out}")
    return result


def print_quality_table(result: dict[str, Any]) -> None:
    model, pop = result["model"], result["popularity"]
    print(
        f"\n{result['data']}: {result['users']:,} users, {result['items']:,} items; "
        f"{result['epochs']} epochs (best {result['best_epoch']}), "
        f"train {result['train_seconds']:.0f}s, {result['seconds_per_epoch']:.1f}s/epoch"
    )
    header = (
        f"{'metric':<12}{'model full':>12}{'pop full':>12}{'model unfilt':>14}{'pop unfilt':>12}"
        f"{'model 100neg':>14}{'pop 100neg':>12}"
    )
    print(header)
    print("-" * len(header))
    print("(full: seen items filtered; unfilt: nothing excluded but padding; 100neg: sampled)")
    names = [f"{kind}@{k}" for k in KS for kind in ("hr", "ndcg")] + ["mrr"]
    for name in names:
        print(
            f"{name:<12}{model.get(name, 0):>12.4f}{pop.get(name, 0):>12.4f}"
            f"{model.get('unfiltered_' + name, 0):>14.4f}{pop.get('unfiltered_' + name, 0):>12.4f}"
            f"{model.get('sampled_' + name, 0):>14.4f}{pop.get('sampled_' + name, 0):>12.4f}"
        )
