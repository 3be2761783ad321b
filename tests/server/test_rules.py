"""Business rules over gRPC on real servers: rule sets put, listed and deleted through
ModelAdmin, applied to Recommend (caps, pins, boosts) with their effects under explain
and in the impression log, a request's own boost and bury, and a change reaching another
replica within 2 seconds on SQLite (polled) and PostgreSQL (NOTIFY)."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from sqlmodel import select

from shared.proto.recserve.v1 import admin_pb2
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage.engine import make_engine, session_scope
from shared.storage.tables import Impression
from tests.support.replicas import two_replicas
from tests.support.waits import eventually

USER = "u00005"


def rule(kind: str, **fields: object) -> admin_pb2.Rule:
    return admin_pb2.Rule(kind=kind, **fields)  # type: ignore[arg-type]


async def branded(client, items: list[str]) -> dict[str, str]:
    """Gives the items alternating brands (a property, so also the label brand:x)."""
    brands = {item: "ab"[n % 2] for n, item in enumerate(items)}
    await client.admin.UpsertItems(
        admin_pb2.UpsertItemsRequest(
            items=[
                admin_pb2.CatalogueItem(
                    item_id=item, title=item, available=True, labels=[f"brand:{brand}"]
                )
                for item, brand in brands.items()
            ]
        )
    )
    return brands


async def test_rule_sets_steer_recommend_and_are_audited(client, server) -> None:
    plain = await client.recommender.Recommend(pb.RecommendRequest(user_id=USER, k=8))
    ranked = [i.item_id for i in plain.items]
    listed = await client.admin.ListItems(admin_pb2.ListItemsRequest(limit=1000))
    everything = sorted({i.item_id for i in listed.items} | set(ranked))
    brands = await branded(client, everything)
    tail = next(item for item in everything if item not in ranked)  # not in the plain top 8
    put = await client.admin.PutRuleSet(
        admin_pb2.PutRuleSetRequest(
            rule_set=admin_pb2.RuleSet(
                name="shelf",
                description="one per brand, a sponsored item first",
                rules=[
                    rule("cap", label="brand:*", max_items=2),
                    rule("pin", item_id=tail, slot=1),
                ],
            )
        )
    )
    assert put.active and put.updated_by and put.updated_ms > 0
    steered = await client.recommender.Recommend(
        pb.RecommendRequest(user_id=USER, k=5, explain=True)
    )
    items = [i.item_id for i in steered.items]
    assert items[0] == tail, items
    assert [e.effect for e in steered.items[0].rules] == ["pinned at 1"]
    assert steered.items[0].rules[0].source == "rule set shelf"
    assert steered.items[0].rules[0].rule == f"pin {tail} at 1"
    for brand in "ab":
        assert sum(brands[i] == brand for i in items[1:]) <= 2, (items, brands)
    # The audit: the impression records which rule moved which item.
    await server.parts.impressions.flush()
    engine = make_engine(server.admin.settings.db_url)
    with session_scope(engine) as s:
        row = s.exec(
            select(Impression).where(Impression.recommendation_id == steered.recommendation_id)
        ).one()
        audit = list(row.rules or [])
    engine.dispose()
    assert {"item_id": tail, "rule": f"pin {tail} at 1", "source": "rule set shelf",
            "effect": "pinned at 1"} in audit  # fmt: skip
    assert any(e["effect"] == "left out" and e["rule"] == "cap brand:* 2" for e in audit), audit

    # A request can skip the rule sets; its own bury still applies.
    top_brand = brands[ranked[0]]
    own = await client.recommender.Recommend(
        pb.RecommendRequest(
            user_id=USER, k=5, skip_rule_sets=True, explain=True,
            bury=[pb.LabelFactor(label=f"brand:{top_brand}", factor=0.01)],
        )
    )  # fmt: skip
    assert tail not in [i.item_id for i in own.items]
    assert own.items[0].item_id != ranked[0]
    buried = [i for i in own.items if i.rules]
    assert all(r.effect == "buried" and r.source == "request" for i in buried for r in i.rules)

    listed_sets = await client.admin.ListRuleSets(admin_pb2.ListRuleSetsRequest())
    assert [(r.name, r.active, len(r.rules)) for r in listed_sets.rule_sets] == [("shelf", True, 2)]
    await client.admin.DeleteRuleSet(admin_pb2.DeleteRuleSetRequest(name="shelf"))
    back = await client.recommender.Recommend(pb.RecommendRequest(user_id=USER, k=8))
    assert [i.item_id for i in back.items] == ranked
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await client.admin.DeleteRuleSet(admin_pb2.DeleteRuleSetRequest(name="shelf"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ([rule("boost", label="promo", factor=0.5)], "rules[0].factor"),
        ([rule("pin", item_id="x", slot=1), rule("pin", item_id="y", slot=1)], "rules[1].slot"),
        ([rule("cap", label="brand:*", max_items=0)], "rules[0].max_items"),
    ],
)
async def test_a_bad_rule_set_is_refused_naming_the_field(client, rules, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.admin.PutRuleSet(
            admin_pb2.PutRuleSetRequest(rule_set=admin_pb2.RuleSet(name="bad", rules=rules))
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as bad_request:
        await client.recommender.Recommend(
            pb.RecommendRequest(user_id=USER, boost=[pb.LabelFactor(label="x", factor=500)])
        )
    assert "boost[0].factor" in (bad_request.value.details() or "")


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
async def test_a_rule_set_reaches_another_replica_within_two_seconds(
    request: pytest.FixtureRequest, tmp_path: Path, engine_name: str
) -> None:
    """Two replicas on one database, no model (the popularity fallback): a pin put
    through A is served by B within 2 s, and so is its deletion."""
    async with two_replicas(request, tmp_path, engine_name) as (_, _, client_a, client_b):
        first = await client_b.recommender.Recommend(pb.RecommendRequest(user_id="new", k=3))
        assert first.source == pb.SOURCE_POPULARITY_FALLBACK
        plain = [i.item_id for i in first.items]
        target = "item-pinned"
        sponsored = admin_pb2.RuleSet(name="sponsor", rules=[rule("pin", item_id=target, slot=1)])
        await client_a.admin.PutRuleSet(admin_pb2.PutRuleSetRequest(rule_set=sponsored))
        put_at = time.monotonic()

        async def b_serves(first_item: str) -> bool:
            answer = await client_b.recommender.Recommend(pb.RecommendRequest(user_id="new", k=3))
            return bool(answer.items) and answer.items[0].item_id == first_item

        await eventually(lambda: b_serves(target), "B serves the pin", timeout=2.0, every=0.02)
        lag = time.monotonic() - put_at
        await client_a.admin.DeleteRuleSet(admin_pb2.DeleteRuleSetRequest(name="sponsor"))
        await eventually(lambda: b_serves(plain[0]), "B drops the pin", timeout=2.0, every=0.02)
        print(f"rule set change on the other replica ({engine_name}): {lag * 1000:.0f} ms")
