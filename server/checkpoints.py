"""SQLite WAL checkpoints off the commit path.

SQLite's default copies the write-ahead log back into the database file (a checkpoint)
inside whichever commit makes the log pass 1,000 pages, so every few seconds one Feedback
commit also does the checkpoint's writes and fsync, and its caller waits many times a
commit's usual time. The server therefore turns the automatic checkpoint off on its own
connections (``shared.storage.engine.make_engine(background_checkpoints=True)``) and runs
a PASSIVE checkpoint every ``server.wal_checkpoint_s`` on a thread of its own: it copies
what no reader still needs and waits for nobody, and commits no longer pay for it
(docs/benchmarks.md has the soak's figures). Other processes on the file (workers, the
CLI) keep SQLite's automatic checkpoints. Not used on PostgreSQL, nor with
``wal_checkpoint_s`` 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.engine import Engine

from shared.storage.engine import checkpoint_wal

log = logging.getLogger(__name__)


class WalCheckpoints:
    def __init__(self, engine: Engine, interval_s: float) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="recserve-checkpoint")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="wal-checkpoints")

    async def stop(self) -> None:
        """Stops the task, then one last checkpoint."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            await self._checkpoint()
        self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._checkpoint()

    async def _checkpoint(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self.checkpoint)
        except Exception as exc:  # the next one tries again; commits are unaffected
            log.warning("WAL checkpoint failed: %s", exc)

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, frames in the log, frames checkpointed)."""
        return checkpoint_wal(self._engine)
