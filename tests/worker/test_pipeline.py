"""The training job as plain functions: train, evaluate, bundle, register, promote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.model import bundle as bundle_format
from shared.model.params import TrainingParams
from shared.storage import job_store, model_store
from shared.storage.engine import make_engine, session_scope
from shared.storage.tables import JobCreate, JobStatus, ModelStatus
from worker.model_eval import should_activate
from worker.pipeline import run_train_job


def test_trained_model_beats_popularity(trained_template: Path) -> None:
    engine = make_engine(f"sqlite:///{trained_template / 'recserve.db'}")
    with session_scope(engine) as s:
        model = model_store.get_model_version(s, version=1)
        job = job_store.get_job(s, job_id=1)
    engine.dispose()
    assert model.status == ModelStatus.ACTIVE
    assert job.status == JobStatus.SUCCEEDED and job.progress == 1.0
    assert any("epoch 1/" in line for line in job.log)
    # The recipe fills what the settings left unset and keeps what they set.
    lines = [line.split(" ", 1)[1] for line in job.log]  # without the time of day
    assert "recipe: epochs=12 (set in the settings)" in lines
    assert job.params == {}, "the job was given nothing"
    sources = {row["name"]: row["source"] for row in job.resolved}
    assert sources["epochs"] == "settings" and sources["lr_schedule"] == "recipe"
    assert model.config["sources"] == job.resolved
    assert any(line.startswith("recipe: lr_schedule='cosine'") for line in lines)
    assert model.config["training"]["lr_schedule"] == "cosine"
    assert model.config["training"]["epochs"] == 12
    assert set(model.config["catalogue"]) == {"items", "changed_at"}, "the catalogue it saw"
    assert 50 < model.metrics["peak_rss_mb"] < 8192
    assert model.metrics["wall_seconds"] >= model.metrics["train_seconds"] > 0
    m = model.metrics
    assert m["ndcg@10"] >= 1.5 * m["pop_ndcg@10"]
    assert m["sampled_ndcg@10"] > m["ndcg@10"]
    assert m["unfiltered_ndcg@10"] > 0  # the synthetic users repeat items: no order here
    assert m["onnx_parity_max_rel_diff"] < 1e-4
    # Beyond accuracy: the model spreads its lists wider and less popular than popularity.
    assert 0 < m["coverage@10"] <= 1 and m["gini@10"] < m["pop_gini@10"]
    assert m["pop_arp@10"] > m["arp@10"] and m["novelty@10"] > m["pop_novelty@10"]
    assert m["pop_popularity_lift@10"] > m["popularity_lift@10"] > 0
    assert model.artifact_path == "job-1-1", "relative to the models folder, by job and attempt"
    directory = trained_template / "models" / model.artifact_path
    loaded = bundle_format.load(directory)
    assert loaded.checksum == model.checksum
    assert model.size_bytes == bundle_format.size_bytes(directory) > 0
    assert json.loads((directory / "metrics.json").read_text())["ndcg@10"] == m["ndcg@10"]
    assert [p["epoch"] for p in job.curve] == list(range(1, len(job.curve) + 1))
    assert all(p["loss"] > 0 and "val_ndcg@10" in p for p in job.curve)
    assert job.lock_key is None and job.attempts == 1 and job.data_watermark == m["train_events"]


def test_rerun_is_harmless_and_weaker_model_is_not_promoted(settings) -> None:
    engine = make_engine(settings.db_url)
    assert run_train_job(settings, 1) == 1, "a finished job returns its version"
    with session_scope(engine) as s:
        job = job_store.create_job(s, job=JobCreate(params={"epochs": 1, "learning_rate": 1e-5}))
    version = run_train_job(settings, int(job.id or 0))
    with session_scope(engine) as s:
        weak = model_store.get_model_version(s, version=version)
        assert weak.status == ModelStatus.READY, "a worse model is registered, not activated"
        assert weak.metrics["active_ndcg@10"] > weak.metrics["ndcg@10"]
        assert model_store.get_active_model(s).version == 1
        assert "not activated" in job_store.get_job(s, job_id=job.id).log[-1]
    engine.dispose()


def test_training_without_data_fails_the_job_with_a_reason(empty_settings) -> None:
    engine = make_engine(empty_settings.db_url)
    with session_scope(engine) as s:
        job = job_store.create_job(s, job=JobCreate(params={}))
    with pytest.raises(ValueError, match="not enough data"):
        run_train_job(empty_settings, int(job.id or 0))
    with session_scope(engine) as s:
        failed = job_store.get_job(s, job_id=job.id)
        assert failed.status == JobStatus.FAILED and "not enough data" in failed.error
    engine.dispose()


@pytest.mark.parametrize(
    ("activate", "metrics", "has_active", "expected"),
    [
        ("auto", {"ndcg@10": 0.3, "pop_ndcg@10": 0.1}, False, True),
        ("auto", {"ndcg@10": 0.05, "pop_ndcg@10": 0.1}, False, False),
        ("auto", {"ndcg@10": 0.3, "pop_ndcg@10": 0.1, "active_ndcg@10": 0.4}, True, False),
        ("auto", {"ndcg@10": 0.5, "pop_ndcg@10": 0.1, "active_ndcg@10": 0.4}, True, True),
        ("never", {"ndcg@10": 0.5, "pop_ndcg@10": 0.1}, False, False),
        ("always", {"ndcg@10": 0.0, "pop_ndcg@10": 0.1}, True, True),
    ],
)
def test_promotion_rule(activate, metrics, has_active, expected) -> None:
    params = TrainingParams(activate=activate)
    assert should_activate(params, metrics, has_active=has_active)[0] is expected


def test_training_leaves_out_flagged_users(settings, tmp_path: Path) -> None:
    from shared.storage.importers import import_file

    rows = [f"bot,bot-item-{i},1,{1700000000 + i}" for i in range(40)]
    path = tmp_path / "bot.csv"
    path.write_text("user,item,rating,timestamp\n" + "\n".join(rows) + "\n")
    engine = make_engine(settings.db_url)
    assert import_file(engine, path).quality["suspected_bot_users"] == ["bot"]
    with session_scope(engine) as s:
        job = job_store.create_job(s, job=JobCreate(params={"epochs": 1, "activate": "never"}))
    version = run_train_job(settings, int(job.id or 0))
    with session_scope(engine) as s:
        model = model_store.get_model_version(s, version=version)
        log_lines = job_store.get_job(s, job_id=job.id).log
    engine.dispose()
    vocab = bundle_format.load(settings.bundles_dir / model.artifact_path).vocab
    assert not any(item.startswith("bot-item") for item in vocab)
    assert any("left out flagged users: 1 " in line for line in log_lines)


def test_a_catalogue_with_properties_trains_a_model_that_learns_from_them(settings) -> None:
    """The job reads the catalogue's properties, trains with them, and the bundle carries
    the token vocabulary and the item encoder, both verified on load."""
    from shared.model import properties as props
    from shared.storage import event_store, item_store
    from shared.storage.tables import Item

    engine = make_engine(settings.db_url)
    with session_scope(engine) as s:
        known = [item for item, _ in event_store.item_popularity(s, limit=10**6)]
    catalogue = [  # synthetic ids are i<topic>-<position>: the topic as a property
        Item(item_id=item, properties=props.checked({"topic": [item[:4]], "year": 1990.0 + n % 7}))
        for n, item in enumerate(known)
    ]
    with session_scope(engine) as s:
        item_store.upsert_items(s, items=catalogue)
        job = job_store.create_job(s, job=JobCreate(params={"epochs": 1, "activate": "never"}))
    version = run_train_job(settings, int(job.id or 0))
    with session_scope(engine) as s:
        model = model_store.get_model_version(s, version=version)
        log_lines = job_store.get_job(s, job_id=job.id).log
    engine.dispose()
    loaded = bundle_format.load(settings.bundles_dir / model.artifact_path)
    assert (
        loaded.features is not None and "topic=" + catalogue[0].item_id[:4] in loaded.features.vocab
    )
    assert loaded.config.property_tokens == loaded.features.size
    assert loaded.encoder_path.is_file()
    assert model.metrics["encoder_parity_max_rel_diff"] < 1e-4
    assert any("item properties: " in line for line in log_lines)
