"""Item properties in the model: the tokens, the item vectors, training with them, and
the ONNX export's parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shared.model.item_features import MAX_TOKENS, ItemFeatures
from shared.model.params import TrainingParams
from shared.model.sasrec import SASRec
from tests.conftest import TINY_TRAINING
from worker.dataset import leave_one_out
from worker.export import check_parity, export_onnx
from worker.training import model_config, train

CATALOGUE = {
    "a": {"genre": ["Comedy", "Drama"], "year": 1995.0, "title": "Toy Story"},
    "b": {"genre": ["Comedy"], "year": 1999.0, "title": "The Story of Us"},
    "c": {"genre": ["Drama"], "year": 1980.0, "title": "Raging Bull"},
    "d": {"genre": ["Horror"], "year": 1980.0},
    "e": {},
}


@pytest.mark.unit
def test_tokens_cover_each_kind_of_property_and_drop_the_rare() -> None:
    features = ItemFeatures.learn(CATALOGUE.values())
    assert {"genre=Comedy", "genre=Drama", "title~story"} <= set(features.vocab)
    assert "genre=Horror" not in features.vocab, "carried by one item: never learnt"
    assert "title~toy" not in features.vocab
    years = [t for t in features.vocab if t.startswith("year#")]
    assert years, "numeric values become quantile buckets"
    a = features.tokens(CATALOGUE["a"])
    assert features.vocab["genre=Comedy"] in a and features.vocab["title~story"] in a
    assert features.tokens({}) == [] and features.tokens({"brand": ["new"]}) == []
    table = features.table(["a", "e", "zzz"], CATALOGUE)
    assert table.shape == (4, MAX_TOKENS) and not table[0].any() and not table[2].any()
    assert sorted(t for t in table[1] if t) == sorted(a)
    again = ItemFeatures.from_json(features.to_json())
    assert again.vocab == features.vocab and again.edges == features.edges
    assert again.tokens(CATALOGUE["b"]) == features.tokens(CATALOGUE["b"])


def _model(tokens: np.ndarray, size: int) -> SASRec:
    params = TrainingParams(**TINY_TRAINING.model_dump())
    model = SASRec(model_config(params, tokens.shape[0] - 1, size))
    model.item_tokens.copy_(torch.from_numpy(tokens))
    return model.eval()


@pytest.mark.unit
def test_an_item_vector_is_its_id_plus_the_mean_of_its_tokens() -> None:
    torch.manual_seed(0)
    tokens = np.zeros((4, MAX_TOKENS), np.int64)
    tokens[1, :2] = [1, 2]
    tokens[3, :1] = [2]
    model = _model(tokens, 3)
    ids, props = model.item_embedding.weight, model.property_embedding.weight  # type: ignore[union-attr]
    with torch.no_grad():
        vectors = model.item_vectors(torch.arange(4))
        table = model.output_table()
    assert torch.allclose(vectors[1], ids[1] + (props[1] + props[2]) / 2)
    assert torch.allclose(vectors[2], ids[2]), "no properties: the id alone"
    assert torch.allclose(vectors[3], ids[3] + props[2])
    assert torch.allclose(table, vectors) and not vectors[0].any()
    cold = model.property_vectors(torch.tensor([[2, 0, 0]]))
    assert torch.allclose(cold[0], props[2])


@pytest.mark.unit
def test_a_batch_larger_than_the_catalogue_gets_the_same_vectors_and_gradients() -> None:
    """Many rows are gathered from the per-item means, few are averaged one by one: the
    same values and the same gradients either way."""
    torch.manual_seed(0)
    tokens = np.zeros((4, MAX_TOKENS), np.int64)
    tokens[1, :2] = [1, 2]
    tokens[3, :3] = [2, 3, 1]
    params = TrainingParams(**{**TINY_TRAINING.model_dump(), "id_dropout": 0.0})
    model = SASRec(model_config(params, 3, 4)).train()  # the gathered path is training's
    model.item_tokens.copy_(torch.from_numpy(tokens))
    rows = torch.tensor([[1, 2, 3, 0, 3, 1, 1, 2]])  # 8 rows > 4 in the table
    gathered = model.item_vectors(rows)
    one_by_one = torch.cat([model.item_vectors(rows[:, i : i + 1]) for i in range(8)], dim=1)
    assert torch.allclose(gathered, one_by_one, atol=1e-6)
    props = model.property_embedding.weight  # type: ignore[union-attr]
    (grad_gathered,) = torch.autograd.grad(gathered.square().sum(), props)
    (grad_single,) = torch.autograd.grad(one_by_one.square().sum(), props)
    assert torch.allclose(grad_gathered, grad_single, atol=1e-6) and grad_gathered.any()


def test_a_model_with_properties_exports_with_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 6, size=(31, MAX_TOKENS))
    tokens[0] = 0
    model = _model(tokens, 6)
    export_onnx(model, tmp_path / "model.onnx")
    assert check_parity(model, tmp_path / "model.onnx") < 1e-4


def test_properties_let_the_model_score_an_item_it_never_saw() -> None:
    """Two genres; users stay within one. Item g9 (genre y) has no events at all: from
    its properties alone it outscores genre x's items for a genre-y history."""
    sequences = {}
    for user in range(80):
        genre = "x" if user % 2 else "y"
        start = user % 8
        sequences[f"u{user}"] = [f"{genre}{(start + i) % 9}" for i in range(8)]
    sequences = {u: [i for i in s if i != "y8"] for u, s in sequences.items()}  # y8: cold
    catalogue = {f"{g}{n}": {"genre": [g]} for g in "xy" for n in range(9)}
    features = ItemFeatures.learn(catalogue.values())
    split = leave_one_out(sequences)
    table = features.table(split.vocab.items, catalogue)
    params = TrainingParams(**{**TINY_TRAINING.model_dump(), "epochs": 25, "patience": 100})
    result = train(split, params, device=torch.device("cpu"), properties=(features, table))
    model = result.model.eval()
    row = split.vocab.rows()
    history = torch.tensor([[row[f"y{n}"] for n in range(3)]])
    cold = torch.tensor([features.tokens(catalogue["y8"])])
    with torch.no_grad():
        state = model.encode_last(history)[0]
        scores = model.score(state)
        cold_score = float(model.property_vectors(cold)[0] @ state)
    x_scores = [float(scores[row[f"x{n}"]]) for n in range(9)]
    assert cold_score > max(x_scores), (cold_score, max(x_scores))


