"""The deploy files ship no secret and expose nothing but gRPC. No container engine runs
here, so the compose file is parsed and checked as data, and the env file that
`recserve deploy-secrets` writes is checked against what the compose file asks for."""

from __future__ import annotations

import copy
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from recserve.deploy_secrets import SECRET_VARIABLES, compose_problems
from server.auth import AccessPolicy
from shared.config import ServerSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_the_shipped_compose_file_is_safe() -> None:
    assert compose_problems(compose()) == []


@pytest.mark.parametrize(
    ("service", "change", "problem"),
    [
        ("server", {"RECSERVE_SERVER__ADMIN_TOKENS": "change-me"}, "literal secret"),
        ("server", {"RECSERVE_SERVER__READ_TOKENS": "${READ:-abc}"}, "is not required"),
        ("postgres", {"POSTGRES_PASSWORD": "recserve"}, "literal secret"),
        (
            "worker",
            {"RECSERVE_DATABASE_URL": "postgresql://recserve:hunter2@postgres/recserve"},
            "literal password",
        ),
        ("server", {"RECSERVE_SERVER__ANONYMOUS_ROLES": '["read"]'}, "anonymous"),
    ],
)
def test_the_check_catches_what_it_is_for(service: str, change: dict, problem: str) -> None:
    document = copy.deepcopy(compose())
    document["services"][service].setdefault("environment", {}).update(change)
    assert any(problem in found for found in compose_problems(document))


def test_the_check_catches_a_published_metrics_port() -> None:
    document = copy.deepcopy(compose())
    document["services"]["server"]["ports"].append("9464")
    assert any("only the server's 50051" in p for p in compose_problems(document))
    document = copy.deepcopy(compose())
    document["services"]["redis"]["ports"] = ["6379:6379"]
    assert any("redis publishes" in p for p in compose_problems(document))


def test_redis_and_postgres_have_passwords() -> None:
    services = compose()["services"]
    assert "--requirepass" in services["redis"]["command"]
    assert "${POSTGRES_PASSWORD:?" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]


def test_deploy_secrets_writes_every_variable_privately(tmp_path: Path) -> None:
    out = tmp_path / "deploy" / ".env"
    made = subprocess.run(
        [sys.executable, "-m", "recserve", "deploy-secrets", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    values = dict(
        line.split("=", 1) for line in out.read_text().splitlines() if line and line[0] != "#"
    )
    assert set(values) == set(SECRET_VARIABLES)
    asked = set(re.findall(r"\$\{([A-Z0-9_]+):\?", yaml.safe_dump(compose())))  # no comments
    assert asked and asked <= set(values), f"compose asks for {asked - set(values)}"
    assert len(set(values.values())) == len(values), "a fresh secret each"
    policy = AccessPolicy(
        ServerSettings(
            read_tokens=[SecretStr(t) for t in yaml.safe_load(values["RECSERVE_READ_TOKENS"])],
            admin_tokens=[SecretStr(t) for t in yaml.safe_load(values["RECSERVE_ADMIN_TOKENS"])],
        )
    )
    operator = policy.caller([("authorization", f"Bearer {values['RECSERVE_CLIENT_TOKEN']}")])
    assert operator.name == "operator" and operator.role == "admin"
    again = subprocess.run(
        [sys.executable, "-m", "recserve", "deploy-secrets", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "--force" in again.stdout, "never overwritten silently"


def merged(base: dict, layer: dict) -> dict:
    """compose's merge of two files, as far as these files need: maps merged, ports
    appended."""
    out = copy.deepcopy(base)
    for name, service in layer["services"].items():
        target = out["services"][name]
        target.setdefault("environment", {}).update(service.get("environment", {}))
        target["ports"] = [*target.get("ports", []), *service.get("ports", [])]
    return out


def test_http_is_published_only_where_it_is_enabled() -> None:
    layer = yaml.safe_load((ROOT / "deploy" / "compose.http.yaml").read_text())
    assert compose_problems(merged(compose(), layer)) == []
    assert "8080" not in compose()["services"]["server"]["ports"], "off unless layered"
    published_only = copy.deepcopy(compose())
    published_only["services"]["server"]["ports"].append("8080")
    assert any("8080" in p for p in compose_problems(published_only))
