"""Rule sets in the database: put (created, then replaced), listed by name, deleted, and
each change recorded for the replicas that poll; SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.model.rules import Rule, RuleSet
from shared.storage import change_feed, rule_store
from shared.storage.engine import session_scope
from shared.storage.tables import utcnow


def test_rule_sets_round_trip_and_every_change_is_recorded(both_engines) -> None:
    engine = both_engines
    start = datetime(2026, 12, 24, tzinfo=UTC)
    sale = RuleSet(
        "sale",
        (Rule("boost", label="promo", factor=2.5), Rule("cap", label="brand:*", max_items=2),
         Rule("pin", item_id="sku-1", slot=3), Rule("bury", label="clearance", factor=0.2)),
        active_from=start,
        active_until=start + timedelta(days=2),
        description="Christmas",
    )  # fmt: skip
    with session_scope(engine) as s:
        before = change_feed.latest_change(s)
        stored, created = rule_store.put_rule_set(s, rule_set=sale, by="ops", origin="r1")
        assert created and stored.updated_by == "ops"
        rule_store.put_rule_set(
            s, rule_set=RuleSet("a-first", sale.rules[:1]), by="ops", origin="r1"
        )
    with session_scope(engine) as s:
        found = rule_store.list_rule_sets(s)
        assert [r.name for r in found] == ["a-first", "sale"]
        again = found[1]
        assert again.rules == sale.rules and again.description == "Christmas"
        assert again.active_from == start and again.active_until == start + timedelta(days=2)
        assert not again.active(utcnow()) and again.active(start + timedelta(hours=1))
        replaced, created = rule_store.put_rule_set(
            s, rule_set=RuleSet("sale", sale.rules[:2]), by="other", origin="r2"
        )
        assert not created and len(replaced.rules) == 2 and replaced.active_from is None
    with session_scope(engine) as s:
        assert rule_store.delete_rule_set(s, name="sale", origin="r2")
        assert not rule_store.delete_rule_set(s, name="sale", origin="r2")
        assert rule_store.count_rule_sets(s) == 1
    with session_scope(engine) as s:
        changes = change_feed.changes_after(s, after=before, limit=100)
    assert [(topic, subject, origin) for _, topic, subject, origin in changes] == [
        ("rules", "sale", "r1"),
        ("rules", "a-first", "r1"),
        ("rules", "sale", "r2"),
        ("rules", "sale", "r2"),
    ]
    with session_scope(engine) as s:
        assert change_feed.latest_change(s) == changes[-1][0]
        assert change_feed.delete_changes_before(s, before=utcnow() + timedelta(seconds=1)) == 4
