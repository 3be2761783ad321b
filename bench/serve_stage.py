"""The serving benchmarks' stage: a database with an ML-1M-sized model (random weights
unless a bundle is given) and stored user histories (bench/serve.py, soak, security)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from server.history import HISTORY_KEEP
from shared.config import Settings
from shared.model import bundle as bundle_format
from shared.model.bundle import ModelConfig
from shared.model.properties import Properties
from shared.storage import event_store, model_store
from shared.storage.engine import engine_for, migrate, session_scope
from shared.storage.tables import FeedbackEventCreate, ModelStatus, ModelVersion

BENCH_CONFIG = ModelConfig(num_items=3416, max_len=200, d_model=64, n_heads=1, n_blocks=2)


N_USERS = 2000


def random_bundle(path: Path, properties: Mapping[str, Properties] | None = None) -> None:
    """An ML-1M-sized bundle with random weights (seed 0) at ``path``, unless one is there;
    with ``properties`` (item id "1".."3416" -> its properties) the model also embeds
    them."""
    if (path / bundle_format.CHECKSUMS).exists():
        return
    import torch

    from shared.model.item_features import ItemFeatures
    from shared.model.next_items import NextItems
    from shared.model.sasrec import SASRec
    from worker.export import write_bundle

    vocab = [str(i) for i in range(1, BENCH_CONFIG.num_items + 1)]
    features = ItemFeatures.learn(properties.values()) if properties else None
    config = (
        BENCH_CONFIG.model_copy(update={"property_tokens": features.size})
        if features
        else BENCH_CONFIG
    )
    torch.manual_seed(0)
    model = SASRec(config).eval()
    if features and properties:
        with torch.no_grad():
            model.item_tokens.copy_(torch.from_numpy(features.table(vocab, properties)))
    popularity = np.ones(BENCH_CONFIG.num_items + 1)
    popularity[0] = 0
    # Transitions of random sequences, so that SimilarItems does its served blend.
    rows = np.random.default_rng(0).integers(1, BENCH_CONFIG.num_items + 1, 300_000)
    starts = np.arange(0, len(rows), 150)
    transitions = NextItems.count(rows, starts, starts + 150, BENCH_CONFIG.num_items + 1)
    write_bundle(
        path, model=model, vocab=vocab, popularity=popularity, metrics={},
        next_items=transitions, features=features,
    )  # fmt: skip


def activate_bundle(
    session: Any, bundle_path: Path, loaded: Any, reason: str = "recserve bench serve"
) -> None:
    """Registers and activates ``bundle_path`` unless it is the active version already."""
    active = model_store.get_active_model(session)
    if active is not None and Path(active.artifact_path) == bundle_path.resolve():
        return
    model_row = model_store.create_model_version(
        session,
        model=ModelVersion(
            status=ModelStatus.READY,
            artifact_path=str(bundle_path.resolve()),
            checksum=loaded.checksum,
            config={"model": loaded.config.model_dump()},
        ),
    )
    model_store.activate_model(session, version=int(model_row.version or 0), reason=reason)


def store_histories(engine: Any, users: list[str], items: list[str], length: int | None) -> None:
    """Random histories for ``users``: ``length`` events each, or 100..200 when None."""
    rng = np.random.default_rng(1)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for chunk in range(0, len(users), 200):
        events = [
            FeedbackEventCreate(
                event_id=f"bench-{u}-{i}",
                user_id=users[u],
                item_id=items[int(rng.integers(0, len(items)))],
                event_time=start + timedelta(minutes=i),
            )
            for u in range(chunk, min(len(users), chunk + 200))
            for i in range(length or int(rng.integers(100, 201)))
        ]
        with session_scope(engine) as session:
            event_store.insert_events(session, events=events)


def prepare(
    data_dir: Path,
    bundle_path: Path | None,
    *,
    full_histories: bool = False,
    n_users: int = N_USERS,
) -> tuple[Settings, list[str], list[str]]:
    """A bench database with one active ML-1M-sized model and ``n_users`` stored histories
    of 100..200 events, or of HISTORY_KEEP events each with ``full_histories`` (the server
    then keeps every user's history at its bounded size from the start: what a long-running
    server with returning users looks like)."""
    settings = Settings(data_dir=data_dir)
    migrate(settings.db_url)
    engine = engine_for(settings)
    if bundle_path is None:
        bundle_path = data_dir / "models" / "bench-random"
        random_bundle(bundle_path)
    loaded = bundle_format.load(bundle_path)
    items = loaded.vocab
    users = [f"bench-user-{u}" for u in range(n_users)]
    with session_scope(engine) as session:
        activate_bundle(session, bundle_path, loaded)
        have = event_store.count_events(session)
    least = HISTORY_KEEP if full_histories else 100
    if have < n_users * least:
        store_histories(engine, users, items, HISTORY_KEEP if full_histories else None)
    engine.dispose()
    return settings, items, users
