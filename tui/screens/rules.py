"""Business rule sets: listed with their schedule and state, created, edited and
deleted (docs/rules.md). Every replica applies a change within 2 seconds."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from shared.proto.recserve.v1 import admin_pb2
from tui.connection import Connection
from tui.dialogs.confirm import confirm
from tui.dialogs.rule_set_form import RuleSetForm, format_rule, format_time
from tui.screens import Pane, while_mounted
from tui.widgets.tables import selected_key, sync_table

COLUMNS = (
    ("rule set", 20), ("state", 8), ("from", 16), ("until", 16), ("rules", 60), ("put by", 16),
)  # fmt: skip
"""Fixed widths: the table does not jump as rule sets come and go, and a long rule list
is cut at the edge of its column (the edit dialog shows it whole)."""


class RulesPane(Pane):
    BINDINGS = [
        ("n", "new_rule_set", "New rule set"),
        ("e", "edit_rule_set", "Edit"),
        ("d", "delete_rule_set", "Delete"),
    ]

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection, id="rules-pane")
        self.rule_sets: dict[str, admin_pb2.RuleSet] = {}

    def compose(self) -> ComposeResult:
        yield Static(
            "n new rule set, e edit the selected one, d delete it. Rules apply in this "
            "order: boost/bury, caps, pins, then exploration slots.",
            classes="hint",
        )
        table: DataTable[str] = DataTable(id="rules-table", cursor_type="row")
        for label, width in COLUMNS:
            table.add_column(label, width=width)
        yield table

    @work(exclusive=True, group="rules")
    @while_mounted
    async def reload(self) -> None:
        answer = await self.connection.admin("ListRuleSets", admin_pb2.ListRuleSetsRequest())
        if answer is None or not self.is_attached:
            return
        self.rule_sets = {r.name: r for r in answer.rule_sets}
        rows = [
            (
                r.name,
                (
                    r.name,
                    "ACTIVE" if r.active else "inactive",
                    format_time(r.active_from_ms) or "-",
                    format_time(r.active_until_ms) or "-",
                    "; ".join(format_rule(x) for x in r.rules),
                    r.updated_by or "-",
                ),
            )
            for r in answer.rule_sets
        ]
        sync_table(self.query_one("#rules-table", DataTable), rows, order=str)

    def _selected(self) -> admin_pb2.RuleSet | None:
        key = selected_key(self.query_one("#rules-table", DataTable))
        found = self.rule_sets.get(key) if key else None
        if found is None:
            self.notify("Select a rule set", title="Rules", severity="warning")
        return found

    def action_new_rule_set(self) -> None:
        self.app.push_screen(RuleSetForm(), self._put)

    def action_edit_rule_set(self) -> None:
        found = self._selected()
        if found is not None:
            self.app.push_screen(RuleSetForm(found), self._put)

    def action_delete_rule_set(self) -> None:
        found = self._selected()
        if found is not None:
            confirm(
                self.app,
                f"Delete rule set {found.name}? Every replica stops applying it.",
                title="Delete rule set",
                then=lambda: self._delete(found.name),
            )

    def _put(self, rule_set: admin_pb2.RuleSet | None) -> None:
        if rule_set is not None:
            self._send_put(rule_set)

    @work(group="rules-put")
    async def _send_put(self, rule_set: admin_pb2.RuleSet) -> None:
        answer = await self.connection.admin(
            "PutRuleSet", admin_pb2.PutRuleSetRequest(rule_set=rule_set)
        )
        if answer is not None:
            state = "active" if answer.active else "inactive (see its schedule)"
            self.notify(f"rule set {answer.name} saved: {state}", title="Rules")
            self.reload()

    @work(group="rules-delete")
    async def _delete(self, name: str) -> None:
        answer = await self.connection.admin(
            "DeleteRuleSet", admin_pb2.DeleteRuleSetRequest(name=name)
        )
        if answer is not None:
            self.notify(f"rule set {name} deleted", title="Rules")
            self.reload()
