"""Experiments: the traffic split, the shadow and the online metrics per arm."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete
from sqlmodel import Session, col, select

from shared.storage.tables import (
    OnlineMetric,
    TrafficArm,
)


def traffic_arms(session: Session) -> list[TrafficArm]:
    """The split's arms (by version), then the shadow if there is one."""
    rows = session.exec(select(TrafficArm).order_by(col(TrafficArm.version))).all()
    return [r for r in rows if not r.shadow] + [r for r in rows if r.shadow]


def set_traffic_arms(session: Session, *, arms: Sequence[TrafficArm]) -> None:
    """Replaces the split (and the shadow) in one transaction."""
    session.execute(delete(TrafficArm))
    for arm in arms:
        session.add(TrafficArm(version=arm.version, weight=arm.weight, shadow=arm.shadow))


def latest_online_metrics(session: Session) -> list[OnlineMetric]:
    """The newest row per (model version, arm)."""
    rows = session.exec(select(OnlineMetric).order_by(col(OnlineMetric.id).desc()).limit(500))
    newest: dict[tuple[int, str], OnlineMetric] = {}
    for row in rows.all():
        newest.setdefault((row.model_version, row.arm), row)
    return sorted(newest.values(), key=lambda r: (r.arm == "", r.model_version, r.arm))
