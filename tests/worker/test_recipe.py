"""The adaptive training recipe: what it picks from the data's size and density."""

from __future__ import annotations

import numpy as np
import pytest

from shared.model.params import TrainingParams
from worker.recipe import FULL_SOFTMAX_BUDGET, DataStats, apply_recipe, recipe_for

pytestmark = pytest.mark.unit


def chosen(stats: DataStats) -> dict[str, object]:
    return {name: value for name, value, _ in recipe_for(stats)}


def test_dense_data_gets_the_dense_recipe_and_long_histories() -> None:
    lengths = np.full(6000, 165)
    lengths[:1000] = 600
    picked = chosen(DataStats.of(lengths, items=3400))
    assert picked["max_len"] == 200, "p90 of 600 events is capped at 200"
    assert picked["dropout"] == 0.2 and picked["learning_rate"] == 4e-3
    assert picked["loss"] == "ce"


def test_sparse_data_gets_stronger_dropout_and_short_histories() -> None:
    lengths = np.r_[np.full(9000, 6), np.full(1000, 40)]
    picked = chosen(DataStats.of(lengths, items=50_000))
    assert picked["max_len"] == 20, "p90 of 6 rounds up to the 20-event floor"
    assert picked["dropout"] == 0.5
    assert picked["loss"] == "ce", "6.4e4 targets x 5e4 items is affordable"


def test_huge_catalogue_switches_to_sampled_softmax_with_more_negatives() -> None:
    lengths = np.full(200_000, 12)
    stats = DataStats.of(lengths, items=1_000_000)
    assert stats.targets * stats.items > FULL_SOFTMAX_BUDGET
    picked = chosen(stats)
    assert picked["loss"] == "sampled" and picked["num_negatives"] == 8192


def test_given_and_settings_win_and_every_choice_has_its_source() -> None:
    params = TrainingParams(dropout=0.3, learning_rate=2e-3, epochs=7)
    lengths = np.full(500, 8)
    adapted, lines, choices = apply_recipe(
        params, {"dropout"}, lengths, items=1000, from_settings={"epochs"}
    )
    assert adapted.dropout == 0.3, "given to the job"
    assert adapted.epochs == 7, "set in the settings"
    assert adapted.learning_rate == 3e-3, "neither: the rule's sparse value"
    assert "recipe: dropout=0.3 (given to the job)" in lines
    assert "recipe: epochs=7 (set in the settings)" in lines
    assert lines[0].startswith("data: 500 users, 1,000 items, 4,000 events")
    assert any(line.startswith("recipe: loss='ce' (full softmax affordable") for line in lines)
    by_name = {c.name: c for c in choices}
    assert set(by_name) == set(TrainingParams.model_fields), "every parameter"
    assert (by_name["dropout"].source, by_name["epochs"].source) == ("given", "settings")
    assert (
        by_name["learning_rate"].source == "recipe" and "sparse" in by_name["learning_rate"].reason
    )
    assert by_name["batch_size"].source == "default" and by_name["batch_size"].value == 128


def test_auto_off_keeps_the_settings_defaults() -> None:
    params = TrainingParams(auto=False)
    adapted, lines, choices = apply_recipe(params, set(), np.full(100, 300), items=100)
    assert adapted == params
    assert lines[-1].startswith("recipe: auto is off")
    assert {c.source for c in choices} == {"default"}


def test_a_beauty_shaped_log_trains_a_sampled_softmax_over_4096_negatives() -> None:
    rng = np.random.default_rng(0)
    lengths = 5 + rng.geometric(1 / 4.0, size=40_000)  # mean ~9 events, like Amazon Beauty
    picked = chosen(DataStats.of(lengths, items=54_542))
    assert picked["loss"] == "sampled" and picked["num_negatives"] == 4096
    assert picked["max_len"] == 20 and picked["learning_rate"] == 3e-3
    assert picked["validation_users"] == 4096, "the other 35,904 train on that event"
    assert picked["patience"] == 20 and picked["patience_from"] == 0.5


def test_small_data_validates_on_every_user() -> None:
    assert "validation_users" not in chosen(DataStats.of(np.full(3000, 8), items=1000))


def test_the_recipe_chooses_only_the_keys_the_console_calls_auto() -> None:
    from shared.model.params import RECIPE_KEYS

    rng = np.random.default_rng(0)
    for lengths, items in ((np.full(9000, 8), 60_000), (5 + rng.geometric(0.01, 7000), 3400)):
        assert set(chosen(DataStats.of(lengths, items))) <= RECIPE_KEYS
