"""The guard every call passes before it reaches a servicer: who is calling (server/auth.py)
and whether there is room for the call (``CallSlots``).

- **Refusal from the headers.** A call the access policy refuses is answered with a
  handler that reads no request: a unary call is refused before its body arrives, a
  stream before its first message.
- **Unary slots.** At most ``server.max_concurrent_rpcs`` unary calls run at once; a slot
  is taken when the body has arrived (a call whose body never comes holds none) and the
  call beyond gets RESOURCE_EXHAUSTED at once. Health checks and reflection take none.
- **Streams apart.** Client-streaming calls (FeedbackStream) take no unary slot. Each
  caller (a token's name; everyone without a token is one caller, ``anonymous``) may hold
  ``server.max_streams_per_caller`` open at once; gRPC's own ``max_concurrent_streams``
  caps them per connection (a cap per peer address would make everything behind a load
  balancer one peer). A stream that sends nothing for ``server.stream_idle_timeout_s`` is
  ended with DEADLINE_EXCEEDED; what it sent before stays stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from server import metrics
from server.auth import ANONYMOUS, METHOD_ROLES, OPEN, AccessPolicy, Caller, Refusal
from shared.telemetry import caller_name
from shared.wire.errors import StreamIdle

log = logging.getLogger(__name__)
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class CallSlots:
    """Counts the calls in progress: unary calls, and open streams per caller."""

    def __init__(self, *, max_unary: int, max_streams_per_caller: int) -> None:
        self.max_unary = max_unary
        self.max_streams_per_caller = max_streams_per_caller
        self.unary = 0
        self.streams: Counter[str] = Counter()

    def take_unary(self) -> bool:
        if self.unary >= self.max_unary:
            return False
        self.unary += 1
        return True

    def free_unary(self) -> None:
        self.unary -= 1

    def take_stream(self, caller: str) -> bool:
        if self.streams[caller] >= self.max_streams_per_caller:
            return False
        self.streams[caller] += 1
        return True

    def free_stream(self, caller: str) -> None:
        self.streams[caller] -= 1
        if self.streams[caller] <= 0:
            del self.streams[caller]


async def idle_limited(
    requests: AsyncIterator[Any], timeout_s: float, method: str
) -> AsyncIterator[Any]:
    """``requests``, ended with StreamIdle when the next message takes over ``timeout_s``."""
    iterator = requests.__aiter__()
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                request = await iterator.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            metrics.REFUSED.labels(reason="stream_idle").inc()
            raise StreamIdle(
                f"{method} sent no message for {timeout_s:g} s "
                "(server.stream_idle_timeout_s); the messages before were stored"
            ) from exc
        yield request


# grpc ships no annotations for its interceptor base class.
class CallGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Applies the access policy and the call slots to every call (module docstring)."""

    def __init__(
        self, policy: AccessPolicy, slots: CallSlots, *, stream_idle_timeout_s: float
    ) -> None:
        self._policy = policy
        self._slots = slots
        self._idle_s = stream_idle_timeout_s

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or METHOD_ROLES.get(method) == OPEN:
            return handler
        caller = self._policy.caller(details.invocation_metadata)
        refusal = self._policy.refusal(method, caller)
        if refusal is None:
            return self._admitted(handler, method, caller)
        if self._policy.needs_certificate(method, caller):
            return self._by_certificate(handler, method)
        return _refused(handler, refusal)

    def _admitted(
        self, handler: grpc.RpcMethodHandler, method: str, caller: Caller
    ) -> grpc.RpcMethodHandler:
        slots = self._slots
        if handler.request_streaming:
            behaviour = handler.stream_unary

            async def stream(
                requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
            ) -> Any:
                if not slots.take_stream(caller.name):
                    metrics.REFUSED.labels(reason="streams_per_caller").inc()
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{caller.name} already holds {slots.max_streams_per_caller} open "
                        "streams (server.max_streams_per_caller): close one, or retry later",
                    )
                named = caller_name.set(caller.name)
                try:
                    return await behaviour(idle_limited(requests, self._idle_s, method), context)
                finally:
                    slots.free_stream(caller.name)
                    caller_name.reset(named)

            return grpc.stream_unary_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        unary_behaviour = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if not slots.take_unary():
                metrics.REFUSED.labels(reason="unary_slots").inc()
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the server has {slots.max_unary} calls in progress "
                    "(server.max_concurrent_rpcs): retry with backoff",
                )
            named = caller_name.set(caller.name)
            try:
                return await unary_behaviour(request, context)
            finally:
                slots.free_unary()
                caller_name.reset(named)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _by_certificate(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """A call without a token, decided by its client certificate before any message
        is read (the certificate is only on the call's context, not in its headers)."""
        policy = self._policy

        async def decide(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            caller = policy.certificate_caller(context.auth_context()) or Caller(ANONYMOUS, None)
            refusal = policy.refusal(method, caller)
            if refusal is not None:
                _count(refusal)
                await context.abort(refusal.code, refusal.message)
            admitted = self._admitted(handler, method, caller)
            if handler.request_streaming:
                return await admitted.stream_unary(requests, context)
            async for request in requests:
                return await admitted.unary_unary(request, context)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{method} sent no request")

        return grpc.stream_unary_rpc_method_handler(
            decide,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _count(refusal: Refusal | None) -> None:
    if refusal is not None:
        reason = refusal.code.name.lower()
        metrics.REFUSED.labels(reason=reason).inc()


def _refused(handler: grpc.RpcMethodHandler, refusal: Refusal) -> grpc.RpcMethodHandler:
    """A handler that refuses the call without reading a message: it is request-streaming
    whatever the method is, so gRPC runs it on the headers alone."""
    _count(refusal)

    async def refuse(_requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        await context.abort(refusal.code, refusal.message)

    if handler.response_streaming:

        async def refuse_stream(
            _requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            await context.abort(refusal.code, refusal.message)
            yield  # never reached: makes this an async generator

        return grpc.stream_stream_rpc_method_handler(
            refuse_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.stream_unary_rpc_method_handler(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
