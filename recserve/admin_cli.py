"""`recserve models ...`, `recserve jobs ...` and `recserve experiment ...`: the operator
API from a shell.

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


def _version(args: argparse.Namespace) -> int:
    if args.version is None:
        raise SystemExit(f"recserve models {args.action} needs a VERSION")
    return int(args.version)


def models_list(args: argparse.Namespace) -> None:
    request = admin_pb2.ListModelsRequest()
    answer = call(args, lambda c: c.admin.ListModels(request, metadata=c.metadata))
    print_models(list(answer.models), answer.active_version)


def models_build_engine(args: argparse.Namespace) -> None:
    request = admin_pb2.BuildEngineRequest(version=_version(args), precision=args.precision)
    job = call(args, lambda c: c.admin.BuildEngine(request, metadata=c.metadata))
    print(f"build-engine job {job.id} queued for version {args.version} ({args.precision})")


def models_activate(args: argparse.Namespace) -> None:
    request = admin_pb2.ActivateModelRequest(version=_version(args))
    model = call(args, lambda c: c.admin.ActivateModel(request, metadata=c.metadata, timeout=120))
    print(f"model version {model.version} is now {model.status}")


def models_show(args: argparse.Namespace) -> None:
    request = admin_pb2.GetModelRequest(version=_version(args))
    details = call(args, lambda c: c.admin.GetModelDetails(request, metadata=c.metadata))
    print_models([details.model], 0)
    print(f"bundle: {details.model.artifact_path}  problem: {details.problem or 'none'}")
    for f in details.files:
        print(f"  {'ok ' if f.ok else 'BAD'} {f.name:24} {f.size_bytes:>12,}  {f.sha256}")
    for a in details.activations:
        print(
            f"  activated {_when(a.activated_at_ms)} after {a.previous_version or '-'} ({a.reason})"
        )
    print_choices(list(details.training))


def models_rollback(args: argparse.Namespace) -> None:
    request = admin_pb2.RollbackModelRequest()
    model = call(args, lambda c: c.admin.RollbackModel(request, metadata=c.metadata, timeout=120))
    print(f"rolled back: model version {model.version} is now {model.status}")


def models_prune(args: argparse.Namespace) -> None:
    request = admin_pb2.PruneModelsRequest(keep=args.keep or 0, dry_run=args.dry_run)
    result = call(args, lambda c: c.admin.PruneModels(request, metadata=c.metadata))
    verb = "would prune" if args.dry_run else "pruned"
    versions = ", ".join(map(str, result.pruned)) or "nothing"
    print(f"{verb} {versions} ({result.freed_bytes / 1e6:.1f} MB)")


MODEL_ACTIONS = {
    "list": models_list,
    "build-engine": models_build_engine,
    "activate": models_activate,
    "show": models_show,
    "rollback": models_rollback,
    "prune": models_prune,
}


def cmd_models(args: argparse.Namespace) -> int:
    MODEL_ACTIONS[args.action](args)
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
    print(f"given {json.dumps(json.loads(job.params_json or '{}'), sort_keys=True)}")
    print_choices(list(job.resolved))
    for line in job.log:
        print(f"  {line}")
    if job.error:
        print(job.error, file=sys.stderr)
    return 0


def print_choices(choices: list[admin_pb2.ParamChoice]) -> None:
    """The training parameters as resolved: value, source (given, settings, recipe,
    default) and the recipe's reason."""
    if not choices:
        return
    print(f"  {'parameter':18}  {'value':>12}  {'source':8}  reason")
    for choice in choices:
        print(f"  {choice.name:18}  {choice.value_json:>12}  {choice.source:8}  {choice.reason}")


def parse_arm(text: str) -> tuple[int, float]:
    """VERSION:WEIGHT (e.g. 3:50)."""
    version, _, weight = text.partition(":")
    try:
        return int(version), float(weight or 1)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--arm {text!r}: expected VERSION:WEIGHT, e.g. 3:50"
        ) from exc


