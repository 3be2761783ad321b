"""Dynamic batching of model runs.

Concurrent requests are grouped into one backend call of up to ``max_batch`` histories,
and of no more than recent runs say take ``max_run_s`` (where a history costs the same in
a batch of 8 as of 64, a larger batch only makes the requests behind it wait).
At most ``max_inflight`` batches run at once (1 by default: one run uses every core; with
single-threaded runs, one per core); requests that arrive while every slot is busy form
the next batch, so batches grow with load and an idle server adds no waiting.
``max_wait_s`` > 0 additionally lets a partly filled batch wait that long for more
requests, but only while the server is busy. Histories are left-padded to the longest
one in the batch, not to the model's maximum. Requests whose caller went away
(cancelled, deadline passed) are dropped before the run.

An idle batcher (nothing queued, a run slot free) runs a request at once, on the
caller's own coroutine: no hand-over to the batching task, so a lone request costs what
a direct model call costs. So does a request that finds nothing queued but every slot
busy, up to ``lone_runs`` of them beside the batches: waiting a whole run to then run
alone would serialise a few callers for nothing, where a second small run uses the
cores the first leaves idle. Batching, padding and the hand-over are paid only once a
queue forms.

Admission is bounded in time, not only in count: the batcher keeps moving averages of a
run's fixed cost and of what each further history adds to it, and refuses a request
(Overloaded, at once) when the work already queued, run in batches, would keep it
waiting longer than ``max_queue_wait_s``, or when ``max_queued`` histories wait. Under
overload the excess is shed and the accepted requests keep their latency, instead of
every request waiting in a growing queue.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, Protocol, TypeVar

import numpy as np

from shared.model.histories import left_pad
from shared.wire.errors import Overloaded

log = logging.getLogger(__name__)

ADMITTED: contextvars.ContextVar[bool] = contextvars.ContextVar("admitted", default=False)
"""Set by a caller that was admitted as a whole (batcher.admit): its submits skip the
check."""
T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")
R = TypeVar("R")


def timed(run: Callable[[np.ndarray], R], histories: np.ndarray) -> tuple[R, float]:
    """``run(histories)`` and how long it took (called on the thread that runs it)."""
    started = time.perf_counter()
    output = run(histories)
    return output, time.perf_counter() - started


class Rows(Protocol[T_co]):
    """A batch's output: row i belongs to the i-th history."""

    def __getitem__(self, index: int, /) -> T_co: ...


