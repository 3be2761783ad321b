"""recserve operator console (`recserve tui --target HOST:PORT`).

Seven screens in tabs, switched with the keys 1-7: dashboard, models, jobs, preview,
items, rules and the audit of users' data. The visible one refreshes every
``refresh_s`` seconds, in place. / moves into the screen's text field and Escape out of
it; q quits, r refreshes now, ctrl+s saves an SVG screenshot of the screen (to
$RECSERVE_SCREENSHOT_DIR, default var/screenshots).
"""

from __future__ import annotations

import os
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Input, TabbedContent, TabPane

from shared.config import ClientSettings
from tui.connection import Connection
from tui.screens import Pane
from tui.screens.audit import AuditPane
from tui.screens.dashboard import DashboardPane
from tui.screens.items import ItemsPane
from tui.screens.jobs import JobsPane
from tui.screens.models import ModelsPane
from tui.screens.preview import PreviewPane
from tui.screens.rules import RulesPane

TABS = [
    ("dashboard", "Dashboard", DashboardPane),
    ("models", "Models", ModelsPane),
    ("jobs", "Jobs", JobsPane),
    ("preview", "Preview", PreviewPane),
    ("items", "Items", ItemsPane),
    ("rules", "Rules", RulesPane),
    ("audit", "Audit", AuditPane),
]


class RecserveConsole(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "recserve"
    BINDINGS = [
        ("q", "quit", "Quit"),
        ("r", "refresh", "Refresh"),
        ("ctrl+s", "save_screenshot", "Screenshot"),
        ("slash", "focus_input", "Type"),
        Binding("escape", "leave_input", "Leave field", show=False),
        *[(str(n), f"show_tab('{tab}')", label) for n, (tab, label, _) in enumerate(TABS, 1)],
    ]

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls: ClientSettings | None = None,
        refresh_s: float = 1.0,
        connection: Connection | None = None,
    ) -> None:
        super().__init__()
        self.connection = connection or Connection(target, token, self._notify_operator, tls)
        self.connection.on_state = self._connection_state
        self.refresh_s = refresh_s
        self.sub_title = target
        # Kept by reference: while a dialog is open, queries go to the dialog's screen.
        self.tabs = TabbedContent(initial="dashboard")
        self.panes: dict[str, Pane] = {tab: pane(self.connection) for tab, _, pane in TABS}

    def compose(self) -> ComposeResult:
        yield Header()
        with self.tabs:
            for n, (tab, label, _) in enumerate(TABS, 1):
                with TabPane(f"{n} {label}", id=tab):
                    yield self.panes[tab]
        yield Footer()

    def on_mount(self) -> None:
        self.call_after_refresh(self.action_refresh)
        self.set_interval(self.refresh_s, self.action_refresh)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # The screen's table takes the keys (its actions show in the footer).
        tables = self.panes[str(event.pane.id)].query(DataTable)
        if tables:
            tables.first().focus()
        self.action_refresh()

    def action_refresh(self) -> None:
        """Reloads the visible tab (the others refresh when shown); a pane whose widgets
        are not mounted yet (the console is still starting) waits for the next tick."""
        pane = self.panes[self.tabs.active]
        if pane.is_mounted:
            pane.reload()

    def action_show_tab(self, tab: str) -> None:
        self.tabs.active = tab

    def action_focus_input(self) -> None:
        """/ moves into the visible tab's first text field (search, user id)."""
        fields = self.panes[self.tabs.active].query(Input)
        if fields:
            fields.first().focus()

    def action_leave_input(self) -> None:
        """Escape leaves a text field, so that the number keys switch screens again."""
        if isinstance(self.focused, Input):
            self.set_focus(None)

    def action_save_screenshot(self) -> None:
        folder = Path(os.environ.get("RECSERVE_SCREENSHOT_DIR", "var/screenshots"))
        folder.mkdir(parents=True, exist_ok=True)
        name = f"console-{self.tabs.active}.svg"
        path = self.save_screenshot(filename=name, path=str(folder))
        self.notify(f"saved {path}", title="Screenshot")

    def _notify_operator(self, message: str, title: str, severity: str) -> None:
        self.notify(message, title=title, severity=severity)  # type: ignore[arg-type]

    def _connection_state(self, online: bool) -> None:
        self.sub_title = self.connection.target + ("" if online else " (disconnected)")

    async def on_unmount(self) -> None:
        await self.connection.close()
