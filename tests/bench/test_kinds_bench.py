"""`recserve bench kinds`: the last like held out, two arms (the ratings table, every
event positive) through import, `recserve train --wait`, `recserve serve` and Recommend,
on a tiny rated log whose disliked item the table keeps out of the lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.kinds import run_kinds_bench, split_on_last_like
from recserve.cli import main

# It starts `recserve serve` processes and trains through the benchmark's own code.
pytestmark = [pytest.mark.e2e, pytest.mark.bench]

CHAIN = 100


def rated_log(path: Path) -> None:
    """80 users walk a chain of items, rating each 5; item "bad" is rated 1 by every
    user: by the even ones in the middle of their walk (so it is imported), by the odd
    ones after their last like (held out, but still "rated 1 at any time")."""
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for user in range(80):
        start = (user * 7) % CHAIN
        when = 1_000_000 + user * 1000
        walk = [(f"c{(start + i) % CHAIN}", 5) for i in range(8)]
        if user % 2 == 0:
            walk.insert(3, ("bad", 1))
        else:
            walk.append(("bad", 1))
        for n, (item, rating) in enumerate(walk):
            lines.append(f"{user}\t{item}\t{rating}\t{when + n}")
    path.write_text("\n".join(lines) + "\n")


def test_the_split_holds_out_the_last_like_and_what_follows(tmp_path: Path) -> None:
    data = tmp_path / "rated.inter"
    rated_log(data)
    split = split_on_last_like(data, tmp_path / "input")
    assert len(split.targets) == 80
    assert split.targets["0"] == "c7" and split.targets["1"] == "c14"
    assert split.held_out == 80 + 40  # each target, and the odd users' late dislike
    assert all(split.disliked[user] == {"bad"} for user in split.targets)
    imported = split.train_file.read_text().splitlines()
    assert imported[0] == "user,item,timestamp,kind,value"
    assert "0,bad,1000003.0,rating,1.0" in imported and len(imported) == 1 + 80 * 7 + 40


def test_bench_kinds_compares_the_table_with_all_positive(tmp_path: Path, capsys) -> None:
    data = tmp_path / "rated.inter"
    rated_log(data)
    out = tmp_path / "kinds.json"
    result = run_kinds_bench(data, tmp_path / "var", seeds=[3], params={"epochs": 25}, output=out)
    saved = json.loads(out.read_text())
    assert saved["users"] == 80 and saved["given"] == {"epochs": 25}
    table, plain = saved["runs"]["kinds"][0], saved["runs"]["all positive"][0]
    assert table["recommended"] == plain["recommended"] == 800
    # Every event positive, "bad" is the most frequent item and is recommended to the
    # odd users, who rate it 1; with the table it is never a target.
    assert plain["disliked_share"] > 0.02
    assert table["disliked_share"] < plain["disliked_share"]
    assert result["mean"]["kinds"]["hr@10"] > 0.2
    assert "disliked" in capsys.readouterr().out


def test_bench_kinds_names_a_bad_seed_list(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--seeds"):
        main(["bench", "kinds", "--data", str(tmp_path / "x.inter"), "--seeds", "1,x"])
