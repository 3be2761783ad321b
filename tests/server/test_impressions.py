"""The impression log: batched writes, bounded queue, and a refusing database costs
impressions (counted), never requests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlmodel import select

from server.impressions import ImpressionLog
from shared.db import make_engine, migrate, session_scope
from shared.models import Impression


async def test_batches_bound_and_failures(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    migrate(url)
    engine = make_engine(url)
    executor = ThreadPoolExecutor(1)
    log = ImpressionLog(engine, executor, max_queued=3, flush_s=60)
    ids = [log.new_id() for _ in range(4)]
    assert len(set(ids)) == 4
    for n, rec in enumerate(ids):
        log.record(rec, f"user-{n}", ["a", "b"], 1, "")
    assert (log.queued, log.dropped) == (3, 1), "the fourth did not fit"
    await log.flush()
    with session_scope(engine) as s:
        rows = s.exec(select(Impression)).all()
        assert sorted(r.recommendation_id for r in rows) == sorted(ids[:3])
        assert all(r.items == ["a", "b"] for r in rows)
    # A batch the database refuses (a repeated id) is dropped and counted.
    log.record(ids[0], "user-0", ["c"], 1, "")
    await log.flush()
    assert (log.written, log.dropped) == (3, 2)
    engine.dispose()
    executor.shutdown()
