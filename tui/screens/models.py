"""Model versions with their offline metrics side by side; activate, roll back, prune,
and the details of one version."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from shared.proto.recserve.v1 import admin_pb2
from tui.connection import Connection
from tui.dialogs.confirm import confirm
from tui.dialogs.model_details import ModelDetailsDialog
from tui.format import when
from tui.screens import Pane
from tui.widgets.tables import selected_key, sync_table

COLUMNS = (
    "version",
    "status",
    "ndcg@10",
    "hr@10",
    "pop ndcg@10",
    "pop hr@10",
    "x pop",
    "epochs",
    "train s",
    "watermark",
    "events",
    "MB",
    "created",
)


def model_row(m: admin_pb2.ModelVersion, active: int) -> tuple[str, ...]:
    metrics = m.metrics
    ndcg, pop = metrics.get("ndcg@10", 0.0), metrics.get("pop_ndcg@10", 0.0)
    return (
        f"{m.version}{' *' if m.version == active else ''}",
        m.status,
        f"{ndcg:.4f}",
        f"{metrics.get('hr@10', 0.0):.4f}",
        f"{pop:.4f}",
        f"{metrics.get('pop_hr@10', 0.0):.4f}",
        f"{ndcg / pop:.1f}" if pop else "-",
        f"{metrics.get('epochs', 0):.0f}",
        f"{metrics.get('train_seconds', 0):.1f}",
        str(m.data_watermark),
        f"{metrics.get('train_events', 0):,.0f}",
        f"{m.size_bytes / 1e6:.2f}",
        when(m.created_at_ms),
    )


class ModelsPane(Pane):
    BINDINGS = [
        ("a", "activate", "Activate"),
        ("b", "rollback", "Roll back"),
        ("d", "details", "Details"),
        ("p", "prune", "Prune"),
    ]

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection, id="models-pane")
        self.models: dict[int, admin_pb2.ModelVersion] = {}
        self.active_version = 0

    def compose(self) -> ComposeResult:
        yield Static(
            "a activate · b roll back · enter or d details · p prune old bundles   (* = active)",
            classes="hint",
        )
        table: DataTable[str] = DataTable(id="models-table", cursor_type="row")
        table.add_columns(*COLUMNS)
        yield table

    @work(exclusive=True, group="models")
    async def reload(self) -> None:
        answer = await self.connection.admin("ListModels", admin_pb2.ListModelsRequest())
        if answer is None or not self.is_attached:
            return
        self.models = {m.version: m for m in answer.models}
        self.active_version = answer.active_version
        sync_table(
            self.query_one("#models-table", DataTable),
            [(str(m.version), model_row(m, answer.active_version)) for m in answer.models],
            order=lambda version: -int(str(version).rstrip(" *")),
        )

    def selected(self) -> int | None:
        key = selected_key(self.query_one("#models-table", DataTable))
        return int(key) if key else None

    def action_activate(self) -> None:
        version = self.selected()
        if version is None:
            self.notify("No model version selected", title="Activate", severity="warning")
            return
        confirm(
            self.app,
            f"Activate model version {version}? Every replica will serve it "
            f"(now: v{self.active_version or '-'}).",
            title="Activate",
            then=lambda: self._activate(version),
        )

    @work(group="models-change")
    async def _activate(self, version: int) -> None:
        model = await self.connection.admin(
            "ActivateModel", admin_pb2.ActivateModelRequest(version=version), timeout=120
        )
        if model is not None:
            self.notify(f"model version {model.version} is now {model.status}", title="Activated")
            self.reload()

    def action_rollback(self) -> None:
        confirm(
            self.app,
            f"Roll back from model version {self.active_version or '-'} to the version "
            "that was active before it?",
            title="Roll back",
            then=lambda: self._rollback(),
        )

    @work(group="models-change")
    async def _rollback(self) -> None:
        model = await self.connection.admin(
            "RollbackModel", admin_pb2.RollbackModelRequest(), timeout=120
        )
        if model is not None:
            self.notify(f"model version {model.version} is active again", title="Rolled back")
            self.reload()

    def on_data_table_row_selected(self, _event: DataTable.RowSelected) -> None:
        self.action_details()

    def action_details(self) -> None:
        version = self.selected()
        if version is not None:
            self._details(version)

    @work(group="models-details")
    async def _details(self, version: int) -> None:
        details = await self.connection.admin(
            "GetModelDetails", admin_pb2.GetModelRequest(version=version), timeout=60
        )
        if details is not None:
            self.app.push_screen(ModelDetailsDialog(details, self.models.get(self.active_version)))

    def action_prune(self) -> None:
        self._prune_preview()

    @work(group="models-change")
    async def _prune_preview(self) -> None:
        plan = await self.connection.admin(
            "PruneModels", admin_pb2.PruneModelsRequest(dry_run=True)
        )
        if plan is None:
            return
        if not plan.pruned:
            self.notify("Every bundle is within the retention rule", title="Prune")
            return
        versions = ", ".join(map(str, plan.pruned))
        confirm(
            self.app,
            f"Delete the bundles of versions {versions} ({plan.freed_bytes / 1e6:.1f} MB)? "
            "The active, the previous and the newest ready versions stay.",
            title="Prune bundles",
            then=lambda: self._prune(),
        )

    @work(group="models-change")
    async def _prune(self) -> None:
        result = await self.connection.admin("PruneModels", admin_pb2.PruneModelsRequest())
        if result is not None:
            self.notify(f"pruned versions {', '.join(map(str, result.pruned))}", title="Pruned")
            self.reload()
