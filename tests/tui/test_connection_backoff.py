"""The console's connection backs off while the server is unreachable or sheds load, and
says so (a fake stub and clock: no server, no sleeps)."""

from __future__ import annotations

import grpc
import pytest

from tui.connection import Connection

pytestmark = pytest.mark.unit


class Refusal(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="busy")


class Stub:
    def __init__(self) -> None:
        self.calls = 0
        self.failure: grpc.StatusCode | None = grpc.StatusCode.RESOURCE_EXHAUSTED

    async def ListJobs(self, request, metadata=(), timeout=None):  # noqa: N802
        self.calls += 1
        if self.failure is not None:
            raise Refusal(self.failure)
        return "jobs"


async def test_refusals_back_off_until_the_next_try_and_reset_on_success() -> None:
    told: list[tuple[str, str, str]] = []
    now = [100.0]
    connection = Connection("fake:1", None, lambda *note: told.append(note))
    connection.clock = lambda: now[0]
    stub = Stub()
    assert await connection._call(stub, "ListJobs", None, 1.0) is None
    assert stub.calls == 1 and "retrying in" in told[-1][0] and told[-1][2] == "warning"
    first_wait = connection.retry_at - now[0]
    assert 0.5 <= first_wait <= 0.6
    assert await connection._call(stub, "ListJobs", None, 1.0) is None
    assert stub.calls == 1, "no call while backing off"
    now[0] += first_wait
    stub.failure = grpc.StatusCode.UNAVAILABLE
    assert await connection._call(stub, "ListJobs", None, 1.0) is None
    assert stub.calls == 2 and told[-1][1] == "Server unreachable"
    assert 1.0 <= connection.retry_at - now[0] <= 1.2, "the wait doubles"
    now[0] = connection.retry_at
    stub.failure = None
    assert await connection._call(stub, "ListJobs", None, 1.0) == "jobs"
    assert told[-1][1] == "Server reachable"
    stub.failure = grpc.StatusCode.UNAVAILABLE
    await connection._call(stub, "ListJobs", None, 1.0)
    assert 0.5 <= connection.retry_at - now[0] <= 0.6, "a success starts the backoff over"
