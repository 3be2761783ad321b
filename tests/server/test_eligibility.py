"""One eligibility policy, every path: a table of each path that returns items against each
rule of what may be returned, on a real server.

Paths: the model's full ranking, the item index, popularity for a user with no history
(with a model), the popularity fallback before any model, the exploration slot,
RecommendBatch, and explained requests. Rules: seen items, excluded items, candidates,
availability, include labels, exclude labels. For every cell the same request without the
rule returns an item the rule forbids (so the rule has work to do), and with the rule none.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from server.app import start_server
from shared.client import AsyncClient
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage import item_store, model_store
from shared.storage.engine import make_engine, session_scope
from shared.storage.tables import Item, ModelStatus, ModelVersion
from tests.server import golden

USER = "u00003"
NEW_ITEMS = {"new-a": ["topic-2"], "new-b": ["sale"], "new-c": ["topic-0"], "new-gone": []}
"""Catalogue items no model knows (the exploration slot's), one of them unavailable."""
PATHS = ("model", "index", "popularity", "no-model", "exploration", "batch", "explained")
RULES = ("seen", "exclude", "candidates", "availability", "include_labels", "exclude_labels")


def labels_of(item: str) -> set[str]:
    if item in NEW_ITEMS:
        return set(NEW_ITEMS[item])
    return {f"topic-{int(item[1:4])}", *(["sale"] if item in golden.ON_SALE else [])}


def history_of(user: str) -> list[str]:
    return [e.item_id for e in golden.synthetic.events(golden.SPEC) if e.user_id == user]


RULE_FIELDS: dict[str, dict[str, Any]] = {
    "seen": {},
    "exclude": {"exclude_item_ids": ["i000-005", "i004-004", "new-a", "i001-001", "i003-004"]},
    "candidates": {"candidate_item_ids": ["i000-000", "i002-002", "i004-007", "new-b", "i001-002"]},
    "availability": {},
    "include_labels": {"include_labels": ["topic-2", "sale"]},
    "exclude_labels": {"exclude_labels": ["topic-0", "topic-4"]},
}


def violations(rule: str, items: list[str], seen: set[str]) -> list[str]:
    fields = RULE_FIELDS[rule]
    if rule == "seen":
        return [i for i in items if i in seen]
    if rule == "exclude":
        return [i for i in items if i in fields["exclude_item_ids"]]
    if rule == "candidates":
        return [i for i in items if i not in fields["candidate_item_ids"]]
    if rule == "availability":
        return [i for i in items if i in (golden.UNAVAILABLE, "new-gone")]
    if rule == "include_labels":
        return [i for i in items if not labels_of(i) & set(fields["include_labels"])]
    return [i for i in items if labels_of(i) & set(fields["exclude_labels"])]


def add_index_version(settings: Any) -> int:
    """A second version: version 1's weights with an item index in its bundle."""
    import torch

    from shared.model.bundle import load
    from shared.model.sasrec import SASRec
    from worker.export import write_bundle

    engine = make_engine(settings.db_url)
    with session_scope(engine) as session:
        v1 = model_store.get_model_version(session, version=1)
    loaded = load(settings.bundle_path(v1.artifact_path))
    model = SASRec(loaded.config)
    model.load_state_dict(torch.load(loaded.path / "weights.pt"))
    states = np.random.default_rng(0).normal(size=(64, loaded.config.d_model)).astype(np.float32)
    checksum, metrics = write_bundle(
        settings.bundles_dir / "indexed", model=model.eval(), vocab=loaded.vocab,
        popularity=loaded.popularity, metrics={}, index_states=states,
    )  # fmt: skip
    with session_scope(engine) as session:
        row = model_store.create_model_version(
            session,
            model=ModelVersion(
                status=ModelStatus.READY, artifact_path="indexed", checksum=checksum,
                metrics=metrics, config=v1.config,
            ),
        )  # fmt: skip
        version = int(row.version or 0)
    engine.dispose()
    return version


def add_new_items(settings: Any) -> None:
    engine = make_engine(settings.db_url)
    with session_scope(engine) as session:
        item_store.upsert_items(
            session,
            items=[
                Item(item_id=item, title=item, labels=labels, available=item != "new-gone")
                for item, labels in NEW_ITEMS.items()
            ],
        )
    engine.dispose()


async def available(running: Any, client: AsyncClient, state: bool) -> None:
    """SetItemAvailability for the unavailable items, applied on this server at once."""
    from shared.proto.recserve.v1 import admin_pb2

    await client.admin.SetItemAvailability(
        admin_pb2.SetItemAvailabilityRequest(
            item_ids=[golden.UNAVAILABLE, "new-gone"], available=state
        )
    )
    await running.parts.catalogue.refresh()
    await running.registry.refresh()


async def answer(client: AsyncClient, path: str, fields: dict[str, Any]) -> list[str]:
    request = pb.RecommendRequest(**fields)
    if path == "batch":
        batch = await client.recommender.RecommendBatch(
            pb.RecommendBatchRequest(requests=[request])
        )
        response = batch.responses[0]
    else:
        response = await client.recommender.Recommend(request)
    if path == "explained":
        assert {e.item_id for i in response.items for e in i.explanations} <= set(
            history_of(fields["user_id"])
        ), "explanations are the user's own events"
    return [item.item_id for item in response.items]


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[list, list]]:
    """(path, rule) -> (items without the rule, items with it)."""

    async def collect() -> dict[tuple[str, str], tuple[list, list]]:
        root = tmp_path_factory.mktemp("eligibility")
        with_model = golden.build(root / "model")
        add_new_items(with_model)
        indexed = add_index_version(with_model)
        without_model = golden.build(root / "no-model", with_model=False)
        exploring = with_model.model_copy(
            update={"server": with_model.server.model_copy(update={"exploration_slots": 3})}
        )
        found: dict[tuple[str, str], tuple[list, list]] = {}
        for path in PATHS:
            settings = {"no-model": without_model, "exploration": exploring}.get(path, with_model)
            running = await start_server(settings)
            client = AsyncClient(running.target)
            try:
                if path == "index":
                    await running.registry.activate(indexed, reason="eligibility test")
                    assert running.registry.current.index is not None
                user = "nobody-new" if path in ("popularity", "no-model") else USER
                base: dict[str, Any] = {"user_id": user, "k": 45, "explain": path == "explained"}
                for rule in RULES:
                    fields = {**base, **RULE_FIELDS[rule]}
                    plain = {**base, "allow_seen": True} if rule == "seen" else dict(base)
                    if rule == "availability":  # the same request, the items made available
                        fields["allow_seen"] = plain["allow_seen"] = True
                        await available(running, client, True)
                        without = await answer(client, path, plain)
                        await available(running, client, False)
                        found[(path, rule)] = (without, await answer(client, path, fields))
                        continue
                    found[(path, rule)] = (
                        await answer(client, path, plain),
                        await answer(client, path, fields),
                    )
            finally:
                await client.close()
                await running.stop(0)
        return found

    return asyncio.run(collect())


NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("popularity", "seen"): "a user with no history has seen nothing",
    ("no-model", "seen"): "a user with no history has seen nothing",
}


def seen_by(path: str) -> set[str]:
    return set() if path in ("popularity", "no-model") else set(history_of(USER))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("path", PATHS)
def test_every_path_keeps_every_rule(answers, path: str, rule: str) -> None:
    without, with_rule = answers[(path, rule)]
    seen = seen_by(path)
    assert violations(rule, with_rule, seen) == [], (path, rule, with_rule)
    if (path, rule) in NOT_APPLICABLE:
        return
    assert violations(rule, without, seen), f"{path}/{rule}: the rule had nothing to remove"
    if path == "exploration":
        new = [i for i in with_rule if i in NEW_ITEMS]
        plain_new = [i for i in without if i in NEW_ITEMS]
        assert plain_new, "the exploration slot placed new items"
        assert all(not violations(rule, [i], seen) for i in new)


def test_the_index_and_the_full_ranking_agree_without_rules(answers) -> None:
    """A one-list index searches exactly: its answers equal the full ranking's."""
    for rule in RULES:
        assert answers[("index", rule)][1] == answers[("model", rule)][1], rule
