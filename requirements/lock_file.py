"""Reads the application's lock (``requirements.lock``) for the checks that compare it.

Used by ``tests/test_lock.py`` (the lock covers pyproject.toml, and the venv is the lock)
and by ``make test-latest`` (which packages are ahead of their pins). Standard library and
``packaging`` only, so that it runs in any of the project's venvs.
"""

from __future__ import annotations

import re
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical(name: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """Canonical name -> pinned version, for every requirement line of the lock."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def unhashed(path: Path) -> list[str]:
    """Requirement lines of the lock that carry no ``--hash``."""
    blocks = re.split(r"\n(?=[A-Za-z0-9])", path.read_text())
    return [b.split()[0] for b in blocks if _PIN.match(b) and "--hash=sha256:" not in b]
