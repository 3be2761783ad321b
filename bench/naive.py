"""The naive baseline of the serving benchmarks: the same server, graph and gRPC stack as
`recserve serve`, built by the same composition root (server/compose.py) with a naive
encoder instead of the production one: no dynamic batching, no history cache, no state
cache, no impression log, a commit per Feedback call. Every request runs the model alone
in the thread pool: what a straightforward service would do.

    python -m bench.naive        # with RECSERVE_* settings, like `recserve serve`
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from server.app import serve_process
from server.batcher import timed
from server.compose import Parts
from server.history import HistoryCache
from server.pipeline.encoder import Encoder, Encoding
from server.served_model import ServingModel
from server.state_cache import StateCache
from server.stats import ServerStats
from shared.config import Settings


class NaiveEncoder(Encoder):
    """Each history alone through the backend, in the model's thread pool."""

    def __init__(
        self,
        history: HistoryCache,
        states: StateCache,
        stats: ServerStats,
        runs: ThreadPoolExecutor,
    ) -> None:
        super().__init__(history, states)
        self._stats = stats
        self._runs = runs

    async def cached(self, model: ServingModel, user_id: str) -> Encoding | None:
        return None

    async def encode(
        self, model: ServingModel, user_id: str, history_version: int, seen: np.ndarray
    ) -> Encoding:
        used = seen[-model.bundle.config.max_len :]
        loop = asyncio.get_running_loop()
        states, seconds = await loop.run_in_executor(
            self._runs, timed, model.backend.encode, used[None]
        )
        self._stats.record_batch(1, seconds)
        return Encoding(states[0], None, seen)


NAIVE = Parts(
    cache_histories=False,
    cache_states=False,
    group_commit=False,
    log_impressions=False,
    encoder=NaiveEncoder,
)


def main() -> None:
    serve_process(Settings(), NAIVE)


if __name__ == "__main__":
    main()
