"""`recserve deploy-secrets`: fresh random secrets for deploy/compose.yaml.

The compose file takes every secret from the environment with ``${VAR:?...}``, so it
refuses to start without them, and ships none of its own. This writes them to an env
file (mode 600) that ``docker compose`` reads from the compose file's folder:

    POSTGRES_PASSWORD       the recserve database user's password
    REDIS_PASSWORD          the broker's password (redis-server --requirepass)
    RECSERVE_READ_TOKENS    read-role tokens of the serving replicas, name=secret
    RECSERVE_WRITE_TOKENS   write-role tokens (Feedback), name=secret
    RECSERVE_ADMIN_TOKENS   admin-role tokens (ModelAdmin, the console), name=secret
    RECSERVE_CLIENT_TOKEN   the operator's admin secret, for `recserve tui` and the CLI

Secrets are 256 random bits, URL-safe, so they go into database and broker URLs as they
are. An existing file is kept unless ``--force``: new passwords would lock the services
out of the volumes the old ones initialised.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("deploy/.env")
SECRET_VARIABLES = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "RECSERVE_READ_TOKENS",
    "RECSERVE_WRITE_TOKENS",
    "RECSERVE_ADMIN_TOKENS",
    "RECSERVE_CLIENT_TOKEN",
)


def fresh_secret() -> str:
    return secrets.token_urlsafe(32)


def render(now: datetime | None = None) -> str:
    """The env file's text: every variable of SECRET_VARIABLES with a fresh value."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    operator = fresh_secret()
    values = {
        "POSTGRES_PASSWORD": fresh_secret(),
        "REDIS_PASSWORD": fresh_secret(),
        "RECSERVE_READ_TOKENS": f'["backend-read={fresh_secret()}"]',
        "RECSERVE_WRITE_TOKENS": f'["backend-write={fresh_secret()}"]',
        "RECSERVE_ADMIN_TOKENS": f'["operator={operator}"]',
        "RECSERVE_CLIENT_TOKEN": operator,
    }
    lines = [
        f"# recserve deployment secrets, written by `recserve deploy-secrets` on {stamp}.",
        "# Keep this file private (mode 600) and out of version control. Tokens are",
        "# name=secret: a client sends only the secret, as 'authorization: Bearer <secret>'.",
    ]
    lines += [f"{name}={values[name]}" for name in SECRET_VARIABLES]  # no quotes needed
    return "\n".join(lines) + "\n"


def write_secrets(out: Path, *, force: bool = False) -> Path:
    if out.exists() and not force:
        raise FileExistsError(
            f"{out} exists; pass --force to replace its secrets (services initialised "
            "with the old passwords, such as the PostgreSQL volume, will refuse the new ones)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(render())
    os.chmod(out, 0o600)  # also when the file existed with wider permissions
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    help_text = "Write fresh random secrets for deploy/compose.yaml to an env file (mode 600)."
    p = sub.add_parser("deploy-secrets", help=help_text, description=help_text)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    p.add_argument("--force", action="store_true", help="replace an existing file's secrets")
    p.set_defaults(func=cmd_deploy_secrets)


def cmd_deploy_secrets(args: argparse.Namespace) -> int:
    try:
        path = write_secrets(args.out, force=args.force)
    except FileExistsError as exc:
        print(f"error: {exc}")
        return 2
    print(f"wrote {', '.join(SECRET_VARIABLES)} to {path} (mode 600)")
    return 0


_SECRETISH = ("PASSWORD", "TOKEN", "SECRET")
_REFERENCE = re.compile(r"\$\{([A-Z0-9_]+)(:?[-?+])?([^}]*)\}")


def _strings(node: object) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def compose_problems(document: dict[str, Any]) -> list[str]:
    """What makes a parsed compose document unsafe to ship: a literal secret, a secret
    with a default or not written by deploy-secrets, a published port other than the
    servers' gRPC (and their HTTP/JSON port, only where it is enabled), a role of the
    servers left without tokens."""
    problems: list[str] = []
    for text in _strings(document):
        for name, operator, _ in _REFERENCE.findall(text):
            if operator != ":?":
                problems.append(f"${{{name}}} is not required (${{{name}:?...}}): {text!r}")
            if any(word in name for word in _SECRETISH) and name not in SECRET_VARIABLES:
                problems.append(f"${{{name}}} is a secret that deploy-secrets does not write")
    for service_name, service in document.get("services", {}).items():
        environment = service.get("environment") or {}
        for variable, value in environment.items():
            text = str(value)
            secret = any(word in variable.upper() for word in _SECRETISH)
            credentials = "://" in text and "@" in text.split("://", 1)[1]
            if credentials:
                userinfo = text.split("://", 1)[1].rsplit("@", 1)[0]
                password = userinfo.partition(":")[2]
                if password and not _REFERENCE.fullmatch(password):
                    problems.append(f"{service_name}.{variable} has a literal password")
            elif secret and not _REFERENCE.search(text):
                problems.append(f"{service_name}.{variable} holds a literal secret")
        ports = [str(port) for port in service.get("ports", [])]
        http = str(environment.get("RECSERVE_SERVER__HTTP_ENABLED", "")).lower() == "true"
        allowed = [["50051"], ["50051", "8080"]] if http else [["50051"]]
        if ports and (service_name != "server" or ports not in allowed):
            problems.append(
                f"{service_name} publishes {ports}; only the server's 50051 may be (and 8080 "
                "with RECSERVE_SERVER__HTTP_ENABLED=true)"
            )
    server = document.get("services", {}).get("server", {}).get("environment") or {}
    for role in ("READ", "WRITE", "ADMIN"):
        if f"RECSERVE_SERVER__{role}_TOKENS" not in server:
            problems.append(f"the server has no RECSERVE_SERVER__{role}_TOKENS")
    if any("ANONYMOUS" in str(variable) for variable in server):
        problems.append("the server opens roles to anonymous callers")
    return problems
