"""Prints the installed packages whose version is above their pin in the lock.

``make test-latest`` runs it in a venv of the newest versions that pyproject.toml's ranges
allow: the list is what the next ``make lock LOCK_ARGS=--upgrade`` would move.
Usage: python requirements/ahead.py requirements.lock
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lock_file import canonical, read_pins  # noqa: E402


def main(lock: Path) -> int:
    pins = read_pins(lock)
    ahead: list[tuple[str, str, str]] = []
    unlocked: list[tuple[str, str]] = []
    for dist in metadata.distributions():
        name = canonical(dist.metadata["Name"])
        if name in ("recserve", "pip"):
            continue
        pinned = pins.get(name)
        if pinned is None:
            unlocked.append((name, dist.version))
        elif Version(dist.version) > Version(pinned):
            ahead.append((name, pinned, dist.version))
    print(f"{len(ahead)} package(s) newer than {lock.name}:")
    for name, pinned, newest in sorted(ahead):
        print(f"  {name:32} {pinned:>16} -> {newest}")
    if unlocked:
        print(f"{len(unlocked)} package(s) installed here that the lock does not hold:")
        for name, version in sorted(unlocked):
            print(f"  {name:32} {version:>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("requirements.lock")))
