"""The operator console driven with Textual's Pilot against an in-process server."""

from __future__ import annotations

import asyncio

from textual.widgets import Button, DataTable, Input, Static, TabbedContent

from shared import crud
from shared.db import session_scope
from shared.models import ModelStatus, ModelVersion
from shared.proto.recserve.v1 import recommender_pb2 as pb
from tui.app import RecserveConsole


async def _until(pilot, condition, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await pilot.pause(0.05)


async def test_dashboard_shows_live_stats(server, client) -> None:
    await client.recommender.Recommend(pb.RecommendRequest(user_id="u00001"))
    app = RecserveConsole(server.target, refresh_s=0.2)
    async with app.run_test(size=(140, 40)) as pilot:
        stat = app.query_one("#stat-active_version", Static)
        await _until(pilot, lambda: "1" in str(stat.render()).split("\n")[-1])
        backend = app.query_one("#stat-backend", Static)
        assert "onnxruntime" in str(backend.render())
        requests = app.query_one("#stat-requests_total", Static)
        await _until(pilot, lambda: str(requests.render()).split("\n")[-1].strip() == "1")


async def test_models_tab_lists_and_activates(server) -> None:
    with session_scope(server.engine) as s:
        v1 = crud.get_model_version(s, version=1)
        crud.create_model_version(
            s,
            model=ModelVersion(
                status=ModelStatus.READY,
                metrics=v1.metrics,
                artifact_path=v1.artifact_path,
                config=v1.config,
                checksum=v1.checksum,
            ),
        )
    app = RecserveConsole(server.target, refresh_s=0.2)
    async with app.run_test(size=(140, 40)) as pilot:
        app.query_one(TabbedContent).active = "models"
        table = app.query_one("#models-table", DataTable)
        await _until(pilot, lambda: table.row_count == 2)
        assert table.get_row("1")[1] == "active"
        assert float(table.get_row("1")[2]) > float(table.get_row("1")[4]), "ndcg beats popularity"
        app.query_one("#activate-version", Input).value = "2"
        app.query_one("#activate", Button).press()
        await _until(pilot, lambda: server.core.registry.current.version == 2)
        await _until(pilot, lambda: table.row_count == 2 and table.get_row("2")[1] == "active")
        assert table.get_row("1")[1] == "retired"


async def test_jobs_tab_starts_training_and_reports_errors(server) -> None:
    app = RecserveConsole(server.target, refresh_s=0.2)
    async with app.run_test(size=(140, 40)) as pilot:
        app.query_one(TabbedContent).active = "jobs"
        table = app.query_one("#jobs-table", DataTable)
        await _until(pilot, lambda: table.row_count == 1)  # the template's finished job
        app.query_one("#train-params", Input).value = '{"epochs": 2}'
        app.query_one("#start-training", Button).press()
        await _until(pilot, lambda: table.row_count == 2)
        assert table.get_row("2")[2] == "queued"
        assert "0.0%" in table.get_row("2")[3]
        # Bad parameters: the server's message reaches the operator.
        app.query_one("#train-params", Input).value = '{"epochs": -1}'
        app.query_one("#start-training", Button).press()
        await _until(
            pilot, lambda: any("params_json.epochs" in str(n.message) for n in app._notifications)
        )
        assert table.row_count == 2
