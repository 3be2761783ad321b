"""Model versions with their offline metrics side by side; activate, roll back, prune,
and the details of one version. Below them the live experiment: the traffic split, the
shadow candidate and their online metrics; start a 50/50 split or a shadow with the
selected version, promote the winner, stop."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from shared.proto.recserve.v1 import admin_pb2
from tui.connection import Connection
from tui.dialogs.confirm import confirm
from tui.dialogs.model_details import ModelDetailsDialog
from tui.format import when
from tui.screens import Pane, while_mounted
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


EXPERIMENT_COLUMNS = (
    "version",
    "arm",
    "impressions",
    "CTR",
    "hit rate",
    "attributed",
    "shadow req",
    "overlap",
    "shadow p50",
    "computed",
)


def experiment_summary(experiment: admin_pb2.Experiment) -> str:
    total = sum(a.weight for a in experiment.arms) or 1.0
    split = (
        "split " + ", ".join(f"v{a.version} {a.weight / total:.0%}" for a in experiment.arms)
        if experiment.arms
        else "no traffic split (the active version serves everyone)"
    )
    if experiment.shadow_version:
        split += (
            f"; shadow v{experiment.shadow_version} on {experiment.shadow_share:.0%} of requests"
        )
    return split


def online_row(m: admin_pb2.OnlineMetric) -> tuple[str, ...]:
    shadow = m.arm == "shadow"
    return (
        str(m.model_version),
        m.arm or "-",
        "-" if shadow else f"{m.impressions:,}",
        "-" if shadow else f"{m.ctr:.1%}",
        "-" if shadow else f"{m.hit_rate:.1%}",
        f"{m.attributed_share:.1%}",
        f"{m.shadow_requests:,}" if shadow else "-",
        f"{m.shadow_overlap:.1%}" if shadow else "-",
        f"{m.shadow_p50_ms:.1f} ms" if shadow else "-",
        when(m.computed_at_ms),
    )


class ModelsPane(Pane):
    BINDINGS = [
        ("a", "activate", "Activate"),
        ("b", "rollback", "Roll back"),
        ("d", "details", "Details"),
        ("p", "prune", "Prune"),
        ("s", "split", "A/B split"),
        ("h", "shadow", "Shadow"),
        ("w", "promote", "Promote"),
        ("x", "stop_experiment", "Stop split"),
    ]

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection, id="models-pane")
        self.models: dict[int, admin_pb2.ModelVersion] = {}
        self.active_version = 0
        self.experiment: admin_pb2.Experiment | None = None

    def compose(self) -> ComposeResult:
        yield Static(
            "a activate · b roll back · enter or d details · p prune old bundles   (* = active)",
            classes="hint",
        )
        table: DataTable[str] = DataTable(id="models-table", cursor_type="row")
        table.add_columns(*COLUMNS)
        yield table
        yield Static(
            "Experiment   s A/B split 50/50 with the selected version · h shadow it · "
            "w promote it · x stop",
            classes="section",
        )
        yield Static("no traffic split", id="experiment-summary")
        online: DataTable[str] = DataTable(id="experiment-table", cursor_type="none")
        online.add_columns(*EXPERIMENT_COLUMNS)
        yield online

    @work(exclusive=True, group="models")
    @while_mounted
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
        experiment = await self.connection.admin("GetExperiment", admin_pb2.GetExperimentRequest())
        if experiment is None or not self.is_attached:
            return
        self.experiment = experiment
        self.query_one("#experiment-summary", Static).update(experiment_summary(experiment))
        sync_table(
            self.query_one("#experiment-table", DataTable),
            [(f"{m.model_version}/{m.arm}", online_row(m)) for m in experiment.metrics],
        )

    def action_split(self) -> None:
        version = self.selected()
        if version is None or version == self.active_version:
            self.notify(
                "Select a version other than the active one", title="A/B split", severity="warning"
            )
            return
        arms = [(self.active_version, 1.0), (version, 1.0)]
        confirm(
            self.app,
            f"Serve v{self.active_version} and v{version} to half of the users each (by a "
            "hash of the user id)?",
            title="A/B split",
            then=lambda: self._set_split(arms, 0),
        )

    def action_shadow(self) -> None:
        version = self.selected()
        if version is None or version == self.active_version:
            self.notify(
                "Select a version other than the active one", title="Shadow", severity="warning"
            )
            return
        arms = [(a.version, a.weight) for a in self.experiment.arms] if self.experiment else []
        confirm(
            self.app,
            f"Let v{version} also rank 10% of the requests, without serving them?",
            title="Shadow",
            then=lambda: self._set_split(arms, version),
        )

    def action_stop_experiment(self) -> None:
        confirm(
            self.app,
            "End the traffic split and the shadow? The active version serves everyone.",
            title="Stop split",
            then=lambda: self._set_split([], 0),
        )

    @work(group="models-change")
    async def _set_split(self, arms: list[tuple[int, float]], shadow: int) -> None:
        request = admin_pb2.SetTrafficSplitRequest(
            arms=[admin_pb2.TrafficArm(version=v, weight=w) for v, w in arms],
            shadow_version=shadow,
            shadow_share=0.1 if shadow else 0.0,
        )
        experiment = await self.connection.admin("SetTrafficSplit", request, timeout=120)
        if experiment is not None:
            self.notify(experiment_summary(experiment), title="Experiment")
            self.reload()

    def action_promote(self) -> None:
        version = self.selected()
        if version is None:
            self.notify("No model version selected", title="Promote", severity="warning")
            return
        confirm(
            self.app,
            f"Make v{version} the active version for everyone and end the split?",
            title="Promote",
            then=lambda: self._promote(version),
        )

    @work(group="models-change")
    async def _promote(self, version: int) -> None:
        experiment = await self.connection.admin(
            "PromoteArm", admin_pb2.PromoteArmRequest(version=version), timeout=120
        )
        if experiment is not None:
            self.notify(f"model version {version} is active; the split has ended", title="Promoted")
            self.reload()

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
