"""Model versions with their metrics; activate one."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Button, DataTable, Input

from shared.client import AsyncClient
from shared.proto.recserve.v1 import admin_pb2
from tui.widgets import admin_call, cleared_table

COLUMNS = ("version", "status", "ndcg@10", "hr@10", "pop ndcg@10", "job", "path")


class ModelsPane(Widget):
    def __init__(self, client: AsyncClient) -> None:
        super().__init__()
        self.client = client

    def compose(self) -> ComposeResult:
        with Horizontal(classes="actions"):
            yield Input(
                placeholder="model version to activate", id="activate-version", type="integer"
            )
            yield Button("Activate", id="activate", variant="primary")
        table: DataTable[str] = DataTable(id="models-table", cursor_type="row")
        table.add_columns(*COLUMNS)
        yield table

    @work(exclusive=True, group="models")
    async def reload(self) -> None:
        answer = await admin_call(self, self.client, "ListModels", admin_pb2.ListModelsRequest())
        if answer is None:
            return
        table = cleared_table(self)
        if table is None:
            return
        for m in answer.models:
            table.add_row(
                str(m.version),
                m.status,
                f"{m.metrics.get('ndcg@10', 0.0):.4f}",
                f"{m.metrics.get('hr@10', 0.0):.4f}",
                f"{m.metrics.get('pop_ndcg@10', 0.0):.4f}",
                str(m.job_id),
                m.artifact_path,
                key=str(m.version),
            )

    @on(DataTable.RowSelected, "#models-table")
    def pick(self, event: DataTable.RowSelected) -> None:
        self.query_one("#activate-version", Input).value = str(event.row_key.value)

    @on(Button.Pressed, "#activate")
    def on_activate(self) -> None:
        raw = self.query_one("#activate-version", Input).value.strip()
        if not raw.isdigit():
            self.app.notify("Enter a model version number", title="Activate", severity="error")
            return
        self.activate(int(raw))

    @work(group="models-activate")
    async def activate(self, version: int) -> None:
        model = await admin_call(
            self,
            self.client,
            "ActivateModel",
            admin_pb2.ActivateModelRequest(version=version),
            timeout=30,
        )
        if model is None:
            return
        self.app.notify(f"model version {model.version} is now {model.status}", title="Activated")
        self.reload()
