"""Item properties: typed facts about an item, beside its id.

A property is one of three kinds, told apart by its value:

- **categorical**: a list of strings, one or several values (``"genre": ["Comedy",
  "Drama"]``, ``"brand": ["acme"]``);
- **numeric**: a number (``"year": 1995``, ``"price": 9.99``);
- **text**: a string (``"title": "Toy Story"``).

Categorical properties share one namespace with labels: ``brand=acme`` is also the label
``brand:acme``, so label filters (and anything else that reads labels) see properties
with no second mechanism.

Keys are 1..64 characters of ``[a-z0-9_]``; an item has at most MAX_PROPERTIES of them,
a categorical property at most MAX_VALUES values of 1..64 characters (``key:value``
within MAX_LABEL_LEN), a text at most MAX_TEXT characters, and a number is finite.
Every error names the property (``properties.genre[2]``) and what would be accepted.
"""

from __future__ import annotations

import math
import re
from typing import Any

Properties = dict[str, list[str] | float | str]

KEY_PATTERN = re.compile(r"^[a-z0-9_]{1,64}$")
MAX_PROPERTIES = 32
MAX_VALUES = 32
MAX_TEXT = 4096
MAX_LABEL_LEN = 64


class PropertyError(ValueError):
    """A property that cannot be stored: ``field`` names it, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def checked(raw: Any, field: str = "properties") -> Properties:
    """``raw`` (a mapping of key to value) as Properties, or PropertyError."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PropertyError(field, f"is {type(raw).__name__}; accepted: an object of key: value")
    if len(raw) > MAX_PROPERTIES:
        raise PropertyError(field, f"has {len(raw)} keys; at most {MAX_PROPERTIES} are accepted")
    out: Properties = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not KEY_PATTERN.match(key):
            raise PropertyError(
                f"{field}.{key}", "is not a valid key; accepted: 1..64 characters of a-z, 0-9, _"
            )
        out[key] = _value(value, f"{field}.{key}", key)
    return out


def _value(value: Any, field: str, key: str) -> list[str] | float | str:
    if value is None:
        raise PropertyError(
            field, "has no value; accepted: exactly one of categories, a number or a text"
        )
    if isinstance(value, bool):
        raise PropertyError(field, "is a boolean; accepted: a list of strings, a number or a text")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise PropertyError(field, f"is {value}; accepted: a finite number")
        return float(value)
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise PropertyError(field, f"is {len(value)} characters; at most {MAX_TEXT}")
        return value
    if isinstance(value, list):
        if not value or len(value) > MAX_VALUES:
            raise PropertyError(
                field, f"has {len(value)} values; accepted: 1..{MAX_VALUES} category values"
            )
        values: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip() or not item.isprintable():
                raise PropertyError(f"{field}[{i}]", "accepted: a non-empty printable string")
            if len(key) + 1 + len(item) > MAX_LABEL_LEN:
                raise PropertyError(
                    f"{field}[{i}]",
                    f"makes the label {key}:{item[:20]}... longer than {MAX_LABEL_LEN} characters",
                )
            if item not in values:
                values.append(item)
        return values
    raise PropertyError(
        field, f"is {type(value).__name__}; accepted: a list of strings, a number or a text"
    )


def labels_of(properties: Properties) -> list[str]:
    """The labels that the categorical properties stand for: ``key:value`` each."""
    return [
        f"{key}:{item}"
        for key, value in sorted(properties.items())
        if isinstance(value, list)
        for item in value
    ]


def kind_of(value: list[str] | float | str) -> str:
    """ "categorical", "numeric" or "text"."""
    if isinstance(value, list):
        return "categorical"
    return "numeric" if isinstance(value, float) else "text"
