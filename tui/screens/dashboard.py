"""Live figures with charts of the last ten minutes, and every replica's health."""

from __future__ import annotations

import time

from textual import work
from textual.app import ComposeResult
from textual.containers import Grid
from textual.widgets import DataTable, Static

from shared.proto.recserve.v1 import admin_pb2
from tui.connection import Connection
from tui.format import ago
from tui.screens import Pane, while_mounted
from tui.widgets.metric import MetricCard
from tui.widgets.tables import sync_table

CHARTS = [
    # (stats field, series field, label, format)
    ("recommend_qps", "recommend_qps", "Recommend QPS", "{:.1f}"),
    ("latency_p50_ms", "latency_p50_ms", "p50 latency ms", "{:.2f}"),
    ("latency_p99_ms", "latency_p99_ms", "p99 latency ms", "{:.2f}"),
    ("error_rate", "error_rate", "error rate", "{:.2%}"),
    ("feedback_events_per_s", "feedback_events_per_s", "feedback events/s", "{:.1f}"),
    ("mean_batch_size", "mean_batch_size", "mean batch size", "{:.2f}"),
]
REPLICA_COLUMNS = ("replica", "address", "health", "version", "backend", "device", "seen", "note")


class DashboardPane(Pane):
    def __init__(self, connection: Connection) -> None:
        super().__init__(connection, id="dashboard-pane")

    def compose(self) -> ComposeResult:
        yield Static("connecting ...", id="server-line")
        yield Static("", id="server-note")
        with Grid(id="metric-grid"):
            for key, _, label, _ in CHARTS:
                yield MetricCard(label, id=f"metric-{key}")
        yield Static("", id="totals-line")
        yield Static("Replicas (every server of the deployment)", classes="section")
        table: DataTable[str] = DataTable(id="replicas-table", cursor_type="row")
        table.add_columns(*REPLICA_COLUMNS)
        yield table

    @work(exclusive=True, group="dashboard")
    @while_mounted
    async def reload(self) -> None:
        stats = await self.connection.admin("GetServerStats", admin_pb2.GetServerStatsRequest())
        if not (self.is_attached and self.is_mounted):  # closed while the call was out
            return
        if stats is not None:
            self.show(stats)
        elif self.connection.online is False:
            self.query_one("#server-line", Static).update(
                f"[b red]disconnected[/] from {self.connection.target}: retrying"
            )

    def show(self, stats: admin_pb2.ServerStats) -> None:
        serving = stats.active_version
        health = "[b green]SERVING[/]" if serving else "[b yellow]NOT_SERVING[/]"
        configured = (
            f" (database: v{stats.configured_version})"
            if stats.configured_version != serving
            else ""
        )
        self.query_one("#server-line", Static).update(
            f"{health}  {self.connection.target}  model v{serving or '-'}{configured}  "
            f"{stats.backend} on {stats.device or '-'}  up {stats.uptime_s:,.0f}s"
        )
        self.query_one("#server-note", Static).update(
            f"[b yellow]{stats.note}[/]" if stats.note else ""
        )
        for key, series_key, _, fmt in CHARTS:
            card = self.query_one(f"#metric-{key}", MetricCard)
            card.show(
                fmt.format(getattr(stats, key)), [getattr(s, series_key) for s in stats.series]
            )
        self.query_one("#totals-line", Static).update(
            f"requests {stats.requests_total:,}   feedback events {stats.feedback_events_total:,}"
            f"   cached users {stats.cached_users:,}   state-cache hits {stats.state_cache_hits:,}"
            f"   model runs {stats.batches_total:,}"
        )
        now_ms = int(time.time() * 1000)
        rows = []
        for r in stats.replicas:
            me = " (this)" if r.replica_id == stats.replica_id else ""
            health_cell = r.health if r.alive else "LOST"
            rows.append(
                (
                    r.replica_id,
                    (
                        r.replica_id + me,
                        r.address,
                        health_cell,
                        str(r.serving_version or "-"),
                        r.backend or "-",
                        r.device or "-",
                        ago(r.last_seen_ms, now_ms),
                        r.note,
                    ),
                )
            )
        sync_table(self.query_one("#replicas-table", DataTable), rows)
