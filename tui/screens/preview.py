"""What a user (or an anonymous session) would be recommended, from what history, and
because of which of its events (the model's own leave-one-out explanations)."""

from __future__ import annotations

import re

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, DataTable, Input, Static

from shared.proto.recserve.v1 import admin_pb2, recommender_pb2
from tui.connection import Connection
from tui.format import when
from tui.screens import Pane

SOURCES = {
    recommender_pb2.SOURCE_MODEL: "model",
    recommender_pb2.SOURCE_POPULARITY_FALLBACK: "popularity fallback",
}


def parse_history(text: str) -> list[str]:
    """Item ids separated by spaces or commas."""
    return [item for item in re.split(r"[\s,]+", text.strip()) if item]


def because(item: recommender_pb2.ScoredItem) -> str:
    """The history events that support an item, strongest first: "title (+weight)"."""
    return ", ".join(f"{e.title or e.item_id} (+{e.weight:.2f})" for e in item.explanations)


class PreviewPane(Pane):
    def __init__(self, connection: Connection) -> None:
        super().__init__(connection, id="preview-pane")

    def compose(self) -> ComposeResult:
        with Horizontal(classes="actions"):
            yield Input(placeholder="user id", id="preview-user")
            yield Input(
                placeholder="or an anonymous history: item ids, oldest first",
                id="preview-history",
            )
            yield Input(value="10", type="integer", id="preview-k", classes="narrow")
            yield Checkbox("allow seen", id="preview-allow-seen")
            yield Button("Recommend", id="preview-go", variant="primary")
            yield Button("Similar items", id="preview-similar")
        yield Static("Type a user id (or item ids) and press Enter", id="preview-summary")
        with Horizontal(id="preview-tables"):
            with Vertical():
                yield Static("History (oldest first)", classes="section")
                history: DataTable[str] = DataTable(id="preview-history-table", cursor_type="row")
                history.add_columns("#", "item", "title", "kind", "when")
                yield history
            with Vertical():
                yield Static("Recommendations", classes="section")
                ranked: DataTable[str] = DataTable(id="preview-results", cursor_type="row")
                ranked.add_columns("rank", "item", "title", "score", "because of")
                yield ranked

    def reload(self) -> None:
        """Nothing refreshes by itself here: the operator asks."""

    @on(Input.Submitted)
    @on(Button.Pressed, "#preview-go")
    def submit(self) -> None:
        user = self.query_one("#preview-user", Input).value.strip()
        history = parse_history(self.query_one("#preview-history", Input).value)
        k_text = self.query_one("#preview-k", Input).value.strip() or "10"
        if not user and not history:
            self.notify("Type a user id or item ids", title="Preview", severity="warning")
            return
        if not k_text.isdigit() or not 1 <= int(k_text) <= 1000:
            self.notify("k must be a whole number 1..1000", title="Preview", severity="error")
            return
        allow_seen = self.query_one("#preview-allow-seen", Checkbox).value
        self.preview(user, history, int(k_text), allow_seen)
        # Out of the text field: the number keys switch screens again.
        self.query_one("#preview-results", DataTable).focus()

    @on(Button.Pressed, "#preview-similar")
    def submit_similar(self) -> None:
        """SimilarItems for the item ids typed as the history (a cart), leaving out the
        user's seen items when a user id is typed too."""
        user = self.query_one("#preview-user", Input).value.strip()
        items = parse_history(self.query_one("#preview-history", Input).value)
        k_text = self.query_one("#preview-k", Input).value.strip() or "10"
        if not items:
            self.notify("Type item ids to find similar items", title="Preview", severity="warning")
            return
        if not k_text.isdigit() or not 1 <= int(k_text) <= 1000:
            self.notify("k must be a whole number 1..1000", title="Preview", severity="error")
            return
        allow_seen = self.query_one("#preview-allow-seen", Checkbox).value
        self.similar(user, items, int(k_text), allow_seen)
        self.query_one("#preview-results", DataTable).focus()

    @work(exclusive=True, group="preview")
    async def similar(self, user: str, items: list[str], k: int, allow_seen: bool) -> None:
        request = recommender_pb2.SimilarItemsRequest(
            item_ids=items, k=k, user_id=user, allow_seen=allow_seen, include_titles=True
        )
        answer = await self.connection.recommender("SimilarItems", request)
        if answer is None:
            return
        query = self.query_one("#preview-history-table", DataTable)
        query.clear()
        unknown = set(answer.unknown_item_ids)
        for i, item in enumerate(items, start=1):
            query.add_row(str(i), item, "", "unknown" if item in unknown else "query", "")
        ranked = self.query_one("#preview-results", DataTable)
        ranked.clear()
        for rank, item in enumerate(answer.items, start=1):
            ranked.add_row(str(rank), item.item_id, item.title, f"{item.score:.4f}", "similar")
        self.query_one("#preview-summary", Static).update(
            f"{len(answer.items)} items similar to {len(items) - len(unknown)} of "
            f"{len(items)} query items, model version {answer.model_version}"
        )

    @work(exclusive=True, group="preview")
    async def preview(self, user: str, history: list[str], k: int, allow_seen: bool) -> None:
        answer = await self.connection.recommender(
            "Recommend",
            recommender_pb2.RecommendRequest(
                user_id=user,
                history=history,
                k=k,
                allow_seen=allow_seen,
                include_titles=True,
                explain=True,
            ),
        )
        if answer is None:
            return
        if history:
            found = await self.connection.admin(
                "ListItems", admin_pb2.ListItemsRequest(item_ids=history, limit=1000)
            )
            titles = {i.item_id: i.title for i in found.items} if found else {}
            events = [(item, titles.get(item, ""), "inline", "") for item in history]
        else:
            stored = await self.connection.admin(
                "GetUserHistory", admin_pb2.GetUserHistoryRequest(user_id=user, limit=200)
            )
            events = (
                [(e.item_id, e.title, e.kind, when(e.timestamp_ms)) for e in stored.events]
                if stored
                else []
            )
        history_table = self.query_one("#preview-history-table", DataTable)
        history_table.clear()
        for i, (item, title, kind, at) in enumerate(events, start=1):
            history_table.add_row(str(i), item, title, kind, at)
        ranked = self.query_one("#preview-results", DataTable)
        ranked.clear()
        for rank, item in enumerate(answer.items, start=1):
            ranked.add_row(str(rank), item.item_id, item.title, f"{item.score:.4f}", because(item))
        who = f"user {user}" if user and not history else f"{len(history)} inline items"
        self.query_one("#preview-summary", Static).update(
            f"{who}: {len(answer.items)} items from {SOURCES.get(answer.source, 'unknown')}, "
            f"model version {answer.model_version or '-'}, "
            f"{answer.history_used} history events used"
        )