def test_the_onnx_backend_reads_items_added_after_training(tmp_path: Path) -> None:
    """Rows above N in a history are the items whose tokens the backend was given: the
    state is torch's for the same tokens, and changes when they change."""
    from server.backends.onnxruntime import OnnxRuntimeBackend

    torch.manual_seed(0)
    tokens = np.random.default_rng(1).integers(0, 6, size=(21, MAX_TOKENS))
    tokens[0] = 0
    model = _model(tokens, 6)
    export_onnx(model, tmp_path / "model.onnx")
    backend = OnnxRuntimeBackend(tmp_path / "model.onnx", intra_op_threads=1)
    assert backend.extra_tokens is not None and backend.extra_tokens.shape == (1, MAX_TOKENS)
    history = np.array([[0, 3, 21, 22], [5, 6, 7, 8]])  # rows 21 and 22: added items
    added = np.zeros((2, MAX_TOKENS), np.int64)
    added[0, :2], added[1, :1] = [1, 2], [4]
    backend.set_extra_tokens(added)
    with torch.no_grad():
        expected = model.encode_last(torch.from_numpy(history), torch.from_numpy(added))
    assert np.allclose(backend.encode(history), expected.numpy(), atol=1e-4)
    added[1, :1] = [5]
    backend.set_extra_tokens(added)
    assert not np.allclose(backend.encode(history)[0], expected.numpy()[0], atol=1e-4)
    plain = SASRec(model_config(TrainingParams(**TINY_TRAINING.model_dump()), 20))
    export_onnx(plain.eval(), tmp_path / "plain.onnx")
    assert OnnxRuntimeBackend(tmp_path / "plain.onnx").extra_tokens is None
