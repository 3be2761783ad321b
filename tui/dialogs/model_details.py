"""One model version: its metrics beside the active version's, its bundle's files, its
activation history, and every training parameter it was trained with and where each
came from."""

from __future__ import annotations

import json

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from shared.proto.recserve.v1 import admin_pb2
from tui.format import when

COMPARED = (
    "ndcg@10",
    "hr@10",
    "mrr",
    "sampled_ndcg@10",
    "pop_ndcg@10",
    "pop_hr@10",
    "coverage@10",
    "pop_coverage@10",
    "gini@10",
    "pop_gini@10",
    "popularity_lift@10",
    "pop_popularity_lift@10",
    "novelty@10",
    "pop_novelty@10",
    "ild@10",
    "pop_ild@10",
    "val_ndcg@10",
    "epochs",
    "best_epoch",
    "train_seconds",
    "wall_seconds",
    "peak_rss_mb",
    "ann_recall@10",
    "train_events",
    "users",
    "items",
)


class ModelDetailsDialog(ModalScreen[None]):
    BINDINGS = [("escape,q,enter", "close", "Close")]

    def __init__(
        self, details: admin_pb2.ModelDetails, active: admin_pb2.ModelVersion | None
    ) -> None:
        super().__init__()
        self.details = details
        self.active = active

    def compose(self) -> ComposeResult:
        model = self.details.model
        with Vertical(classes="dialog wide"):
            yield Static(f"Model version {model.version} ({model.status})", classes="dialog-title")
            with VerticalScroll():
                config = json.loads(model.config_json or "{}").get("model", {})
                arch = ", ".join(f"{k} {v}" for k, v in sorted(config.items()))
                yield Static(
                    f"bundle {model.artifact_path}  {model.size_bytes / 1e6:.2f} MB  "
                    f"checksum {model.checksum[:16]}  job {model.job_id or '-'}  "
                    f"watermark {model.data_watermark}\narchitecture: {arch or '-'}"
                )
                problem = self.details.problem
                yield Static(
                    f"bundle check: {problem}" if problem else "bundle check: every file matches",
                    classes="problem" if problem else "ok",
                )
                metrics: DataTable[str] = DataTable(id="compare", cursor_type="none")
                other = (
                    self.active if self.active and self.active.version != model.version else None
                )
                metrics.add_columns(
                    "metric", f"v{model.version}", *([f"active v{other.version}"] if other else [])
                )
                for name in COMPARED:
                    if name not in model.metrics and not (other and name in other.metrics):
                        continue
                    row = [name, _figure(model.metrics, name)]
                    if other:
                        row.append(_figure(other.metrics, name))
                    metrics.add_row(*row)
                yield metrics
                files: DataTable[str] = DataTable(id="files", cursor_type="none")
                files.add_columns("file", "bytes", "sha256", "check")
                for f in self.details.files:
                    files.add_row(
                        f.name, f"{f.size_bytes:,}", f.sha256[:16], "ok" if f.ok else "BAD"
                    )
                yield files
                history: DataTable[str] = DataTable(id="activations", cursor_type="none")
                history.add_columns("activated", "replacing", "reason")
                for a in self.details.activations:
                    history.add_row(
                        when(a.activated_at_ms), str(a.previous_version or "-"), a.reason
                    )
                if not self.details.activations:
                    history.add_row("never", "", "")
                yield history
                training: DataTable[str] = DataTable(id="training-params", cursor_type="none")
                training.add_columns("parameter", "value", "source", "reason")
                for choice in self.details.training:
                    training.add_row(choice.name, choice.value_json, choice.source, choice.reason)
                yield training
            yield Static("Escape to close", classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)


def _figure(metrics: object, name: str) -> str:
    values = dict(metrics)  # type: ignore[call-overload]
    if name not in values:
        return "-"
    value = float(values[name])
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:.4f}"
