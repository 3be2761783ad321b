"""Business rules in the rank stage, alone: a fake model and catalogue, an injected clock;
no database, no sockets, no sleeps (the unit layer)."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from server.pipeline.eligibility import Eligible
from server.pipeline.encoder import Encoding
from server.pipeline.explore import ExplorationSlots
from server.pipeline.rank import Ranker
from server.pipeline.request import Recommendation, RecommendQuery
from server.pipeline.rules import RuleBook, Steering
from server.pipeline.validate import validate_query
from shared.config import ServerSettings
from shared.model.rules import Effect, Rule, RuleSet, Sourced, audit_json, check_rule_set
from shared.wire.errors import InvalidArgument

pytestmark = pytest.mark.unit

VOCAB = [f"i{n}" for n in range(1, 13)]  # model rows 1..12; row 0 is padding
BRAND = {**{f"i{n}": "a" for n in (1, 2, 3, 4)}, **{f"i{n}": "b" for n in (5, 6, 7)}}
LABELS: dict[str, frozenset[str]] = {
    item: frozenset(
        ({f"brand:{BRAND[item]}"} if item in BRAND else set())
        | ({"clearance"} if item in ("i1", "i8") else set())
        | ({"promo"} if item in ("i11", "i12") else set())
    )
    for item in VOCAB
}
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class FakeCatalogue:
    def __init__(self) -> None:
        self.snapshot = SimpleNamespace(labels=LABELS)
        self.prepared: list[str] = []

    def has_labels(self, item_id: str, include: frozenset[str], exclude: frozenset[str]) -> bool:
        labels = LABELS.get(item_id, frozenset())
        return (not include or bool(labels & include)) and not labels & exclude

    def label_rows(self, version: int, rows: dict[str, int], label: str) -> np.ndarray:
        return np.asarray([rows[i] for i in VOCAB if label in LABELS[i]], np.int64)

    async def prepare_labels(self, version: int, rows: dict[str, int], labels: list[str]) -> None:
        self.prepared.extend(labels)


def fake_model(logits: np.ndarray | None = None) -> Any:
    rows = {item: n + 1 for n, item in enumerate(VOCAB)}
    embeddings = np.zeros((len(VOCAB) + 1, 1), np.float32)
    if logits is None:
        logits = np.arange(len(VOCAB), 0, -1, dtype=np.float32)  # i1 highest, i12 lowest
    embeddings[1:, 0] = logits
    return SimpleNamespace(
        rows=rows,
        version=3,
        unavailable_rows=np.zeros(0, np.int64),
        bundle=SimpleNamespace(vocab=VOCAB, item_embeddings=embeddings),
        popularity=np.arange(len(VOCAB) + 1, dtype=np.float32),  # i12 most popular
        index=None,
        log_share=np.zeros(len(VOCAB) + 1, np.float32),
    )


def book(*sets: RuleSet, now: datetime = NOW) -> RuleBook:
    rules = RuleBook(None, None, FakeCatalogue(), clock=lambda: now)  # type: ignore[arg-type]
    rules.sets = tuple(sets)
    return rules


def ranker() -> Ranker:
    fallback = SimpleNamespace(items=[(i, float(13 - n)) for n, i in enumerate(VOCAB)])
    return Ranker(ServerSettings(), SimpleNamespace(fallback=fallback))  # type: ignore[arg-type]


def serve(
    query: RecommendQuery, rules: RuleBook, *, model: Any = None, seen: tuple[str, ...] = ()
) -> tuple[list[tuple[str, float]], Steering | None]:
    """The model path of the rank stage, pins included, as RecommendService runs it."""
    model = model or fake_model()
    eligible = Eligible(query, seen, set(), FakeCatalogue())  # type: ignore[arg-type]
    steer = rules.plan(query)
    seen_rows = np.asarray([model.rows[i] for i in seen], np.int64)
    encoding = Encoding(np.ones(1, np.float32), None, seen_rows)
    ranked = ranker().by_model(model, encoding, eligible, query.k, steer)
    if steer is not None:
        ranked = steer.pin(ranked, query.k, eligible.allows)
    return ranked, steer


def names(ranked: list[tuple[str, float]]) -> list[str]:
    return [item for item, _ in ranked]


def test_no_rule_leaves_the_ranking_alone() -> None:
    query = RecommendQuery(user_id="u", k=5)
    ranked, steer = serve(query, book())
    assert steer is None and names(ranked) == ["i1", "i2", "i3", "i4", "i5"]


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_factor_multiplies_the_odds_against_every_other_candidate(sign: float) -> None:
    """log(factor) is added to the logit, so the probability ratio of a boosted item to
    any other candidate under the softmax is multiplied by the factor, whatever the sign
    of the raw scores; x1.3 always helps and x0.5 always hurts."""
    logits = sign * np.linspace(0.5, 6.0, len(VOCAB)).astype(np.float32)[::-1]
    model = fake_model(logits)
    plain, _ = serve(RecommendQuery(user_id="u", k=len(VOCAB)), book(), model=model)
    boosted, steer = serve(
        RecommendQuery(
            user_id="u", k=len(VOCAB), boost=[("promo", 1.3)], bury=[("clearance", 0.5)]
        ),
        book(),
        model=model,
    )
    before, after = dict(plain), dict(boosted)
    for item in VOCAB:
        ratio = math.exp(after[item] - after["i5"]) / math.exp(before[item] - before["i5"])
        want = 1.3 if "promo" in LABELS[item] else 0.5 if "clearance" in LABELS[item] else 1.0
        assert ratio == pytest.approx(want, rel=1e-4), item
    assert names(boosted).index("i11") <= names(plain).index("i11")
    assert names(boosted).index("i1") >= names(plain).index("i1")
    assert steer is not None
    effects = {(e.item_id, e.effect) for e in steer.effects}
    assert ("i11", "boosted") in effects and ("i1", "buried") in effects


def test_a_big_boost_lifts_an_item_from_the_bottom_and_is_audited() -> None:
    query = RecommendQuery(user_id="u", k=3, boost=[("promo", 100.0)])
    ranked, steer = serve(query, book())
    # i11 and i12 trail i1 by 10 and 11 logits; log(100) = 4.6 is not enough for that...
    assert "i11" not in names(ranked)
    close = fake_model(
        np.asarray([3, 2.9, 2.8, 2.7, 2.6, 2.5, 2.4, 2.3, 2.2, 2.1, 2.0, 1.9], np.float32)
    )
    ranked, steer = serve(query, book(), model=close)
    # ...but on close scores it lifts both promoted items to the top.
    assert names(ranked)[:2] == ["i11", "i12"]
    assert steer is not None
    assert {
        "item_id": "i11",
        "rule": "boost promo x100",
        "source": "request",
        "effect": "boosted",
    } in [e.to_json() for e in steer.effects]
    # The impression writer's encoding is the same JSON as the objects'.
    assert json.loads(audit_json(steer.effects)) == [e.to_json() for e in steer.effects]


def test_caps_per_value_then_pins_in_that_order() -> None:
    rules = book(
        RuleSet(
            "shelf", (Rule("cap", label="brand:*", max_items=2), Rule("pin", item_id="i9", slot=1))
        )
    )
    ranked, steer = serve(RecommendQuery(user_id="u", k=6), rules)
    # Two of brand a (i1, i2), two of brand b (i5, i6), then unbranded; i9 pinned first.
    assert names(ranked) == ["i9", "i1", "i2", "i5", "i6", "i8"]
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True), "a pinned item takes its place's score"
    assert steer is not None
    left_out = {e.item_id for e in steer.effects if e.effect == "left out"}
    assert left_out == {"i3", "i4", "i7"}
    assert {
        "item_id": "i9",
        "rule": "pin i9 at 1",
        "source": "rule set shelf",
        "effect": "pinned at 1",
    } in [e.to_json() for e in steer.effects]


def test_a_cap_on_one_label_and_a_pin_that_exceeds_it() -> None:
    rules = book(
        RuleSet("x", (Rule("cap", label="brand:a", max_items=1), Rule("pin", item_id="i3", slot=2)))
    )
    ranked, _ = serve(RecommendQuery(user_id="u", k=4), rules)
    assert names(ranked) == ["i1", "i3", "i5", "i6"]  # the pin comes after the cap


def test_a_pin_never_places_an_ineligible_item() -> None:
    rules = book(
        RuleSet("x", (Rule("pin", item_id="i9", slot=1), Rule("pin", item_id="i4", slot=2)))
    )
    query = RecommendQuery(user_id="u", k=3, exclude_item_ids=["i9"])
    ranked, _ = serve(query, rules, seen=("i4",))
    assert names(ranked) == ["i1", "i2", "i3"]
    ranked, _ = serve(RecommendQuery(user_id="u", k=3), rules)
    assert names(ranked) == ["i9", "i4", "i1"]


def test_a_short_list_closes_up_behind_its_pins() -> None:
    rules = book(RuleSet("x", (Rule("pin", item_id="i9", slot=5),)))
    query = RecommendQuery(user_id="u", k=10, candidate_item_ids=["i1", "i2", "i9"])
    ranked, _ = serve(query, rules)
    assert names(ranked) == ["i1", "i2", "i9"]


def test_rules_never_return_an_ineligible_item() -> None:
    """Random rule sets against random eligibility: every returned item is one the
    eligibility rule allows, and nothing is returned twice."""
    rng = random.Random(7)
    labels = ["brand:a", "brand:b", "clearance", "promo"]
    for _ in range(300):
        rule_list = []
        for _ in range(rng.randint(1, 6)):
            kind = rng.choice(["boost", "bury", "cap", "pin"])
            if kind == "boost":
                rule_list.append(
                    Rule(kind, label=rng.choice(labels), factor=rng.uniform(1.01, 100))
                )
            elif kind == "bury":
                rule_list.append(
                    Rule(kind, label=rng.choice(labels), factor=rng.uniform(0.01, 0.99))
                )
            elif kind == "cap":
                rule_list.append(
                    Rule(kind, label=rng.choice([*labels, "brand:*"]), max_items=rng.randint(1, 3))
                )
            else:
                rule_list.append(Rule(kind, item_id=rng.choice(VOCAB), slot=rng.randint(1, 6)))
        query = RecommendQuery(
            user_id="u",
            k=rng.randint(1, 8),
            exclude_item_ids=rng.sample(VOCAB, rng.randint(0, 3)),
            candidate_item_ids=rng.sample(VOCAB, rng.randint(0, 8)) if rng.random() < 0.3 else [],
            exclude_labels=["clearance"] if rng.random() < 0.3 else [],
            include_labels=["brand:a", "promo"] if rng.random() < 0.2 else [],
        )
        seen = tuple(rng.sample(VOCAB, rng.randint(0, 3)))
        ranked, _ = serve(query, book(RuleSet("r", tuple(rule_list))), seen=seen)
        eligible = Eligible(query, seen, set(), FakeCatalogue())  # type: ignore[arg-type]
        assert all(eligible.allows(item) for item in names(ranked)), (rule_list, query, ranked)
        assert len(set(names(ranked))) == len(ranked) <= query.k


def test_popularity_shares_are_multiplied_by_the_factor() -> None:
    query = RecommendQuery(user_id="u", k=3, boost=[("brand:a", 4.0)])
    rules = book()
    model = fake_model()
    eligible = Eligible(query, (), set(), FakeCatalogue())  # type: ignore[arg-type]
    steer = rules.plan(query)
    popular = ranker().by_popularity(model, eligible, 3, steer)
    # counts: i12 12, i11 11, i10 10 ... i4 4 x 4 = 16, i3 12: brand a now leads.
    assert popular[0] == ("i4", 16.0) and names(popular) == ["i4", "i12", "i3"]
    fallback = ranker().without_model(eligible, 3, rules.plan(query))
    # The database's popularity: i1 13 ... x4 for brand a.
    assert names(fallback) == ["i1", "i2", "i3"] and fallback[0][1] == 52.0


def test_a_schedule_is_read_at_request_time() -> None:
    later = RuleSet(
        "sale",
        (Rule("pin", item_id="i12", slot=1),),
        active_from=NOW + timedelta(hours=1),
        active_until=NOW + timedelta(hours=2),
    )
    query = RecommendQuery(user_id="u", k=2)
    assert book(later).plan(query) is None
    ranked, _ = serve(query, book(later, now=NOW + timedelta(hours=1)))
    assert names(ranked) == ["i12", "i1"]
    assert book(later, now=NOW + timedelta(hours=2)).plan(query) is None, "until is exclusive"


def test_a_request_can_skip_the_rule_sets_but_not_its_own_rules() -> None:
    rules = book(RuleSet("x", (Rule("pin", item_id="i12", slot=1),)))
    query = RecommendQuery(user_id="u", k=2, skip_rule_sets=True)
    assert rules.plan(query) is None
    steer = rules.plan(
        RecommendQuery(user_id="u", k=2, skip_rule_sets=True, bury=[("brand:a", 0.5)])
    )
    assert steer is not None and not steer.plan.pins and len(steer.plan.factors) == 1


async def test_the_boosted_labels_are_prepared_off_the_loop() -> None:
    catalogue = FakeCatalogue()
    rules = RuleBook(None, None, catalogue, clock=lambda: NOW)  # type: ignore[arg-type]
    steer = rules.plan(
        RecommendQuery(user_id="u", boost=[("promo", 2.0)], bury=[("clearance", 0.5)])
    )
    assert steer is not None
    await steer.prepare(fake_model())
    assert catalogue.prepared == ["promo", "clearance"]


async def test_exploration_slots_go_around_pins() -> None:
    catalogue = SimpleNamespace(new_items=lambda version, rows: _new(["n1"]))
    registry = SimpleNamespace(loaded=lambda version: fake_model())
    slots = ExplorationSlots(1, catalogue, registry)  # type: ignore[arg-type]
    result = Recommendation([("i1", 3.0), ("i2", 2.0), ("i9", 1.0)], 3, "model")
    pin = Sourced(Rule("pin", item_id="i9", slot=3), "rule set x", "pin i9 at 3")
    result.rule_effects = [Effect("i9", pin, "pinned at 3")]
    eligible = Eligible(RecommendQuery(user_id="u", k=3), (), set(), FakeCatalogue())  # type: ignore[arg-type]
    await slots.place(result, eligible, 3)
    assert result.items == [("i1", 3.0), ("n1", 2.0), ("i9", 1.0)] and result.explored == {"n1"}


async def _new(items: list[str]) -> list[str]:
    return items


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"boost": [("promo", 1.0)]}, "boost[0].factor"),
        ({"boost": [("promo", 101.0)]}, "boost[0].factor"),
        ({"bury": [("promo", 0.005)]}, "bury[0].factor"),
        ({"bury": [("promo", float("nan"))]}, "bury[0].factor"),
        ({"bury": [("", 0.5)]}, "bury[0].label"),
        ({"boost": [("brand:*", 2.0)]}, "boost[0].label"),
        ({"boost": [("promo", 2.0)] * 11, "bury": [("x", 0.5)] * 10}, "boost"),
    ],
)
def test_a_bad_request_rule_names_its_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_query(ServerSettings(), RecommendQuery(user_id="u", **fields))
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("rule_set", "field"),
    [
        (RuleSet("bad name!", (Rule("pin", item_id="a", slot=1),)), "name"),
        (RuleSet("x", ()), "rules"),
        (RuleSet("x", (Rule("shove", label="a"),)), "rules[0].kind"),
        (RuleSet("x", (Rule("cap", label="brand:*", max_items=0),)), "rules[0].max_items"),
        (
            RuleSet("x", (Rule("pin", item_id="a", slot=1), Rule("pin", item_id="b", slot=1))),
            "rules[1].slot",
        ),
        (RuleSet("x", (Rule("pin", item_id="a", slot=0),)), "rules[0].slot"),
        (RuleSet("x", (Rule("bury", label="a", factor=2.0),)), "rules[0].factor"),
        (RuleSet("x", tuple(Rule("boost", label="a", factor=2.0) for _ in range(201))), "rules"),
        (
            RuleSet("x", (Rule("pin", item_id="a", slot=1),), active_from=NOW, active_until=NOW),
            "active_until",
        ),
    ],
)
def test_a_bad_rule_set_names_its_field(rule_set: RuleSet, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_rule_set(rule_set)
    assert caught.value.field == field
