"""Business rule sets (shared/model/rules.py): stored by name, each put or deletion
recorded as a change that every replica follows (shared/storage/change_feed.py)."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, col, select

from shared.model.rules import Rule, RuleSet
from shared.storage import change_feed
from shared.storage.tables import RuleSetRow, as_utc, utcnow

TOPIC = "rules"


def _domain(row: RuleSetRow) -> RuleSet:
    return RuleSet(
        name=row.name,
        rules=tuple(Rule.from_json(r) for r in row.rules or ()),
        active_from=as_utc(row.active_from) if row.active_from else None,
        active_until=as_utc(row.active_until) if row.active_until else None,
        updated_at=as_utc(row.updated_at),
        updated_by=row.updated_by,
        description=row.description,
    )


def list_rule_sets(session: Session) -> list[RuleSet]:
    """Every rule set, by name."""
    rows = session.exec(select(RuleSetRow).order_by(col(RuleSetRow.name))).all()
    return [_domain(row) for row in rows]


def count_rule_sets(session: Session) -> int:
    return int(session.exec(select(func.count()).select_from(RuleSetRow)).one())


def put_rule_set(
    session: Session, *, rule_set: RuleSet, by: str, origin: str
) -> tuple[RuleSet, bool]:
    """Creates or replaces the rule set of that name; returns it as stored and whether it
    was created."""
    row = session.get(RuleSetRow, rule_set.name)
    created = row is None
    if row is None:
        row = RuleSetRow(name=rule_set.name)
    row.rules = [rule.to_json() for rule in rule_set.rules]
    row.description = rule_set.description
    row.active_from = rule_set.active_from
    row.active_until = rule_set.active_until
    row.updated_at = utcnow()
    row.updated_by = by
    session.add(row)
    change_feed.record(session, topic=TOPIC, subject=rule_set.name, origin=origin)
    session.flush()
    return _domain(row), created


def delete_rule_set(session: Session, *, name: str, origin: str) -> bool:
    """Deletes the rule set; False when there was none of that name."""
    row = session.get(RuleSetRow, name)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    change_feed.record(session, topic=TOPIC, subject=name, origin=origin)
    return True
