"""Item properties: their three kinds, their limits, and the labels they stand for."""

from __future__ import annotations

import pytest

from shared.model.properties import PropertyError, checked, kind_of, labels_of

pytestmark = pytest.mark.unit


def test_the_kind_is_the_value_s_type() -> None:
    props = checked({"genre": ["Comedy", "Drama", "Comedy"], "year": 1995, "title": "Heat"})
    assert props == {"genre": ["Comedy", "Drama"], "year": 1995.0, "title": "Heat"}
    assert [kind_of(v) for v in props.values()] == ["categorical", "numeric", "text"]
    assert labels_of(props) == ["genre:Comedy", "genre:Drama"]
    assert checked(None) == {} and labels_of({}) == []


@pytest.mark.parametrize(
    ("raw", "field", "says"),
    [
        ({"Genre": ["x"]}, "properties.Genre", "a-z, 0-9, _"),
        ({"flag": True}, "properties.flag", "boolean"),
        ({"price": float("inf")}, "properties.price", "finite"),
        ({"genre": []}, "properties.genre", "1..32"),
        ({"genre": ["ok", ""]}, "properties.genre[1]", "non-empty"),
        ({"genre": ["x" * 60]}, "properties.genre[0]", "longer than 64"),
        ({"blurb": "x" * 5000}, "properties.blurb", "at most 4096"),
        ({"size": None}, "properties.size", "exactly one"),
        ({f"k{i}": 1 for i in range(33)}, "properties", "at most 32"),
        (["genre"], "properties", "an object"),
    ],
)
def test_every_refusal_names_the_property(raw: object, field: str, says: str) -> None:
    with pytest.raises(PropertyError) as caught:
        checked(raw)
    assert caught.value.field == field and says in caught.value.reason
