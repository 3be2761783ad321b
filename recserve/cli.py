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
recserve tui        the operator console
recserve migrate    bring the database schema up to date
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recserve.admin_cli import add_parsers as add_admin_parsers
from recserve.deploy_secrets import add_parser as add_deploy_secrets_parser
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


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    updates: dict[str, object] = {}
    if getattr(args, "data_dir", None):
        settings = Settings(data_dir=Path(args.data_dir))
    server = settings.server.model_copy(
        update={
            k: v
            for k, v in {
                "port": getattr(args, "port", None),
                "host": getattr(args, "host", None),
                "workers": getattr(args, "workers", None),
                "backend": getattr(args, "backend", None),
                "insecure": getattr(args, "insecure", None),
            }.items()
            if v is not None
        }
    )
    updates["server"] = server
    return settings.model_copy(update=updates)


def _parse_params(pairs: Sequence[str], raw: str | None) -> dict[str, object]:
    params: dict[str, object] = json.loads(raw) if raw else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param expects key=value, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def cmd_migrate(args: argparse.Namespace) -> int:
    from shared.storage.engine import migrate

    settings = _settings(args)
    migrate(settings.db_url)
    print(f"database at {settings.safe_db_url} is up to date")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    # numpy's BLAS scores a batch in the model's thread beside ONNX Runtime's threads and
    # the event loop: one thread of it, or it oversubscribes the cores (before numpy loads).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from server.app import serve

    serve(_settings(args))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.metrics import cleanup_multiprocess, prepare_multiprocess

    metrics_dir = prepare_multiprocess()  # before anything imports prometheus_client

    from recserve.embedded import hold_worker_lock
    from shared.storage.engine import migrate
    from worker.celery_app import create_app
    from worker.metrics import serve_worker_metrics

    settings = _settings(args)
    serve_worker_metrics(settings)
    migrate(settings.db_url)
    lock = hold_worker_lock(settings) if settings.embedded_broker else None
    queues = args.queues or settings.worker.queue
    app = create_app(settings)
    argv = [
        "worker",
        f"--loglevel={settings.log_level}",
        "-Q",
        queues,
        "-c",
        str(args.concurrency or settings.worker.concurrency),
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if args.pool:
        argv.append(f"--pool={args.pool}")
    if args.beat:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", f"--schedule={settings.data_dir / 'celerybeat-schedule'}"]
    try:
        app.worker_main(argv)
    finally:
        if lock is not None:
            lock.close()
        cleanup_multiprocess(metrics_dir)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from recserve.up import run_up

    return run_up(
        _settings(args),
        replicas=args.replicas,
        workers=args.workers,
        broker=args.broker,
        database_url=args.database_url,
        port=args.port,
        metrics_port=args.metrics_port,
        demo=args.demo,
    )


def cmd_beat(args: argparse.Namespace) -> int:
    from shared.storage.engine import migrate
    from worker.celery_app import create_app

    settings = _settings(args)
    migrate(settings.db_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    app.start(
        [
            "beat",
            f"--loglevel={settings.log_level}",
            f"--schedule={settings.data_dir / 'celerybeat-schedule'}",
        ]
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from recserve.follow import follow_job
    from shared.storage.engine import engine_for, migrate
    from shared.training.jobs import submit_training

    settings = _settings(args)
    migrate(settings.db_url)
    engine = engine_for(settings)
    job = submit_training(settings, engine, _parse_params(args.param, args.params))
    print(f"queued train job {job.id} (celery id {job.celery_id})")
    if not args.wait:
        return 0
    return follow_job(settings, engine, int(job.id or 0), start_worker_if_needed=True)


def cmd_import(args: argparse.Namespace) -> int:
    from shared.storage.engine import engine_for, migrate
    from shared.storage.importers import import_file, import_items
    from shared.wire.errors import InvalidArgument

    settings = _settings(args)
    migrate(settings.db_url)
    engine = engine_for(settings)
    path = Path(args.file)
    total = path.stat().st_size if path.exists() else 0

    lines = _count_lines(path) if path.is_file() else 0
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    task = bar.add_task("importing lines", total=lines or None)

    def progress(line_no: int, stored: int) -> None:
        bar.update(task, completed=line_no, description=f"importing ({stored:,} stored)")

    def skipped(line_no: int, message: str) -> None:
        bar.console.print(f"skipped line {line_no}: {message}")

    try:
        with bar:
            summary = import_file(
                engine,
                path,
                fmt=args.format,
                skip_bad=args.skip_bad,
                on_progress=progress,
                on_skip=skipped,
            )
    except InvalidArgument as exc:
        print(f"import failed: {exc}", file=sys.stderr)
        return 2
    print(
        f"imported {path} ({total / 1e6:.1f} MB): {summary.lines:,} lines, "
        f"{summary.stored:,} stored, {summary.duplicates:,} duplicates, "
        f"{summary.skipped:,} skipped, {summary.users:,} users in {summary.seconds:.1f}s"
    )
    report_path = Path(args.report) if args.report else default_report_path(settings, path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(summary.quality, indent=2))
    print_quality(summary.quality)
    print(f"data-quality report: {report_path}")
    if args.items:
        n = import_items(
            engine, Path(args.items), id_map=Path(args.item_map) if args.item_map else None
        )
        print(f"imported {n:,} item titles from {args.items}")
    return 0


def default_report_path(settings: Settings, path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.data_dir / "import-reports" / f"{path.stem}-{stamp}.json"


def print_quality(quality: dict[str, Any]) -> None:
    """The data-quality report as aligned lines."""
    labels = {
        "rows_read": "rows read",
        "malformed": "malformed",
        "duplicates_dropped": "duplicates dropped",
        "users": "users",
        "items": "items",
        "users_below_min_history": f"users below {quality['min_history']} events",
        "items_seen_once": "items seen once",
        "first_event": "first event",
        "last_event": "last event",
        "events_out_of_order": "events out of order",
        "suspected_bots": f"suspected bots (> {quality['bot_events_per_minute']} events/min)",
    }
    for key, label in labels.items():
        value = quality[key]
        shown = "not judged (no timestamps)" if value is None else value
        print(f"  {label:<36} {shown:,}" if isinstance(shown, int) else f"  {label:<36} {shown}")


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def cmd_recommend(args: argparse.Namespace) -> int:
    from recserve.admin_cli import call
    from shared.proto.recserve.v1 import recommender_pb2

    response = call(
        args,
        lambda c: c.recommender.Recommend(
            recommender_pb2.RecommendRequest(
                user_id=args.user, k=args.k, history=args.history or [], include_titles=True
            ),
            metadata=c.metadata,
            timeout=10,
        ),
    )
    source = recommender_pb2.Source.Name(response.source)
    print(
        f"model version {response.model_version}, source {source}, "
        f"history used {response.history_used}"
    )
    for rank, item in enumerate(response.items, start=1):
        print(f"{rank:3d}. {item.item_id}  {item.score:.4f}  {item.title}".rstrip())
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    from shared.client import client_token
    from tui.app import RecserveConsole

    settings = Settings()
    RecserveConsole(
        args.target, token=client_token(settings, args.token), tls=settings.client
    ).run()
    return 0


def print_rerank_table(result: dict[str, Any], reranked: dict[str, dict[str, float]]) -> None:
    """Accuracy against coverage and popularity, per popularity-debiasing weight."""
    names = ("ndcg@10", "hr@10", "coverage@10", "gini@10", "arp@10", "novelty@10", "ild@10")
    print(f"\n{'re-ranking':<22}" + "".join(f"{n:>13}" for n in names))
    rows = [("popularity baseline", _prefixed(result["popularity"]))]
    rows.append(("model (weight 0)", result["model"]))
    rows += [(f"debiased, weight {w}", m) for w, m in reranked.items()]
    for label, metrics in rows:
        cells = "".join(f"{metrics[n]:>13.4f}" if n in metrics else f"{'-':>13}" for n in names)
        print(f"{label:<22}{cells}")


def _prefixed(metrics: dict[str, float]) -> dict[str, float]:
    return {k.removeprefix("pop_"): v for k, v in metrics.items()}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from recserve.reports import print_evaluation_table
    from worker.pipeline import evaluate_model_version

    settings = _settings(args)
    ks = tuple(int(k) for k in args.ks.split(","))
    weights = [float(w) for w in args.rerank.split(",")] if args.rerank else []
    result = evaluate_model_version(
        settings, args.version, ks=ks, explanations=args.explanations, rerank=weights
    )
    print_evaluation_table({**result, "data": settings.safe_db_url}, ks)
    reranked = result.get("rerank")
    if isinstance(reranked, dict):
        print_rerank_table(result, reranked)
    faithfulness = result.get("explanations")
    if isinstance(faithfulness, dict):
        print(
            f"\nexplanations, deletion test on {faithfulness['users']:.0f} users: removing the "
            f"top-weighted event lowers the top item's score more than removing a random "
            f"event for {faithfulness['score_share']:.1%} of users (mean drop "
            f"{faithfulness['drop_top']:.3f} vs {faithfulness['drop_random']:.3f}), its rank "
            f"for {faithfulness['rank_share']:.1%} (mean rank {faithfulness['rank_top']:.1f} "
            f"vs {faithfulness['rank_random']:.1f})"
        )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2, sort_keys=True))
        print(f"wrote {args.output}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.kind == "quality":
        from bench.quality import run_quality_bench

        if not args.data:
            raise SystemExit("bench quality needs --data PATH")
        data = Path(args.data)
        settings = _settings(args)
        if not args.data_dir:
            settings = settings.model_copy(update={"data_dir": Path("var/bench") / data.stem})
        run_quality_bench(
            settings,
            data,
            fmt=args.format,
            params=_parse_params(args.param, args.params),
            output=Path(args.output) if args.output else None,
        )
        return 0
    if args.kind == "soak":
        from bench.soak import run_soak

        report = run_soak(
            Path(args.data_dir or "var/bench/serve"),
            minutes=args.minutes,
            rate=args.rate,
            clients=args.clients or 2,
            output=Path(args.output or "bench-results/soak.json"),
        )
        return 0 if report["passed"] else 1
    if args.kind == "scale":
        from bench.scale import DEFAULT_SIZES, Size, run_scale_bench

        sizes = DEFAULT_SIZES
        if args.sizes:
            sizes = tuple(
                Size(*(int(float(n)) for n in triple.split(":")))
                for triple in args.sizes.split(",")
            )
        run_scale_bench(
            Path(args.data_dir or "var/bench/scale"),
            sizes=sizes,
            steps=args.steps,
            duration=args.duration or 10.0,
            output=Path(args.output or "bench-results/scale.json"),
        )
        return 0
    if args.kind == "ingest":
        from bench.ingest import IngestSpec, run_ingest_bench

        settings = _settings(args)
        if not args.data_dir:
            settings = settings.model_copy(update={"data_dir": Path("var/bench/ingest")})
        spec = IngestSpec(
            **{
                k: v
                for k, v in {
                    "duration": args.duration,
                    "streams": args.streams,
                    "callers": args.callers,
                }.items()
                if v is not None
            }
        )
        output = Path(args.output or "bench-results/ingest.json")
        run_ingest_bench(settings, database_url=args.database_url, spec=spec, output=output)
        return 0
    from bench.serve import run_serve_bench

    return run_serve_bench(args)


def cmd_drill(args: argparse.Namespace) -> int:
    from bench.drill import main_args

    return main_args(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from recserve.demo import run_demo

    return run_demo(_settings(args), retrain=args.retrain, exit_after=args.exit, epochs=args.epochs)


def build_parser() -> argparse.ArgumentParser:
    from recserve.up import DEFAULT_DATABASE

    parser = argparse.ArgumentParser(
        prog="recserve",
        description="gRPC recommendation service (SASRec).",
        epilog="Settings come from RECSERVE_* environment variables; see the README.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:  # type: ignore[no-untyped-def]
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        p.add_argument(
            "--data-dir", help="embedded data folder (default ./var or RECSERVE_DATA_DIR)"
        )
        return p

    p = add(
        "demo",
        cmd_demo,
        "Load the synthetic demo data through Feedback, train on a worker, "
        "serve, and print a real recommendation.",
    )
    p.add_argument("--port", type=int, help="server port (default 50051)")
    p.add_argument("--retrain", action="store_true", help="train again even if a model is active")
    p.add_argument("--exit", action="store_true", help="stop after printing instead of serving")
    p.add_argument("--epochs", type=int, help="at most this many epochs (quicker, weaker model)")

    p = add("serve", cmd_serve, "Run the gRPC server with the active model.")
    p.add_argument("--port", type=int, help="TCP port (default 50051)")
    p.add_argument("--host", help="interface (default 127.0.0.1)")
    p.add_argument("--workers", type=int, help="server processes sharing the port")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt", "torch-cuda", "noop"])
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback --host with no authentication (a trusted network, or a "
        "sidecar that authenticates callers)",
    )

    p = add("worker", cmd_worker, "Run a Celery worker for training and engine jobs.")
    p.add_argument("--queues", help="comma-separated queues (default: the CPU queue)")
    p.add_argument("--concurrency", type=int, help="jobs at once")
    p.add_argument("--pool", choices=["prefork", "solo", "threads"], help="Celery pool")
    p.add_argument(
        "--beat",
        action="store_true",
        help="also run beat in this process (the retraining triggers; one beat per deployment)",
    )

    p = add(
        "up",
        cmd_up,
        "A local production stack: N server replicas, M workers and beat on PostgreSQL "
        "and Redis or RabbitMQ, run by honcho; prints every endpoint, Ctrl-C stops all.",
    )
    p.add_argument("--replicas", type=int, default=2, help="server replicas (default 2)")
    p.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    p.add_argument(
        "--broker",
        default="redis",
        help="redis (127.0.0.1:6379), rabbitmq (127.0.0.1:5672) or a broker URL",
    )
    p.add_argument("--database-url", help=f"default {DEFAULT_DATABASE}")
    p.add_argument("--port", type=int, default=50051, help="first replica's port")
    p.add_argument("--metrics-port", type=int, default=9464, help="first /metrics port")
    p.add_argument(
        "--demo",
        action="store_true",
        help="send the synthetic demo log through the first replica and train if no model",
    )

    add(
        "beat",
        cmd_beat,
        "Run Celery beat: checks the retraining schedule (RECSERVE_WORKER__RETRAIN_EVERY_S) "
        "and volume trigger (RECSERVE_WORKER__RETRAIN_AFTER_EVENTS) every "
        "RECSERVE_WORKER__TRIGGER_CHECK_S and reaps jobs whose worker died. Run one per "
        "deployment.",
    )

    p = add("train", cmd_train, "Queue a training job.")
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the job to the end; starts an embedded worker if none runs",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training parameter, e.g. --param epochs=20 (repeatable)",
    )
    p.add_argument("--params", help="training parameters as a JSON object")

    p = add("import", cmd_import, "Import an interaction file into the feedback table.")
    p.add_argument("file", help="seq ('user item'), MovieLens, RecBole .inter or CSV file")
    p.add_argument(
        "--format",
        choices=["seq", "movielens", "inter", "csv"],
        help="file format (default: guessed)",
    )
    p.add_argument(
        "--skip-bad", action="store_true", help="skip malformed lines instead of aborting"
    )
    p.add_argument("--items", help="item metadata file (MovieLens movies.dat)")
    p.add_argument(
        "--report",
        help="where to save the data-quality report as JSON "
        "(default: DATA_DIR/import-reports/FILE-TIME.json)",
    )
    p.add_argument("--item-map", help="'our_id original_id' per line, for --items")

    p = add("recommend", cmd_recommend, "Call Recommend on a running server.")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--user", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--history", nargs="*", help="inline session history (item ids)")
    p.add_argument("--token", help="bearer token (default RECSERVE_CLIENT__TOKEN)")

    p = add("tui", cmd_tui, "Open the operator console.")
    p.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of a recserve server")
    p.add_argument("--token", help="admin token (default RECSERVE_SERVER__ADMIN_TOKEN)")

    p = add(
        "evaluate",
        cmd_evaluate,
        "Evaluate a model (default: the active one) with leave-one-out HR@K, NDCG@K and "
        "MRR, full ranking and 100 sampled negatives, beside popularity.",
    )
    p.add_argument("--version", type=int, help="model version (default: the active one)")
    p.add_argument("--ks", default="1,5,10,20", help="cut-offs, comma-separated")
    p.add_argument(
        "--explanations",
        type=int,
        nargs="?",
        const=1000,
        default=0,
        metavar="USERS",
        help="also run the deletion test of explanation faithfulness on USERS random test "
        "users (default 1000)",
    )
    p.add_argument(
        "--rerank",
        metavar="WEIGHTS",
        help="also evaluate popularity-debiased re-ranking at these weights, e.g. "
        "0.25,0.5,1 (server.popularity_debias applies one when serving)",
    )
    p.add_argument("--output", help="write the results as JSON here")

    p = add("bench", cmd_bench, "Benchmarks: quality (train + evaluate) or serve (load test).")
    p.add_argument("kind", choices=["quality", "serve", "ingest", "soak", "scale"])
    p.add_argument("--data", help="quality: the interaction file to train on")
    p.add_argument("--format", choices=["seq", "movielens", "inter", "csv"])
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="quality: training parameter (repeatable)",
    )
    p.add_argument("--params", help="quality: training parameters as JSON")
    p.add_argument("--output", help="JSON output path")
    p.add_argument(
        "--bundle",
        help="serve: a trained bundle to serve (default: random weights "
        "of the ML-1M-sized architecture)",
    )
    p.add_argument("--levels", help="serve: closed-loop concurrency levels, e.g. 1,4,16,64")
    p.add_argument("--duration", type=float, help="serve: seconds measured per level")
    p.add_argument("--clients", type=int, help="serve: load-generator processes")
    p.add_argument("--servers", help="serve: which of noop,naive,recserve to run (default all)")
    p.add_argument(
        "--before",
        help="serve: another checkout (an earlier commit) also served, as 'before', "
        "interleaved with this one at every level",
    )
    p.add_argument("--rounds", type=int, help="serve: rounds per level, median kept (default 1)")
    p.add_argument(
        "--sweeps-only",
        action="store_true",
        help="serve: only the idle rounds, the closed-loop sweeps and the stage latencies",
    )
    p.add_argument(
        "--database-url",
        help="ingest: the database server to create bench databases on "
        "(default: PostgreSQL at 127.0.0.1:5432; a sqlite:/// URL for SQLite)",
    )
    p.add_argument("--streams", type=int, help="ingest: concurrent FeedbackStream calls")
    p.add_argument("--minutes", type=int, default=10, help="soak: length in minutes")
    p.add_argument(
        "--sizes",
        help="scale: ITEMS:USERS:EVENTS,... "
        "(default 1e4:5e4:1e6,1e4:2e5:4e6,1e5:1e5:2e6,1e6:2e5:4e6)",
    )
    p.add_argument("--steps", type=int, default=200, help="scale: timed training steps")
    p.add_argument("--rate", type=float, help="soak: requests/s (default: 70%% of sustainable)")
    p.add_argument("--callers", type=int, help="ingest: concurrent unary Feedback callers")

    p = add(
        "drill",
        cmd_drill,
        "Fault drills on real processes under traffic (database, broker, worker, bundle, "
        "sigterm, hot-swap, disk-full): acknowledged events lost, INTERNAL errors, checks.",
    )
    p.add_argument("--drills", help="comma-separated drills (default: all)")
    p.add_argument("--seconds", type=float, default=2.0, help="length of each phase")
    p.add_argument("--output", help="JSON output (default bench-results/drills.json)")

    def remote(p: argparse.ArgumentParser) -> None:
        p.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of a server")
        p.add_argument("--token", help="admin token (default RECSERVE_SERVER__ADMIN_TOKEN)")

    add_admin_parsers(sub, remote)
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
