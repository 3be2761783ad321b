"""The operator console driven with Textual's Pilot against an in-process server.

(tests/tui/test_console_terminal.py drives the real process in a real terminal.)"""

from __future__ import annotations

import asyncio
import json

from textual.widgets import DataTable, Input, Log, Static

from shared import synthetic
from shared.proto.recserve.v1 import admin_pb2
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage import item_store
from shared.storage.engine import session_scope
from shared.storage.tables import Item
from tests.conftest import TINY_SPEC
from tests.support.models import register_copy
from tui.app import RecserveConsole
from tui.widgets.metric import MetricCard
from tui.widgets.tables import selected_key

SIZE = (160, 50)


async def until(pilot, condition, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await pilot.pause(0.05)


def messages(app) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


def question(app) -> str:
    """The text of the confirmation dialog on screen, "" when there is none."""
    found = app.screen.query("#question")
    return str(found.first().render()) if found else ""


def with_catalogue(server) -> None:
    with session_scope(server.engine) as s:
        item_store.upsert_items(
            s,
            items=[
                Item(item_id=i.item_id, title=i.title, labels=i.labels)
                for i in synthetic.catalogue(TINY_SPEC)
            ],
        )


async def test_dashboard_shows_live_figures_series_and_replicas(server, client) -> None:
    await client.recommender.Recommend(pb.RecommendRequest(user_id="u00001"))
    app = RecserveConsole(server.target, refresh_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        line = app.query_one("#server-line", Static)
        await until(pilot, lambda: "SERVING" in str(line.render()))
        assert "model v1" in str(line.render()) and "onnxruntime on cpu" in str(line.render())
        replicas = app.query_one("#replicas-table", DataTable)
        await until(pilot, lambda: replicas.row_count == 1)
        row = replicas.get_row_at(0)
        assert row[0].endswith("(this)") and row[2] == "SERVING" and row[3] == "1"
        qps = app.query_one("#metric-recommend_qps", MetricCard)
        assert qps.value != "-"
        assert len(qps.query_one("Sparkline").data) == 120, "ten minutes of 5 s samples"


async def test_models_activate_and_roll_back_with_confirmation(server) -> None:
    version = register_copy(server.engine)
    app = RecserveConsole(server.target, refresh_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        table = app.query_one("#models-table", DataTable)
        await until(pilot, lambda: table.row_count == 2)
        assert table.get_row("1")[1] == "active"
        assert selected_key(table) == str(version), "newest first, cursor on it"
        await pilot.press("a")
        await until(pilot, lambda: "Activate model version" in question(app))
        await pilot.press("n")  # declined: nothing changes
        await pilot.pause(0.5)
        assert server.registry.current.version == 1
        await pilot.press("a", "y")
        await until(pilot, lambda: server.registry.current.version == version)
        await until(pilot, lambda: table.get_row(str(version))[1] == "active")
        await pilot.press("b", "y")
        await until(pilot, lambda: server.registry.current.version == 1)
        await until(pilot, lambda: table.get_row("1")[1] == "active")
        assert any("active again" in m for m in messages(app))


async def test_experiment_split_shadow_and_promote_from_the_console(server, client) -> None:
    version = register_copy(server.engine)
    shadow = register_copy(server.engine)
    app = RecserveConsole(server.target, refresh_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        table = app.query_one("#models-table", DataTable)
        summary = app.query_one("#experiment-summary", Static)
        await until(pilot, lambda: table.row_count == 3)
        await until(pilot, lambda: "no traffic split" in str(summary.render()))
        await pilot.press("down")  # the older copy
        assert selected_key(table) == str(version)
        await pilot.press("s")
        await until(pilot, lambda: "half of the users" in question(app))
        await pilot.press("y")
        await until(pilot, lambda: f"split v1 50%, v{version} 50%" in str(summary.render()))
        assert [a.version for a in server.registry.arms] == [1, version]
        await pilot.press("up", "h", "y")  # the newest copy as the shadow
        await until(pilot, lambda: f"shadow v{shadow} on 10%" in str(summary.render()))
        # Traffic, then the online metrics the console reads.
        for n in range(20):
            await client.recommender.Recommend(pb.RecommendRequest(user_id=f"u{n:05d}", k=3))
        await server.parts.impressions.flush()
        from worker.online import compute_online_metrics

        compute_online_metrics(server.admin.settings, window_hours=1)
        online = app.query_one("#experiment-table", DataTable)
        await until(pilot, lambda: online.row_count >= 2)
        arms = {online.get_row_at(i)[1] for i in range(online.row_count)}
        assert {"v1", f"v{version}"} <= arms
        await pilot.press("down", "w", "y")
        await until(pilot, lambda: server.registry.current.version == version)
        await until(pilot, lambda: "no traffic split" in str(summary.render()))
        assert not server.registry.arms and server.registry.shadow is None


async def test_models_details_dialog_and_refused_activation(server) -> None:
    version = register_copy(server.engine)
    directory = server.admin.settings.bundle_path("job-1-1")
    app = RecserveConsole(server.target, refresh_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        table = app.query_one("#models-table", DataTable)
        await until(pilot, lambda: table.row_count == 2)
        await pilot.press("down", "enter")  # version 1's details
        await until(pilot, lambda: app.screen.query("#files"))
        files = app.screen.query_one("#files", DataTable)
        assert files.row_count >= 6 and all(files.get_row_at(i)[3] == "ok" for i in range(6))
        history = app.screen.query_one("#activations", DataTable)
        assert history.get_row_at(0)[2] == "promoted by job 1"
        await pilot.press("escape")
        # Break the shared bundle: activating the copy is refused, the operator is told.
        (directory / "vocab.json").write_text('["tampered"]')
        await pilot.press("up", "a", "y")
        await until(pilot, lambda: any("vocab.json fails" in m for m in messages(app)))
        assert server.registry.current.version == 1
        assert table.get_row(str(version))[1] == "ready"


async def test_jobs_form_validates_then_starts_and_cancel_works(server) -> None:
    app = RecserveConsole(server.target, refresh_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        table = app.query_one("#jobs-table", DataTable)
        await until(pilot, lambda: table.row_count == 1)  # the template's finished job
        log = app.query_one("#job-log", Log)
        await until(pilot, lambda: any("registered model version 1" in line for line in log.lines))
        await pilot.press("n")
        await until(pilot, lambda: app.screen.query("#opt-epochs"))
        form = app.screen
        epochs = form.query_one("#opt-epochs", Input)
        assert epochs.value == "" and epochs.placeholder == "settings: 12", "where it comes from"
        epochs.value = "0"
        await pilot.press("ctrl+t")
        await until(pilot, lambda: "must be >= 1" in str(form.query_one("#err-epochs").render()))
        assert table.row_count == 1, "nothing was sent"
        epochs.value = "2"
        form.query_one("#raw-json", Input).value = '{"d_model": 8}'
        await pilot.press("ctrl+t")
        await until(pilot, lambda: table.row_count == 2)
        job = await server.admin.get_job(2)
        assert job.params == {"epochs": 2, "d_model": 8}, "only what was filled in"
        assert table.get_row("2")[3] == "queued"
        # A second training job is refused while this one is queued: the reason is shown.
        await pilot.press("n")
        await until(pilot, lambda: app.screen.query("#opt-epochs"))
        await pilot.press("ctrl+t")
        await until(pilot, lambda: any("training job 2 is queued" in m for m in messages(app)))
        await pilot.press("escape")
        await until(pilot, lambda: not app.screen.query("#opt-epochs"))
        # Cancel it. The cursor stayed on job 1 as rows came in (the operator's place).
        assert selected_key(table) == "1"
        table.focus()
        await pilot.press("up")
        assert selected_key(table) == "2"
        await pilot.press("c", "y")
        await until(pilot, lambda: table.get_row("2")[3] == "cancelled")


def summary_of(app: RecserveConsole) -> object:
    return app.query_one("#preview-summary", Static).render()


async def test_preview_shows_history_and_titled_recommendations(server) -> None:
    with_catalogue(server)
    app = RecserveConsole(server.target, refresh_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4", "slash")
        assert app.focused is app.query_one("#preview-user", Input)
        await pilot.press(*"u00001", "enter")
        results = app.query_one("#preview-results", DataTable)
        await until(pilot, lambda: results.row_count == 10)
        history = app.query_one("#preview-history-table", DataTable)
        assert history.row_count > 0
        first = results.get_row_at(0)
        assert first[2].startswith("Topic "), "titles from the catalogue"
        # Explained by events of the history shown beside it, by title.
        titles = {history.get_row_at(r)[2] for r in range(history.row_count)}
        because = [part.rsplit(" (+", 1)[0] for part in first[4].split(", ")]
        assert because and set(because) <= titles
        summary = str(app.query_one("#preview-summary", Static).render())
        assert "from model, model version 1" in summary
        # An anonymous history instead.
        assert app.focused is results, "out of the text field after Enter"
        app.query_one("#preview-user", Input).value = ""
        app.query_one("#preview-history", Input).value = "i000-000, i000-001"
        app.query_one("#preview-history", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: history.row_count == 2)
        assert history.get_row_at(0)[2] == "Topic 0 part 1"
        # Items like those two (SimilarItems), never the two themselves.
        await pilot.click("#preview-similar")
        await until(pilot, lambda: "similar to 2 of 2" in str(summary_of(app)))
        similar = [results.get_row_at(r)[1] for r in range(results.row_count)]
        assert len(similar) == 10 and not {"i000-000", "i000-001"} & set(similar)
        assert [history.get_row_at(r)[3] for r in range(2)] == ["query", "query"]


async def test_items_hide_and_restore_changes_recommendations(server, client) -> None:
    with_catalogue(server)
    before = await client.recommender.Recommend(pb.RecommendRequest(user_id="u00002", k=1))
    top = before.items[0].item_id
    app = RecserveConsole(server.target, refresh_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5", "slash", *top)
        table = app.query_one("#items-table", DataTable)
        await until(pilot, lambda: table.row_count == 1 and selected_key(table) == top)
        await pilot.press("escape")
        table.focus()
        await pilot.press("t")
        await until(pilot, lambda: table.get_row(top)[3] == "HIDDEN")
        hidden = await client.recommender.Recommend(pb.RecommendRequest(user_id="u00002", k=5))
        assert top not in [i.item_id for i in hidden.items]
        await pilot.press("t")
        await until(pilot, lambda: table.get_row(top)[3] == "yes")
        back = await client.recommender.Recommend(pb.RecommendRequest(user_id="u00002", k=1))
        assert back.items[0].item_id == top


async def test_refresh_keeps_the_cursor_and_scroll_position(server) -> None:
    with_catalogue(server)
    app = RecserveConsole(server.target, refresh_s=0.1)
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.press("5")
        table = app.query_one("#items-table", DataTable)
        await until(pilot, lambda: table.row_count == 40)
        for _ in range(25):
            await pilot.press("down")
        key, scroll = selected_key(table), table.scroll_y
        assert key == "i002-005" and scroll > 0
        refreshes = app.query_one("ItemsPane")
        calls = 0
        original = refreshes.reload

        def counting():
            nonlocal calls
            calls += 1
            return original()

        refreshes.reload = counting
        await until(pilot, lambda: calls >= 5)
        await pilot.pause(0.3)
        assert selected_key(table) == key and table.scroll_y == scroll


async def test_errors_are_notifications_and_the_console_keeps_running(settings) -> None:
    app = RecserveConsole("127.0.0.1:1", refresh_s=0.2)  # nothing listens there
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: any("Server unreachable" in m for m in messages(app)))
        await pilot.press("2", "3", "4", "5", "1")
        await pilot.pause(0.5)
        assert app.is_running
        assert sum("Server unreachable" in m for m in messages(app)) == 1, "said once"
        assert "disconnected" in app.sub_title


async def test_training_options_describe_every_parameter(client) -> None:
    options = await client.admin.GetTrainingOptions(admin_pb2.GetTrainingOptionsRequest())
    by_name = {o.name: o for o in options.options}
    assert by_name["epochs"].type == "int" and by_name["epochs"].minimum == 1
    assert json.loads(by_name["epochs"].default_json) == 12
    assert by_name["loss"].type == "choice" and list(by_name["loss"].choices) == ["ce", "sampled"]
    assert by_name["learning_rate"].exclusive_minimum
    assert by_name["attention_dropout"].nullable
    assert "early stopping" in by_name["epochs"].help
