"""Idle and slow clients cannot starve a server: a real `recserve serve` process with the
production limits (not the tests' raised ones), held open by idle streams and by unary
calls whose body never comes, still answers a Recommend at once."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.app import start_server
from shared.config import ServerSettings, Settings
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.proto.recserve.v1 import recommender_pb2_grpc
from tests.support.processes import ServerProcess
from tests.support.waits import eventually

READ_SECRET, WRITE_SECRET = "frontend-secret-1", "ingest-secret-22"
PRODUCTION = ServerSettings()


def own_connection(target: str) -> grpc.aio.Channel:
    """A channel on a connection of its own (gRPC otherwise shares one per target)."""
    return grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


async def never(stop: asyncio.Event):  # a request stream that sends nothing
    await stop.wait()
    return
    yield


async def until(condition, timeout: float) -> None:
    await eventually(condition, "the condition", timeout=timeout)


async def test_idle_streams_and_bodiless_calls_do_not_starve_a_recommend(settings) -> None:
    server = ServerProcess(
        settings,
        "starved",
        SERVER__MAX_CONCURRENT_RPCS=str(PRODUCTION.max_concurrent_rpcs),
        SERVER__READ_TOKENS=f'["frontend={READ_SECRET}"]',
        SERVER__WRITE_TOKENS=f'["ingest={WRITE_SECRET}"]',
    )
    stop = asyncio.Event()
    channels = [own_connection(server.target) for _ in range(3)]
    held: list[grpc.aio.Call] = []
    try:
        for n in range(100):  # idle FeedbackStreams, valid write token, over two connections
            stub = recommender_pb2_grpc.RecommenderStub(channels[n % 2])
            held.append(stub.FeedbackStream(never(stop), metadata=bearer(WRITE_SECRET)))
        for n in range(20):  # unary Recommends whose body never comes
            bodiless = channels[n % 2].stream_unary(
                "/recserve.v1.Recommender/Recommend",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=pb.RecommendResponse.FromString,
            )
            held.append(bodiless(never(stop), metadata=bearer(READ_SECRET)))
        tasks = [asyncio.ensure_future(call) for call in held]
        # Refusal comes from the headers: a bodiless call with an unknown token, and one
        # with a token of too low a role, are answered although their body never comes.
        bodiless_feedback = channels[2].stream_unary(
            "/recserve.v1.Recommender/Feedback",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.FeedbackResponse.FromString,
        )
        for secret, code in (
            ("not-a-token-at-all", grpc.StatusCode.UNAUTHENTICATED),
            (READ_SECRET, grpc.StatusCode.PERMISSION_DENIED),
        ):
            try:
                await bodiless_feedback(never(stop), metadata=bearer(secret), timeout=2.0)
                raise AssertionError("a bodiless call with a bad token was served")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == code, exc
        refused = PRODUCTION.max_streams_per_caller
        # The streams beyond the caller's cap are refused at once; the rest stay open.
        await until(lambda: sum(t.done() for t in tasks) >= 100 - refused, timeout=10)
        codes = {t.exception().code() for t in tasks if t.done()}  # type: ignore[union-attr]
        assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}

        recommender = recommender_pb2_grpc.RecommenderStub(channels[2])
        started = time.perf_counter()
        answer = await recommender.Recommend(
            pb.RecommendRequest(user_id="u00001", k=5), metadata=bearer(READ_SECRET), timeout=1.0
        )
        elapsed = time.perf_counter() - started
        assert len(answer.items) == 5 and answer.model_version == 1
        assert elapsed < 1.0
        health = health_pb2_grpc.HealthStub(channels[2])
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert sum(not t.done() for t in tasks) == 20 + refused, "the held calls still hold"
    finally:
        stop.set()
        for call in held:
            call.cancel()
        for channel in channels:
            await channel.close()
        server.stop()


async def test_an_idle_stream_is_ended_and_keeps_what_it_sent(settings: Settings) -> None:
    quick = settings.model_copy(
        update={"server": settings.server.model_copy(update={"stream_idle_timeout_s": 0.3})}
    )
    running = await start_server(quick)
    proceed = asyncio.Event()

    async def one_then_silence():
        yield pb.FeedbackRequest(events=[pb.Event(event_id="idle-1", user_id="u9", item_id="i1")])
        await proceed.wait()

    try:
        async with own_connection(running.target) as channel:
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            try:
                await stub.FeedbackStream(one_then_silence(), timeout=10)
                raise AssertionError("the idle stream was not ended")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert "server.stream_idle_timeout_s" in (exc.details() or "")
        history = await running.history.get("u9")
        assert history[-1:] == ["i1"], "the message before the silence was stored"
    finally:
        proceed.set()
        await running.stop(0)
