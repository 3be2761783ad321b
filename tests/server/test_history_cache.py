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


async def test_an_expired_history_is_revalidated_by_a_count_and_read_only_when_changed(
    settings,
) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    from shared import crud
    from shared.db import make_engine, session_scope
    from shared.ingest import EventRow

    engine = make_engine(settings.db_url)
    with ThreadPoolExecutor(2) as pool:
        cache = HistoryCache(engine, pool, max_users=10, ttl_s=0.05)
        reads = []
        read = cache._read
        cache._read = lambda user: reads.append(user) or read(user)  # type: ignore[method-assign]
        items, version = await cache.get_versioned("u00001")
        assert items and len(reads) == 1
        await asyncio.sleep(0.06)
        assert not cache.is_cached("u00001"), "expired"
        again, same = await cache.get_versioned("u00001")
        assert (again, same) == (items, version), "unchanged: the same version"
        assert len(reads) == 1, "a count, not a read"
        with session_scope(engine) as session:  # a writer this cache never hears of
            crud.insert_events(
                session,
                events=[
                    EventRow("elsewhere-1", "u00001", "i000-002", "click", 1.0, datetime.now(UTC))
                ],
            )
        await asyncio.sleep(0.06)
        changed, newer = await cache.get_versioned("u00001")
        assert len(reads) == 2 and newer != version
        assert changed[-1] == "i000-002"
    engine.dispose()


async def test_an_expired_history_is_served_while_the_database_is_unreachable(settings) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from shared.db import make_engine
    from shared.errors import DatabaseUnavailable

    engine = make_engine(settings.db_url)
    with ThreadPoolExecutor(2) as pool:
        cache = HistoryCache(engine, pool, max_users=10, ttl_s=0.05)
        items, version = await cache.get_versioned("u00002")
        await asyncio.sleep(0.06)

        def down(user_id: str) -> int:
            raise DatabaseUnavailable("the database is unavailable right now; retry the call")

        cache._count = down  # type: ignore[method-assign]
        assert await cache.get_versioned("u00002") == (items, version)
        assert not cache.is_cached("u00002"), "still due for revalidation"
    engine.dispose()
