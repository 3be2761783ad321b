"""`recserve bench quality` (import, `recserve train --wait`, `recserve serve`, Recommend
for every user) and `recserve evaluate`, on a tiny synthetic `user item` file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.quality import run_quality_bench
from bench.similar import run_similar_bench
from recserve.cli import main
from shared import synthetic
from tests.conftest import TINY_SPEC, make_settings

# It starts `recserve serve` processes through the benchmark's own code.
pytestmark = [pytest.mark.e2e, pytest.mark.bench]


def test_bench_quality_then_evaluate(tmp_path: Path, monkeypatch, capsys) -> None:
    data = tmp_path / "tiny.txt"
    users: dict[str, int] = {}
    with data.open("w") as handle:
        for event in synthetic.events(TINY_SPEC):
            users.setdefault(event.user_id, len(users) + 1)
            handle.write(f"{users[event.user_id]} {event.item_id}\n")
    settings = make_settings(tmp_path / "var")
    out = tmp_path / "quality.json"
    result = run_quality_bench(settings, data, fmt=None, params={"epochs": 20}, output=out)
    saved = json.loads(out.read_text())
    assert saved["users"] == TINY_SPEC.n_users and saved["epochs"] <= 20
    assert saved["given"] == {"epochs": 20}, "through the one door: only what was given"
    assert saved["resolved"]["epochs"]["source"] == "given"
    assert saved["resolved"]["lr_schedule"]["source"] == "recipe"
    assert saved["sources"] == {"SOURCE_MODEL": TINY_SPEC.n_users}, "every user by id"
    for key in ("hr@1", "ndcg@5", "ndcg@10", "hr@20"):
        assert key in saved["model"] and key in saved["popularity"]
    assert result["model"]["ndcg@10"] > result["popularity"]["ndcg@10"]
    assert "ndcg@10" in capsys.readouterr().out

    (run,) = settings.data_dir.glob("run-*")  # the bench's own fresh data folder
    monkeypatch.setenv("RECSERVE_DATA_DIR", str(run))
    evaluation = tmp_path / "eval.json"
    assert main(["evaluate", "--output", str(evaluation), "--ks", "10"]) == 0
    again = json.loads(evaluation.read_text())
    assert again["model"]["ndcg@10"] == saved["internal_ndcg@10"], "the job's own split and figure"
    assert "explanations" not in again

    explained = tmp_path / "explained.json"
    assert main(["evaluate", "--explanations", "40", "--output", str(explained)]) == 0
    test = json.loads(explained.read_text())["explanations"]
    assert test["users"] == 40
    # The top event is the one whose removal costs the item most, checked by separate
    # model runs; the tiny model's ranking follows it for most users.
    assert test["score_share"] >= 0.9 and test["drop_top"] > test["drop_random"]
    assert test["rank_top"] >= test["rank_random"]
    assert "deletion test on 40 users" in capsys.readouterr().out

    reranked = tmp_path / "reranked.json"
    assert main(["evaluate", "--rerank", "0.5,2", "--output", str(reranked)]) == 0
    saved = json.loads(reranked.read_text())
    plain, strong = saved["model"], saved["rerank"]["2"]
    # Debiasing lists less popular, less obvious items (the tiny catalogue is covered
    # whole either way).
    assert strong["arp@10"] < plain["arp@10"]
    assert strong["novelty@10"] > plain["novelty@10"]
    assert "debiased, weight 2" in capsys.readouterr().out

    # SimilarItems on the same run: each user's last item from the one before it.
    similar = run_similar_bench(data, run, fmt=None, output=tmp_path / "similar.json")
    assert similar["users"] == TINY_SPEC.n_users and similar["unknown_queries"] == 0
    # The synthetic log walks each topic's series in order: the next part is the answer,
    # which co-occurrence finds almost always and the item vectors often; the served
    # blend of both far more often than the model alone.
    assert similar["cooccurrence"]["hr@10"] > 0.5
    assert similar["model_alone"]["hr@10"] > 0.2
    assert similar["similar_items"]["hr@10"] > max(0.5, similar["model_alone"]["hr@10"])
