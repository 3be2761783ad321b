"""SVG snapshots of every console screen, against canned data (tests/tui/fake_server.py).

Update them after a deliberate change with `pytest tests/tui/test_snapshots.py
--snapshot-update` and look at the SVGs in tests/tui/__snapshots__/."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from tests.tui.fake_server import FakeConnection
from tui.app import RecserveConsole

SIZE = (150, 44)


def console() -> RecserveConsole:
    return RecserveConsole("fake:50051", connection=FakeConnection(), refresh_s=60)


TABLES = {"1": "#replicas-table", "2": "#models-table", "3": "#jobs-table", "5": "#items-table"}


def showing(tab: str, *keys: str):
    """Presses the tab's key (and ``keys``), then waits until its table is filled and
    the screen has settled, so that a busy machine cannot take the picture too early."""

    async def run_before(pilot: Pilot) -> None:
        await pilot.press(tab)
        table = pilot.app.query_one(TABLES[tab], DataTable)
        for _ in range(200):
            if table.row_count:
                break
            await pilot.pause(0.05)
        await pilot.press(*keys)
        await pilot.pause(0.5)
        for field in pilot.app.screen.query(Input):  # a blinking cursor: a coin toss
            field.cursor_blink = False
        await pilot.pause(0.1)
        await pilot.wait_for_scheduled_animations()

    return run_before


@pytest.mark.parametrize("tab", ["1", "2", "3", "5"])
def test_screen(snap_compare, tab: str) -> None:
    assert snap_compare(console(), terminal_size=SIZE, run_before=showing(tab))


def test_preview_screen(snap_compare) -> None:
    async def preview(pilot: Pilot) -> None:
        await pilot.press("4")
        pilot.app.query_one("#preview-user", Input).value = "u00042"
        pilot.app.query_one("PreviewPane").submit()
        await pilot.pause(0.5)

    assert snap_compare(console(), terminal_size=SIZE, run_before=preview)


def test_model_details_dialog(snap_compare) -> None:
    assert snap_compare(console(), terminal_size=SIZE, run_before=showing("2", "enter"))


def test_training_form(snap_compare) -> None:
    assert snap_compare(console(), terminal_size=SIZE, run_before=showing("3", "n"))
