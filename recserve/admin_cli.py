"""`recserve models ...` and `recserve jobs ...`: the operator API from a shell.

They call a running server's ModelAdmin service (like the console), so activation is
verified and hot-swapped by the server, and they work against a remote deployment.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc

from shared.client import Client, client_token
from shared.config import Settings
from shared.proto.recserve.v1 import admin_pb2


def _client(args: argparse.Namespace) -> Client:
    settings = Settings()
    return Client(args.target, client_token(settings, args.token), settings.client)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def call(args: argparse.Namespace, method: Callable[[Client], Any]) -> Any:
    """Runs ``method`` on a client for --target/--token (and RECSERVE_CLIENT__* TLS); a
    failed call prints its status and message and exits with 2."""
    client = _client(args)
    try:
        return method(client)
    except grpc.RpcError as exc:
        code = exc.code().name  # type: ignore[attr-defined]
        print(f"error: {code}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        raise SystemExit(2) from exc
    finally:
        client.close()


def print_models(models: list[admin_pb2.ModelVersion], active: int) -> None:
    print(
        f"{'version':>7}  {'status':8}  {'ndcg@10':>7}  {'hr@10':>7}  {'pop ndcg':>8}  "
        f"{'train s':>7}  {'watermark':>9}  {'MB':>6}  created"
    )
    for m in models:
        mark = "*" if m.version == active else " "
        print(
            f"{m.version:>6}{mark}  {m.status:8}  {m.metrics.get('ndcg@10', 0):7.4f}  "
            f"{m.metrics.get('hr@10', 0):7.4f}  {m.metrics.get('pop_ndcg@10', 0):8.4f}  "
            f"{m.metrics.get('train_seconds', 0):7.1f}  {m.data_watermark:>9}  "
            f"{m.size_bytes / 1e6:6.2f}  {_when(m.created_at_ms)}"
        )


def cmd_models(args: argparse.Namespace) -> int:
    action = args.action
    if action == "list":
        answer = call(
            args, lambda c: c.admin.ListModels(admin_pb2.ListModelsRequest(), metadata=c.metadata)
        )
        print_models(list(answer.models), answer.active_version)
    elif action in ("activate", "show"):
        if args.version is None:
            raise SystemExit(f"recserve models {action} needs a VERSION")
        if action == "activate":
            model = call(
                args,
                lambda c: c.admin.ActivateModel(
                    admin_pb2.ActivateModelRequest(version=args.version),
                    metadata=c.metadata,
                    timeout=120,
                ),
            )
            print(f"model version {model.version} is now {model.status}")
        else:
            details = call(
                args,
                lambda c: c.admin.GetModelDetails(
                    admin_pb2.GetModelRequest(version=args.version), metadata=c.metadata
                ),
            )
            print_models([details.model], 0)
            print(f"bundle: {details.model.artifact_path}  problem: {details.problem or 'none'}")
            for f in details.files:
                print(f"  {'ok ' if f.ok else 'BAD'} {f.name:24} {f.size_bytes:>12,}  {f.sha256}")
            for a in details.activations:
                print(
                    f"  activated {_when(a.activated_at_ms)} after {a.previous_version or '-'}"
                    f" ({a.reason})"
                )
    elif action == "rollback":
        model = call(
            args,
            lambda c: c.admin.RollbackModel(
                admin_pb2.RollbackModelRequest(), metadata=c.metadata, timeout=120
            ),
        )
        print(f"rolled back: model version {model.version} is now {model.status}")
    elif action == "prune":
        result = call(
            args,
            lambda c: c.admin.PruneModels(
                admin_pb2.PruneModelsRequest(keep=args.keep or 0, dry_run=args.dry_run),
                metadata=c.metadata,
            ),
        )
        verb = "would prune" if args.dry_run else "pruned"
        versions = ", ".join(map(str, result.pruned)) or "nothing"
        print(f"{verb} {versions} ({result.freed_bytes / 1e6:.1f} MB)")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    action = args.action
    if action == "list":
        answer = call(
            args, lambda c: c.admin.ListJobs(admin_pb2.ListJobsRequest(), metadata=c.metadata)
        )
        header = f"{'id':>5}  {'kind':6}  {'trigger':8}  {'status':9}  {'progress':>8}"
        print(f"{header}  model  message")
        for j in answer.jobs:
            status = "cancelling" if j.cancel_requested and j.status == "running" else j.status
            print(
                f"{j.id:>5}  {j.kind:6}  {j.trigger:8}  {status:9}  {j.progress:8.1%}  "
                f"{j.model_version or '':>5}  {(j.error.splitlines() or [j.message])[0][:80]}"
            )
        return 0
    if args.id is None:
        raise SystemExit(f"recserve jobs {action} needs a job ID")
    if action == "cancel":
        job = call(
            args,
            lambda c: c.admin.CancelJob(
                admin_pb2.CancelJobRequest(id=args.id), metadata=c.metadata
            ),
        )
        state = "cancel requested" if job.status == "running" else job.status
        print(f"job {job.id}: {state}")
        return 0
    job = call(
        args, lambda c: c.admin.GetJob(admin_pb2.GetJobRequest(id=args.id), metadata=c.metadata)
    )
    print(
        f"job {job.id} ({job.kind}, {job.trigger}) {job.status} {job.progress:.1%} "
        f"worker {job.worker or '-'} attempts {job.attempts} model {job.model_version or '-'}"
    )
    print(f"params {json.dumps(json.loads(job.params_json or '{}'), sort_keys=True)}")
    for line in job.log:
        print(f"  {line}")
    if job.error:
        print(job.error, file=sys.stderr)
    return 0


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds `models` and `jobs` to the CLI's subparsers."""
    p = sub.add_parser(
        "models",
        help="List, inspect, activate, roll back and prune model versions (via the server).",
        description="Model versions through a running server's ModelAdmin API.",
    )
    p.set_defaults(func=cmd_models)
    p.add_argument("action", choices=["list", "show", "activate", "rollback", "prune"])
    p.add_argument("version", type=int, nargs="?", help="show / activate: the model version")
    p.add_argument("--keep", type=int, help="prune: ready versions to keep (default: server's)")
    p.add_argument("--dry-run", action="store_true", help="prune: only list what would go")
    common(p)

    p = sub.add_parser(
        "jobs",
        help="List, show and cancel jobs (via the server).",
        description="Jobs through a running server's ModelAdmin API.",
    )
    p.set_defaults(func=cmd_jobs)
    p.add_argument("action", choices=["list", "show", "cancel"])
    p.add_argument("id", type=int, nargs="?", help="show / cancel: the job id")
    common(p)
