"""Retries with backoff for recserve's own long-running clients (no sockets, no sleeps:
the backoff is zero)."""

from __future__ import annotations

import grpc
import pytest

from shared.client.retry import Backoff, retrying, retrying_sync
from shared.wire.errors import DatabaseUnavailable, InvalidArgument

pytestmark = pytest.mark.unit


class Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "shed"


def flaky(failures: list[Exception]):
    calls = []

    def call() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "answer"

    return call, calls


def test_transient_failures_are_retried_and_said() -> None:
    said: list[str] = []
    call, calls = flaky([Refused(grpc.StatusCode.RESOURCE_EXHAUSTED), DatabaseUnavailable("down")])
    answer = retrying_sync(call, what="GetJob", say=said.append, backoff=Backoff(0, 0))
    assert answer == "answer" and len(calls) == 3
    assert said[0].startswith("GetJob failed (RESOURCE_EXHAUSTED: shed); retrying in")
    assert "database unavailable" in said[1]


def test_other_failures_and_the_last_attempt_are_raised() -> None:
    call, calls = flaky([InvalidArgument("k", "is 0")])
    with pytest.raises(InvalidArgument):
        retrying_sync(call, what="x", say=lambda _: None, backoff=Backoff(0, 0))
    assert len(calls) == 1
    call, calls = flaky([Refused(grpc.StatusCode.UNAVAILABLE)] * 3)
    with pytest.raises(Refused):
        retrying_sync(call, what="x", attempts=3, say=lambda _: None, backoff=Backoff(0, 0))
    assert len(calls) == 3


async def test_the_async_form_retries_too() -> None:
    call, calls = flaky([Refused(grpc.StatusCode.UNAVAILABLE)])

    async def acall() -> str:
        return call()

    assert await retrying(acall, what="x", say=lambda _: None, backoff=Backoff(0, 0)) == "answer"
    assert len(calls) == 2


def test_the_backoff_doubles_to_its_ceiling() -> None:
    backoff = Backoff(0.2, 1.0)
    delays = [backoff.delay() for _ in range(5)]
    assert 0.2 <= delays[0] <= 0.24 and 0.4 <= delays[1] <= 0.48
    assert all(1.0 <= d <= 1.2 for d in delays[3:])
