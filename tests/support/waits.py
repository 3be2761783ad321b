"""Waiting on conditions with a deadline: the end-to-end layer's only way to wait.

A test that needs something to happen polls for it and fails with what it waited for
once the deadline passes; it never sleeps a fixed time and hopes.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    what: str,
    *,
    timeout: float = 30.0,
    every: float = 0.05,
    explain: Callable[[], str] = lambda: "",
) -> T:
    """``condition()``'s first truthy value, polled every ``every`` seconds; an
    AssertionError naming ``what`` (and ``explain()``, e.g. a process's log) after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:g} s\n{explain()}".rstrip())
        time.sleep(every)


async def eventually(
    condition: Callable[[], T | Awaitable[T]],
    what: str,
    *,
    timeout: float = 30.0,
    every: float = 0.02,
) -> T:
    """As wait_until, without blocking the event loop; ``condition`` may be a coroutine
    function."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:g} s")
        await asyncio.sleep(every)


def holds_for(condition: Callable[[], bool], what: str, *, seconds: float) -> None:
    """Checks that ``condition()`` stays true for ``seconds`` (a promise that something
    does *not* happen, such as a job that is not due yet), failing as soon as it breaks."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition(), f"{what}: broken after {seconds - (deadline - time.monotonic()):.1f} s"
        time.sleep(0.1)
