"""recserve operator console (`recserve tui --target HOST:PORT`)."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, TabbedContent, TabPane

from shared.client import AsyncClient
from tui.widgets.dashboard import Dashboard
from tui.widgets.jobs import JobsPane
from tui.widgets.models import ModelsPane


class RecserveConsole(App[None]):
    """Dashboard, models and jobs of one recserve server, refreshed every second."""

    CSS_PATH = "app.tcss"
    TITLE = "recserve"
    BINDINGS = [("q", "quit", "Quit"), ("r", "refresh", "Refresh")]

    def __init__(self, target: str, *, token: str | None = None, refresh_s: float = 1.0) -> None:
        super().__init__()
        self.target = target
        self.client = AsyncClient(target, token)
        self.refresh_s = refresh_s
        self.sub_title = target

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="dashboard"):
            with TabPane("Dashboard", id="dashboard"):
                yield Dashboard(self.client)
            with TabPane("Models", id="models"):
                yield ModelsPane(self.client)
            with TabPane("Jobs", id="jobs"):
                yield JobsPane(self.client)
        yield Footer()

    def on_mount(self) -> None:
        self.action_refresh()
        self.set_interval(self.refresh_s, self.action_refresh)

    def action_refresh(self) -> None:
        self.query_one(Dashboard).reload()
        self.query_one(ModelsPane).reload()
        self.query_one(JobsPane).reload()

    async def on_unmount(self) -> None:
        await self.client.close()
