"""Online metrics: how the served lists did, per model version and experiment arm.

From the impression log and the feedback of the last ``window_hours``:

- impressions: lists served (with at least one item);
- CTR: share of impressions that at least one event named (Event.recommendation_id),
  counting an event only when its user is the impression's user and its item was in
  the list (so an event cannot claim someone else's list, nor a list it was not about);
- hit rate: share of impressions whose user acted on one of the listed items after it
  was served, whether or not the event named the list (so clients that do not send
  recommendation_id are measured too);
- attributed share: share of the window's events that named a logged impression and
  match it as above;
- for a shadow candidate (arm "shadow"): the requests it ranked, the mean overlap of its
  lists with the served ones, and its median time to rank.

Run by the workers every ``worker.online_metrics_every_s`` (beat), or at once by
`recserve experiment measure`; each run appends one OnlineMetric row per (version, arm),
which ModelAdmin.GetExperiment and the console show.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np

from shared.config import Settings
from shared.storage import event_store, impression_store
from shared.storage.engine import engine_for, session_scope
from shared.storage.tables import Impression, OnlineMetric, as_utc, utcnow

SHADOW_ARM = "shadow"
CLOCK_SLACK_S = 2.0
"""An event counts as after an impression from this long before it: the client's clock
(and timestamp_ms's millisecond resolution) against the server's."""


def compute_online_metrics(settings: Settings, *, window_hours: float = 24.0) -> list[OnlineMetric]:
    now = utcnow()
    since = now - timedelta(hours=window_hours)
    engine = engine_for(settings)
    try:
        with session_scope(engine) as session:
            impressions = impression_store.impressions_since(session, since=since)
            events = event_store.received_since(session, since=since)
            rows = summarize(impressions, events, window_hours)
            for row in rows:
                row.computed_at = now
                session.add(row)
            session.flush()
            for row in rows:
                session.refresh(row)
                session.expunge(row)
        return rows
    finally:
        engine.dispose()


def attributed_clicks(
    impressions: Sequence[Impression], events: Sequence[tuple[str, str, datetime, str | None]]
) -> tuple[float, set[str]]:
    """The share of events attributed to a list (their recommendation id names a list
    served to that user that held that item), and the ids of the lists clicked so."""
    listed_by_id = {imp.recommendation_id: (imp.user_id, set(imp.items)) for imp in impressions}
    attributed = [
        rec
        for user, item, _, rec in events
        if rec
        and (found := listed_by_id.get(rec)) is not None
        and found[0] == user
        and item in found[1]
    ]
    return (len(attributed) / len(events) if events else 0.0), set(attributed)


def summarize(
    impressions: Sequence[Impression],
    events: Sequence[tuple[str, str, datetime, str | None]],
    hours: float,
) -> list[OnlineMetric]:
    """The figures of one window (see the module docstring)."""
    attributed_share, clicked_ids = attributed_clicks(impressions, events)
    acted: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for user, item, when, _ in events:
        acted[user].append((as_utc(when).timestamp(), item))
    for history in acted.values():
        history.sort()
    groups: dict[tuple[int, str], list[tuple[bool, bool]]] = defaultdict(list)
    shadows: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for imp in impressions:
        served = as_utc(imp.served_at).timestamp()
        later = acted.get(imp.user_id, [])
        listed = set(imp.items)
        start = bisect.bisect_left(later, (served - CLOCK_SLACK_S, ""))
        hit = any(item in listed for _, item in later[start:])
        groups[(imp.model_version, imp.arm)].append((imp.recommendation_id in clicked_ids, hit))
        if imp.shadow_version is not None and imp.shadow_overlap is not None:
            shadows[imp.shadow_version].append((imp.shadow_overlap, imp.shadow_ms or 0.0))
    rows = []
    for (version, arm), outcomes in sorted(groups.items()):
        clicked = sum(c for c, _ in outcomes)
        rows.append(
            OnlineMetric(
                model_version=version,
                arm=arm,
                window_hours=hours,
                impressions=len(outcomes),
                clicked=clicked,
                ctr=clicked / len(outcomes),
                hit_rate=sum(h for _, h in outcomes) / len(outcomes),
                attributed_share=attributed_share,
            )
        )
    for version, results in sorted(shadows.items()):
        overlaps, times = zip(*results, strict=True)
        rows.append(
            OnlineMetric(
                model_version=version,
                arm=SHADOW_ARM,
                window_hours=hours,
                impressions=0,
                clicked=0,
                ctr=0.0,
                hit_rate=0.0,
                attributed_share=attributed_share,
                shadow_requests=len(results),
                shadow_overlap=float(np.mean(overlaps)),
                shadow_p50_ms=float(np.median(times)),
            )
        )
    return rows
