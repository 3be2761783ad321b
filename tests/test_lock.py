"""The committed lock covers pyproject.toml, carries hashes, and is what the venv holds.

pytestmark = pytest.mark.unit

The full agreement check (what `make lock` would change) resolves against the package
index: that is `make lock-check`, which CI runs. These checks need no network.
"""

from __future__ import annotations

import os
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
LOCKED_EXTRAS = ("server", "worker", "tui", "dev")

sys.path.insert(0, str(ROOT / "requirements"))
from lock_file import canonical, read_pins, unhashed  # noqa: E402


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in LOCKED_EXTRAS:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def test_every_requirement_is_pinned_within_its_range() -> None:
    pins = read_pins(LOCK)
    problems = []
    for requirement in project_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        pinned = pins.get(canonical(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name} is not in {LOCK.name}: run `make lock`")
        elif not requirement.specifier.contains(Version(pinned), prereleases=True):
            problems.append(f"{requirement.name}=={pinned} is outside {requirement.specifier}")
    assert problems == []


def test_every_pin_has_a_hash() -> None:
    assert unhashed(LOCK) == []


def test_the_installed_packages_are_the_locked_ones() -> None:
    if os.environ.get("RECSERVE_TEST_LATEST") == "1":
        pytest.skip("`make test-latest` runs against the newest allowed versions on purpose")
    pins = read_pins(LOCK)
    differ = {
        name: (pins[name], dist.version)
        for dist in metadata.distributions()
        if (name := canonical(dist.metadata["Name"])) in pins and dist.version != pins[name]
    }
    assert differ == {}, f"installed versions differ from {LOCK.name}: run `make install`"


def test_the_generated_stubs_fit_the_lower_bounds() -> None:
    """The ranges admit no grpcio or protobuf older than the committed stubs require."""
    stubs = ROOT / "shared" / "proto" / "recserve" / "v1"
    grpc_stamp = (stubs / "recommender_pb2_grpc.py").read_text()
    generated_grpc = grpc_stamp.split("GRPC_GENERATED_VERSION = '")[1].split("'")[0]
    pb2 = (stubs / "recommender_pb2.py").read_text()
    generated_pb = pb2.split("# Protobuf Python Version: ")[1].splitlines()[0]
    bounds = {canonical(r.name): r.specifier for r in project_requirements()}
    for name, needed in (
        ("grpcio", generated_grpc),
        ("grpcio-tools", generated_grpc),
        ("protobuf", generated_pb),
    ):
        lowest = [s.version for s in bounds[name] if s.operator == ">="]
        assert lowest and Version(lowest[0]) >= Version(needed), (name, lowest, needed)
