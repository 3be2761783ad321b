"""Two server replicas on one database, in this process: SQLite (with workers > 1, so
that each polls for the other's changes) or PostgreSQL (LISTEN/NOTIFY), with the tiny
synthetic log stored and no model (they serve the popularity fallback)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from shared.storage import event_store
from shared.storage.engine import make_engine, migrate, session_scope
from tests.conftest import TINY_SPEC, event_rows, make_settings


@asynccontextmanager
async def two_replicas(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    engine_name: str,
    *,
    events: Sequence[Any] | None = None,
    **server: object,
) -> AsyncIterator[tuple[Any, Any, Any, Any]]:
    """(replica A, replica B, a client of A, a client of B); ``events`` (default: the
    tiny log) are stored first; ``server`` are more server settings."""
    from server.app import start_server
    from shared.client import AsyncClient

    settings = make_settings(tmp_path / "var", workers=2, **server)  # workers > 1: SQLite polls
    if engine_name == "postgresql":
        url = request.getfixturevalue("postgres_url")
        settings = settings.model_copy(update={"database_url": url})
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    with session_scope(engine) as s:
        event_store.insert_events(s, events=list(events or event_rows(TINY_SPEC)))
    engine.dispose()
    a, b = await start_server(settings), await start_server(settings)
    client_a, client_b = AsyncClient(a.target), AsyncClient(b.target)
    try:
        yield a, b, client_a, client_b
    finally:
        await client_a.close()
        await client_b.close()
        await a.stop(0)
        await b.stop(0)
