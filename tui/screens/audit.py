"""The audit: who deleted or exported which user's data, when, and how many rows
(ModelAdmin.ListAuditEntries; docs/privacy.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from textual import work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from shared.proto.recserve.v1 import admin_pb2
from tui.connection import Connection
from tui.screens import Pane, while_mounted
from tui.widgets.tables import sync_table

COLUMNS = ("when (UTC)", "action", "user", "by", "rows")
ACTIONS = {"delete_user": "DELETED", "export_user": "exported"}


def _rows(detail_json: str) -> str:
    try:
        detail = json.loads(detail_json)
    except ValueError:
        return detail_json
    return ", ".join(
        f"{key} {value}" for key, value in sorted(detail.items()) if key != "page_token"
    )


class AuditPane(Pane):
    def __init__(self, connection: Connection) -> None:
        super().__init__(connection, id="audit-pane")

    def compose(self) -> ComposeResult:
        yield Static(
            "User deletions and exports, newest first: `recserve delete-user` and "
            "`recserve export-user`, or DeleteUser and ExportUser.",
            classes="hint",
        )
        table: DataTable[str] = DataTable(id="audit-table", cursor_type="row")
        table.add_columns(*COLUMNS)
        yield table

    @work(exclusive=True, group="audit")
    @while_mounted
    async def reload(self) -> None:
        answer = await self.connection.admin(
            "ListAuditEntries", admin_pb2.ListAuditEntriesRequest(limit=200)
        )
        if answer is None or not self.is_attached:
            return
        rows = [
            (
                f"{e.at_ms}-{n}",
                (
                    datetime.fromtimestamp(e.at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    ACTIONS.get(e.action, e.action),
                    e.subject,
                    e.by or "-",
                    _rows(e.detail_json),
                ),
            )
            for n, e in enumerate(answer.entries)
        ]
        sync_table(self.query_one("#audit-table", DataTable), rows)
