"""The co-occurrence baseline of `recserve bench similar`, on a file small enough to
check by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.quality import rank_metrics
from bench.similar import cooccurrence_ranks, queries_and_transitions

pytestmark = pytest.mark.unit


def test_queries_targets_and_what_follows_what(tmp_path: Path) -> None:
    data = tmp_path / "log.txt"
    # u1: a b c d (query c, target d); u2: a b c (query b, target c); u3: b c d (c, d);
    # u4 has two events: no query.
    data.write_text("1 a\n1 b\n1 c\n1 d\n2 a\n2 b\n2 c\n3 b\n3 c\n3 d\n4 a\n4 b\n")
    pairs, following = queries_and_transitions(data, "seq")
    assert pairs == {"1": ("c", "d"), "2": ("b", "c"), "3": ("c", "d")}
    # Only the events before each target count: u1 a->b, b->c; u2 a->b; u3 b->c.
    assert following == {"a": {"b": 2}, "b": {"c": 2}}
    ranks = cooccurrence_ranks(pairs, following)
    assert ranks == [None, 1, None], "only u2's query was ever followed by its target"
    assert rank_metrics(ranks, (10,))["hr@10"] == pytest.approx(1 / 3)
