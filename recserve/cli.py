"""`recserve` command line. Every subcommand has --help.

recserve demo       the README's first command: data, worker, training, server
recserve serve      run the gRPC server
recserve worker     run a Celery worker
recserve train      queue a training job (--wait follows it)
recserve import     load an interaction file into the database
recserve up        a local production stack (replicas, workers, beat) under honcho
recserve beat      run Celery beat: the retraining schedule and volume trigger
recserve drill     fault drills on real processes under traffic
recserve recommend  call Recommend on a running server
recserve models     list, inspect, activate, roll back, prune model versions
recserve jobs       list, show, cancel jobs
recserve rules      business rule sets: boost, bury, cap, pin
recserve delete-user / export-user / audit   a user's data, and its audit
recserve tui        the operator console
recserve migrate    bring the database schema up to date
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from recserve.admin_cli import add_parsers as add_admin_parsers
from recserve.bench_cli import add_bench_parsers
from recserve.data_cli import add_data_parsers
from recserve.deploy_secrets import add_parser as add_deploy_secrets_parser
from recserve.rules_cli import add_parser as add_rules_parser
from recserve.run_cli import add_run_parsers, cmd_migrate
from recserve.users_cli import add_parsers as add_users_parsers
from shared.config import Settings

EXTRAS = {
    "celery": "worker",
    "torch": "worker",
    "onnx": "worker",
    "onnxscript": "worker",
    "honcho": "worker",
    "onnxruntime": "server",
    "textual": "tui",
    "textual_plotext": "tui",
    "tensorrt": "tensorrt",
    "opentelemetry": "tracing",
}
"""Optional dependencies by top-level module: a command that needs one names its extra."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recserve",
        description="gRPC recommendation service (SASRec).",
        epilog="Settings come from RECSERVE_* environment variables; see the README.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        p.add_argument(
            "--data-dir", help="embedded data folder (default ./var or RECSERVE_DATA_DIR)"
        )
        return p

    add_run_parsers(add)
    add_data_parsers(add)
    add_bench_parsers(add)

    def remote(p: argparse.ArgumentParser) -> None:
        p.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of a server")
        p.add_argument("--token", help="admin token (default RECSERVE_SERVER__ADMIN_TOKEN)")

    add_admin_parsers(sub, remote)
    add_rules_parser(sub, remote)
    add_users_parsers(sub, remote)
    add_deploy_secrets_parser(sub)
    add("migrate", cmd_migrate, "Create or upgrade the database schema.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from shared.telemetry import configure_logging
    from shared.wire.errors import RecserveError

    configure_logging(Settings())

    try:
        return int(args.func(args))
    except RecserveError as exc:  # a refusal with its reason, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        print(
            f"error: `recserve {args.command}` needs {exc.name}, part of the {extra} extra: "
            f"pip install 'recserve[{extra}]'",
            file=sys.stderr,
        )
        return 2
