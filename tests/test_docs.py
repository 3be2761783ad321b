"""The README's and docs/' code blocks work as written.

- Python blocks run, against a real server process (its address put in for 50051).
- Shell blocks: bash parses them; every `recserve ...` line parses with the CLI's own
  parser (subcommand and flags exist); every `make X` names a Makefile target; every
  grpcurl call names a service and method the protos define.
- JavaScript blocks pass `node --check` (where Node.js is installed).
- Every `RECSERVE_*` variable the docs name is a setting.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recserve.cli import build_parser
from shared.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for lang, body in FENCE.findall(path.read_text()):
            if lang == language:
                found.append((f"{path.relative_to(ROOT)}", body))
    return found


def commands(script: str) -> list[str]:
    """Shell lines with continuations joined and comments dropped."""
    joined = script.replace("\\\n", " ")
    lines = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            lines.extend(part.strip() for part in re.split(r"&&|;", line) if part.strip())
    return lines


def test_there_are_blocks_to_check() -> None:
    assert blocks("python") and blocks("sh") and blocks("javascript")


@pytest.mark.parametrize(("where", "script"), blocks("sh"))
def test_shell_blocks(where: str, script: str) -> None:
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0, where
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    protos = "".join(p.read_text() for p in (ROOT / "protos").rglob("*.proto"))
    parser = build_parser()
    for line in commands(script):
        words = shlex.split(line)
        if words[0] == "recserve":
            try:
                parser.parse_args(words[1:])
            except SystemExit as exc:
                pytest.fail(f"{where}: `{line}` does not parse ({exc})")
        elif words[0] == "make":
            for target in [w for w in words[1:] if "=" not in w]:
                assert target in targets, f"{where}: make target {target!r} does not exist"
        elif words[0] == "grpcurl":
            method = words[-1]
            service, _, rpc = method.rpartition("/")
            if service.startswith("recserve.v1."):
                assert f"service {service.split('.')[-1]} " in protos, f"{where}: {service}"
                assert f"rpc {rpc}(" in protos, f"{where}: {method}"


def test_documented_settings_exist() -> None:
    text = "\n".join(path.read_text() for path in DOCS)
    fields = Settings.model_fields
    for name in sorted(set(re.findall(r"RECSERVE_([A-Z_]+)", text))):
        parts = name.lower().split("__")
        if parts[0] in ("config", "test_services", "test_latest"):
            continue  # the file of settings, and the test harness's own switches
        model = fields
        for part in parts:
            if not part or "{" in part or part.endswith("_"):
                break
            assert part in model, f"RECSERVE_{name} is not a setting"
            annotation = model[part].annotation
            model = getattr(annotation, "model_fields", {})


@pytest.mark.parametrize(("where", "code"), blocks("python"))
def test_python_blocks_run_against_a_server(where: str, code: str, settings) -> None:
    from tests.support.processes import ServerProcess

    server = ServerProcess(settings, "docs")
    try:
        script = code.replace("127.0.0.1:50051", server.target)
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{where}:\n{result.stderr}"
        assert result.stdout.strip(), f"{where}: printed nothing"
    finally:
        server.stop()


@pytest.mark.parametrize(("where", "code"), blocks("javascript"))
def test_javascript_blocks_parse(where: str, code: str, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    source = tmp_path / "snippet.js"
    source.write_text(code)
    result = subprocess.run([node, "--check", str(source)], capture_output=True, text=True)
    assert result.returncode == 0, f"{where}: {result.stderr}"
    proto = re.search(r'loadSync\("([^"]+)"', code)
    assert proto and (ROOT / "protos" / proto.group(1)).is_file(), f"{where}: proto path"


def test_the_readme_is_for_users() -> None:
    """At most 150 lines, and no dated host figures: those live in docs/benchmarks.md."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert not re.findall(r"\b20\d\d-\d\d-\d\d\b", text), "dates belong in docs/benchmarks.md"
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).exists(), link
