"""Jobs: progress, learning curves, logs and every training parameter as the job resolved
it (value, source, the recipe's reason); start training from a typed form; cancel."""

from __future__ import annotations

import math

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import DataTable, Log, ProgressBar, Static
from textual_plotext import PlotextPlot

from shared.proto.recserve.v1 import admin_pb2
from shared.training.joblog import unseen_lines
from tui.connection import Connection
from tui.dialogs.confirm import confirm
from tui.dialogs.training_form import TrainingForm
from tui.format import progress_bar, when
from tui.screens import Pane, while_mounted
from tui.widgets.tables import selected_key, sync_table

COLUMNS = ("id", "kind", "trigger", "status", "progress", "model", "worker", "started", "message")


def job_status(job: admin_pb2.Job) -> str:
    return "cancelling" if job.cancel_requested and job.status == "running" else job.status


def job_row(job: admin_pb2.Job) -> tuple[str, ...]:
    message = job.error.splitlines()[0] if job.error else job.message
    return (
        str(job.id),
        job.kind,
        job.trigger,
        job_status(job),
        progress_bar(job.progress),
        str(job.model_version or ""),
        job.worker or "-",
        when(job.started_at_ms),
        message[:90],
    )


class JobsPane(Pane):
    BINDINGS = [("n", "new", "New training"), ("c", "cancel", "Cancel job")]

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection, id="jobs-pane")
        self.jobs: dict[int, admin_pb2.Job] = {}
        self.shown_job: int | None = None
        self.last_line: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("n new training job · c cancel the selected job", classes="hint")
        table: DataTable[str] = DataTable(id="jobs-table", cursor_type="row")
        table.add_columns(*COLUMNS)
        yield table
        yield Static("", id="job-title")
        yield ProgressBar(total=1.0, show_eta=False, id="job-progress")
        with Horizontal(id="job-charts"):
            yield PlotextPlot(id="loss-plot")
            yield PlotextPlot(id="val-plot")
        with Horizontal(id="job-details"):
            yield Log(id="job-log", max_lines=1000)
            params: DataTable[str] = DataTable(id="job-params", cursor_type="none")
            params.add_columns("parameter", "value", "source", "reason")
            yield params

    def on_mount(self) -> None:
        for plot_id, title in (("#loss-plot", "training loss"), ("#val-plot", "val NDCG@10")):
            plot = self.query_one(plot_id, PlotextPlot)
            plot.plt.title(title)

    @work(exclusive=True, group="jobs")
    @while_mounted
    async def reload(self) -> None:
        answer = await self.connection.admin("ListJobs", admin_pb2.ListJobsRequest())
        if answer is None or not self.is_attached:
            return
        self.jobs = {j.id: j for j in answer.jobs}
        table = self.query_one("#jobs-table", DataTable)
        sync_table(
            table,
            [(str(j.id), job_row(j)) for j in answer.jobs],
            order=lambda job_id: -int(str(job_id)),
        )
        self.show_job()

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self.show_job()

    def selected(self) -> admin_pb2.Job | None:
        key = selected_key(self.query_one("#jobs-table", DataTable))
        return self.jobs.get(int(key)) if key else None

    def show_job(self) -> None:
        """The selected job's progress, curves and log; the log only appends, so an
        operator reading an older line is not pulled to the bottom."""
        job = self.selected()
        log = self.query_one("#job-log", Log)
        if job is None:
            return
        self.query_one("#job-title", Static).update(
            f"job {job.id} · {job_status(job)} · {job.trigger} · attempts {job.attempts} · "
            f"given {job.params_json}"
        )
        sync_table(
            self.query_one("#job-params", DataTable),
            [(c.name, (c.name, c.value_json, c.source, c.reason)) for c in (job.resolved or [])],
        )
        self.query_one("#job-progress", ProgressBar).update(progress=job.progress)
        self._plot(job)
        if job.id != self.shown_job:
            self.shown_job, self.last_line = job.id, None
            log.clear()
        lines = unseen_lines(list(job.log), self.last_line)
        if job.error and job.status != "running" and self.last_line != job.error:
            lines.append(job.error)
        if lines:
            log.auto_scroll = log.is_vertical_scroll_end or not log.line_count
            log.write_lines(lines)
            self.last_line = lines[-1]

    def _plot(self, job: admin_pb2.Job) -> None:
        epochs = [p.epoch for p in job.curve]
        for plot_id, values, color in (
            ("#loss-plot", [p.loss for p in job.curve], "orange"),
            ("#val-plot", [p.val_ndcg_at_10 for p in job.curve], "cyan"),
        ):
            plot = self.query_one(plot_id, PlotextPlot)
            plot.plt.clear_data()
            points = [(e, v) for e, v in zip(epochs, values, strict=True) if math.isfinite(v)]
            if points:
                plot.plt.plot(
                    [e for e, _ in points], [v for _, v in points], marker="braille", color=color
                )
            plot.refresh()

    def action_new(self) -> None:
        self._open_form()

    @work(group="jobs-form")
    async def _open_form(self) -> None:
        options = await self.connection.admin(
            "GetTrainingOptions", admin_pb2.GetTrainingOptionsRequest()
        )
        if options is not None:
            self.app.push_screen(TrainingForm(list(options.options)), self._start)

    def _start(self, params_json: str | None) -> None:
        if params_json is not None:
            self._start_training(params_json)

    @work(group="jobs-start")
    async def _start_training(self, params_json: str) -> None:
        job = await self.connection.admin(
            "StartTraining", admin_pb2.StartTrainingRequest(params_json=params_json), timeout=30
        )
        if job is not None:
            self.notify(f"training job {job.id} queued", title="Training")
            self.reload()

    def action_cancel(self) -> None:
        job = self.selected()
        if job is None or job.status not in ("queued", "running"):
            self.notify("Select a queued or running job", title="Cancel", severity="warning")
            return
        confirm(
            self.app,
            f"Cancel job {job.id} ({job.status})?",
            title="Cancel job",
            then=lambda: self._cancel(job.id),
        )

    @work(group="jobs-cancel")
    async def _cancel(self, job_id: int) -> None:
        job = await self.connection.admin("CancelJob", admin_pb2.CancelJobRequest(id=job_id))
        if job is not None:
            state = "cancel requested" if job.status == "running" else job.status
            self.notify(f"job {job.id}: {state}", title="Cancel")
            self.reload()
