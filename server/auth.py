"""Who may call what: bearer tokens with roles, checked by one server interceptor, and
the rule that a server reachable from other hosts is never open by accident.

Roles, each a superset of the one before:

    read   Recommend, RecommendBatch
    write  Feedback, FeedbackStream        (and read)
    admin  every ModelAdmin method         (and read and write)

A role with no tokens configured is open (the embedded default on 127.0.0.1). A call to
a closed role needs ``authorization: Bearer <token>`` with a token of that role or a
higher one: none or an unknown one gets UNAUTHENTICATED, a token of a lower role
PERMISSION_DENIED. Tokens are compared in constant time, against every configured
token. Health checking and server reflection are always open.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from shared.config import ServerSettings
from shared.errors import InvalidArgument

RANK = {"read": 1, "write": 2, "admin": 3}
METHOD_ROLES = {
    "/recserve.v1.Recommender/Recommend": "read",
    "/recserve.v1.Recommender/RecommendBatch": "read",
    "/recserve.v1.Recommender/Feedback": "write",
    "/recserve.v1.Recommender/FeedbackStream": "write",
}
ADMIN_PREFIX = "/recserve.v1.ModelAdmin/"


def role_of(method: str) -> str | None:
    if method.startswith(ADMIN_PREFIX):
        return "admin"
    return METHOD_ROLES.get(method)


def configured_tokens(settings: ServerSettings) -> dict[str, list[bytes]]:
    admin = [*settings.admin_tokens, *([settings.admin_token] if settings.admin_token else [])]
    return {
        "read": [t.get_secret_value().encode() for t in settings.read_tokens],
        "write": [t.get_secret_value().encode() for t in settings.write_tokens],
        "admin": [t.get_secret_value().encode() for t in admin],
    }


class TokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, settings: ServerSettings) -> None:
        self._tokens = configured_tokens(settings)

    def granted(self, offered: bytes) -> str | None:
        """The highest role ``offered`` belongs to; every token is compared, in
        constant time, whatever matches first."""
        best: str | None = None
        for role, tokens in self._tokens.items():
            for token in tokens:
                if hmac.compare_digest(token, offered) and (
                    best is None or RANK[role] > RANK[best]
                ):
                    best = role
        return best

    def check(self, method: str, metadata: Any) -> tuple[grpc.StatusCode, str] | None:
        """None when the call may proceed, else the status and message to refuse it with."""
        role = role_of(method)
        if role is None or not self._tokens[role]:
            return None
        header = dict(metadata or ()).get("authorization", "")
        offered = (
            header[7:].encode() if isinstance(header, str) and header.startswith("Bearer ") else b""
        )
        granted = self.granted(offered) if offered else None
        if granted is None:
            return (
                grpc.StatusCode.UNAUTHENTICATED,
                f"{method} needs the metadata 'authorization: Bearer <token>' with a token "
                f"of the {role} role or higher",
            )
        if RANK[granted] < RANK[role]:
            return (
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} needs the {role} role; this token has the {granted} role",
            )
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        refusal = self.check(details.method, details.invocation_metadata)
        if refusal is None or handler is None:
            return handler
        code, message = refusal

        async def deny(_request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(code, message)

        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                deny,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            deny,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen_safety(settings: ServerSettings) -> None:
    """Refuses to listen beyond this machine in plaintext with no tokens at all, unless
    ``insecure`` says that is intended (a trusted network, a sidecar doing TLS)."""
    if settings.insecure or is_loopback(settings.host):
        return
    tls = settings.tls_cert is not None and settings.tls_key is not None
    tokens = any(configured_tokens(settings).values())
    if not tls and not tokens:
        raise InvalidArgument(
            "server.host",
            f"is {settings.host}, reachable from other machines, with neither TLS "
            "(server.tls_cert/tls_key) nor tokens (server.*_tokens): anyone could write "
            "feedback and run ModelAdmin. Configure one, listen on 127.0.0.1, or pass "
            "--insecure (RECSERVE_SERVER__INSECURE=true) if that is intended",
        )


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from tls_cert/tls_key, requiring client certificates signed by
    tls_client_ca when it is set (mTLS); None for plaintext."""
    if settings.tls_cert is None or settings.tls_key is None:
        if settings.tls_cert is not None or settings.tls_key is not None:
            raise InvalidArgument(
                "server.tls_cert", "and server.tls_key must be set together (PEM files)"
            )
        return None
    ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )
