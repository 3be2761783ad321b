"""Start a training job from typed fields (built from GetTrainingOptions), checked
before anything is sent. A raw JSON object stays available for anything else.

Every field starts unset, and only the fields the operator fills are sent: the job
stores those, and the rest is resolved when it runs. An unset field says where its value
will come from: "auto (recipe)" for the parameters the adaptive recipe chooses from the
data, "settings: X" for this deployment's own, else "default X"."""

from __future__ import annotations

import json
import math
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Select, Static

from shared.proto.recserve.v1 import admin_pb2


def check_value(option: admin_pb2.TrainingOption, text: str) -> tuple[Any, str | None]:
    """Parses ``text`` for a numeric option: (value, None) or (None, the error)."""
    text = text.strip()
    if not text:
        if option.nullable:
            return None, None
        return None, "a value is required"
    try:
        value: Any = int(text) if option.type == "int" else float(text)
    except ValueError:
        kind = "a whole number" if option.type == "int" else "a number"
        return None, f"{text!r} is not {kind}"
    if isinstance(value, float) and not math.isfinite(value):
        return None, "must be finite"
    if option.HasField("minimum"):
        low = option.minimum
        if value < low or (option.exclusive_minimum and value == low):
            return None, f"must be {'>' if option.exclusive_minimum else '>='} {low:g}"
    if option.HasField("maximum"):
        high = option.maximum
        if value > high or (option.exclusive_maximum and value == high):
            return None, f"must be {'<' if option.exclusive_maximum else '<='} {high:g}"
    return value, None


def field_id(name: str) -> str:
    return f"opt-{name}"


def unset_label(option: admin_pb2.TrainingOption) -> str:
    """What an unset field shows: where the job will get the value from."""
    default = json.loads(option.default_json or "null")
    if option.source == "recipe":
        return "auto (recipe)"
    if option.source == "settings":
        return f"settings: {default}"
    return f"default {default}"


class TrainingForm(ModalScreen[str | None]):
    """Dismisses with the parameters as a JSON object (only the changed ones), or None."""

    BINDINGS = [("escape", "cancel", "Cancel"), ("ctrl+t", "submit", "Start training")]

    def __init__(self, options: list[admin_pb2.TrainingOption]) -> None:
        super().__init__()
        self.options = options

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static("Start a training job", classes="dialog-title")
            yield Static(
                "Only the fields you fill are sent; the recipe chooses the others marked "
                "auto from the data. Ctrl+T or Start to queue, Escape to cancel.",
                classes="dialog-hint",
            )
            with VerticalScroll(id="training-fields"):
                for option in self.options:
                    with Horizontal(classes="form-row"):
                        yield Static(option.name, classes="form-label")
                        yield self._field(option)
                        yield Static(option.help, classes="form-help")
                    yield Static("", id=f"err-{option.name}", classes="form-error")
                with Horizontal(classes="form-row"):
                    yield Static("raw JSON", classes="form-label")
                    yield Input(
                        placeholder='{"epochs": 20}: merged over the fields above',
                        id="raw-json",
                    )
                    yield Static("any other keys", classes="form-help")
                yield Static("", id="err-raw-json", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start (ctrl+t)", id="submit", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def _field(self, option: admin_pb2.TrainingOption) -> Input | Select[str]:
        if option.type in ("choice", "bool"):
            choices = list(option.choices) if option.type == "choice" else ["true", "false"]
            return Select(
                [(c, c) for c in choices],
                prompt=unset_label(option),
                allow_blank=True,
                id=field_id(option.name),
            )
        return Input(
            value="",
            placeholder=unset_label(option),
            type="integer" if option.type == "int" else "number",
            id=field_id(option.name),
        )

    def collect(self) -> tuple[dict[str, Any], list[str]]:
        """The filled-in values and the errors (each also shown under its field)."""
        params: dict[str, Any] = {}
        errors: list[str] = []
        for option in self.options:
            widget = self.query_one(f"#{field_id(option.name)}")
            error: str | None = None
            value: Any
            if isinstance(widget, Select):
                if widget.is_blank():
                    continue
                value = widget.value
                if option.type == "bool":
                    value = value == "true"
            else:
                assert isinstance(widget, Input)
                if not widget.value.strip():
                    self._show_error(f"#err-{option.name}", "")
                    continue
                value, error = check_value(option, widget.value)
            self._show_error(f"#err-{option.name}", error or "")
            if error:
                errors.append(f"{option.name}: {error}")
            else:
                params[option.name] = value
        raw = self.query_one("#raw-json", Input).value.strip()
        raw_error = ""
        if raw:
            try:
                extra = json.loads(raw)
            except json.JSONDecodeError as exc:
                raw_error = f"not valid JSON ({exc.msg})"
            else:
                if isinstance(extra, dict):
                    params.update(extra)
                else:
                    raw_error = 'must be a JSON object like {"epochs": 20}'
        self._show_error("#err-raw-json", raw_error)
        if raw_error:
            errors.append(f"raw JSON: {raw_error}")
        return params, errors

    def _show_error(self, selector: str, error: str) -> None:
        line = self.query_one(selector, Static)
        line.update(error)
        line.set_class(bool(error), "shown")

    @on(Button.Pressed, "#submit")
    @on(Input.Submitted)
    def action_submit(self) -> None:
        params, errors = self.collect()
        if errors:
            self.notify("\n".join(errors), title="Fix these fields", severity="error")
            return
        self.dismiss(json.dumps(params, sort_keys=True))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
