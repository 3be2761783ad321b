"""The dynamic batcher and ranking helpers, with the fake backend (no server)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from server.backends.fake import FakeBackend
from server.batcher import DynamicBatcher
from server.pipeline.rank import top_k


@pytest.fixture
def backend() -> FakeBackend:
    rng = np.random.default_rng(0)
    return FakeBackend(rng.normal(size=(50, 4)).astype(np.float32), delay_s=0.02)


async def test_concurrent_submits_share_batches_and_pad_to_longest(backend) -> None:
    with ThreadPoolExecutor(1) as pool:
        batcher = DynamicBatcher(backend.encode, pool, max_batch=8)
        histories = [np.arange(1, n + 1, dtype=np.int64) for n in (3, 1, 5, 2, 4, 1, 2, 3, 1, 2)]
        results = await asyncio.gather(*[batcher.submit(h) for h in histories])
        await batcher.close()
    for history, state in zip(histories, results, strict=True):
        np.testing.assert_array_equal(state, backend.item_embeddings[history[-1]])
    sizes = [shape[0] for shape in backend.batches]
    assert sum(sizes) == len(histories)
    assert max(sizes) <= 8 and max(sizes) > 1
    # The first finds the batcher idle and runs at once; the others queue behind it and
    # run together, each batch padded only to its own longest history, not to max_len.
    assert backend.batches == [(1, 3), (8, 5), (1, 2)]


async def test_a_full_queue_sheds_at_once(backend) -> None:
    from shared.wire.errors import Overloaded

    with ThreadPoolExecutor(1) as pool:
        batcher = DynamicBatcher(backend.encode, pool, max_batch=2, max_queued=3)
        calls = [asyncio.ensure_future(batcher.submit(np.array([i + 1]))) for i in range(6)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        await batcher.close()
    shed = [r for r in results if isinstance(r, Overloaded)]
    assert len(shed) == 2, "1 running + 3 queued accepted, the rest refused"
    assert "server.max_queued_histories" in str(shed[0])
    assert sum(shape[0] for shape in backend.batches) == 4


async def test_idle_server_runs_a_lone_request_at_once(backend) -> None:
    with ThreadPoolExecutor(1) as pool:
        batcher = DynamicBatcher(backend.encode, pool, max_batch=8, max_wait_s=0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit(np.array([4, 5]))
        took = loop.time() - started
        await batcher.close()
    assert backend.batches == [(1, 2)]
    assert took < 0.5, "max_wait only applies while the server is busy"


async def test_cancelled_requests_are_dropped_before_the_run(backend) -> None:
    runs = GatedRuns(asyncio.get_running_loop(), backend.encode)
    with ThreadPoolExecutor(1) as pool:
        batcher = DynamicBatcher(runs, pool, max_batch=16)
        first = asyncio.ensure_future(batcher.submit(np.array([1])))
        await runs.until_started(1)  # first is running; these queue behind it
        doomed = asyncio.ensure_future(batcher.submit(np.array([2, 3, 4, 5, 6, 7])))
        kept = asyncio.ensure_future(batcher.submit(np.array([8])))
        await asyncio.sleep(0)
        doomed.cancel()
        runs.release.set()
        await asyncio.gather(first, kept)
        await batcher.close()
    assert backend.batches == [(1, 1), (1, 1)]


async def test_background_work_waits_for_an_idle_gap(backend) -> None:
    """Pre-encoding before a hot swap yields: it runs only once no request is running or
    queued, and a request queued before it goes first."""
    runs = GatedRuns(asyncio.get_running_loop(), backend.encode)
    with ThreadPoolExecutor(1) as pool:
        batcher = DynamicBatcher(runs, pool, max_batch=8)
        running = asyncio.ensure_future(batcher.submit(np.array([1])))
        await runs.until_started(1)  # running holds the only run slot
        queued = asyncio.ensure_future(batcher.submit(np.array([2, 3])))
        background = asyncio.ensure_future(
            batcher.run_when_idle(lambda: backend.encode(np.array([[4, 5, 6]])))
        )
        await asyncio.sleep(0)
        late = asyncio.ensure_future(batcher.submit(np.array([7, 8, 9, 10])))
        await asyncio.sleep(0)
        runs.release.set()
        states = await background
        await asyncio.gather(running, queued, late)
        await batcher.close()
    np.testing.assert_array_equal(states[0], backend.item_embeddings[6])
    # The two requests that queued meanwhile ran together, and the background run last.
    assert backend.batches == [(1, 1), (2, 4), (1, 3)]


def test_queued_work_is_priced_as_the_batches_that_will_run_it(backend) -> None:
    """A run costs a fixed part plus a little per history: seven queued histories are one
    batch (16 ms here), not seven single runs (70 ms), and admission judges by that."""
    from shared.wire.errors import Overloaded

    batcher = DynamicBatcher(backend.encode, None, max_batch=8, max_queue_wait_s=0.030)  # type: ignore[arg-type]
    batcher._learn(0.010, 1)  # an idle run of one history: 10 ms
    batcher._learn(0.017, 8)  # a batch of eight: 17 ms, so 1 ms per further history
    assert batcher.run_cost_s(7) == pytest.approx(0.016)
    assert batcher.queued_work_s(7) == pytest.approx(0.016)
    assert batcher.queued_work_s(20) == pytest.approx(2 * 0.017 + 0.013)
    batcher._pending.extend((np.array([1]), None) for _ in range(7))  # type: ignore[misc]
    batcher.admit(1)  # 8 histories: one batch of 17 ms, within 30 ms
    batcher._pending.extend((np.array([1]), None) for _ in range(12))  # type: ignore[misc]
    with pytest.raises(Overloaded, match="about 4[0-9] ms of work"):
        batcher.admit(1)


def test_slow_single_runs_still_leave_room_to_batch(backend) -> None:
    """A 15 ms run budget, and a starved machine where one history takes 20 ms and each
    further one 1 ms: batches may take twice a single run (about 21 histories), not one."""
    batcher = DynamicBatcher(backend.encode, None, max_batch=64, max_run_s=0.015)  # type: ignore[arg-type]
    batcher._learn(0.004, 1)
    batcher._learn(0.011, 8)  # 1 ms per further history
    assert batcher.batch_limit == 12, "within 15 ms: 4 + 11 x 1"
    for _ in range(60):
        batcher._learn(0.020, 1)  # the machine slows down
    assert batcher._run_cost_s == pytest.approx(0.020, rel=0.02)
    assert batcher.batch_limit in (20, 21), "within 2 x 20 ms: about 1 + 20 x 1"


async def test_backend_failure_reaches_every_caller() -> None:
    def broken(_: np.ndarray) -> np.ndarray:
        raise RuntimeError("device lost")

    with ThreadPoolExecutor(1) as pool:
        batcher = DynamicBatcher(broken, pool, max_batch=4)
        results = await asyncio.gather(
            batcher.submit(np.array([1])), batcher.submit(np.array([2])), return_exceptions=True
        )
    assert all(isinstance(r, RuntimeError) for r in results)


def test_top_k_is_exact_and_skips_masked() -> None:
    scores = np.array([-np.inf, 0.5, 2.0, -np.inf, 1.0, 3.0], dtype=np.float32)
    assert top_k(scores, 3).tolist() == [5, 2, 4]
    assert top_k(scores, 10).tolist() == [5, 2, 4, 1]
    rng = np.random.default_rng(1)
    big = rng.normal(size=5000).astype(np.float32)
    assert top_k(big, 20).tolist() == np.argsort(-big)[:20].tolist()


def test_state_cache_matches_exact_versions() -> None:
    from server.state_cache import StateCache, UserState

    cache = StateCache(max_users=2)
    state = UserState(np.ones(4, dtype=np.float32), np.arange(1, 4))
    cache.put("a", 1, 10, state)
    assert cache.get("a", 1, 10) is state
    assert cache.get("a", 2, 10) is None, "another model version never matches"
    assert cache.get("a", 1, 11) is None, "another history version never matches"
    cache.put("b", 1, 5, state)
    cache.put("c", 1, 6, state)
    assert len(cache) == 2 and not cache.has("a"), "least recently used dropped"
    cache.put("d", 1, 0, state)
    assert not cache.has("d"), "uncached histories (version 0) are not stored"


def test_a_history_read_again_unchanged_keeps_its_state() -> None:
    from server.state_cache import StateCache, UserState

    cache = StateCache(max_users=4)
    state = UserState(np.ones(4, dtype=np.float32), np.array([9, 1, 2, 3]))
    cache.put("a", 1, 10, state)
    # Read again under version 11, one old event fewer: the model (max_len 3) reads the
    # same rows, so the state stands, re-keyed, with the new rows for the seen mask.
    kept = cache.adopt("a", 1, 11, np.array([1, 2, 3]), max_len=3)
    assert kept is not None and kept.state is state.state
    np.testing.assert_array_equal(kept.seen, [1, 2, 3])
    assert cache.get("a", 1, 11) is kept and cache.get("a", 1, 10) is None
    assert cache.adopt("a", 1, 12, np.array([1, 2, 4]), max_len=3) is None, "new events"
    assert cache.adopt("a", 2, 12, np.array([1, 2, 3]), max_len=3) is None, "another model"
    assert cache.adopt("b", 1, 12, np.array([1, 2, 3]), max_len=3) is None, "no entry"


def test_auto_inflight_batches_fill_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.model_loader import inflight_batches
    from shared.config import ServerSettings

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert inflight_batches(ServerSettings(), "cpu") == 1  # one run on every core
    assert inflight_batches(ServerSettings(intra_op_threads=1), "cpu") == 8
    assert inflight_batches(ServerSettings(intra_op_threads=2, workers=2), "cpu") == 2
    assert inflight_batches(ServerSettings(), "cuda:0") == 1
    assert inflight_batches(ServerSettings(max_inflight_batches=3), "cpu") == 3


async def test_a_run_beside_the_queue_counts_in_admission(backend) -> None:
    """An explanation's leave-one-out run is admitted at its real number of sequences,
    and counts as them in other calls' admission while it waits and runs."""
    from shared.wire.errors import Overloaded

    with ThreadPoolExecutor(1) as pool:
        batcher = DynamicBatcher(backend.encode, pool, max_batch=4, max_queued=11)
        histories = np.arange(1, 9, dtype=np.int64)[None].repeat(8, axis=0)
        beside = asyncio.ensure_future(batcher.run_beside(backend.encode, histories))
        await asyncio.sleep(0)  # it takes the run slot
        queued = [asyncio.ensure_future(batcher.submit(np.array([i + 1]))) for i in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            batcher.admit(1)  # 8 beside + 3 queued: one more is over 11
        with pytest.raises(Overloaded):
            await batcher.run_beside(backend.encode, histories)
        states, *_ = await asyncio.gather(beside, *queued)
        np.testing.assert_array_equal(states, backend.item_embeddings[histories[:, -1]])
        batcher.admit(8)  # all done: room again
        await batcher.close()


async def test_a_run_beside_the_queue_yields_to_queued_requests_between_chunks(backend) -> None:
    """In chunks of the batch limit, one slot at a time: a request that queues while the
    long run works waits for one chunk, not for all of them."""
    with ThreadPoolExecutor(2) as pool:
        batcher = DynamicBatcher(backend.encode, pool, max_batch=4, max_inflight=1)
        histories = np.arange(1, 9, dtype=np.int64)[None].repeat(16, axis=0)
        chunks = GatedRuns(asyncio.get_running_loop(), backend.encode)
        beside = asyncio.ensure_future(batcher.run_beside(chunks, histories))
        await chunks.until_started(1)  # the first chunk runs
        waiting = asyncio.ensure_future(batcher.submit(np.array([7])))
        await asyncio.sleep(0)
        chunks.release.set()
        queued = await waiting
        assert not beside.done(), "served before the long run ended"
        states = await beside
        await batcher.close()
    np.testing.assert_array_equal(queued, backend.item_embeddings[7])
    assert len(states) == 16
    assert backend.batches[:2] == [(4, 8), (1, 1)], "one chunk, then the queued request"


class GatedRuns:
    """A model run that blocks until released, and tells the event loop each time one
    starts (no polling)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, run=None) -> None:
        import threading

        self.loop = loop
        self.run = run
        self.release = threading.Event()
        self.started: list[int] = []
        self.changed = asyncio.Event()

    def __call__(self, histories: np.ndarray) -> np.ndarray:
        self.started.append(len(histories))
        self.loop.call_soon_threadsafe(self.changed.set)
        self.release.wait(10)
        return self.run(histories) if self.run else histories[:, -1:].astype(np.float32)

    async def until_started(self, runs: int) -> None:
        async with asyncio.timeout(5):
            while len(self.started) < runs:
                await self.changed.wait()
                self.changed.clear()


async def test_a_second_lone_request_runs_beside_a_light_run_not_after_it() -> None:
    """Nothing queued, the slot busy with one history: the next request runs at once in a
    lone run; a third (the lone run taken) queues and batches as before."""
    runs = GatedRuns(asyncio.get_running_loop())
    with ThreadPoolExecutor(3) as pool:
        batcher = DynamicBatcher(runs, pool, max_batch=8, lone_runs=1)
        first = asyncio.ensure_future(batcher.submit(np.array([1])))
        second = asyncio.ensure_future(batcher.submit(np.array([2])))
        third = asyncio.ensure_future(batcher.submit(np.array([3])))
        await runs.until_started(2)
        assert runs.started == [1, 1], "the second ran beside the first, without waiting"
        assert batcher.queued == 1, "the third waits for a slot"
        runs.release.set()
        assert [float(x[0]) for x in await asyncio.gather(first, second, third)] == [1, 2, 3]
        await batcher.close()


async def test_without_lone_runs_a_second_request_waits_for_the_slot() -> None:
    runs = GatedRuns(asyncio.get_running_loop())
    with ThreadPoolExecutor(3) as pool:
        batcher = DynamicBatcher(runs, pool, max_batch=8, lone_runs=0)
        first = asyncio.ensure_future(batcher.submit(np.array([1])))
        second = asyncio.ensure_future(batcher.submit(np.array([2])))
        await runs.until_started(1)
        assert runs.started == [1] and batcher.queued == 1
        runs.release.set()
        await asyncio.gather(first, second)
        assert runs.started == [1, 1], "it ran after the first, alone"
        await batcher.close()
