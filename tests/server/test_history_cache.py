"""The per-user history cache keeps order and size, and stays out of the collector's way."""

from __future__ import annotations

import gc

from server.history import HISTORY_KEEP, HistoryCache


def _cache() -> HistoryCache:
    return HistoryCache(None, None, max_bytes=2**20, ttl_s=0)  # type: ignore[arg-type]


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


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def test_an_expired_history_is_revalidated_by_a_count_and_read_only_when_changed(
    settings,
) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    from shared.storage import event_store
    from shared.storage.engine import make_engine, session_scope
    from shared.storage.ingest import EventRow

    engine = make_engine(settings.db_url)
    with ThreadPoolExecutor(2) as pool:
        clock = FakeClock()
        cache = HistoryCache(engine, pool, max_bytes=2**20, ttl_s=0.05, clock=clock)
        reads = []
        read = cache._read
        cache._read = lambda user: reads.append(user) or read(user)  # type: ignore[method-assign]
        items, version = await cache.get_versioned("u00001")
        assert items and len(reads) == 1
        clock.advance(0.06)
        assert not cache.is_cached("u00001"), "expired"
        again, same = await cache.get_versioned("u00001")
        assert (again, same) == (items, version), "unchanged: the same version"
        assert len(reads) == 1, "a count, not a read"
        with session_scope(engine) as session:  # a writer this cache never hears of
            event_store.insert_events(
                session,
                events=[
                    EventRow("elsewhere-1", "u00001", "i000-002", "click", 1.0, datetime.now(UTC))
                ],
            )
        clock.advance(0.06)
        changed, newer = await cache.get_versioned("u00001")
        assert len(reads) == 2 and newer != version
        assert changed[-1] == "i000-002"
    engine.dispose()


async def test_an_expired_history_is_served_while_the_database_is_unreachable(settings) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from shared.storage.engine import make_engine
    from shared.wire.errors import DatabaseUnavailable

    engine = make_engine(settings.db_url)
    with ThreadPoolExecutor(2) as pool:
        clock = FakeClock()
        cache = HistoryCache(engine, pool, max_bytes=2**20, ttl_s=0.05, clock=clock)
        items, version = await cache.get_versioned("u00002")
        clock.advance(0.06)

        def down(user_id: str) -> int:
            raise DatabaseUnavailable("the database is unavailable right now; retry the call")

        cache._count = down  # type: ignore[method-assign]
        assert await cache.get_versioned("u00002") == (items, version)
        assert not cache.is_cached("u00002"), "still due for revalidation"
    engine.dispose()


def _events(n: int, tag: str) -> list[tuple[float, str]]:
    return [(float(t), f"{tag}-item-{t:06d}") for t in range(n)]


def test_the_byte_budget_drops_the_least_recently_used() -> None:
    from server.history import history_bytes

    one = history_bytes("user-000", tuple(_events(HISTORY_KEEP, "x")))
    cache = HistoryCache(None, None, max_bytes=3 * one + one // 2, ttl_s=0)  # type: ignore[arg-type]
    for n in range(3):
        cache._store(f"user-{n:03d}", _events(HISTORY_KEEP, f"u{n}"))
    assert cache.peek("user-000") is not None  # used: user-001 is now the least recent
    cache._store("user-003", _events(HISTORY_KEEP, "u3"))
    assert cache.peek("user-001") is None
    assert {u for u in ("user-000", "user-002", "user-003") if cache.peek(u)} == {
        "user-000",
        "user-002",
        "user-003",
    }
    assert cache.nbytes <= 3 * one + one // 2


def test_appends_keep_the_measured_size_exact() -> None:
    from server.history import history_bytes

    cache = _cache()
    cache._store("u", _events(HISTORY_KEEP - 2, "a"))
    for t in range(5):  # grows to the cap, then drops the oldest
        cache.append("u", f"new-{t}", 1e6 + t)
    cache.append("u", "older", 10.5)  # out of order
    cached = cache._cache["u"]
    assert cached.nbytes == history_bytes("u", cached.events) == cache.nbytes


def test_the_measured_size_matches_what_the_allocator_holds() -> None:
    """The budget is memory, not a count: histories read from the database (fresh strings
    per user) take within 25% of what history_bytes says, as tracemalloc sees it."""
    import tracemalloc

    cache = _cache()
    cache._max_bytes = 2**40
    cache._cache = type(cache._cache)(2**40, getsizeof=lambda c: c.nbytes)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(200):
        rows = [(float(t), "".join(["item-", str(n), "-", str(t)])) for t in range(HISTORY_KEEP)]
        cache._store(f"user-{n}", rows)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert 0.75 <= cache.nbytes / held <= 1.25, (cache.nbytes, held)


async def test_negative_events_leave_the_history_and_join_the_negatives(settings) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    from shared.config import EventSettings
    from shared.storage import event_store
    from shared.storage.engine import make_engine, session_scope
    from shared.storage.ingest import EventRow

    events = EventSettings()
    engine = make_engine(settings.db_url)
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        event_store.insert_events(
            session,
            events=[
                EventRow("neg-1", "u00001", "disliked-1", "dislike", 0.0, now),
                EventRow("pos-1", "u00001", "liked-1", "purchase", 0.0, now),
            ],
        )
        pages = event_store.user_event_pages(session, watermark=10**9, negative=events.negative)
        trained = [item for page in pages for user, item in page if user == "u00001"]
    assert "liked-1" in trained and "disliked-1" not in trained, "never a training target"
    with ThreadPoolExecutor(2) as pool:
        cache = HistoryCache(engine, pool, max_bytes=2**20, ttl_s=0, negative=events.negative)
        items = await cache.get("u00001")
        assert "liked-1" in items and "disliked-1" not in items, "not the model's input"
        assert cache.negatives("u00001") == {"disliked-1"}
        _, version = cache.peek("u00001") or ([], 0)
        cache.append("u00001", "disliked-2", now.timestamp(), negative=True)
        assert cache.negatives("u00001") == {"disliked-1", "disliked-2"}
        assert await cache.get("u00001") == items, "the model's input is unchanged"
        assert cache.cached_version("u00001") != version, "but the entry changed"
    engine.dispose()
