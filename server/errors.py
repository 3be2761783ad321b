"""The one place where recserve errors become gRPC status codes.

InvalidArgument -> INVALID_ARGUMENT (with a google.rpc.BadRequest field violation),
NotFound -> NOT_FOUND, FailedPrecondition -> FAILED_PRECONDITION, Unauthenticated ->
UNAUTHENTICATED, Unavailable and StorageError -> UNAVAILABLE (safe to retry: event ids
are idempotency keys), BundleError -> FAILED_PRECONDITION, anything else -> INTERNAL
with the traceback logged.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from shared.errors import (
    BundleError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    StorageError,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_CODES: list[tuple[type[Exception], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (BundleError, grpc.StatusCode.FAILED_PRECONDITION),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (StorageError, grpc.StatusCode.UNAVAILABLE),
]


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


def _rich_status(code: grpc.StatusCode, message: str, exc: Exception) -> grpc.Status:
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
    return rpc_status.to_status(status)


def grpc_errors(
    method: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T]]:
    """Decorates an async servicer method: maps recserve errors to status codes."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:
            code, message = status_for(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("unexpected error in %s", method.__name__)
            await context.abort_with_status(_rich_status(code, message, exc))
            raise  # abort_with_status raises; this line is never reached

    return wrapper
