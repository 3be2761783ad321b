"""Training job parameters: the settings' training defaults, overridden per job."""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import annotated_types
from pydantic import ConfigDict, ValidationError

from shared.config import Settings, TrainingSettings
from shared.wire.errors import InvalidArgument

RECIPE_KEYS = frozenset(
    {
        "max_len", "dropout", "attention_dropout", "learning_rate", "n_heads", "loss",
        "num_negatives", "validation_users", "lr_schedule", "time_budget_s", "epochs",
        "patience", "patience_from", "windows", "positions",
    }
)  # fmt: skip
"""The parameters the adaptive recipe (worker/recipe.py) may choose from the data."""


class TrainingParams(TrainingSettings):
    """Everything a train job needs; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    activate: Literal["auto", "always", "never"] = "auto"
    """auto: activate when the new model beats the active one and popularity on the same
    test split (or when none is active). always / never: as it says."""


def parse_overrides(overrides: str | dict[str, Any] | None) -> dict[str, Any]:
    """A job's own parameters as given: a JSON object (or a dict), unvalidated.
    Raises InvalidArgument naming params_json when it is not an object."""
    if isinstance(overrides, str):
        if not overrides.strip():
            return {}
        try:
            overrides = json.loads(overrides)
        except json.JSONDecodeError as exc:
            raise InvalidArgument("params_json", f"is not valid JSON ({exc.msg})") from exc
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise InvalidArgument("params_json", 'must be a JSON object like {"epochs": 20}')
    return overrides


def given_params(settings: Settings, overrides: str | dict[str, Any] | None) -> dict[str, Any]:
    """What a job stores: only the parameters it was given, validated and normalised (the
    recipe fills the rest from the data when the job runs). Raises InvalidArgument."""
    given = parse_overrides(overrides)
    validated = parse_training_params(settings, given)
    return validated.model_dump(include=set(given))


def parse_training_params(
    settings: Settings, overrides: str | dict[str, Any] | None
) -> TrainingParams:
    """Defaults from ``settings.training`` with ``overrides`` (a JSON object) applied.

    Raises InvalidArgument naming params_json and the offending key.
    """
    overrides = parse_overrides(overrides)
    try:
        return TrainingParams.model_validate({**settings.training.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "params_json"
        accepted = ", ".join(sorted(TrainingParams.model_fields))
        raise InvalidArgument(
            f"params_json.{key}", f"{first['msg']}; accepted keys: {accepted}"
        ) from exc


@dataclass(frozen=True)
class TrainingOption:
    """One training parameter, as GetTrainingOptions describes it."""

    name: str
    type: str  # "int" | "float" | "bool" | "choice"
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[str, ...] = ()
    help: str = ""
    nullable: bool = False
    source: str = "default"
    """recipe, settings or default: where a job that does not set it gets its value."""
    extra: dict[str, Any] = field(default_factory=dict)


def training_options(settings: Settings) -> list[TrainingOption]:
    """Every accepted training parameter with its type, range and this deployment's
    default (the settings' training section), in declaration order."""
    defaults = parse_training_params(settings, {})
    from_settings = settings.training.model_fields_set
    options = []
    for name, info in TrainingParams.model_fields.items():
        annotation = info.annotation
        args = typing.get_args(annotation)
        nullable = isinstance(annotation, types.UnionType) and type(None) in args
        if nullable:
            annotation = next(a for a in args if a is not type(None))
        choices: tuple[str, ...] = ()
        if typing.get_origin(annotation) is Literal:
            kind, choices = "choice", tuple(str(c) for c in typing.get_args(annotation))
        elif annotation is bool:
            kind = "bool"
        elif annotation is int:
            kind = "int"
        else:
            kind = "float"
        bounds: dict[str, Any] = {}
        for rule in info.metadata:
            if isinstance(rule, annotated_types.Ge):
                bounds["minimum"] = float(rule.ge)  # type: ignore[arg-type]
            elif isinstance(rule, annotated_types.Gt):
                bounds.update(minimum=float(rule.gt), exclusive_minimum=True)  # type: ignore[arg-type]
            elif isinstance(rule, annotated_types.Le):
                bounds["maximum"] = float(rule.le)  # type: ignore[arg-type]
            elif isinstance(rule, annotated_types.Lt):
                bounds.update(maximum=float(rule.lt), exclusive_maximum=True)  # type: ignore[arg-type]
        options.append(
            TrainingOption(
                name=name,
                type=kind,
                default=getattr(defaults, name),
                choices=choices,
                help=" ".join((info.description or "").split()),
                nullable=nullable,
                source="settings"
                if name in from_settings
                else "recipe"
                if name in RECIPE_KEYS and defaults.auto
                else "default",
                **bounds,
            )
        )
    return options
