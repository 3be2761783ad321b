"""Jobs with progress; start a training job."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Button, DataTable, Input, Log

from shared.client import AsyncClient
from shared.proto.recserve.v1 import admin_pb2
from tui.widgets import admin_call, cleared_table

COLUMNS = ("id", "kind", "status", "progress", "model", "message")


def progress_bar(fraction: float, width: int = 20) -> str:
    filled = int(round(fraction * width))
    return "█" * filled + "░" * (width - filled) + f" {fraction * 100:5.1f}%"


class JobsPane(Widget):
    def __init__(self, client: AsyncClient) -> None:
        super().__init__()
        self.client = client
        self.selected: int | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="actions"):
            yield Input(
                placeholder='training parameters (JSON), e.g. {"epochs": 20}', id="train-params"
            )
            yield Button("Start training", id="start-training", variant="primary")
        table: DataTable[str] = DataTable(id="jobs-table", cursor_type="row")
        table.add_columns(*COLUMNS)
        yield table
        yield Log(id="job-log")

    @work(exclusive=True, group="jobs")
    async def reload(self) -> None:
        answer = await admin_call(self, self.client, "ListJobs", admin_pb2.ListJobsRequest())
        if answer is None:
            return
        table = cleared_table(self)
        if table is None:
            return
        for job in answer.jobs:
            table.add_row(
                str(job.id),
                job.kind,
                job.status,
                progress_bar(job.progress),
                str(job.model_version or ""),
                job.error.splitlines()[0] if job.error else job.message,
                key=str(job.id),
            )
        shown = next((j for j in answer.jobs if j.id == self.selected), None)
        if shown is None and answer.jobs:
            shown = answer.jobs[0]
        if shown is not None:
            log = self.query(Log).first()
            log.clear()
            log.write_lines([f"job {shown.id} ({shown.status})", *shown.log])

    @on(DataTable.RowSelected, "#jobs-table")
    def pick(self, event: DataTable.RowSelected) -> None:
        self.selected = int(str(event.row_key.value))
        self.reload()

    @on(Button.Pressed, "#start-training")
    def on_start(self) -> None:
        self.start_training(self.query_one("#train-params", Input).value.strip())

    @work(group="jobs-start")
    async def start_training(self, params_json: str) -> None:
        job = await admin_call(
            self,
            self.client,
            "StartTraining",
            admin_pb2.StartTrainingRequest(params_json=params_json),
            timeout=30,
        )
        if job is None:
            return
        self.selected = job.id
        self.app.notify(f"training job {job.id} queued", title="Training")
        self.reload()