class DynamicBatcher(Generic[T]):
    def __init__(
        self,
        run: Callable[[np.ndarray], Rows[T]],
        executor: Executor,
        *,
        max_batch: int,
        max_run_s: float = 0.0,
        max_wait_s: float = 0.0,
        max_inflight: int = 1,
        lone_runs: int = 0,
        max_queued: int = 1024,
        max_queue_wait_s: float = 0.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        """run: int64 [B, L] -> float32 [B, ...], called in ``executor``; at most
        ``max_inflight`` batches run at once. ``on_batch``: each run's histories and
        seconds (the run itself, not the wait for a thread)."""
        self._run = run
        self._executor = executor
        self._max_batch = max_batch
        self._max_run_s = max_run_s
        self._max_wait_s = max_wait_s
        self._max_queued = max_queued
        self._max_queue_wait_s = max_queue_wait_s
        self._max_inflight = max_inflight
        self._lone_runs = lone_runs
        self._alone = 0
        """Lone runs beside the batch slots in progress (at most lone_runs)."""
        self._in_flight = 0
        """Histories in the runs in progress: a lone run beside them is allowed only while
        they are light (no more than one per slot); under load, requests batch."""
        self._run_cost_s = 0.0
        """Moving average of a run of one history: a run's fixed cost."""
        self._extra_cost_s = 0.0
        """Moving average of what each further history adds to a run (from runs of two or
        more; 0 until one is seen, when every history is taken to cost a whole run)."""
        self._on_batch = on_batch
        self._pending: deque[tuple[np.ndarray, asyncio.Future[T]]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy_until = 0.0
        self._closed = False
        self._slots = asyncio.Semaphore(max_inflight)
        self._running: set[asyncio.Task[None]] = set()
        self._beside = 0
        """Histories of runs made beside the queue (run_beside) that wait or run now."""
        self._beside_slot = asyncio.Semaphore(1)
        """Runs beside the queue take at most one run slot at a time."""

    @property
    def queued(self) -> int:
        """Histories waiting for a model run."""
        return len(self._pending)

    async def submit(self, history: np.ndarray) -> T:
        """history: int64 [L] (L >= 1), oldest first. Returns this history's row of the
        batch output. Raises Overloaded when max_queued histories are already waiting."""
        if not self._pending and not self._closed:
            if not self._slots.locked():
                await self._slots.acquire()  # free: does not wait
                try:
                    return await self._run_alone(history)
                finally:
                    self._slots.release()
            if self._alone < self._lone_runs and self._in_flight <= self._max_inflight:
                self._alone += 1
                try:
                    return await self._run_alone(history)
                finally:
                    self._alone -= 1
        if not ADMITTED.get():
            self.admit(1)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((history, future))
        self._wakeup.set()
        if self._task is None or self._task.done():
            # Also after close(): a request that picked this model just before a hot swap
            # is still served by it, never failed.
            self._task = asyncio.create_task(self._loop(), name="dynamic-batcher")
        return await future

    @property
    def history_cost_s(self) -> float:
        """What one more history costs in a batch, from recent runs (0 before the first)."""
        return self._extra_cost_s or self._run_cost_s

    def run_cost_s(self, histories: int) -> float:
        """The expected time of one run of ``histories``: its fixed cost plus what each
        further history adds, both learned from recent runs."""
        if histories <= 0:
            return 0.0
        return self._run_cost_s + (histories - 1) * self.history_cost_s

    def queued_work_s(self, histories: int) -> float:
        """How long the model needs for ``histories`` queued ones, run in batches of
        batch_limit over the run slots. Pricing each history at a whole single run (the
        cost an idle server mostly learns) overstated a queue of a few histories several
        times over, and refused requests a batch would have served at once."""
        limit = self.batch_limit
        full, rest = divmod(histories, limit)
        return (full * self.run_cost_s(limit) + self.run_cost_s(rest)) / self._max_inflight

    async def run_when_idle(
        self, work: Callable[[], R], *, share: float = 1.0, poll_s: float = 0.001
    ) -> R:
        """Runs ``work`` in the executor in one of this batcher's run slots, when no
        request waits for the model and a slot is free: background model work (encoding
        states for an incoming model before a hot swap) that yields to serving. A request
        that arrives meanwhile waits at most for that one run, so the caller keeps each
        ``work`` short. After the run, it rests for as long as keeps it to ``share`` of
        the time: the model's idle gaps are not idle cores (the event loop, the Feedback
        writer and the database reads need them too). Idleness is polled every
        ``poll_s``: it has no single event to wait for (a queue that empties and a slot
        that frees), and the polling lasts only while background work is pending."""
        while self._pending or self._slots.locked():  # noqa: ASYNC110
            await asyncio.sleep(poll_s)
        await self._slots.acquire()  # free: does not wait
        started = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        finally:
            self._slots.release()
            if share < 1.0:
                await asyncio.sleep((time.perf_counter() - started) * (1.0 / share - 1.0))

    async def run_beside(
        self, run: Callable[[np.ndarray], np.ndarray], histories: np.ndarray
    ) -> np.ndarray:
        """``run(histories)`` (int64 [B, L] -> float32 [B, ...]) for work that does not go
        through the queue, such as an explanation's leave-one-out variants. It is admitted
        as B queued histories and counts as them in every other call's admission while it
        waits and runs. It runs in chunks of what fits in max_run_s, each in a run slot,
        at most one slot at a time: a request that queues meanwhile waits for one chunk,
        not for the whole of it, and the other slots stay the queue's."""
        remaining = len(histories)
        if not ADMITTED.get():
            self.admit(remaining)
        self._beside += remaining
        loop = asyncio.get_running_loop()
        outputs: list[np.ndarray] = []
        try:
            async with self._beside_slot:
                while remaining:
                    start = len(histories) - remaining
                    chunk = histories[start : start + self.batch_limit]
                    async with self._slots:  # a batch waiting for the slot goes first
                        outputs.append(await loop.run_in_executor(self._executor, run, chunk))
                    remaining -= len(chunk)
                    self._beside -= len(chunk)
        finally:
            self._beside -= remaining
        return np.concatenate(outputs)

    def admit(self, histories: int) -> None:
        """Raises Overloaded unless ``histories`` more may queue now. A call that brings
        several (RecommendBatch) is admitted or refused as a whole, then submits them
        with ADMITTED set."""
        queued = len(self._pending) + self._beside
        if queued and queued + histories > self._max_queued:
            raise Overloaded(
                f"{queued} histories are waiting for the model; the server is at its limit "
                "(server.max_queued_histories): retry with backoff"
            )
        # Until a run of several histories has shown what batching saves, a queue's time
        # is unknown (pricing each history at a whole run refused the first burst on a
        # fresh server): only max_queued bounds it, and that first batch teaches the cost.
        priced = self._extra_cost_s or self.batch_limit == 1
        wait_s = self.queued_work_s(queued) if priced else 0.0
        if self._max_queue_wait_s and wait_s > self._max_queue_wait_s:
            raise Overloaded(
                f"the model's queue holds about {wait_s * 1000:.0f} ms of work, more than "
                f"server.max_queue_wait_ms ({self._max_queue_wait_s * 1000:.0f}): retry "
                "with backoff"
            )

    async def _run_alone(self, history: np.ndarray) -> T:
        loop = asyncio.get_running_loop()
        self._in_flight += 1
        try:
            output, seconds = await loop.run_in_executor(self._executor, self._timed, history[None])
        finally:
            self._in_flight -= 1
            self._busy_until = time.monotonic() + 0.05
        self._learn(seconds, 1)
        if self._on_batch is not None:
            self._on_batch(1, seconds)
        return output[0]

    def _timed(self, histories: np.ndarray) -> tuple[Rows[T], float]:
        """Runs the model in the executor; also returns how long the run itself took
        (not the wait for a thread), which is what admission control learns from."""
        return timed(self._run, histories)

    def _learn(self, seconds: float, histories: int) -> None:
        def average(old: float, new: float) -> float:
            return new if not old else 0.9 * old + 0.1 * new

        if histories == 1 or not self._run_cost_s:
            self._run_cost_s = average(self._run_cost_s, seconds / histories)
        else:
            extra = max(0.0, seconds - self._run_cost_s) / (histories - 1)
            self._extra_cost_s = average(self._extra_cost_s, extra)

    async def close(self) -> None:
        """Finishes what is queued, then stops (until another submit arrives)."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._running:
            await asyncio.gather(*self._running)

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                if (
                    self._max_wait_s > 0
                    and len(self._pending) < self.batch_limit
                    and time.monotonic() < self._busy_until
                ):
                    await asyncio.sleep(self._max_wait_s)
                await self._slots.acquire()  # requests queue up while every slot is busy
                batch = self._take()
                if not batch:
                    self._slots.release()
                    continue
                task = asyncio.create_task(self._execute(batch))
                self._running.add(task)
                task.add_done_callback(self._finished)
            if self._closed and not self._pending:
                return

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()

    @property
    def batch_limit(self) -> int:
        """Histories the next batch may hold: max_batch, and no more than recent runs
        say fit in max_run_s."""
        return self.histories_within(self._max_run_s) if self._max_run_s else self._max_batch

    def histories_within(self, seconds: float) -> int:
        """How many histories (1..max_batch) recent runs say one run does in ``seconds``,
        or in twice a single run where that is longer: on a starved machine a lone run can
        take longer than ``seconds``, and a limit of one history would then stop batching
        exactly when it is needed (every queued request its own slow run). max_batch
        before any run has been seen."""
        extra = self.history_cost_s
        if not extra:
            return self._max_batch
        budget = max(seconds, 2.0 * self._run_cost_s)
        fits = 1 + int(max(0.0, budget - self._run_cost_s) / extra)
        return max(1, min(self._max_batch, fits))

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future[T]]]:
        batch: list[tuple[np.ndarray, asyncio.Future[T]]] = []
        limit = self.batch_limit
        while self._pending and len(batch) < limit:
            history, future = self._pending.popleft()
            if not future.done():
                batch.append((history, future))
        return batch

    async def _execute(self, batch: list[tuple[np.ndarray, asyncio.Future[T]]]) -> None:
        padded = left_pad([history for history, _ in batch])
        loop = asyncio.get_running_loop()
        self._in_flight += len(batch)
        try:
            output, seconds = await loop.run_in_executor(self._executor, self._timed, padded)
        except Exception as exc:
            log.exception("batch of %d failed", len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._in_flight -= len(batch)
            self._busy_until = time.monotonic() + 0.05
        self._learn(seconds, len(batch))
        if self._on_batch is not None:
            self._on_batch(len(batch), seconds)
        for i, (_, future) in enumerate(batch):
            if not future.done():
                future.set_result(output[i])
