"""The access policy and call slots alone: no server, no sockets."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from pydantic import SecretStr

from server.auth import METHOD_ROLES, AccessPolicy, Caller, check_listen_safety, parse_token
from server.guard import CallSlots
from shared.config import ServerSettings
from shared.proto.recserve.v1 import admin_pb2, recommender_pb2
from shared.wire.errors import InvalidArgument

pytestmark = pytest.mark.unit

READ, WRITE, ADMIN = "app=read-secret-1", "ingest=write-secret-2", "ops=admin-secret-3"


def bearer(secret: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {secret}")]


def every_method() -> list[str]:
    services = [
        recommender_pb2.DESCRIPTOR.services_by_name["Recommender"],
        admin_pb2.DESCRIPTOR.services_by_name["ModelAdmin"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
        reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
    ]
    return [f"/{s.full_name}/{m.name}" for s in services for m in s.methods]


def test_every_method_of_every_service_is_in_the_role_map() -> None:
    missing = [method for method in every_method() if method not in METHOD_ROLES]
    assert missing == []


def test_every_method_is_closed_to_anonymous_callers_once_any_token_exists() -> None:
    for tokens in ({"read_tokens": [SecretStr(READ)]}, {"admin_tokens": [SecretStr(ADMIN)]}):
        policy = AccessPolicy(ServerSettings(**tokens))  # type: ignore[arg-type]
        anonymous = policy.caller([])
        for method in every_method():
            refusal = policy.refusal(method, anonymous)
            if METHOD_ROLES[method] == "open":
                assert refusal is None, method
            else:
                assert refusal is not None and refusal.code == grpc.StatusCode.UNAUTHENTICATED


def test_a_client_ca_alone_closes_everything(tmp_path) -> None:
    policy = AccessPolicy(ServerSettings(tls_client_ca=tmp_path / "ca.pem"))
    assert policy.authenticated
    assert policy.refusal("/recserve.v1.Recommender/Recommend", policy.caller([])) is not None


def test_an_unmapped_method_is_refused_even_to_admins() -> None:
    policy = AccessPolicy(ServerSettings(admin_tokens=[SecretStr(ADMIN)]))
    refusal = policy.refusal(
        "/recserve.v1.ModelAdmin/AddedLater", policy.caller(bearer("admin-secret-3"))
    )
    assert refusal is not None and refusal.code == grpc.StatusCode.PERMISSION_DENIED
    assert "not in the server's role map" in refusal.message


def test_roles_rank_and_names_come_from_the_token() -> None:
    policy = AccessPolicy(
        ServerSettings(
            read_tokens=[SecretStr(READ)],
            write_tokens=[SecretStr(WRITE)],
            admin_tokens=[SecretStr(ADMIN)],
        )
    )
    reader = policy.caller(bearer("read-secret-1"))
    assert reader == Caller("app", "read", offered_token=True)
    assert policy.refusal("/recserve.v1.Recommender/Recommend", reader) is None
    refusal = policy.refusal("/recserve.v1.Recommender/Feedback", reader)
    assert refusal is not None and refusal.code == grpc.StatusCode.PERMISSION_DENIED
    assert "app has the read role" in refusal.message and "read-secret-1" not in refusal.message
    writer = policy.caller(bearer("write-secret-2"))
    assert policy.refusal("/recserve.v1.Recommender/FeedbackStream", writer) is None
    admin = policy.caller(bearer("admin-secret-3"))
    assert policy.refusal("/recserve.v1.ModelAdmin/PruneModels", admin) is None
    unknown = policy.caller(bearer("read-secret-1x"))
    assert unknown.role is None and unknown.offered_token


def test_anonymous_roles_are_explicit() -> None:
    policy = AccessPolicy(ServerSettings(admin_tokens=[SecretStr(ADMIN)], anonymous_roles=["read"]))
    anonymous = policy.caller([])
    assert policy.refusal("/recserve.v1.Recommender/Recommend", anonymous) is None
    assert policy.refusal("/recserve.v1.Recommender/Feedback", anonymous) is not None


def test_nothing_configured_is_open_and_ignores_tokens() -> None:
    policy = AccessPolicy(ServerSettings())
    assert not policy.authenticated
    for caller in (policy.caller([]), policy.caller(bearer("whatever-it-is"))):
        assert policy.refusal("/recserve.v1.ModelAdmin/StartTraining", caller) is None


def test_certificates_grant_only_mapped_subjects() -> None:
    policy = AccessPolicy(ServerSettings(client_cert_roles={"shop": "read"}))
    assert policy.certificate_caller({"x509_common_name": [b"shop"]}) == Caller("cert:shop", "read")
    assert policy.certificate_caller({"x509_common_name": [b"other"]}) is None
    assert policy.certificate_caller({}) is None


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("bad name=secret-long", "has a name"),
        ("short=abc", "secret under 8"),
        ("=secret-long", "name"),
    ],
)
def test_token_entries_are_checked(entry: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem):
        parse_token(entry, "read", 1)


def test_a_bare_secret_gets_a_positional_name() -> None:
    assert parse_token("s3cret-value", "write", 2).name == "write-2"


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="more than once"):
        AccessPolicy(
            ServerSettings(
                read_tokens=[SecretStr("a=12345678")], admin_tokens=[SecretStr("a=abcdefgh")]
            )
        )


def test_listening_beyond_loopback_needs_authentication(tmp_path) -> None:
    with pytest.raises(InvalidArgument, match="no authentication"):
        check_listen_safety(ServerSettings(host="0.0.0.0"))
    tls_only = ServerSettings(host="0.0.0.0", tls_cert=tmp_path / "c", tls_key=tmp_path / "k")
    with pytest.raises(InvalidArgument, match="TLS alone does not"):
        check_listen_safety(tls_only)
    ca_unmapped = ServerSettings(host="0.0.0.0", tls_client_ca=tmp_path / "ca")
    with pytest.raises(InvalidArgument):
        check_listen_safety(ca_unmapped)
    check_listen_safety(ServerSettings(host="0.0.0.0", read_tokens=[SecretStr(READ)]))
    check_listen_safety(
        ServerSettings(
            host="0.0.0.0", tls_client_ca=tmp_path / "ca", client_cert_roles={"a": "read"}
        )
    )
    check_listen_safety(ServerSettings(host="0.0.0.0", insecure=True))
    check_listen_safety(ServerSettings(host="127.0.0.1"))


def test_slots_count_unary_calls_and_streams_per_caller_apart() -> None:
    slots = CallSlots(max_unary=2, max_streams_per_caller=2)
    assert slots.take_stream("a") and slots.take_stream("a") and not slots.take_stream("a")
    assert slots.take_stream("b"), "another caller has streams of its own"
    assert slots.take_unary() and slots.take_unary(), "streams take no unary slot"
    assert not slots.take_unary()
    slots.free_unary()
    assert slots.take_unary()
    slots.free_stream("a")
    assert slots.take_stream("a")
