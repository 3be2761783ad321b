"""The serving benchmark's options and figures, from measurements given by hand."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.serve import Options, summary
from bench.serve_measure import by_level

pytestmark = pytest.mark.unit


def test_options_take_the_flags_and_their_defaults() -> None:
    plain = Options.from_args(argparse.Namespace())
    assert plain.levels[:3] == [1, 4, 8] and plain.duration == 5.0 and plain.clients == 2
    assert plain.servers == ["noop", "naive", "recserve", "recserve-nolog"]
    assert plain.output == Path("bench-results/serve.json") and plain.before is None
    given = Options.from_args(
        argparse.Namespace(levels="2,6", rounds=3, before="/tmp/old", servers="recserve")
    )
    assert given.levels == [2, 6] and given.rounds == 3
    assert given.servers == ["recserve", "before"], "an earlier checkout is served too"


def test_the_figures_are_ratios_of_one_run() -> None:
    best = {"noop_cold": 1000.0, "naive_cold": 400.0, "recserve_cold": 500.0}
    best |= {"naive_mixed": 400.0, "recserve_mixed": 600.0, "recserve-nolog_mixed": 660.0}
    rows = [
        {"server": "recserve", "traffic": "cold", "concurrency": 4, "throughput": 480.0},
        {"server": "naive", "traffic": "cold", "concurrency": 4, "throughput": 400.0},
    ]
    ceiling = {"best_seq_per_s": 1000.0, "batch1_latency_ms": 2.0}
    extra = {"bulk": {"best_users_per_s": 1500.0}, "similar": {"p99_ratio": 1.2}}
    rounds = {"recserve": [3.0, 4.0, 5.0], "naive": [2.0, 3.0, 4.0], "noop": [0.5, 0.5, 0.5]}
    result = summary(best, rounds, ceiling, extra, rows)
    assert result["combined_bound"] == pytest.approx(500.0)
    assert result["efficiency"] == pytest.approx(1.0)
    assert result["speedup_vs_naive"] == pytest.approx(1.25)
    assert result["mixed_vs_naive"] == pytest.approx(1.5)
    assert result["bulk_vs_single"] == pytest.approx(3.0)
    assert result["idle_vs_naive"] == pytest.approx(4.0 / 3.0)
    assert result["idle_bound_ms"] == pytest.approx(2 * (2.0 + 0.5))
    assert result["impression_logging_cost"] == pytest.approx(1 - 600 / 660)
    assert result["vs_naive_by_level"] == {"cold": {4: pytest.approx(1.2)}}
    assert result["similar"] == {"p99_ratio": 1.2} and result["overload"] == {}


def test_per_level_ratios_pair_the_measurements_of_one_round() -> None:
    """Each round's two measurements are seconds apart; the same server's rounds on a
    shared host can be twofold apart. The per-level figure is the median of the rounds'
    own ratios, not one server's median over the other's."""
    rows = [
        {"server": "recserve", "traffic": "cold", "concurrency": 2, "throughput": 300.0,
         "rounds_throughput": [150.0, 300.0, 400.0]},
        {"server": "naive", "traffic": "cold", "concurrency": 2, "throughput": 250.0,
         "rounds_throughput": [140.0, 250.0, 420.0]},
        {"server": "recserve", "traffic": "mixed", "concurrency": 2, "throughput": 600.0},
        {"server": "naive", "traffic": "mixed", "concurrency": 2, "throughput": 200.0},
    ]  # fmt: skip
    table = by_level(rows, "recserve", "naive")
    # Rounds: 1.071, 1.2, 0.952 -> median 1.071 (the medians' ratio would say 1.2).
    assert table["cold"][2] == pytest.approx(150.0 / 140.0)
    assert table["mixed"][2] == pytest.approx(3.0), "rows without rounds: their ratio"
    assert by_level(rows, "recserve", "before") == {}
