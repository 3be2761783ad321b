"""Dependency direction: shared imports none of server/worker/tui; server, worker and tui
never import each other; the server's CPU path never imports torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "shared": {"server", "worker", "tui", "recserve", "bench"},
    "server": {"worker", "tui", "recserve", "bench"},
    "worker": {"server", "tui", "recserve", "bench"},
    "tui": {"server", "worker", "recserve", "bench"},
    "bench": {"tests"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_layers(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if _imports(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_server_cpu_path_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import server.app, server.backends.onnxruntime, server.core\n"
        "from shared.bundle import load\n"
        "import shared.tensorrt_engine\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'tensorrt' not in sys.modules\n"
        "assert 'textual' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_heavy_imports_are_lazy() -> None:
    code = (
        "import sys\n"
        "import shared.config, shared.crud, worker.tasks, worker.celery_app, tui\n"
        "assert 'torch' not in sys.modules, 'torch imported at package import'\n"
        "assert 'textual' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
