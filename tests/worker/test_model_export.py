"""The SASRec model and its ONNX export (parity on fresh random inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shared.model.bundle import ModelConfig
from shared.model.sasrec import SASRec
from worker.export import check_parity, export_onnx


@pytest.fixture(
    params=[
        ("gelu", "learned", "dot", "plain"),
        ("swiglu", "learned", "dot", "plain"),
        ("gelu", "rotary", "dot", "plain"),
        ("gelu", "learned", "cosine", "plain"),
        ("swiglu", "rotary", "dot", "gated"),
    ]
)
def model(request) -> SASRec:
    torch.manual_seed(0)
    activation, positions, similarity, residual = request.param
    return SASRec(
        ModelConfig(
            num_items=40,
            max_len=9,
            d_model=16,
            n_heads=2,
            n_blocks=2,
            activation=activation,
            positions=positions,
            similarity=similarity,
            residual=residual,
        )
    ).eval()


def test_last_position_graph_matches_full_forward(model: SASRec) -> None:
    history = torch.randint(1, 41, (4, 9))
    history[0, :5] = 0
    with torch.no_grad():
        full = model.query(model(history)[:, -1])
        last = model.encode_last(history)
    torch.testing.assert_close(full, last, atol=1e-5, rtol=1e-5)


def test_padding_to_any_length_changes_nothing(model: SASRec) -> None:
    history = torch.randint(1, 41, (3, 4))
    padded = torch.cat([torch.zeros(3, 5, dtype=torch.long), history], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_last(history), model.encode_last(padded), atol=1e-5, rtol=1e-5
        )


def test_history_order_matters(model: SASRec) -> None:
    history = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        a = model.encode_last(history)
        b = model.encode_last(history.flip(1))
    assert not torch.allclose(a, b)


def test_onnx_runtime_matches_torch(model: SASRec, tmp_path: Path) -> None:
    import onnxruntime as ort

    path = tmp_path / "model.onnx"
    export_onnx(model, path)
    assert check_parity(model, path, trials=6, seed=123) < 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dims = {i.name: i.shape for i in session.get_inputs()}
    assert dims["history"] == ["batch", "length"], "batch and history length are dynamic"
    state, scores = session.run(None, {"history": np.array([[0, 0, 3, 7]], dtype=np.int64)})
    assert state.shape == (1, 16) and scores.shape == (1, 41)


def test_scores_are_the_state_against_the_output_table(model: SASRec) -> None:
    """What the server computes from a cached state (state @ item_embeddings.T, the
    bundle's table being output_table) is what the graph scores."""
    history = torch.randint(1, 41, (2, 9))
    with torch.no_grad():
        state = model.encode_last(history)
        table = model.output_table()
        torch.testing.assert_close(model.score(state), state @ table.T)
    if model.config.similarity == "cosine":
        torch.testing.assert_close(state.norm(dim=-1), torch.full((2,), 1 / 0.05))
        torch.testing.assert_close(table[1:].norm(dim=-1), torch.ones(40))
