"""Logs with request ids (text or JSON), and the Prometheus /metrics endpoint.

Every RPC gets a request id (the caller's ``x-request-id`` metadata when it sends a
sane one, else a new one). It is held in a context variable while the call runs, so
every log record made on its behalf carries it, and it is returned in the call's
trailing metadata.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from shared.config import Settings

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
caller_name: contextvars.ContextVar[str] = contextvars.ContextVar("caller_name", default="")
"""The name of the token (or certificate) that made the current call; never its secret."""
REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = logging.getLogger(__name__)


_PROCESS = uuid.uuid4().hex[:12]
_SEQUENCE = itertools.count(1)


def new_request_id(offered: str | None) -> str:
    """The caller's id when it is 1..128 of [A-Za-z0-9._:-], else a fresh one: this
    process's random prefix and a counter (unique, and cheaper than a UUID per call)."""
    if offered and _SANE_ID.match(offered):
        return offered
    return f"{_PROCESS}-{next(_SEQUENCE):x}"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.caller = caller_name.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        rid = getattr(record, "request_id", "")
        if rid:
            entry["request_id"] = rid
        caller = getattr(record, "caller", "")
        if caller:
            entry["caller"] = caller
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    """Root logging for a recserve process (text or JSON, with request ids)."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    if settings.telemetry.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(process)d %(name)s [%(request_id)s] %(message)s"
            )
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def serve_metrics(settings: Settings, registry: Any = None) -> int | None:
    """Starts the /metrics HTTP endpoint (telemetry.metrics_port; 0: none). Returns the
    port, or None when it is off or taken (logged; the process carries on)."""
    from prometheus_client import REGISTRY, start_http_server

    port = settings.telemetry.metrics_port
    if not port:
        return None
    try:
        server, _ = start_http_server(
            port, addr=settings.telemetry.metrics_host, registry=registry or REGISTRY
        )
    except OSError as exc:
        log.warning(
            "metrics endpoint not started: port %s is taken (%s); set "
            "RECSERVE_TELEMETRY__METRICS_PORT to a free port, or 0",
            port,
            exc,
        )
        return None
    bound = int(server.server_port)
    log.info("Prometheus metrics on http://%s:%s/metrics", settings.telemetry.metrics_host, bound)
    return bound