def print_experiment(experiment: admin_pb2.Experiment) -> None:
    total = sum(a.weight for a in experiment.arms) or 1.0
    if experiment.arms:
        arms = ", ".join(f"v{a.version} {a.weight / total:.0%}" for a in experiment.arms)
        print(f"traffic split: {arms}")
    else:
        print("traffic split: none (the active version serves everyone)")
    if experiment.shadow_version:
        print(
            f"shadow: v{experiment.shadow_version} ranks {experiment.shadow_share:.0%} of "
            "requests (never served)"
        )
    if not experiment.metrics:
        print("online metrics: none yet (recserve experiment measure, or the workers' beat)")
        return
    print(
        f"\n{'version':>7}  {'arm':7}  {'impressions':>11}  {'CTR':>6}  {'hit rate':>8}  "
        f"{'attributed':>10}  {'shadow req':>10}  {'overlap':>7}  {'p50 ms':>6}  computed"
    )
    for m in experiment.metrics:
        print(
            f"{m.model_version:>7}  {m.arm or '-':7}  {m.impressions:>11}  {m.ctr:6.1%}  "
            f"{m.hit_rate:8.1%}  {m.attributed_share:10.1%}  {m.shadow_requests:>10}  "
            f"{m.shadow_overlap:7.1%}  {m.shadow_p50_ms:6.1f}  {_when(m.computed_at_ms)}"
        )


def cmd_experiment(args: argparse.Namespace) -> int:
    action = args.action
    if action == "measure":
        from worker.online import compute_online_metrics

        rows = compute_online_metrics(Settings(), window_hours=args.window_hours)
        print(f"computed online metrics for {len(rows)} version/arm pairs")
        action = "show"
    if action == "show":
        experiment = call(
            args,
            lambda c: c.admin.GetExperiment(admin_pb2.GetExperimentRequest(), metadata=c.metadata),
        )
    elif action == "split":
        request = admin_pb2.SetTrafficSplitRequest(
            arms=[admin_pb2.TrafficArm(version=v, weight=w) for v, w in args.arm or []],
            shadow_version=args.shadow or 0,
            shadow_share=args.shadow_share or 0.0,
        )
        experiment = call(
            args,
            lambda c: c.admin.SetTrafficSplit(request, metadata=c.metadata, timeout=120),
        )
    elif action == "stop":
        experiment = call(
            args,
            lambda c: c.admin.SetTrafficSplit(
                admin_pb2.SetTrafficSplitRequest(), metadata=c.metadata
            ),
        )
    else:  # promote
        if args.version is None:
            raise SystemExit("recserve experiment promote needs the winning VERSION")
        experiment = call(
            args,
            lambda c: c.admin.PromoteArm(
                admin_pb2.PromoteArmRequest(version=args.version), metadata=c.metadata, timeout=120
            ),
        )
        print(f"promoted: model version {args.version} is active; the split has ended")
    print_experiment(experiment)
    return 0


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds `models`, `jobs` and `experiment` to the CLI's subparsers."""
    p = sub.add_parser(
        "models",
        help="List, inspect, activate, roll back and prune model versions (via the server).",
        description="Model versions through a running server's ModelAdmin API.",
    )
    p.set_defaults(func=cmd_models)
    p.add_argument(
        "action", choices=["list", "show", "activate", "rollback", "prune", "build-engine"]
    )
    p.add_argument(
        "version", type=int, nargs="?", help="show / activate / build-engine: the model version"
    )
    p.add_argument(
        "--precision", choices=["fp16", "bf16", "fp32"], default="fp16", help="build-engine"
    )
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

    p = sub.add_parser(
        "experiment",
        help="A/B traffic splits and shadow candidates, with their online metrics.",
        description=(
            "show: the split, the shadow and the newest online metrics; split --arm V:W "
            "--arm V:W [--shadow V --shadow-share S]: serve versions side by side (users "
            "assigned by a hash of their id); stop: end the split; promote V: activate the "
            "winner and end the split; measure: compute the online metrics now (reads the "
            "database named by the settings)."
        ),
    )
    p.set_defaults(func=cmd_experiment)
    p.add_argument("action", choices=["show", "split", "stop", "promote", "measure"])
    p.add_argument("version", type=int, nargs="?", help="promote: the winning version")
    p.add_argument("--arm", type=parse_arm, action="append", help="split: VERSION:WEIGHT")
    p.add_argument("--shadow", type=int, help="split: a version that ranks without serving")
    p.add_argument("--shadow-share", type=float, help="split: share of requests (default 0.1)")
    p.add_argument("--window-hours", type=float, default=24.0, help="measure: hours of impressions")
    common(p)
