"""The commands that run recserve: demo, serve, worker, up, beat and the console."""

from __future__ import annotations

import argparse

from recserve.args import Add, settings_from
from shared.config import Settings


def cmd_migrate(args: argparse.Namespace) -> int:
    from shared.storage.engine import migrate

    settings = settings_from(args)
    migrate(settings.db_url)
    print(f"database at {settings.safe_db_url} is up to date")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    # numpy's BLAS scores a batch in the model's thread beside ONNX Runtime's threads and
    # the event loop: one thread of it, or it oversubscribes the cores (before numpy loads).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from server.app import serve

    serve(settings_from(args))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.metrics import cleanup_multiprocess, prepare_multiprocess

    metrics_dir = prepare_multiprocess()  # before anything imports prometheus_client

    from recserve.embedded import hold_worker_lock
    from shared.storage.engine import migrate
    from worker.celery_app import create_app
    from worker.metrics import serve_worker_metrics

    settings = settings_from(args)
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
        settings_from(args),
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

    settings = settings_from(args)
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


def cmd_tui(args: argparse.Namespace) -> int:
    from shared.client import client_token
    from tui.app import RecserveConsole

    settings = Settings()
    RecserveConsole(
        args.target, token=client_token(settings, args.token), tls=settings.client
    ).run()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from recserve.demo import run_demo

    return run_demo(
        settings_from(args), retrain=args.retrain, exit_after=args.exit, epochs=args.epochs
    )


def add_run_parsers(add: Add) -> None:
    """The commands that run recserve: demo, serve, worker, up, beat, tui."""
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

    p = add("tui", cmd_tui, "Open the operator console.")
    p.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of a recserve server")
    p.add_argument("--token", help="admin token (default RECSERVE_SERVER__ADMIN_TOKEN)")
    add_process_parsers(add)


def add_process_parsers(add: Add) -> None:
    """The long-running processes beside the server: worker, up, beat."""
    from recserve.up import DEFAULT_DATABASE

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
