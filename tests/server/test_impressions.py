"""The impression log: batched writes, bounded queue, and a refusing database costs
impressions (counted), never requests."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from sqlmodel import select

from server.impressions import ImpressionLog
from shared.storage.engine import session_scope
from shared.storage.tables import Impression


async def test_batches_bound_and_failures(both_engines) -> None:
    engine = both_engines
    executor = ThreadPoolExecutor(1)
    log = ImpressionLog(engine, executor, max_queued=3, flush_s=60)
    ids = [log.new_id() for _ in range(4)]
    assert len(set(ids)) == 4
    assert all(len(rec) == 32 and int(rec, 16) >= 0 for rec in ids), "128 random bits, hex"
    for n, rec in enumerate(ids):
        log.record(rec, f"user-{n}", ["a", "b"], 1, "")
    assert (log.queued, log.dropped) == (3, 1), "the fourth did not fit"
    await log.flush()
    with session_scope(engine) as s:
        rows = s.exec(select(Impression)).all()
        assert sorted(r.recommendation_id for r in rows) == sorted(ids[:3])
        assert all(r.items == ["a", "b"] for r in rows)
    # A batch with one row the database refuses (a repeated id): that row is skipped and
    # counted, the others are stored.
    fresh = [log.new_id(), log.new_id()]
    log.record(fresh[0], "user-5", ["c"], 1, "")
    log.record(ids[0], "user-0", ["c"], 1, "")
    log.record(fresh[1], "user-6", ["d"], 1, "")
    await log.flush()
    assert (log.written, log.dropped) == (5, 2)
    with session_scope(engine) as s:
        stored = {r.recommendation_id for r in s.exec(select(Impression)).all()}
    assert stored == {*ids[:3], *fresh}
    executor.shutdown()


async def test_written_once_enough_rows_wait_or_at_the_time_bound(tmp_path) -> None:
    """flush_rows lists are written at once; fewer wait for flush_s at most."""
    from shared.storage.engine import make_engine, migrate

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    engine = make_engine(url)
    executor = ThreadPoolExecutor(1)

    def stored() -> int:
        with session_scope(engine) as s:
            return len(s.exec(select(Impression)).all())

    async def until(count: int, deadline_s: float) -> float:
        started = loop.time()
        while stored() < count:
            assert loop.time() - started < deadline_s, f"{stored()} of {count} written"
            await asyncio.sleep(0.01)
        return loop.time() - started

    loop = asyncio.get_running_loop()
    by_rows = ImpressionLog(engine, executor, max_queued=100, flush_s=60, flush_rows=3)
    by_rows.start()
    for n in range(3):
        by_rows.record(by_rows.new_id(), f"user-{n}", ["a"], 1, "")
    await until(3, deadline_s=5)  # long before the 60 s bound
    by_rows.record(by_rows.new_id(), "user-3", ["a"], 1, "")
    await asyncio.sleep(0.2)
    assert stored() == 3, "one list waits for the time bound"
    await by_rows.close()
    by_time = ImpressionLog(engine, executor, max_queued=100, flush_s=0.3, flush_rows=100)
    by_time.start()
    by_time.record(by_time.new_id(), "user-5", ["a"], 1, "")
    assert await until(5, deadline_s=5) >= 0.0
    await by_time.close()
    executor.shutdown()
    engine.dispose()


def test_ctr_counts_only_events_that_match_their_impression() -> None:
    """An event naming a list counts toward CTR only from that list's user, on one of
    its items: a client cannot claim another user's list, nor an item it never showed."""
    from datetime import timedelta

    from shared.storage.tables import utcnow
    from worker.online import summarize

    served = utcnow() - timedelta(minutes=5)
    impressions = [
        Impression(recommendation_id=f"r{n}", user_id=f"u{n}", items=["a", "b"],
                   model_version=1, arm="", served_at=served)
        for n in range(4)
    ]  # fmt: skip
    later = served + timedelta(minutes=1)
    events = [
        ("u0", "a", later, "r0"),  # its own list, a listed item: counts
        ("u9", "a", later, "r1"),  # another user's list: does not count
        ("u2", "z", later, "r2"),  # an item the list did not hold: does not count
        ("u3", "b", later, "guessed-id"),  # an unknown id
    ]
    (row,) = summarize(impressions, events, 1.0)
    assert (row.impressions, row.clicked) == (4, 1)
    assert row.attributed_share == 0.25
