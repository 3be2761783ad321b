"""The HTTP/JSON door: Recommend, RecommendBatch, Feedback, SimilarItems, DeleteUser and
ExportUser over HTTP with JSON bodies, for callers that do not speak gRPC (docs/http.md).

Off by default (``server.http_enabled``); on its own port (``server.http_port``), served
by the same process on aiohttp. Each route is a gRPC method, and a call takes the same
path through the same code as over gRPC:

- **Protection, before the body is read**: the access policy (server/auth.py) from the
  ``Authorization: Bearer`` header, for the route's gRPC method and role; then a unary
  slot (server/guard.py's CallSlots, shared with gRPC: one budget for both doors). The
  body is read only then, up to ``server.max_message_mb`` (413 beyond).
- **The call itself**: the gRPC servicer's method, with its ``rpc`` decorator (request id,
  deadline, error mapping, metrics, access log) through ``HttpCall``, a stand-in for the
  gRPC call context. The deadline comes from the ``X-Timeout-Ms`` header (else
  ``server.default_deadline_s``); admission and load shedding happen where they do for
  gRPC (the batcher's queue bound), so an overloaded server answers 429.
- **JSON**: the proto's JSON mapping, as grpcurl prints it: field names in camelCase or
  snake_case are accepted, camelCase is emitted, 64-bit integers are strings.
- **Errors**: the gRPC status is mapped to an HTTP status as Google's API design guide
  maps them; the body is ``{"error": {"code", "status", "message", "details"}}``, and an
  INVALID_ARGUMENT's details name the field (google.rpc.BadRequest).
- **CORS** (``server.http_cors_origins``): off unless origins are listed.

``GET /openapi.json`` is the OpenAPI document (server/openapi.py), generated from the
proto descriptors; ``GET /healthz`` answers 200 while serving, 503 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from server.auth import AccessPolicy, check_listen_safety, configured_tokens, is_loopback
from server.guard import CallSlots
from server.openapi import openapi_document
from shared.config import ServerSettings
from shared.proto.recserve.v1 import admin_pb2, recommender_pb2
from shared.telemetry import REQUEST_ID_HEADER, caller_name
from shared.wire.errors import InvalidArgument

log = logging.getLogger(__name__)

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
"""gRPC status -> HTTP status, as Google's API design guide maps them."""
TIMEOUT_HEADER = "X-Timeout-Ms"


@dataclass(frozen=True)
class Route:
    path: str
    method: str
    """The gRPC method (its role in the access policy, its servicer method)."""
    request: Any
    response: Any
    summary: str


ROUTES = [
    Route("/v1/recommend", "/recserve.v1.Recommender/Recommend",
          recommender_pb2.RecommendRequest, recommender_pb2.RecommendResponse,
          "Ranked items for one user (or an anonymous session)"),
    Route("/v1/recommend-batch", "/recserve.v1.Recommender/RecommendBatch",
          recommender_pb2.RecommendBatchRequest, recommender_pb2.RecommendBatchResponse,
          "Ranked items for many users in one call"),
    Route("/v1/feedback", "/recserve.v1.Recommender/Feedback",
          recommender_pb2.FeedbackRequest, recommender_pb2.FeedbackResponse,
          "Record events; answered after they are committed"),
    Route("/v1/similar-items", "/recserve.v1.Recommender/SimilarItems",
          recommender_pb2.SimilarItemsRequest, recommender_pb2.SimilarItemsResponse,
          "Items like the given ones"),
    Route("/v1/delete-user", "/recserve.v1.ModelAdmin/DeleteUser",
          admin_pb2.DeleteUserRequest, admin_pb2.DeleteUserResponse,
          "Delete everything stored about a user (admin)"),
    Route("/v1/export-user", "/recserve.v1.ModelAdmin/ExportUser",
          admin_pb2.ExportUserRequest, admin_pb2.ExportUserResponse,
          "Everything stored about a user, a page at a time (admin)"),
]  # fmt: skip


class HttpAbort(Exception):
    """The gRPC status a servicer ended the call with (HttpCall.abort_with_status)."""

    def __init__(self, code: grpc.StatusCode, message: str, details: list[dict[str, Any]]):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


class HttpCall:
    """What the servicers' ``rpc`` decorator asks of a gRPC call context, for an HTTP
    request: its metadata (the request id), its deadline, and how it is ended."""

    def __init__(self, request_id: str | None, deadline: float | None) -> None:
        self._metadata = ((REQUEST_ID_HEADER, request_id),) if request_id else ()
        self._deadline = deadline
        self.trailing: tuple[tuple[str, Any], ...] = ()
        self._code: grpc.StatusCode | None = None

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._metadata

    def set_trailing_metadata(self, metadata: tuple[tuple[str, Any], ...]) -> None:
        self.trailing = metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def code(self) -> grpc.StatusCode | None:
        return self._code

    async def abort_with_status(self, status: Any) -> None:
        self._code = status.code
        raise HttpAbort(status.code, status.details, _details(status.trailing_metadata))

    async def abort(self, code: grpc.StatusCode, message: str = "") -> None:
        self._code = code
        raise HttpAbort(code, message, [])


def _details(trailing: Any) -> list[dict[str, Any]]:
    """The google.rpc.Status details of a rich status, as JSON (field violations)."""
    for key, value in trailing or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            out = []
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    out.append({"@type": detail.type_url, **json_format.MessageToDict(bad)})
            return out
    return []


def error_response(
    code: grpc.StatusCode, message: str, details: list[dict[str, Any]] | None = None,
    request_id: str = "", http_status: int = 0,
) -> web.Response:  # fmt: skip
    status = http_status or HTTP_STATUS.get(code, 500)
    body = {"error": {"code": status, "status": code.name, "message": message,
                      "details": details or []}}  # fmt: skip
    headers = {REQUEST_ID_HEADER: request_id} if request_id else {}
    return web.json_response(body, status=status, headers=headers)


