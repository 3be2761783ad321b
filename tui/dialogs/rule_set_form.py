"""Create or edit a business rule set: its name, schedule, description and rules, one
per line in the form the rule sets are listed in (docs/rules.md):

    boost brand:acme x2        (a factor in (1, 100])
    bury clearance x0.5        (a factor in [0.01, 1))
    cap brand:* 2              (at most 2 per brand; "brand:acme 2" for one label)
    pin sku-42 at 1            (slot 1 is the first place)

Lines are checked before anything is sent, each error naming its line; the server checks
again and names the rule (rules[3].factor)."""

from __future__ import annotations

from datetime import UTC, datetime

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static, TextArea

from shared.model.rules import Rule
from shared.proto.recserve.v1 import admin_pb2


def parse_rule(line: str) -> admin_pb2.Rule:
    """One line as a rule; ValueError says what would be accepted."""
    words = line.split()
    kind = words[0] if words else ""
    if kind in ("boost", "bury") and len(words) == 3:
        try:
            return admin_pb2.Rule(kind=kind, label=words[1], factor=float(words[2].lstrip("x")))
        except ValueError:
            pass
    elif kind == "cap" and len(words) == 3 and words[2].isdigit():
        return admin_pb2.Rule(kind=kind, label=words[1], max_items=int(words[2]))
    elif kind == "pin" and len(words) in (3, 4) and words[-1].isdigit():
        if len(words) == 3 or words[2] == "at":
            return admin_pb2.Rule(kind=kind, item_id=words[1], slot=int(words[-1]))
    raise ValueError(
        f"{line.strip()!r}: expected 'boost LABEL x2', 'bury LABEL x0.5', 'cap LABEL 2' "
        "or 'pin ITEM at 1'"
    )


def format_rule(rule: admin_pb2.Rule) -> str:
    """The rule as the rule sets list it (shared/model/rules.py's Rule.describe)."""
    return Rule(
        rule.kind, rule.label, rule.factor, rule.max_items, rule.item_id, rule.slot
    ).describe()


def parse_time(text: str) -> int:
    """An ISO 8601 date or time (UTC unless it names a zone) as epoch ms; "" is 0."""
    if not text.strip():
        return 0
    when = datetime.fromisoformat(text.strip())
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)


def format_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M") if ms else ""


class RuleSetForm(ModalScreen[admin_pb2.RuleSet | None]):
    """Dismisses with the rule set to put, or None."""

    BINDINGS = [("escape", "cancel", "Cancel"), ("ctrl+t", "submit", "Save")]

    def __init__(self, rule_set: admin_pb2.RuleSet | None = None) -> None:
        super().__init__()
        self.rule_set = rule_set or admin_pb2.RuleSet()

    def compose(self) -> ComposeResult:
        r = self.rule_set
        with Vertical(classes="dialog wide"):
            yield Static("Edit rule set" if r.name else "New rule set", classes="dialog-title")
            yield Static(
                "One rule per line: boost LABEL x2, bury LABEL x0.5, cap brand:* 2, pin ITEM "
                "at 1. Times are ISO 8601 in UTC, empty for open. Ctrl+T or Save, Escape to "
                "cancel.",
                classes="dialog-hint",
            )
            for label, field, value, hint in (
                ("name", "rs-name", r.name, "letters, digits, _ . -"),
                ("from", "rs-from", format_time(r.active_from_ms), "e.g. 2026-12-24"),
                ("until", "rs-until", format_time(r.active_until_ms), "exclusive"),
                ("description", "rs-description", r.description, "what it is for"),
            ):
                with Horizontal(classes="form-row"):
                    yield Static(label, classes="form-label")
                    yield Input(value=value, placeholder=hint, id=field, disabled=(
                        field == "rs-name" and bool(r.name)))  # fmt: skip
            yield TextArea("\n".join(format_rule(x) for x in r.rules), id="rs-rules")
            yield Static("", id="rs-error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (ctrl+t)", id="submit", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def collect(self) -> tuple[admin_pb2.RuleSet | None, str]:
        try:
            rules = [
                parse_rule(line)
                for line in self.query_one("#rs-rules", TextArea).text.splitlines()
                if line.strip()
            ]
        except ValueError as exc:
            return None, str(exc)
        times = {}
        for field in ("rs-from", "rs-until"):
            try:
                times[field] = parse_time(self.query_one(f"#{field}", Input).value)
            except ValueError:
                return None, f"{field[3:]}: expected an ISO 8601 date or time, e.g. 2026-12-24"
        name = self.query_one("#rs-name", Input).value.strip()
        if not name:
            return None, "name: required"
        return admin_pb2.RuleSet(
            name=name,
            rules=rules,
            active_from_ms=times["rs-from"],
            active_until_ms=times["rs-until"],
            description=self.query_one("#rs-description", Input).value.strip(),
        ), ""

    @on(Button.Pressed, "#submit")
    def action_submit(self) -> None:
        rule_set, error = self.collect()
        line = self.query_one("#rs-error", Static)
        line.update(error)
        line.set_class(bool(error), "shown")
        if rule_set is not None:
            self.dismiss(rule_set)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
