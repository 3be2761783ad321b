"""The operator API on experiments: the traffic split, the shadow and promotion of an arm
(a part of AdminService, server/admin.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session

from server.admin_base import AdminBase, check_positive
from shared.storage import experiment_store
from shared.storage.tables import (
    OnlineMetric,
    TrafficArm,
)
from shared.wire.errors import BundleError, FailedPrecondition, InvalidArgument, NotFound


@dataclass
class ExperimentView:
    arms: list[tuple[int, float]]
    shadow_version: int
    shadow_share: float
    metrics: list[OnlineMetric]


class ExperimentAdmin(AdminBase):
    async def set_traffic_split(
        self, arms: Sequence[tuple[int, float]], shadow_version: int, shadow_share: float
    ) -> ExperimentView:
        """Checks every arm (and the shadow), loads each version here (a version that
        does not load is refused, naming its field), then replaces the split."""
        rows: list[TrafficArm] = []
        seen: set[int] = set()
        for i, (version, weight) in enumerate(arms):
            if version < 1 or version in seen:
                raise InvalidArgument(
                    f"arms[{i}].version", f"is {version}; accepted: a model version >= 1, once"
                )
            if not (weight > 0 and math.isfinite(weight)):
                raise InvalidArgument(f"arms[{i}].weight", f"is {weight}; accepted: > 0")
            seen.add(version)
            rows.append(TrafficArm(version=version, weight=weight))
        if len(rows) == 1:
            raise InvalidArgument("arms", "has 1 arm; accepted: none (no split) or 2 or more")
        if shadow_version:
            share = shadow_share or DEFAULT_SHADOW_SHARE
            if shadow_version in seen:
                raise InvalidArgument(
                    "shadow_version", f"is {shadow_version}, an arm; a shadow is never served"
                )
            if not 0 < share <= 1:
                raise InvalidArgument(
                    "shadow_share", f"is {shadow_share}; accepted: 0 < share <= 1"
                )
            rows.append(TrafficArm(version=shadow_version, weight=share, shadow=True))
        for i, row in enumerate(rows):
            where = "shadow_version" if row.shadow else f"arms[{i}].version"
            try:
                await self.registry.load_version(row.version)
            except (NotFound, FailedPrecondition, BundleError) as exc:
                raise InvalidArgument(where, f"cannot be served: {exc}") from exc
        await self._db(lambda s: experiment_store.set_traffic_arms(s, arms=rows))
        await self.registry.refresh()  # this replica now, the others at their poll
        return await self.experiment()

    async def experiment(self) -> ExperimentView:
        def read(session: Session) -> ExperimentView:
            rows = experiment_store.traffic_arms(session)
            shadow = next((r for r in rows if r.shadow), None)
            return ExperimentView(
                [(r.version, r.weight) for r in rows if not r.shadow],
                shadow.version if shadow else 0,
                shadow.weight if shadow else 0.0,
                experiment_store.latest_online_metrics(session),
            )

        return await self._db(read)

    async def promote_arm(self, version: int) -> ExperimentView:
        """Activates ``version`` (checked as ActivateModel), then ends the split."""
        version = check_positive("version", version)
        current = await self.experiment()
        if version not in [v for v, _ in current.arms] and version != current.shadow_version:
            raise InvalidArgument("version", f"is {version}, not an arm of the split or its shadow")
        await self.registry.activate(version, reason="PromoteArm")
        await self._db(lambda s: experiment_store.set_traffic_arms(s, arms=[]))
        await self.registry.refresh()
        return await self.experiment()


DEFAULT_SHADOW_SHARE = 0.1
