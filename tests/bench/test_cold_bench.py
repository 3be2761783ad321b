"""`recserve bench cold`: items held out of training, taken on by the served model through
their properties, on a tiny synthetic log whose items' genre is their topic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cold import split_cold
from bench.quality import run_recserve
from shared import synthetic
from shared.storage.importers import DataQuality, read_events

pytestmark = [pytest.mark.e2e, pytest.mark.bench]

SPEC = synthetic.SyntheticSpec(
    n_users=300, n_topics=10, items_per_topic=20, seed=3, min_length=8, extra_length=6.0,
    max_length=24,
)  # fmt: skip
"""200 items, so that ranking at random finds a target about one time in twenty."""


def tiny_log(folder: Path) -> tuple[Path, Path, Path]:
    """A `user item` log of integer ids, a movies.dat of the items' topics as genres, and
    the map between them."""
    ids: dict[str, int] = {}
    users: dict[str, int] = {}
    lines = []
    for event in synthetic.events(SPEC):
        item = ids.setdefault(event.item_id, len(ids) + 1)
        lines.append(f"{users.setdefault(event.user_id, len(users) + 1)} {item}")
    data, movies, mapping = folder / "log.txt", folder / "movies.dat", folder / "map.txt"
    data.write_text("\n".join(lines) + "\n")
    movies.write_text(
        "".join(f"{1000 + n}::Item {n} (1990)::Topic{name[1:4]}\n" for name, n in ids.items())
    )
    mapping.write_text("".join(f"{n} {1000 + n}\n" for n in ids.values()))
    return data, movies, mapping


def test_the_split_keeps_held_out_items_out_of_training(tmp_path: Path) -> None:
    data, _, _ = tiny_log(tmp_path)
    split = split_cold(data, tmp_path / "input")
    trained = {line.split(",")[1] for line in split.train_file.read_text().splitlines()[1:]}
    later = {line.split(",")[1] for line in split.later_file.read_text().splitlines()[1:]}
    assert split.cold and not trained & split.cold and later <= split.cold
    assert any(target in split.cold for target in split.targets.values())


def test_the_split_paces_events_so_no_long_history_looks_like_a_bot(tmp_path: Path) -> None:
    data = tmp_path / "log.txt"
    data.write_text("".join(f"1 {n % 40 + 1}\n" for n in range(200)))
    split = split_cold(data, tmp_path / "input")
    quality = DataQuality(timestamps=True)
    for _, parsed in read_events(split.train_file, "csv"):
        assert not isinstance(parsed, str), parsed
        quality.add(parsed)
    assert quality.per_user == {
        "1": 199 - sum(1 for n in range(199) if str(n % 40 + 1) in split.cold)
    }
    assert quality.bots == {}, "a 199-event history must not be flagged as a bot"


def test_evaluate_cold_items_ranks_held_out_items_by_their_properties(tmp_path: Path) -> None:
    """The user's door: `recserve evaluate --cold-items`, a process of its own."""
    data, movies, mapping = tiny_log(tmp_path)
    out = tmp_path / "cold.json"
    run_recserve(
        [
            "evaluate", "--cold-items", "--data", str(data), "--items", str(movies),
            "--item-map", str(mapping), "--seeds", "3", "--data-dir", str(tmp_path / "var"),
            "--params", json.dumps({"epochs": 12, "id_dropout": 0.5}), "--output", str(out),
        ],
        dict(os.environ),
    )  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["cold_users"] > 0 and saved["given"] == {"epochs": 12, "id_dropout": 0.5}
    with_properties, id_only = saved["runs"]["properties"][0], saved["runs"]["id only"][0]
    assert id_only["cold"]["hr@10"] == 0.0, "an id-only model cannot rank an unseen item"
    assert with_properties["cold"]["hr@10"] > 2 * saved["baselines"]["random cold"]["hr@10"]
    assert saved["baselines"]["content cold"]["hr@10"] > saved["baselines"]["random cold"]["hr@10"]
    assert with_properties["warm"]["hr@10"] > 0 and id_only["warm"]["hr@10"] > 0
    assert saved["users"] == SPEC.n_users


def test_evaluate_cold_items_names_what_it_needs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "recserve", "evaluate", "--cold-items", "--data", "log.txt"],
        text=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--items" in done.stderr and "--item-map" in done.stderr
