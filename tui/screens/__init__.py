"""The console's screens, one per tab. Each owns its gRPC calls, made in workers, and
refreshes in place when the app asks it to (``reload``)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from textual.containers import Vertical
from textual.css.query import NoMatches

from tui.connection import Connection


class Pane(Vertical):
    """A tab's content: built with the connection, refreshed by ``reload``."""

    def __init__(self, connection: Connection, *, id: str) -> None:  # noqa: A002
        super().__init__(id=id)
        self.connection = connection

    def reload(self) -> Any:
        """Fetches and shows fresh data (in a worker); the default does nothing."""
        return None


P = TypeVar("P", bound=Pane)


def while_mounted(
    reload: Callable[[P], Awaitable[None]],
) -> Callable[[P], Awaitable[None]]:
    """A pane's refresh that skips its paint when the pane's widgets are not (or no
    longer) mounted: an answer can arrive while the console starts, switches or closes.
    The next refresh paints."""

    @functools.wraps(reload)
    async def guarded(pane: P) -> None:
        try:
            await reload(pane)
        except NoMatches:
            return

    return guarded
