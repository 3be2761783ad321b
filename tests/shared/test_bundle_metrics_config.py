"""Bundle checksums, ranking metrics, settings and the synthetic generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared import synthetic
from shared.config import Settings
from shared.model import bundle as bundle_format
from shared.model.params import parse_training_params
from shared.model.ranking import summarize, target_ranks
from shared.wire.errors import BundleError, InvalidArgument


def test_a_sound_bundle_loads_with_consistent_shapes(trained_template: Path) -> None:
    source = next((trained_template / "models").iterdir())
    loaded = bundle_format.load(source)
    assert loaded.config.num_items == len(loaded.vocab)
    assert loaded.item_embeddings.shape == (len(loaded.vocab) + 1, loaded.config.d_model)


@pytest.mark.parametrize("name", ["model.onnx", "item_embeddings.npy", "config.json"])
def test_bundle_checksums_catch_tampering(tmp_path: Path, trained_template: Path, name) -> None:
    """One changed byte in any file, and the bundle is refused, naming that file."""
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(next((trained_template / "models").iterdir()), copy)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{name} fails its sha256 checksum"):
        bundle_format.load(copy)


def test_bundle_refuses_corruption(tmp_path: Path, trained_template: Path) -> None:
    import shutil

    source = next((trained_template / "models").iterdir())
    copy = tmp_path / "bundle"
    shutil.copytree(source, copy)
    (copy / "vocab.json").write_text(json.dumps(["evil"]))
    with pytest.raises(BundleError, match="vocab.json fails its sha256"):
        bundle_format.load(copy)
    (copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model.onnx is missing"):
        bundle_format.verify(copy)
    with pytest.raises(BundleError, match="does not exist"):
        bundle_format.load(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "planted", ["items.ivf", "index.json", "weights.pt.bak", "metrics.json.new", "extra/notes.txt"]
)
def test_a_planted_file_is_refused(tmp_path: Path, trained_template: Path, planted: str) -> None:
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(next((trained_template / "models").iterdir()), copy)
    (copy / planted).parent.mkdir(exist_ok=True)
    (copy / planted).write_bytes(b"planted")
    top = planted.split("/")[0]
    with pytest.raises(BundleError, match=f"{top} is not listed in checksums.json"):
        bundle_format.load(copy)


def test_an_altered_metrics_or_weights_file_is_refused(
    tmp_path: Path, trained_template: Path
) -> None:
    import shutil

    for name in ("metrics.json", "weights.pt", "popularity.json", "vocab.json", "next_items.npz"):
        copy = tmp_path / name
        shutil.copytree(next((trained_template / "models").iterdir()), copy)
        with (copy / name).open("ab") as handle:
            handle.write(b" ")
        with pytest.raises(BundleError, match=f"{name} fails its sha256"):
            bundle_format.verify(copy)


def test_a_trained_bundle_carries_its_training_transitions(trained_template: Path) -> None:
    bundle = bundle_format.load(next((trained_template / "models").iterdir()))
    assert bundle.next_items is not None
    assert bundle.next_items.num_rows == bundle.config.num_items + 1
    assert len(bundle.next_items.rows) > 0, "the synthetic log has repeated transitions"


def test_engines_are_recorded_and_checked(tmp_path: Path, trained_template: Path) -> None:
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(next((trained_template / "models").iterdir()), copy)
    engines = copy / bundle_format.ENGINES
    engines.mkdir()
    engine = engines / "trt10.0-sm90-fp16-b64-l200.plan"
    engine.write_bytes(b"serialized engine")
    with pytest.raises(BundleError, match="is not listed"):
        bundle_format.verify(copy)  # an engine nobody recorded
    bundle_format.record_engine(engine)
    bundle_format.verify(copy)
    assert sorted(p.name for p in copy.parent.iterdir()) == ["bundle"], "no temporary left"
    engine.write_bytes(b"serialized engine, altered")
    with pytest.raises(BundleError, match="fails its sha256"):
        bundle_format.verify(copy)
    with pytest.raises(BundleError, match="fails its sha256"):
        bundle_format.verify_engine(engine)
    engine.write_bytes(b"serialized engine")
    (engines / "planted.plan").write_bytes(b"x")
    with pytest.raises(BundleError, match="planted.plan is not listed"):
        bundle_format.verify(copy)


def test_metrics_from_known_ranks() -> None:
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [0.0, 0.0, 1.0]])
    ranks = target_ranks(scores, np.array([0, 0, 1]))
    assert ranks.tolist() == [0, 1, 1]
    m = summarize(ranks, ks=(1, 2))
    assert m["hr@1"] == pytest.approx(1 / 3)
    assert m["hr@2"] == pytest.approx(1.0)
    assert m["ndcg@2"] == pytest.approx((1 + 2 / np.log2(3)) / 3)
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_settings_from_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECSERVE_DATABASE_URL", "postgresql+psycopg://db/x")
    monkeypatch.setenv("RECSERVE_SERVER__PORT", "6000")
    monkeypatch.setenv("RECSERVE_TRAINING__EPOCHS", "7")
    config = tmp_path / "recserve.toml"
    config.write_text('data_dir = "/srv/recserve"\n[server]\nmax_k = 50\nport = 1\n')
    monkeypatch.setenv("RECSERVE_CONFIG", str(config))
    settings = Settings()
    assert settings.db_url == "postgresql+psycopg://db/x"
    assert settings.server.port == 6000, "the environment wins over the file"
    assert settings.server.max_k == 50
    assert settings.training.epochs == 7
    assert settings.bundles_dir == Path("/srv/recserve/models")
    assert settings.embedded_broker


def test_training_params_validation() -> None:
    settings = Settings()
    params = parse_training_params(settings, '{"epochs": 3, "activate": "never"}')
    assert params.epochs == 3 and params.activate == "never"
    assert params.d_model == settings.training.d_model
    with pytest.raises(InvalidArgument, match="params_json.dropout"):
        parse_training_params(settings, {"dropout": 2})


def test_synthetic_data_is_deterministic_and_sequential() -> None:
    spec = synthetic.SyntheticSpec(n_users=200)
    first = list(synthetic.events(spec))
    assert first == list(synthetic.events(spec))
    follows = total = 0
    by_user: dict[str, list[str]] = {}
    for e in first:
        by_user.setdefault(e.user_id, []).append(e.item_id)
    for seq in by_user.values():
        for a, b in zip(seq, seq[1:], strict=False):
            ta, pa = a[1:].split("-")
            tb, pb = b[1:].split("-")
            total += 1
            follows += ta == tb and int(pb) == (int(pa) + 1) % spec.items_per_topic
    assert follows / total > 0.5, "series transitions dominate"
    assert all(len(seq) >= 12 for seq in by_user.values())
