"""The per-user history cache keeps order and size, and stays out of the collector's way."""

from __future__ import annotations

import gc

from server.history import HISTORY_KEEP, HistoryCache


def _cache() -> HistoryCache:
    return HistoryCache(None, None, max_users=10, ttl_s=0)  # type: ignore[arg-type]


def test_appends_keep_time_order_and_the_newest_events() -> None:
    cache = _cache()
    cache._store("u", [(float(t), f"i{t}") for t in range(HISTORY_KEEP)])
    cache.append("u", "late", HISTORY_KEEP + 1.0)
    cache.append("u", "out-of-order", 100.5)  # committed before the one above
    items, version = cache.peek("u") or ([], 0)
    assert len(items) == HISTORY_KEEP and version
    assert items[-1] == "late" and "i0" not in items and "i1" not in items
    assert items.index("out-of-order") == items.index("i100") + 1


def test_a_cached_history_is_untracked_by_the_collector() -> None:
    cache = _cache()
    cache._store("u", [(float(t), f"i{t}") for t in range(50)])
    cache.append("u", "new", 60.0)
    gc.collect()  # untracks the (time, item) tuples
    gc.collect()  # and then the tuple that holds them
    events = cache._cache["u"].events
    # Untracked: a full collection (which stops the event loop) never walks its events.
    assert not gc.is_tracked(events) and not any(gc.is_tracked(e) for e in events)
