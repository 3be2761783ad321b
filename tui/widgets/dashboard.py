"""Live server statistics."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.containers import Container
from textual.widget import Widget
from textual.widgets import Static

from shared.client import AsyncClient
from shared.proto.recserve.v1 import admin_pb2
from tui.widgets import admin_call

STATS = [
    ("recommend_qps", "QPS", "{:.1f}"),
    ("latency_p50_ms", "p50 ms", "{:.2f}"),
    ("latency_p99_ms", "p99 ms", "{:.2f}"),
    ("error_rate", "errors", "{:.2%}"),
    ("mean_batch_size", "mean batch", "{:.2f}"),
    ("feedback_events_per_s", "feedback/s", "{:.1f}"),
    ("backend", "backend", "{}"),
    ("device", "device", "{}"),
    ("active_version", "active model", "{}"),
    ("requests_total", "requests", "{:,}"),
    ("cached_users", "cached users", "{:,}"),
    ("uptime_s", "uptime s", "{:.0f}"),
]


class Dashboard(Widget):
    def __init__(self, client: AsyncClient) -> None:
        super().__init__()
        self.client = client

    def compose(self) -> ComposeResult:
        with Container(classes="stat-grid"):
            for key, label, _ in STATS:
                yield Static(f"{label}\n-", id=f"stat-{key}", classes="stat")

    @work(exclusive=True, group="dashboard")
    async def reload(self) -> None:
        stats = await admin_call(
            self, self.client, "GetServerStats", admin_pb2.GetServerStatsRequest()
        )
        if stats is None:
            return
        for key, label, fmt in STATS:
            for cell in self.query(f"#stat-{key}").results(Static):
                cell.update(f"{label}\n{fmt.format(getattr(stats, key))}")
