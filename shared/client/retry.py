"""Retrying a failed call with backoff, saying so: for recserve's own long-running
clients (the demo, the CLI's job followers, the console), so that one refused or failed
call does not end them.

A call is retried when it failed for a reason that passes: UNAVAILABLE (the server or
the database is briefly down), RESOURCE_EXHAUSTED (the server shed load) and
DEADLINE_EXCEEDED; and, for the followers that read the database directly,
DatabaseUnavailable. Anything else is the caller's to handle. The wait doubles from
``first_s`` to ``max_s`` with jitter, and each retry is announced through ``say``.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from shared.wire.errors import DatabaseUnavailable

T = TypeVar("T")
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def transient(exc: BaseException) -> str | None:
    """Why ``exc`` is worth a retry ("UNAVAILABLE: ..."), or None when it is not."""
    if isinstance(exc, grpc.RpcError):
        code = exc.code()
        if code in RETRYABLE:
            return f"{code.name}: {exc.details()}"
    if isinstance(exc, DatabaseUnavailable):
        return f"database unavailable: {exc}"
    return None


class Backoff:
    """Delays that double from ``first_s`` up to ``max_s``, each with up to 20% jitter."""

    def __init__(self, first_s: float = 0.2, max_s: float = 5.0) -> None:
        self.first_s, self.max_s = first_s, max_s
        self.next_s = first_s

    def delay(self) -> float:
        delay = self.next_s * (1.0 + 0.2 * random.random())
        self.next_s = min(self.max_s, self.next_s * 2)
        return delay

    def reset(self) -> None:
        self.next_s = self.first_s


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int = 10,
    say: Callable[[str], None] = to_stderr,
    backoff: Backoff | None = None,
) -> T:
    """``await call()``, retried on a transient failure up to ``attempts`` times."""
    backoff = backoff or Backoff()
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except Exception as exc:
            why = transient(exc)
            if why is None or attempt == attempts:
                raise
            delay = backoff.delay()
            say(f"{what} failed ({why}); retrying in {delay:.1f}s ({attempt}/{attempts - 1})")
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def retrying_sync(
    call: Callable[[], T],
    *,
    what: str,
    attempts: int = 10,
    say: Callable[[str], None] = to_stderr,
    backoff: Backoff | None = None,
) -> T:
    """``call()``, retried on a transient failure up to ``attempts`` times."""
    backoff = backoff or Backoff()
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            why = transient(exc)
            if why is None or attempt == attempts:
                raise
            delay = backoff.delay()
            say(f"{what} failed ({why}); retrying in {delay:.1f}s ({attempt}/{attempts - 1})")
            time.sleep(delay)
    raise AssertionError("unreachable")
