"""The HTTP/JSON door with curl, against a real server with tokens: the proto's JSON
mapping both ways, errors that name the field with the right HTTP status, refusal from
the headers (before the body), the body-size limit, the deadline header, CORS, the
OpenAPI document generated from the descriptors, and the admin routes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings

READ, WRITE, ADMIN = (
    "reader-secret-0123456789",
    "writer-secret-0123456789",
    "admin-secret-0123456789",
)
ORIGIN = "https://shop.example"


def curl(
    port: int,
    path: str,
    body: Any = None,
    *,
    token: str = "",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of one curl call."""
    command = ["curl", "-sS", "-i", "--max-time", "30", f"http://127.0.0.1:{port}{path}"]
    if body is not None or raw is not None:
        command += ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@-"]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    for key, value in (headers or {}).items():
        command += ["-H", f"{key}: {value}"]
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    done = subprocess.run(command, input=data, capture_output=True, timeout=60, check=True)
    head, _, text = done.stdout.decode().partition("\r\n\r\n")
    while head.startswith("HTTP/1.1 100"):
        head, _, text = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    found = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    return status, found, json.loads(text) if text.strip() else None


@pytest.fixture
async def http_server(data_dir: Path):
    from server.app import start_server

    settings = make_settings(
        data_dir,
        http_enabled=True,
        http_port=0,
        read_tokens=[f"reader={READ}"],
        write_tokens=[f"writer={WRITE}"],
        admin_tokens=[f"ops={ADMIN}"],
        http_cors_origins=[ORIGIN],
        max_message_mb=1,
    )
    running = await start_server(settings)
    try:
        yield running
    finally:
        await running.stop(0)


async def test_the_http_door_with_curl(http_server) -> None:
    port = http_server.http.port
    loop = __import__("asyncio").get_running_loop()

    async def call(*args: Any, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
        return await loop.run_in_executor(None, lambda: curl(port, *args, **kwargs))

    # The proto's JSON mapping: camelCase or snake_case in, camelCase out, int64 as strings.
    status, headers, body = await call("/v1/recommend", {"userId": "u00005", "k": 3}, token=READ)
    assert status == 200, body
    assert len(body["items"]) == 3 and body["modelVersion"] == "1"
    assert body["source"] == "SOURCE_MODEL" and headers["x-request-id"]
    status, _, snake = await call("/v1/recommend", {"user_id": "u00005", "k": 3}, token=READ)
    assert status == 200 and snake["items"] == body["items"]
    status, _, batch = await call(
        "/v1/recommend-batch", {"requests": [{"userId": "u00001"}, {"userId": "u00002"}]},
        token=READ,
    )  # fmt: skip
    assert status == 200 and len(batch["responses"]) == 2
    status, _, similar = await call(
        "/v1/similar-items", {"itemIds": ["i003-002"], "k": 2}, token=READ
    )
    assert status == 200 and len(similar["items"]) == 2

    # Errors: the HTTP status of the gRPC code, and the field at fault.
    status, _, error = await call("/v1/recommend", {"userId": "u00005", "k": -1}, token=READ)
    assert status == 400 and error["error"]["status"] == "INVALID_ARGUMENT"
    assert error["error"]["details"][0]["fieldViolations"][0]["field"] == "k"
    status, _, error = await call("/v1/recommend", {"userId": "u1", "kk": 3}, token=READ)
    assert status == 400 and "kk" in error["error"]["message"]
    status, _, error = await call("/v1/recommend", raw=b"{not json", token=READ)
    assert (
        status == 400 and error["error"]["details"][0]["fieldViolations"][0]["field"] == "request"
    )
    status, _, error = await call(
        "/v1/recommend", {"userId": "u1"}, token=READ, headers={"X-Timeout-Ms": "soon"}
    )
    assert status == 400 and "X-Timeout-Ms" in error["error"]["message"]
    status, _, error = await call(
        "/v1/export-user", {"userId": "nobody", "pageToken": "x"}, token=ADMIN
    )
    assert status == 400 and "page_token" in error["error"]["message"]

    # Refused from the headers: no token, an unknown one, too small a role.
    status, _, error = await call("/v1/recommend", {"userId": "u1"})
    assert status == 401 and error["error"]["status"] == "UNAUTHENTICATED"
    status, _, _ = await call("/v1/recommend", {"userId": "u1"}, token="wrong-secret-0123456789")
    assert status == 401
    status, _, error = await call("/v1/feedback", {"events": []}, token=READ)
    assert status == 403 and error["error"]["status"] == "PERMISSION_DENIED"
    status, _, error = await call("/v1/delete-user", {"userId": "u00009"}, token=WRITE)
    assert status == 403
    # Too big a body: refused, named, nothing read past the limit.
    status, _, error = await call(
        "/v1/feedback", raw=b'{"events": [' + b" " * (1024 * 1024 + 10) + b"]}", token=WRITE
    )
    assert status == 413 and "max_message_mb" in error["error"]["message"]

    event = {"eventId": "http-1", "userId": "u00009", "itemId": "i003-002"}
    status, _, stored = await call("/v1/feedback", {"events": [event]}, token=WRITE)
    assert status == 200 and stored["stored"] == "1"
    status, _, page = await call("/v1/export-user", {"userId": "u00009"}, token=ADMIN)
    assert status == 200 and "http-1" in page["json"]
    status, _, deleted = await call("/v1/delete-user", {"userId": "u00009"}, token=ADMIN)
    assert status == 200 and int(deleted["events"]) >= 1

    # CORS for the listed origin only.
    _, headers, _ = await call(
        "/v1/recommend", {"userId": "u1"}, token=READ, headers={"Origin": ORIGIN}
    )
    assert headers.get("access-control-allow-origin") == ORIGIN
    _, headers, _ = await call(
        "/v1/recommend", {"userId": "u1"}, token=READ, headers={"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in headers

    # The OpenAPI document, from the descriptors; health.
    status, _, document = await call("/openapi.json")
    assert status == 200 and set(document["paths"]) >= {"/v1/recommend", "/v1/delete-user"}
    request = document["components"]["schemas"]["recserve.v1.RecommendRequest"]["properties"]
    assert request["userId"] == {"type": "string"} and request["boost"]["type"] == "array"
    response = document["components"]["schemas"]["recserve.v1.RecommendResponse"]["properties"]
    assert response["modelVersion"]["type"] == "string", "int64 as a string"
    status, _, health = await call("/healthz")
    assert status == 200 and health == {"status": "SERVING"}


def test_http_is_off_by_default_and_refuses_to_listen_open() -> None:
    from server.http import HttpDoor
    from shared.config import ServerSettings

    assert not ServerSettings().http_enabled and ServerSettings().http_cors_origins == []
    settings = ServerSettings(host="0.0.0.0", http_enabled=True)
    door = HttpDoor(settings, None, None, {}, lambda: True)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="reachable from other machines|tokens"):
        __import__("asyncio").run(door.start())
