"""SVG snapshots of every console screen, against canned data (tests/tui/fake_server.py).

Update them after a deliberate change with `pytest tests/tui/test_snapshots.py
--snapshot-update` and look at the SVGs in tests/tui/__snapshots__/."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from tests.tui.fake_server import FakeConnection
from tui.app import RecserveConsole

SIZE = (150, 44)


def console() -> RecserveConsole:
    return RecserveConsole("fake:50051", connection=FakeConnection(), refresh_s=60)


async def settle(pilot: Pilot) -> None:
    await pilot.pause(0.5)


@pytest.mark.parametrize("tab", ["1", "2", "3", "5"])
def test_screen(snap_compare, tab: str) -> None:
    assert snap_compare(console(), press=[tab], terminal_size=SIZE, run_before=settle)


def test_preview_screen(snap_compare) -> None:
    async def preview(pilot: Pilot) -> None:
        await pilot.press("4")
        pilot.app.query_one("#preview-user", Input).value = "u00042"
        pilot.app.query_one("PreviewPane").submit()
        await pilot.pause(0.5)

    assert snap_compare(console(), terminal_size=SIZE, run_before=preview)


def test_model_details_dialog(snap_compare) -> None:
    assert snap_compare(console(), press=["2", "enter"], terminal_size=SIZE, run_before=settle)


def test_training_form(snap_compare) -> None:
    assert snap_compare(console(), press=["3", "n"], terminal_size=SIZE, run_before=settle)
