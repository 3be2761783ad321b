"""The console's screens, one per tab. Each owns its gRPC calls, made in workers, and
refreshes in place when the app asks it to (``reload``)."""

from __future__ import annotations

from typing import Any

from textual.containers import Vertical

from tui.connection import Connection


class Pane(Vertical):
    """A tab's content: built with the connection, refreshed by ``reload``."""

    def __init__(self, connection: Connection, *, id: str) -> None:  # noqa: A002
        super().__init__(id=id)
        self.connection = connection

    def reload(self) -> Any:
        """Fetches and shows fresh data (in a worker); the default does nothing."""
        return None
