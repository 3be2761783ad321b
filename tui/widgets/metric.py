"""A live figure with a sparkline of its last minutes."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static


class MetricCard(Vertical):
    """Label, current value and a sparkline of the recent series."""

    DEFAULT_CSS = """
    MetricCard {
        border: round $accent;
        height: 6;
        padding: 0 1;
    }
    MetricCard .metric-value {
        text-style: bold;
    }
    MetricCard Sparkline {
        height: 2;
    }
    """

    def __init__(self, label: str, *, id: str) -> None:  # noqa: A002  (Textual's name)
        super().__init__(id=id)
        self.label = label

    def compose(self) -> ComposeResult:
        yield Static(self.label, classes="metric-label")
        yield Static("-", classes="metric-value")
        yield Sparkline([], summary_function=max)

    def show(self, value: str, series: Sequence[float]) -> None:
        self.query_one(".metric-value", Static).update(value)
        self.query_one(Sparkline).data = list(series)

    @property
    def value(self) -> str:
        return str(self.query_one(".metric-value", Static).render())
