"""SVG snapshots of every console screen, against canned data (tests/tui/fake_server.py).

Update them after a deliberate change with `pytest tests/tui/test_snapshots.py
--snapshot-update` and look at the SVGs in tests/tui/__snapshots__/."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Input, ProgressBar
from textual.widgets._progress_bar import Bar

from tests.tui.fake_server import FakeConnection
from tui.app import RecserveConsole
from tui.dialogs.model_details import ModelDetailsDialog
from tui.dialogs.rule_set_form import RuleSetForm
from tui.dialogs.training_form import TrainingForm

SIZE = (150, 44)


def console() -> RecserveConsole:
    app = RecserveConsole("fake:50051", connection=FakeConnection(), refresh_s=60)
    app.animation_level = "none"  # a progress bar caught mid-animation differs run to run
    return app


PREVIEW_TABLES = ("preview-results",)
TABLES = {
    "1": "#replicas-table",
    "2": "#models-table",
    "3": "#jobs-table",
    "5": "#items-table",
    "6": "#rules-table",
    "7": "#audit-table",
}


async def until(pilot: Pilot, ready) -> None:
    """Waits (up to 20 s) for ``ready()``: a busy machine must not take the picture early."""
    for _ in range(400):
        if ready():
            return
        await pilot.pause(0.05)
    raise AssertionError("the console did not reach the state to photograph within 20 s")


async def settle(pilot: Pilot) -> None:
    """Lets every worker finish and every pending refresh render, with no blinking cursor
    (a coin toss in a picture)."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.5)
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    for progress in pilot.app.screen.query(ProgressBar):
        # Textual rounds a bar's fill to whole cells only once the bar has a width, so
        # a value set before or after the first layout would draw half a cell apart.
        progress.query_one(Bar).percentage = progress.percentage
    await pilot.app.workers.wait_for_complete()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause(0.3)


def showing(tab: str, *keys: str, dialog: type[Screen] | None = None):
    """Presses the tab's key (and ``keys``), then waits until its table is filled, the
    ``dialog`` (if given) is on top, and the screen has settled."""

    async def run_before(pilot: Pilot) -> None:
        await pilot.press(tab)
        table = pilot.app.query_one(TABLES[tab], DataTable)
        await until(pilot, lambda: table.row_count > 0)
        await pilot.press(*keys)
        if dialog is not None:
            await until(pilot, lambda: isinstance(pilot.app.screen, dialog))
        await settle(pilot)

    return run_before


@pytest.mark.parametrize("tab", ["1", "2", "3", "5", "6", "7"])
def test_screen(snap_compare, tab: str) -> None:
    assert snap_compare(console(), terminal_size=SIZE, run_before=showing(tab))


def test_preview_screen(snap_compare) -> None:
    async def preview(pilot: Pilot) -> None:
        await pilot.press("4")
        pilot.app.query_one("#preview-user", Input).value = "u00042"
        pilot.app.query_one("PreviewPane").submit()
        tables = [pilot.app.query_one(f"#{name}", DataTable) for name in PREVIEW_TABLES]
        await until(pilot, lambda: all(table.row_count for table in tables))
        await settle(pilot)

    assert snap_compare(console(), terminal_size=SIZE, run_before=preview)


def test_model_details_dialog(snap_compare) -> None:
    assert snap_compare(
        console(), terminal_size=SIZE, run_before=showing("2", "enter", dialog=ModelDetailsDialog)
    )


def test_training_form(snap_compare) -> None:
    assert snap_compare(
        console(), terminal_size=SIZE, run_before=showing("3", "n", dialog=TrainingForm)
    )


def test_rule_set_form(snap_compare) -> None:
    assert snap_compare(
        console(), terminal_size=SIZE, run_before=showing("6", "down", "e", dialog=RuleSetForm)
    )
