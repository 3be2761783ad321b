"""The catalogue: search it, and take an item out of recommendations or bring it back."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Checkbox, DataTable, Input, Static

from shared.proto.recserve.v1 import admin_pb2
from tui.connection import Connection
from tui.screens import Pane, while_mounted
from tui.widgets.tables import selected_key, sync_table

COLUMNS = ("item", "title", "labels", "available", "catalogue", "model")


class ItemsPane(Pane):
    BINDINGS = [("t", "toggle_item", "Hide / restore item")]

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection, id="items-pane")
        self.items: dict[str, admin_pb2.CatalogueItem] = {}

    def compose(self) -> ComposeResult:
        with Horizontal(classes="actions"):
            yield Input(placeholder="search item ids and titles", id="items-query")
            yield Checkbox("unavailable only", id="items-unavailable")
        yield Static(
            "t hides the selected item from recommendations, or restores it", classes="hint"
        )
        table: DataTable[str] = DataTable(id="items-table", cursor_type="row")
        table.add_columns(*COLUMNS)
        yield table

    @on(Input.Changed, "#items-query")
    @on(Checkbox.Changed, "#items-unavailable")
    def search(self) -> None:
        self.reload()

    @work(exclusive=True, group="items")
    @while_mounted
    async def reload(self) -> None:
        answer = await self.connection.admin(
            "ListItems",
            admin_pb2.ListItemsRequest(
                query=self.query_one("#items-query", Input).value.strip(),
                unavailable_only=self.query_one("#items-unavailable", Checkbox).value,
                limit=200,
            ),
        )
        if answer is None or not self.is_attached:
            return
        self.items = {i.item_id: i for i in answer.items}
        rows = [
            (
                i.item_id,
                (
                    i.item_id,
                    i.title,
                    ", ".join(i.labels),
                    "yes" if i.available else "HIDDEN",
                    "yes" if i.in_catalogue else "model only",
                    "knows it" if i.in_model else "new: exploration only",
                ),
            )
            for i in answer.items
        ]
        sync_table(self.query_one("#items-table", DataTable), rows, order=str)

    def action_toggle_item(self) -> None:
        key = selected_key(self.query_one("#items-table", DataTable))
        item = self.items.get(key) if key else None
        if item is None:
            self.notify("Select an item", title="Items", severity="warning")
            return
        self._set(item.item_id, not item.available)

    @work(group="items-set")
    async def _set(self, item_id: str, available: bool) -> None:
        answer = await self.connection.admin(
            "SetItemAvailability",
            admin_pb2.SetItemAvailabilityRequest(item_ids=[item_id], available=available),
        )
        if answer is not None:
            state = "back in recommendations" if available else "hidden from recommendations"
            self.notify(f"{item_id} is {state}", title="Items")
            self.reload()
