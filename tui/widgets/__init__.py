"""Panes of the console. Each owns its gRPC calls, made in workers."""

from __future__ import annotations

from typing import Any

import grpc
from textual.widget import Widget
from textual.widgets import DataTable

from shared.client import AsyncClient


async def admin_call(
    widget: Widget, client: AsyncClient, method: str, request: Any, *, timeout: float = 5.0
) -> Any | None:
    """Calls ModelAdmin.<method>; on failure tells the operator (an error notification
    titled with the call) and returns None."""
    try:
        return await getattr(client.admin, method)(
            request, metadata=client.metadata, timeout=timeout
        )
    except grpc.aio.AioRpcError as exc:
        widget.app.notify(
            exc.details() or str(exc.code()), title=f"{method} failed", severity="error"
        )
        return None


def cleared_table(widget: Widget) -> DataTable[str] | None:
    """The pane's table, emptied for a refill; None when the console is closing."""
    tables = widget.query(DataTable)
    if not tables:
        return None
    table: DataTable[str] = tables.first()
    table.clear()
    return table
