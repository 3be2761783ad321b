"""What every command shares: settings from the common options, training parameters
from --param and --params, and the type of the subcommand adder."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from shared.config import Settings


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings()
    updates: dict[str, object] = {}
    if getattr(args, "data_dir", None):
        settings = Settings(data_dir=Path(args.data_dir))
    server = settings.server.model_copy(
        update={
            k: v
            for k, v in {
                "port": getattr(args, "port", None),
                "host": getattr(args, "host", None),
                "workers": getattr(args, "workers", None),
                "backend": getattr(args, "backend", None),
                "insecure": getattr(args, "insecure", None),
            }.items()
            if v is not None
        }
    )
    updates["server"] = server
    return settings.model_copy(update=updates)


def parse_params(pairs: Sequence[str], raw: str | None) -> dict[str, object]:
    params: dict[str, object] = json.loads(raw) if raw else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param expects key=value, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]
"""Adds a subcommand: (name, handler, help) -> its parser, with the common options."""
