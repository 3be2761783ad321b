"""The one place where recserve errors become gRPC status codes, and every RPC's
request id, metrics and access log.

InvalidArgument -> INVALID_ARGUMENT (with a google.rpc.BadRequest field violation),
NotFound -> NOT_FOUND, FailedPrecondition -> FAILED_PRECONDITION, Unavailable and
StorageError -> UNAVAILABLE (safe to retry: event ids are idempotency keys), Overloaded
-> RESOURCE_EXHAUSTED, StreamIdle -> DEADLINE_EXCEEDED, BundleError ->
FAILED_PRECONDITION, a server-side deadline -> DEADLINE_EXCEEDED, anything else ->
INTERNAL with the traceback logged. (Tokens are checked before a call reaches a
servicer: server/guard.py.)
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy import exc as sa_exc

from server import metrics
from server.wire import Malformed
from shared.telemetry import REQUEST_ID_HEADER, caller_name, new_request_id, request_id
from shared.wire.errors import (
    BundleError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    StorageError,
    StreamIdle,
    Unavailable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_CODES: list[tuple[type[Exception], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (BundleError, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (StorageError, grpc.StatusCode.UNAVAILABLE),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StreamIdle, grpc.StatusCode.DEADLINE_EXCEEDED),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
]


@dataclass(frozen=True)
class RpcOptions:
    """How the ``rpc`` decorator treats every call of a servicer (its ``options``)."""

    default_deadline_s: float = 10.0
    """The deadline of a unary call that sets none (server.default_deadline_s)."""
    access_log: bool = False
    """One log line per call (telemetry.access_log)."""


def status_for(exc: Exception, default_deadline_s: float = 10.0) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        # A database error that no layer translated: still not the caller's fault, and
        # its text (SQL, values) is not for the caller.
        log.warning("database unavailable: %s", type(exc).__name__)
        return grpc.StatusCode.UNAVAILABLE, "the database is unavailable right now; retry the call"
    for kind, code in _CODES:
        if isinstance(exc, kind):
            if kind is TimeoutError:
                return code, f"the call took over {default_deadline_s:g}s (it set no deadline)"
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


class _Status(
    collections.namedtuple("_Status", ("code", "details", "trailing_metadata")),
    grpc.Status,  # type: ignore[misc]  # grpc ships no annotations for it
):
    pass


ACCESS_LOG = logging.getLogger("recserve.access")


def _rich_status(code: grpc.StatusCode, message: str, exc: Exception, rid: str) -> grpc.Status:
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    if isinstance(exc, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=exc.field, description=exc.description
                    )
                ]
            )
        )
        status.details.append(detail)
    rich = rpc_status.to_status(status)
    return _Status(rich.code, rich.details, (*rich.trailing_metadata, (REQUEST_ID_HEADER, rid)))


def _malformed(request: Malformed) -> InvalidArgument:
    return InvalidArgument(
        "request", f"is not a valid {request.message} message ({request.error[:200]})"
    )


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Malformed):
            raise _malformed(request)
        yield request


def rpc(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Decorates an async servicer method: gives the call a request id (logged with
    everything it does, returned in the trailing metadata), maps recserve errors to
    status codes, and records the call's code and latency (Prometheus, access log), as the
    servicer's ``options`` (RpcOptions) say."""
    name = method.__name__.lstrip("_")

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        options: RpcOptions = self.options
        offered = dict(context.invocation_metadata() or ()).get(REQUEST_ID_HEADER)
        rid = new_request_id(offered if isinstance(offered, str) else None)
        token = request_id.set(rid)
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            context.set_trailing_metadata(((REQUEST_ID_HEADER, rid),))
            if isinstance(request, Malformed):
                raise _malformed(request)
            if hasattr(request, "__aiter__"):  # a client stream: check each message
                return await method(self, _checked(request), context)
            if context.time_remaining() is None:  # the caller set no deadline: ours
                async with asyncio.timeout(options.default_deadline_s):
                    return await method(self, request, context)
            return await method(self, request, context)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except Exception as exc:
            code, message = status_for(exc, options.default_deadline_s)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("unexpected error in %s", name)
            await context.abort_with_status(_rich_status(code, message, exc, rid))
            raise  # abort_with_status raises; this line is never reached
        finally:
            seconds = time.perf_counter() - started
            metrics.REQUESTS.labels(method=name, code=code.name).inc()
            metrics.LATENCY.labels(method=name).observe(seconds)
            if options.access_log:
                who = caller_name.get() or "-"
                ACCESS_LOG.info("%s %s %s %.2fms", name, who, code.name, seconds * 1000)
            request_id.reset(token)

    return wrapper
