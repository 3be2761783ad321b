"""What each kind of event means: the table of roles and weights, and rating ranges."""

from __future__ import annotations

import pytest

from shared.config import EventSettings, Settings

pytestmark = pytest.mark.unit


def test_kinds_not_in_the_table_are_positive_and_the_defaults_name_the_negatives() -> None:
    events = EventSettings()
    assert events.role("click", 0.0) == ("positive", 1.0)
    assert events.role("purchase", 0.0) == ("positive", 1.0)
    for kind in ("dislike", "not_interested", "return"):
        assert events.negative(kind, 0.0), kind


def test_a_table_and_rating_ranges_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(
        "RECSERVE_EVENTS__KINDS",
        '{"purchase": {"weight": 1.0}, "add_to_cart": {"weight": 0.5}, "view": {"weight": 0.1},'
        ' "return": {"role": "negative"}}',
    )
    monkeypatch.setenv(
        "RECSERVE_EVENTS__RATINGS",
        '[{"low": 4, "high": 5}, {"low": 3, "high": 3, "weight": 0.1},'
        ' {"low": 1, "high": 2, "role": "negative"}]',
    )
    events = Settings().events
    assert events.role("add_to_cart", 0.0) == ("positive", 0.5)
    assert events.role("view", 0.0) == ("positive", 0.1)
    assert events.role("rating", 5.0) == ("positive", 1.0)
    assert events.role("rating", 3.0) == ("positive", 0.1)
    assert events.role("rating", 1.0) == ("negative", 1.0)
    assert events.negative("return", 0.0) and not events.negative("dislike", 0.0), "replaced"


def test_weights_are_read_only_when_some_positive_weighs_other_than_one() -> None:
    assert not EventSettings().weighted  # the defaults: negatives only
    funnel = EventSettings(kinds={"purchase": {"weight": 1.0}, "view": {"weight": 0.1}})
    assert funnel.weighted and funnel.weight("view", 0.0) == 0.1
    assert funnel.weight("click", 0.0) == 1.0  # not in the table
    ratings = EventSettings(ratings=[{"low": 3, "high": 3, "weight": 0.2}])
    assert ratings.weighted and ratings.weight("rating", 3.0) == 0.2
    negatives_only = EventSettings(kinds={"skip": {"role": "negative", "weight": 3.0}})
    assert not negatives_only.weighted  # a negative's weight never reaches the loss