def _bad_request(field: str, message: str, http_status: int = 0) -> web.Response:
    violation = {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": field, "description": message}],
    }
    return error_response(
        grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {message}", [violation],
        http_status=http_status,
    )  # fmt: skip


Servicer = Callable[[Any, Any], Awaitable[Any]]


class HttpDoor:
    """The routes over the servicers, behind the shared access policy and call slots."""

    def __init__(
        self,
        settings: ServerSettings,
        policy: AccessPolicy,
        slots: CallSlots,
        servicers: dict[str, Servicer],
        serving: Callable[[], bool],
    ) -> None:
        self._settings = settings
        self._policy = policy
        self._slots = slots
        self._servicers = servicers
        self._serving = serving
        self._cors = set(settings.http_cors_origins)
        self.runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self._settings.max_message_mb * 1024 * 1024,
            middlewares=[self._cors_middleware],
        )
        for route in ROUTES:
            app.router.add_post(route.path, self._handler(route))
            if self._cors:
                app.router.add_route("OPTIONS", route.path, self._preflight)
        document = openapi_document(ROUTES)

        async def openapi(_: web.Request) -> web.Response:
            return _json(document)

        app.router.add_get("/openapi.json", openapi)
        app.router.add_get("/healthz", self._health)
        return app

    async def start(self) -> int:
        """Listens on server.host:http_port (0 picks a free port); returns the port."""
        settings = self._settings
        check_listen_safety(settings, what="server.http_enabled")
        if not (settings.insecure or is_loopback(settings.host) or configured_tokens(settings)):
            raise InvalidArgument(
                "server.http_enabled",
                f"is true with server.host {settings.host} and no tokens: HTTP callers "
                "authenticate with 'Authorization: Bearer' tokens only (client certificates "
                "are for gRPC). Configure server.*_tokens, or listen on 127.0.0.1",
            )
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(
            self.runner, settings.host, settings.http_port, ssl_context=_ssl_context(settings),
            reuse_port=True,
        )  # fmt: skip
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else settings.http_port
        log.info("recserve HTTP/JSON on %s:%s", settings.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _health(self, _: web.Request) -> web.Response:
        serving = self._serving()
        return _json({"status": "SERVING" if serving else "NOT_SERVING"}, 200 if serving else 503)

    @web.middleware
    async def _cors_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        origin = request.headers.get("Origin", "")
        if origin and ("*" in self._cors or origin in self._cors):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    async def _preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        if not origin or not ("*" in self._cors or origin in self._cors):
            return web.Response(status=403)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": f"Authorization, Content-Type, {TIMEOUT_HEADER}, "
                f"{REQUEST_ID_HEADER}",
                "Access-Control-Max-Age": "600",
            },
        )

    def _handler(self, route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
        servicer = self._servicers[route.method]

        async def handle(request: web.Request) -> web.Response:
            # Who may call, and whether there is room: from the headers, body unread.
            caller = self._policy.caller(
                [("authorization", request.headers.get("Authorization", ""))]
                if "Authorization" in request.headers
                else []
            )
            refusal = self._policy.refusal(route.method, caller)
            if refusal is not None:
                return error_response(refusal.code, refusal.message)
            deadline, problem = _deadline(request)
            if problem is not None:
                return problem
            if not self._slots.take_unary():
                return error_response(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the server has {self._slots.max_unary} calls in progress "
                    "(server.max_concurrent_rpcs): retry with backoff",
                )
            named = caller_name.set(caller.name)
            try:
                return await self._call(route, servicer, request, deadline)
            finally:
                self._slots.free_unary()
                caller_name.reset(named)

        return handle

    async def _call(
        self, route: Route, servicer: Servicer, request: web.Request, deadline: float | None
    ) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            limit = self._settings.max_message_mb
            too_big = f"the body is over {limit} MB (server.max_message_mb)"
            return _bad_request("request", too_big, http_status=413)
        try:
            message = json_format.Parse(body or b"{}", route.request())
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            return _bad_request("request", f"is not a valid {route.request.DESCRIPTOR.name} in "
                                f"the proto's JSON mapping ({str(exc)[:300]})")  # fmt: skip
        call = HttpCall(request.headers.get(REQUEST_ID_HEADER), deadline)
        try:
            if deadline is not None:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    answer = await servicer(message, call)
            else:
                answer = await servicer(message, call)
        except HttpAbort as abort:
            return error_response(abort.code, abort.message, abort.details, _rid(call))
        except TimeoutError:
            return error_response(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"the call took over its {TIMEOUT_HEADER}"
            )
        text = json_format.MessageToJson(answer, indent=None)
        headers = {REQUEST_ID_HEADER: _rid(call)}
        return web.Response(text=text, content_type="application/json", headers=headers)


def _rid(call: HttpCall) -> str:
    return str(dict(call.trailing).get(REQUEST_ID_HEADER, ""))


def _deadline(request: web.Request) -> tuple[float | None, web.Response | None]:
    text = request.headers.get(TIMEOUT_HEADER)
    if text is None:
        return None, None
    try:
        ms = float(text)
        if not 0 < ms <= 3_600_000:
            raise ValueError
    except ValueError:
        error = InvalidArgument(TIMEOUT_HEADER, f"is {text!r}; accepted: milliseconds, 1..3600000")
        return None, _bad_request(error.field, error.description)
    return time.monotonic() + ms / 1000.0, None


def _json(document: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(document), status=status, content_type="application/json")


def _ssl_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """TLS with the gRPC port's certificate, when it has one."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context
