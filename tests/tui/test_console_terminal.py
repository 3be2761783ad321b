"""The console as an operator meets it: `recserve tui` as its own process in a real
pseudo-terminal, against a real `recserve serve` process, driven by keyboard only."""

from __future__ import annotations

import sys

import pytest

from tests.support.processes import ServerProcess, free_port
from tests.support.terminal import Terminal

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def console_env(settings) -> dict[str, str]:
    import os

    return {**os.environ, "RECSERVE_LOG_LEVEL": "WARNING"}


def test_console_in_a_real_terminal_visits_every_screen_and_survives_the_server(
    settings, console_env
) -> None:
    port = free_port()
    server = ServerProcess(settings, "server-a", port=port)
    terminal = Terminal(
        [sys.executable, "-m", "recserve", "tui", "--target", server.target],
        env=console_env,
    )
    try:
        # 1 Dashboard: the live figures and this replica.
        screen = terminal.wait_for("SERVING", 30)
        assert "model v1" in screen and "onnxruntime on cpu" in screen
        terminal.wait_for("(this)")
        # 2 Models: the trained version, active, with its offline metrics.
        terminal.press("2")
        screen = terminal.wait_for("pop ndcg@10")
        assert "1 *" in screen and "active" in screen
        terminal.press("enter")
        terminal.wait_for("every file matches")
        terminal.pump(1.5)  # refreshes tick underneath an open dialog
        assert terminal.child.isalive()
        terminal.press("escape")
        # 3 Jobs: the job that trained it, with its learning curve and log.
        terminal.press("3")
        terminal.wait_for("training loss")
        screen = terminal.wait_for("succeeded")  # the jobs load on the next refresh
        assert "val NDCG@10" in screen
        terminal.wait_for("registered model version 1")
        # 4 Preview: a user's history and recommendations, typed by keyboard.
        terminal.press("4")
        terminal.wait_for("Recommendations")
        terminal.press("/")
        terminal.type("u00001")
        terminal.press("enter")
        screen = terminal.wait_for("model version 1, ")
        assert "items from model" in screen
        assert "because of" in screen and "(+" in screen, "explained by history events"
        terminal.press("escape")
        # 5 Items: the catalogue.
        terminal.press("5")
        terminal.wait_for("i000-000")
        assert terminal.child.isalive()
        # 6 Rules: a rule set written, saved, shown active, and deleted.
        terminal.press("6")
        terminal.wait_for("n new rule set")
        terminal.press("n")
        terminal.wait_for("New rule set")
        terminal.type("weekend")
        terminal.press("tab", "tab", "tab", "tab")
        terminal.type("pin i000-001 at 1\rcap topic:* 2")
        terminal.press("ctrl+t")
        screen = terminal.wait_for("rule set weekend saved: active")
        screen = terminal.wait_for("pin i000-001 at 1; cap topic:* 2")
        assert "ACTIVE" in screen
        terminal.press("d")
        terminal.wait_for("Delete rule set weekend?")
        terminal.press("y")
        terminal.wait_for("rule set weekend deleted")
        # 7 Audit: user deletions and exports.
        terminal.press("7")
        terminal.wait_for("User deletions and exports")

        # The server goes away: the console says so and keeps running.
        terminal.press("1")
        assert server.stop() == 0
        terminal.wait_for("Server unreachable", 30)
        terminal.wait_for("disconnected", 30)
        assert terminal.child.isalive(), "the console survives a lost server"

        # It comes back on the same address: the console recovers by itself.
        server = ServerProcess(settings, "server-b", port=port)
        terminal.wait_for("Server reachable", 30)
        terminal.wait_for("SERVING", 30)

        terminal.press("q")
        assert terminal.wait_exit() == 0
    finally:
        terminal.close()
        server.stop()
