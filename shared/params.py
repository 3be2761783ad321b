"""Training job parameters: the settings' training defaults, overridden per job."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import ConfigDict, ValidationError

from shared.config import Settings, TrainingSettings
from shared.errors import InvalidArgument


class TrainingParams(TrainingSettings):
    """Everything a train job needs; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    activate: Literal["auto", "always", "never"] = "auto"
    """auto: activate when the new model beats the active one and popularity on the same
    test split (or when none is active). always / never: as it says."""


def parse_training_params(
    settings: Settings, overrides: str | dict[str, Any] | None
) -> TrainingParams:
    """Defaults from ``settings.training`` with ``overrides`` (a JSON object) applied.

    Raises InvalidArgument naming params_json and the offending key.
    """
    if isinstance(overrides, str):
        if not overrides.strip():
            overrides = {}
        else:
            try:
                overrides = json.loads(overrides)
            except json.JSONDecodeError as exc:
                raise InvalidArgument("params_json", f"is not valid JSON ({exc.msg})") from exc
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise InvalidArgument("params_json", 'must be a JSON object like {"epochs": 20}')
    try:
        return TrainingParams.model_validate({**settings.training.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "params_json"
        accepted = ", ".join(sorted(TrainingParams.model_fields))
        raise InvalidArgument(
            f"params_json.{key}", f"{first['msg']}; accepted keys: {accepted}"
        ) from exc
