"""Who gets in: role tokens checked by one interceptor, TLS and mTLS (certificates made by
the test), the refusal to listen openly beyond this machine, and malformed bytes and
hostile ids answered as client errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from pydantic import SecretStr

from server.app import start_server
from shared.client import AsyncClient
from shared.config import ClientSettings, Settings
from shared.proto.recserve.v1 import admin_pb2
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.wire.errors import InvalidArgument

READ, WRITE, ADMIN = "read-token-1", "write-token-2", "admin-token-3"


def with_server(settings: Settings, **server: object) -> Settings:
    return settings.model_copy(update={"server": settings.server.model_copy(update=server)})


async def code_of(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def event(n: int) -> pb.FeedbackRequest:
    return pb.FeedbackRequest(events=[pb.Event(event_id=f"sec-{n}", user_id="u1", item_id="i")])


async def test_role_tokens(settings) -> None:
    secured = with_server(
        settings,
        read_tokens=[SecretStr(READ)],
        write_tokens=[SecretStr(WRITE)],
        admin_tokens=[SecretStr(ADMIN)],
    )
    running = await start_server(secured)
    clients = {t: AsyncClient(running.target, t) for t in (None, "wrong", READ, WRITE, ADMIN)}
    try:

        async def codes(token):
            c = clients[token]
            return (
                await code_of(
                    c.recommender.Recommend(
                        pb.RecommendRequest(user_id="u00001"), metadata=c.metadata
                    )
                ),
                await code_of(
                    c.recommender.Feedback(event(hash(token) % 1000), metadata=c.metadata)
                ),
                await code_of(
                    c.admin.ListModels(admin_pb2.ListModelsRequest(), metadata=c.metadata)
                ),
            )

        OK, NOAUTH, DENIED = (
            grpc.StatusCode.OK,
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        )
        assert await codes(None) == (NOAUTH, NOAUTH, NOAUTH)
        assert await codes("wrong") == (NOAUTH, NOAUTH, NOAUTH)
        assert await codes(READ) == (OK, DENIED, DENIED)
        assert await codes(WRITE) == (OK, OK, DENIED)
        assert await codes(ADMIN) == (OK, OK, OK)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(clients[None].channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, "health stays open"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await clients[READ].recommender.Feedback(event(9), metadata=clients[READ].metadata)
        assert "needs the write role; read-1 has the read role" in err.value.details()
    finally:
        for c in clients.values():
            await c.close()
        await running.stop(0)


async def test_a_role_without_tokens_is_closed(settings) -> None:
    """Only read tokens configured: anonymous calls to every role are refused, admin ones
    included (they were open before a review tried them with grpcurl)."""
    running = await start_server(with_server(settings, read_tokens=[SecretStr(f"app={READ}")]))
    anonymous = AsyncClient(running.target)
    reader = AsyncClient(running.target, READ)
    try:
        NOAUTH = grpc.StatusCode.UNAUTHENTICATED
        recommend = anonymous.recommender.Recommend(pb.RecommendRequest(user_id="u1"))
        assert await code_of(recommend) == NOAUTH
        assert await code_of(anonymous.recommender.Feedback(event(1))) == NOAUTH
        for call in (
            anonymous.admin.ListModels(admin_pb2.ListModelsRequest()),
            anonymous.admin.StartTraining(admin_pb2.StartTrainingRequest()),
            anonymous.admin.ActivateModel(admin_pb2.ActivateModelRequest(version=1)),
            anonymous.admin.PruneModels(admin_pb2.PruneModelsRequest(keep=0)),
        ):
            assert await code_of(call) == NOAUTH
        denied = reader.admin.StartTraining(
            admin_pb2.StartTrainingRequest(), metadata=reader.metadata
        )
        assert await code_of(denied) == grpc.StatusCode.PERMISSION_DENIED
        ok = reader.recommender.Recommend(
            pb.RecommendRequest(user_id="u00001"), metadata=reader.metadata
        )
        assert await code_of(ok) == grpc.StatusCode.OK
    finally:
        await anonymous.close()
        await reader.close()
        await running.stop(0)


async def test_anonymous_roles_open_a_role_explicitly(settings) -> None:
    running = await start_server(
        with_server(settings, admin_tokens=[SecretStr(f"ops={ADMIN}")], anonymous_roles=["read"])
    )
    anonymous = AsyncClient(running.target)
    try:
        recommend = anonymous.recommender.Recommend(pb.RecommendRequest(user_id="u00001"))
        assert await code_of(recommend) == grpc.StatusCode.OK
        feedback = anonymous.recommender.Feedback(event(2))
        assert await code_of(feedback) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await anonymous.close()
        await running.stop(0)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import trustme

    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("recserve-client@example.com", common_name="recserve-client")
    paths = {
        "ca": folder / "ca.pem",
        "server_cert": folder / "server.pem",
        "server_key": folder / "server.key",
        "client_cert": folder / "client.pem",
        "client_key": folder / "client.key",
    }
    ca.cert_pem.write_to_path(paths["ca"])
    server.private_key_pem.write_to_path(paths["server_key"])
    (paths["server_cert"]).write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    client.private_key_pem.write_to_path(paths["client_key"])
    (paths["client_cert"]).write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    return paths


def mtls_settings(settings: Settings, pki: dict[str, Path]) -> Settings:
    return with_server(
        settings,
        host="127.0.0.1",
        tls_cert=pki["server_cert"],
        tls_key=pki["server_key"],
        tls_client_ca=pki["ca"],
        read_tokens=[SecretStr(READ)],
        admin_tokens=[SecretStr(ADMIN)],
    )


def client_tls(pki: dict[str, Path], *, certificate: bool = True) -> ClientSettings:
    return ClientSettings(
        tls_ca=pki["ca"],
        tls_cert=pki["client_cert"] if certificate else None,
        tls_key=pki["client_key"] if certificate else None,
        tls_server_name="localhost",
    )


async def test_mtls_with_role_tokens_from_a_python_client(settings, certificates) -> None:
    running = await start_server(mtls_settings(settings, certificates))
    good = AsyncClient(running.target, READ, client_tls(certificates))
    no_certificate = AsyncClient(running.target, READ, client_tls(certificates, certificate=False))
    plaintext = AsyncClient(running.target, READ)
    try:
        answer = await good.recommender.Recommend(
            pb.RecommendRequest(user_id="u00001"), metadata=good.metadata, timeout=10
        )
        assert answer.model_version == 1
        for refused in (no_certificate, plaintext):
            code = await code_of(
                refused.recommender.Recommend(
                    pb.RecommendRequest(user_id="u00001"), metadata=refused.metadata, timeout=5
                )
            )
            assert code == grpc.StatusCode.UNAVAILABLE, "no TLS session without a client cert"
        assert (
            await code_of(
                good.admin.ListModels(admin_pb2.ListModelsRequest(), metadata=good.metadata)
            )
            == grpc.StatusCode.PERMISSION_DENIED
        )
    finally:
        for c in (good, no_certificate, plaintext):
            await c.close()
        await running.stop(0)


async def test_a_certificate_grants_the_role_mapped_to_its_subject(settings, certificates) -> None:
    mapped = with_server(
        mtls_settings(settings, certificates),
        client_cert_roles={"recserve-client": "write"},
    )
    running = await start_server(mapped)
    no_token = AsyncClient(running.target, None, client_tls(certificates))
    try:
        recommend = no_token.recommender.Recommend(pb.RecommendRequest(user_id="u00001"))
        assert await code_of(recommend) == grpc.StatusCode.OK
        assert await code_of(no_token.recommender.Feedback(event(3))) == grpc.StatusCode.OK
        stream = no_token.recommender.FeedbackStream(iter([event(4)]))
        assert await code_of(stream) == grpc.StatusCode.OK
        listed = no_token.admin.ListModels(admin_pb2.ListModelsRequest())
        assert await code_of(listed) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await no_token.close()
        await running.stop(0)
    unmapped = await start_server(mtls_settings(settings, certificates))
    no_token = AsyncClient(unmapped.target, None, client_tls(certificates))
    try:
        recommend = no_token.recommender.Recommend(pb.RecommendRequest(user_id="u00001"))
        assert await code_of(recommend) == grpc.StatusCode.UNAUTHENTICATED, "none by default"
    finally:
        await no_token.close()
        await unmapped.stop(0)


async def test_mtls_from_the_console(settings, certificates) -> None:
    from textual.widgets import DataTable

    from tests.tui.test_console import SIZE, until
    from tui.app import RecserveConsole

    running = await start_server(mtls_settings(settings, certificates))
    try:
        app = RecserveConsole(
            running.target, token=ADMIN, tls=client_tls(certificates), refresh_s=0.2
        )
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            table = app.query_one("#models-table", DataTable)
            await until(pilot, lambda: table.row_count == 1)
            assert not app._notifications
    finally:
        await running.stop(0)


def test_mtls_from_the_cli(settings, certificates) -> None:
    from tests.support.processes import ServerProcess, process_env

    secured = mtls_settings(settings, certificates)
    s = secured.server
    server = ServerProcess(
        secured,
        "mtls",
        wait=False,
        tls=client_tls(certificates),
        SERVER__TLS_CERT=str(s.tls_cert),
        SERVER__TLS_KEY=str(s.tls_key),
        SERVER__TLS_CLIENT_CA=str(s.tls_client_ca),
        SERVER__READ_TOKENS=f'["{READ}"]',
        SERVER__ADMIN_TOKENS=f'["{ADMIN}"]',
        SERVER__HOST="0.0.0.0",
    )
    try:
        env = process_env(
            secured,
            CLIENT__TLS_CA=str(certificates["ca"]),
            CLIENT__TLS_CERT=str(certificates["client_cert"]),
            CLIENT__TLS_KEY=str(certificates["client_key"]),
            CLIENT__TLS_SERVER_NAME="localhost",
        )
        run = lambda *args: subprocess.run(  # noqa: E731
            [sys.executable, "-m", "recserve", *args, "--target", server.target],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        recommended = run("recommend", "--user", "u00001", "--token", READ)
        assert recommended.returncode == 0, recommended.stderr
        assert "model version 1, source SOURCE_MODEL" in recommended.stdout
        listed = run("models", "list", "--token", ADMIN)
        assert listed.returncode == 0 and "active" in listed.stdout, listed.stderr
        refused = run("models", "list", "--token", READ)
        assert refused.returncode == 2 and "PERMISSION_DENIED" in refused.stderr
    finally:
        server.stop()


async def test_open_plaintext_beyond_loopback_is_refused(settings, certificates) -> None:
    with pytest.raises(InvalidArgument, match="server.host: is 0.0.0.0"):
        await start_server(with_server(settings, host="0.0.0.0"))
    tls_only = with_server(
        settings,
        host="0.0.0.0",
        tls_cert=certificates["server_cert"],
        tls_key=certificates["server_key"],
    )
    with pytest.raises(InvalidArgument, match="TLS alone does not"):
        await start_server(tls_only)
    running = await start_server(with_server(settings, host="0.0.0.0", insecure=True))
    await running.stop(0)
    tokened = await start_server(
        with_server(settings, host="0.0.0.0", write_tokens=[SecretStr(WRITE)])
    )
    await tokened.stop(0)


def test_serve_refuses_an_open_public_listener(settings) -> None:
    from tests.support.processes import process_env

    result = subprocess.run(
        [sys.executable, "-m", "recserve", "serve", "--host", "0.0.0.0", "--port", "0"],
        env=process_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "error: server.host: is 0.0.0.0" in result.stderr and "--insecure" in result.stderr


METHODS = [
    ("/recserve.v1.Recommender/Recommend", "unary"),
    ("/recserve.v1.Recommender/RecommendBatch", "unary"),
    ("/recserve.v1.Recommender/Feedback", "unary"),
    ("/recserve.v1.Recommender/FeedbackStream", "stream"),
    ("/recserve.v1.ModelAdmin/ListModels", "unary"),
    ("/recserve.v1.ModelAdmin/StartTraining", "unary"),
    ("/recserve.v1.ModelAdmin/SetItemAvailability", "unary"),
]


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff", b"\x0a\x64ab"], ids=["tag", "length"])
@pytest.mark.asyncio(loop_scope="module")
async def test_malformed_bytes_get_invalid_argument_on_every_method(module_server, garbage) -> None:
    server = module_server
    async with grpc.aio.insecure_channel(server.target) as channel:
        for method, kind in METHODS:
            identity = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)
            if kind == "unary":
                call = channel.unary_unary(method, **identity)(garbage, timeout=10)
            else:
                call = channel.stream_unary(method, **identity)(iter([garbage]), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.value)
            assert "is not a valid recserve.v1." in err.value.details()
    assert server.registry.current is not None, "still serving"


@pytest.mark.parametrize(
    ("bad", "code_point"),
    [("nul\x00user", "U+0000"), ("bell\x07", "U+0007"), ("rtl\u202eresu", "U+202E")],
)
@pytest.mark.asyncio(loop_scope="module")
async def test_control_and_bidi_characters_in_ids_are_refused(
    module_client, bad, code_point
) -> None:
    client = module_client
    for call, field in (
        (client.recommender.Recommend(pb.RecommendRequest(user_id=bad)), "user_id"),
        (
            client.recommender.Recommend(pb.RecommendRequest(user_id="u", history=["ok", bad])),
            "history[1]",
        ),
        (
            client.recommender.Feedback(
                pb.FeedbackRequest(events=[pb.Event(event_id="e", user_id="u", item_id=bad)])
            ),
            "events[0].item_id",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(f"{field}: contains the character {code_point}")
