"""`recserve drill`: fault drills on real processes, each under live traffic.

Every drill starts real `recserve serve` (and worker) processes, runs writers (Feedback,
one new event per call, each acknowledged id remembered) and readers (Recommend for
users whose history the server has cached, and for users it has not), injects a fault,
and then reads the database: **acknowledged events lost** = acknowledged ids that are not
stored. A drill passes when nothing acknowledged was lost, no call ended INTERNAL or
UNKNOWN, and its own checks hold.

    database    PostgreSQL cut away for a while (a TCP proxy between server and it) and back
    broker      Redis cut away at StartTraining, and again while a job runs
    worker      the worker SIGKILLed mid-training: requeued, finished by another worker
    fencing     a worker SIGSTOPped past its lease, the job finished elsewhere, then SIGCONT:
                the stale attempt's writes refused, exactly one model activated
    bundle      a corrupt bundle activated
    sigterm     SIGTERM under load: NOT_SERVING first, calls served while draining, exit 0
    hot-swap    ten activations under load
    disk-full   SQLite on a small tmpfs that fills up, then grows

Prints a table and writes JSON (bench-results/drills.json).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy.engine import make_url

from bench.drill_stage import (
    FINITE_JOB,
    REDIS,
    SERVER_ENV,
    UNFINISHED,
    WORKER_ENV,
    DrillResult,
    Traffic,
    finish_drill,
    own_queue,
    run_traffic,
    stage,
    versions_of,
    wait_job,
    wait_until,
)
from bench.faults import SmallDisk, TcpProxy
from bench.ingest import cpu_model
from bench.processes import ServerProcess, WorkerProcess
from shared.client import Client
from shared.proto.recserve.v1 import admin_pb2
from shared.storage import job_store
from shared.storage.engine import (
    make_engine,
    session_scope,
)
from shared.storage.tables import JobStatus

# --- the drills --------------------------------------------------------------------------


def drill_database(root: Path, seconds: float) -> DrillResult:
    result = DrillResult("database")
    with stage(root, postgres=True) as s:
        parsed = make_url(s.settings.db_url)
        proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        proxied = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        )
        server = ServerProcess(
            s.settings.model_copy(update={"database_url": proxied}), "database", env=SERVER_ENV
        )
        traffic = run_traffic(s, server.target, "db")
        try:
            time.sleep(seconds)
            cut_at = time.monotonic()
            proxy.cut()
            time.sleep(seconds * 2)
            back_at = time.monotonic()
            proxy.restore()
            time.sleep(seconds * 2)
            end = time.monotonic()
        finally:
            finish_drill(result, traffic, s.settings.db_url)
            server.stop()
            proxy.close()
        down = traffic.codes(cut_at + 0.5, back_at)
        cached_down = traffic.codes(cut_at + 0.5, back_at, "recommend-cached")
        feedback_down = traffic.codes(cut_at + 1.5, back_at, "feedback")
        feedback_back = traffic.codes(back_at + seconds, end, "feedback")
        result.checks = {
            "cached users answered while the database was down": cached_down.get("OK", 0) > 0,
            "Feedback UNAVAILABLE while down": feedback_down.get("UNAVAILABLE", 0) > 0
            and feedback_down.get("OK", 0) == 0,
            "recovered without a restart": feedback_back.get("OK", 0) > 0,
        }
        result.notes.append(f"while down: {down}")
    return result


def drill_broker(root: Path, seconds: float) -> DrillResult:
    from shared.training.jobs import submit_training

    result = DrillResult("broker")
    with stage(root, postgres=True) as s:
        proxy = TcpProxy(*REDIS)
        settings = own_queue(s.settings, f"redis://127.0.0.1:{proxy.port}/12", publish_retries=1)
        server = ServerProcess(settings, "broker", env=SERVER_ENV)
        worker = WorkerProcess(settings, "broker", env=WORKER_ENV)
        traffic = run_traffic(s, server.target, "broker")
        client = Client(server.target)
        engine = make_engine(settings.db_url)
        try:
            proxy.cut()
            try:
                client.admin.StartTraining(admin_pb2.StartTrainingRequest(), timeout=30)
                refused = "OK"
            except grpc.RpcError as exc:
                refused = exc.code().name  # type: ignore[attr-defined]
            with session_scope(engine) as session:
                first = job_store.list_jobs(session, limit=1)[0]
            proxy.restore()
            time.sleep(1.0)
            job = submit_training(settings, engine, {"epochs": 40, "patience": 100})
            job_id = int(job.id or 0)
            deadline = time.monotonic() + 120
            wait_job(engine, job_id, lambda j: len(j.curve) >= 2, deadline)  # mid-training
            proxy.cut()
            time.sleep(seconds)  # the outage itself
            proxy.restore()
            running = wait_job(engine, job_id, lambda j: j.status not in UNFINISHED, deadline)
        finally:
            finish_drill(result, traffic, settings.db_url)
            client.close()
            worker.stop()
            server.stop()
            proxy.close()
            engine.dispose()
        result.checks = {
            "StartTraining with the broker down: UNAVAILABLE": refused == "UNAVAILABLE",
            "that job row marked failed, not left queued": first.status == JobStatus.FAILED,
            "the job that ran through the outage succeeded once": running.status
            == JobStatus.SUCCEEDED
            and running.attempts == 1,
        }
    return result


def drill_worker(root: Path, seconds: float) -> DrillResult:
    from shared.training.jobs import submit_training

    result = DrillResult("worker")
    with stage(root, postgres=False) as s:
        server = ServerProcess(s.settings, "worker", env=SERVER_ENV)
        worker = WorkerProcess(s.settings, "first", env=WORKER_ENV)
        traffic = run_traffic(s, server.target, "worker")
        engine = make_engine(s.settings.db_url)
        second: WorkerProcess | None = None
        try:
            job = submit_training(s.settings, engine, FINITE_JOB)
            job_id = int(job.id or 0)
            deadline = time.monotonic() + 180
            wait_job(engine, job_id, lambda j: len(j.curve) >= 2, deadline)
            worker.kill()
            second = WorkerProcess(s.settings, "second", env=WORKER_ENV)
            done = wait_job(engine, job_id, lambda j: j.status not in UNFINISHED, deadline)
            time.sleep(seconds)
            versions, activated = versions_of(engine, job_id)
        finally:
            finish_drill(result, traffic, s.settings.db_url)
            worker.stop()
            if second is not None:
                second.stop()
            server.stop()
            engine.dispose()
        result.checks = {
            "requeued as attempt 2, which succeeded": done.status == JobStatus.SUCCEEDED
            and done.attempts == 2,
            "the lost attempt logged": any("attempt 1 lost" in line for line in done.log),
            "exactly one version registered and activated": len(versions) == 1
            and activated == versions,
        }
    return result


def drill_fencing(root: Path, seconds: float) -> DrillResult:
    """A worker SIGSTOPped mid-training past its lease: the reaper requeues the job, a
    second worker finishes it as attempt 2 and activates its model; then SIGCONT. The
    stale attempt's next write is refused: it stops, removes its own folder, and neither
    its result nor a model of its own is recorded. PostgreSQL and Redis, so that the
    stopped process holds no lock on a shared database file."""
    from shared.training.jobs import submit_training

    result = DrillResult("fencing")
    with stage(root, postgres=True) as s:
        settings = own_queue(s.settings, "redis://127.0.0.1:6379/11")
        server = ServerProcess(settings, "fencing", env=SERVER_ENV)
        first = WorkerProcess(settings, "stopped", env=WORKER_ENV)
        traffic = run_traffic(s, server.target, "fencing")
        engine = make_engine(settings.db_url)
        second: WorkerProcess | None = None
        try:
            job = submit_training(settings, engine, FINITE_JOB)
            job_id = int(job.id or 0)
            deadline = time.monotonic() + 180
            wait_job(engine, job_id, lambda j: len(j.curve) >= 2, deadline)
            os.killpg(first.proc.pid, signal.SIGSTOP)
            second = WorkerProcess(settings, "second", env=WORKER_ENV)
            done = wait_job(
                engine, job_id, lambda j: j.status not in ("queued", "running"), deadline
            )
            os.killpg(first.proc.pid, signal.SIGCONT)
            stale_log = settings.data_dir / "worker-stopped.log"
            refused = wait_until(
                lambda: "is no longer current" in stale_log.read_text(errors="replace"), deadline
            )
            time.sleep(seconds)
            after = wait_job(engine, job_id, lambda j: True, deadline)
            versions, activated = versions_of(engine, job_id)
        finally:
            finish_drill(result, traffic, settings.db_url)
            os.killpg(first.proc.pid, signal.SIGCONT)
            first.stop()
            if second is not None:
                second.stop()
            server.stop()
            engine.dispose()
        result.checks = {
            "attempt 2 finished the job": done.status == JobStatus.SUCCEEDED and done.attempts == 2,
            "the resumed attempt's writes refused": refused,
            "the job's result unchanged by it": after.status == JobStatus.SUCCEEDED
            and after.model_version == done.model_version
            and after.finished_at == done.finished_at,
            "exactly one version registered and activated": len(versions) == 1
            and activated == versions,
            "the stale attempt's folder removed": not (
                settings.bundles_dir / f"job-{job_id}-1"
            ).exists(),
        }
        result.notes.append(f"job {job_id}: {after.log[-3:]}")
    return result


def drill_bundle(root: Path, seconds: float) -> DrillResult:
    result = DrillResult("bundle")
    with stage(root, postgres=False) as s:
        with (s.settings.bundles_dir / "copy" / "model.onnx").open("r+b") as handle:
            handle.seek(100)
            handle.write(b"corrupted")
        server = ServerProcess(s.settings, "bundle", env=SERVER_ENV)
        traffic = run_traffic(s, server.target, "bundle")
        client = Client(server.target)
        try:
            time.sleep(seconds)
            try:
                client.admin.ActivateModel(admin_pb2.ActivateModelRequest(version=2), timeout=30)
                answer = "OK"
            except grpc.RpcError as exc:
                answer = exc.code().name  # type: ignore[attr-defined]
                detail = exc.details()  # type: ignore[attr-defined]
            time.sleep(seconds)
            stats = client.admin.GetServerStats(admin_pb2.GetServerStatsRequest(), timeout=10)
            listing = client.admin.ListModels(admin_pb2.ListModelsRequest(), timeout=10)
        finally:
            finish_drill(result, traffic, s.settings.db_url)
            client.close()
            server.stop()
        result.checks = {
            "ActivateModel answered FAILED_PRECONDITION": answer == "FAILED_PRECONDITION"
            and "model.onnx" in detail,
            "the previous model keeps serving": stats.active_version == 1,
            "and stays active in the database": listing.active_version == 1,
        }
    return result


def drill_sigterm(root: Path, seconds: float) -> DrillResult:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    result = DrillResult("sigterm")
    with stage(root, postgres=False) as s:
        drain_s = max(1.0, seconds)
        env = {
            **SERVER_ENV,
            "RECSERVE_SERVER__DRAIN_S": str(drain_s),
            "RECSERVE_SERVER__GRACE_S": "5",
        }
        server = ServerProcess(s.settings, "sigterm", env=env)
        traffic = run_traffic(s, server.target, "sigterm")
        health_seen: list[tuple[float, str]] = []

        def watch() -> None:
            with grpc.insecure_channel(server.target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while server.proc.poll() is None:
                    try:
                        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                        health_seen.append(
                            (
                                time.monotonic(),
                                health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status),
                            )
                        )
                    except grpc.RpcError:
                        health_seen.append((time.monotonic(), "GONE"))
                    time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            time.sleep(seconds)
            sent = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            code = server.proc.wait(timeout=drain_s + 30)
            exited = time.monotonic()
        finally:
            finish_drill(result, traffic, s.settings.db_url)
            watcher.join(5)
            server.stop()
        not_serving = [t for t, status in health_seen if status == "NOT_SERVING" and t >= sent]
        served_while_draining = traffic.codes(
            not_serving[0] if not_serving else exited, exited
        ).get("OK", 0)
        result.checks = {
            "health NOT_SERVING first": bool(not_serving),
            "calls still served while draining": served_while_draining > 0,
            "exit status 0": code == 0,
        }
        result.notes.append(f"exited {exited - sent:.1f}s after SIGTERM (drain {drain_s:.0f}s)")
    return result


def drill_hot_swap(root: Path, seconds: float) -> DrillResult:
    result = DrillResult("hot-swap")
    with stage(root, postgres=False) as s:
        server = ServerProcess(s.settings, "hot-swap", env=SERVER_ENV)
        traffic = run_traffic(s, server.target, "swap")
        client = Client(server.target)
        swaps = 0
        try:
            for n in range(10):
                client.admin.ActivateModel(
                    admin_pb2.ActivateModelRequest(version=2 if n % 2 == 0 else 1), timeout=30
                )
                swaps += 1
                time.sleep(seconds / 5)
        finally:
            finish_drill(result, traffic, s.settings.db_url)
            client.close()
            server.stop()
        errors = {code: n for code, n in result.codes.items() if code != "OK"}
        result.checks = {"ten swaps, no failed call": swaps == 10 and not errors}
    return result


def drill_disk_full(root: Path, seconds: float) -> DrillResult:
    result = DrillResult("disk-full")
    disk = SmallDisk(root / f"small-disk-{uuid.uuid4().hex[:6]}", 24)
    if not disk.available:
        result.notes.append("skipped: mounting a tmpfs needs root on this machine")
        result.checks = {"a small file system could be mounted": False}
        return result
    try:
        with stage(root, postgres=False, data_dir=disk.path) as s:
            # Fill what is left of the 24 MB with ballast, leaving ~1.5 MB for feedback.
            free = shutil.disk_usage(disk.path).free
            (disk.path / "ballast").write_bytes(b"\0" * max(0, free - 1_500_000))
            server = ServerProcess(s.settings, "disk-full", env=SERVER_ENV)
            traffic = Traffic(server.target, s.users, s.items, "disk", writers=4).start()
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not traffic.codes(kind="feedback").get(
                    "UNAVAILABLE"
                ):
                    time.sleep(0.2)
                full_at = time.monotonic()
                time.sleep(seconds)
                disk.grow(256)
                grown_at = time.monotonic()
                time.sleep(seconds * 2)
            finally:
                finish_drill(result, traffic, s.settings.db_url)
                server.stop()
            result.checks = {
                "Feedback UNAVAILABLE when the disk is full": traffic.codes(
                    full_at - 5, grown_at, "feedback"
                ).get("UNAVAILABLE", 0)
                > 0,
                "recovered when space came back": traffic.codes(
                    grown_at + seconds, float("inf"), "feedback"
                ).get("OK", 0)
                > 0,
            }
    finally:
        disk.close()
    return result


DRILLS: dict[str, Callable[[Path, float], DrillResult]] = {
    "database": drill_database,
    "broker": drill_broker,
    "worker": drill_worker,
    "fencing": drill_fencing,
    "bundle": drill_bundle,
    "sigterm": drill_sigterm,
    "hot-swap": drill_hot_swap,
    "disk-full": drill_disk_full,
}


def run_drills(
    root: Path, names: list[str], *, seconds: float = 2.0, output: Path | None = None
) -> list[DrillResult]:
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        started = time.perf_counter()
        result = DRILLS[name](root, seconds)
        result.notes.append(f"{time.perf_counter() - started:.0f}s")
        results.append(result)
        print_row(result, header=len(results) == 1)
    report = {
        "passed": all(r.passed for r in results),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "drills": [
            {
                "name": r.name,
                "passed": r.passed,
                "acknowledged": r.acked,
                "acknowledged_lost": r.lost,
                "internal_or_unknown": r.unexpected,
                "codes": r.codes,
                "checks": r.checks,
                "notes": r.notes,
            }
            for r in results
        ],
    }
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2))
        print(f"wrote {output}")
    return results


def print_row(result: DrillResult, *, header: bool) -> None:
    if header:
        print(f"{'drill':10} {'result':6} {'acked':>7} {'lost':>5} {'INTERNAL':>8}  codes / checks")
    codes = ", ".join(f"{c} {n}" for c, n in sorted(result.codes.items()))
    print(
        f"{result.name:10} {'pass' if result.passed else 'FAIL':6} {result.acked:>7} "
        f"{result.lost:>5} {result.unexpected:>8}  {codes}"
    )
    for check, ok in result.checks.items():
        print(f"{'':42}{'ok  ' if ok else 'NO  '}{check}")
    for note in result.notes:
        print(f"{'':42}{note}")


def main_args(args: Any) -> int:
    names = args.drills.split(",") if args.drills else list(DRILLS)
    unknown = [n for n in names if n not in DRILLS]
    if unknown:
        raise SystemExit(f"unknown drill(s) {unknown}; accepted: {', '.join(DRILLS)}")
    results = run_drills(
        Path(args.data_dir or "var/drills"),
        names,
        seconds=args.seconds,
        output=Path(args.output or "bench-results/drills.json"),
    )
    return 0 if all(r.passed for r in results) else 1
