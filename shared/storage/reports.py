"""Stored import reports (DATA_DIR/import-reports/*.json, written by `recserve import`):
the data-quality figures, with user ids in a few lists (suspected bots). A deleted user is
removed from them."""

from __future__ import annotations

import json
import os
from pathlib import Path


def scrub_user(folder: Path, user_id: str) -> int:
    """Removes ``user_id`` from every list in every report under ``folder``; returns how
    many reports changed (each rewritten atomically)."""
    changed = 0
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # not a report of ours
        if not isinstance(report, dict):
            continue
        mentions = [
            key for key, value in report.items() if isinstance(value, list) and user_id in value
        ]
        if not mentions:
            continue
        for key in mentions:
            report[key] = [value for value in report[key] if value != user_id]
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(report, indent=2))
        os.replace(temporary, path)
        changed += 1
    return changed
