"""`recserve bench ingest` (`make bench-ingest`): feedback ingestion into a database,
recserve beside a naive baseline, in one run on one machine.

Servers, each a `recserve serve` process on its own fresh database:

- ``recserve``: group commit (COPY on PostgreSQL) with cross-replica invalidation on;
- ``recserve-no-invalidation``: the same without the pg_notify per commit (what the
  invalidation costs);
- ``naive``: one INSERT and one COMMIT per event, as a plain ORM service would.

Two loads per server, each for ``--duration`` seconds:

- **bulk**: ``--streams`` FeedbackStream calls at once, batches of ``--batch`` events
  (requests serialised before the clock starts, so the client costs little CPU);
- **unary**: ``--callers`` concurrent Feedback calls of ``--unary-batch`` events: events
  per second and acknowledgement latency (p50, p99);
- **single**: one caller, one event per call: the latency of one acknowledged event on an
  otherwise idle server (where the invalidation's cost shows).

Acknowledged means durable: PostgreSQL's synchronous_commit is checked to be on.
Prints a table and writes JSON with ``events_per_s`` (recserve, bulk) and ``vs_naive``
(recserve over naive, bulk) at the top level.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import platform
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from sqlalchemy.engine import make_url

from bench.processes import ServerProcess
from shared.config import Settings
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage.engine import drop_databases, ensure_database, server_setting

DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
FEEDBACK_STREAM = "/recserve.v1.Recommender/FeedbackStream"
FEEDBACK = "/recserve.v1.Recommender/Feedback"
SERVERS = [
    ("recserve", {}),
    ("recserve-no-invalidation", {"invalidation": "false"}),
    ("naive", {}),
]


@dataclass(frozen=True)
class IngestSpec:
    duration: float = 10.0
    streams: int = 2
    batch: int = 1000
    callers: int = 16
    unary_batch: int = 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _events(prefix: str, n: int, start: int = 0) -> list[pb.Event]:
    now_ms = int(time.time() * 1000)
    return [
        pb.Event(
            event_id=f"{prefix}-{i}",
            user_id=f"user-{i % 5000}",
            item_id=f"item-{(i * 7919) % 20000}",
            kind="click",
            timestamp_ms=now_ms - (n - i),
        )
        for i in range(start, start + n)
    ]


def _stream_worker(target: str, prefix: str, spec: IngestSpec, out: Any) -> None:
    """One client process: FeedbackStream of pre-serialised batches for spec.duration."""
    # Enough batches for 100k events/s from this stream; each batch is sent once.
    count = max(4, int(100_000 * spec.duration / spec.batch / max(1, spec.streams)))
    payloads = [
        pb.FeedbackRequest(events=_events(f"{prefix}-{b}", spec.batch)).SerializeToString()
        for b in range(count)
    ]
    stored = 0
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_unary(
            FEEDBACK_STREAM,
            request_serializer=lambda raw: raw,
            response_deserializer=pb.FeedbackResponse.FromString,
        )
        deadline = time.perf_counter() + spec.duration
        started = time.perf_counter()

        def requests() -> Any:
            for payload in payloads:
                if time.perf_counter() >= deadline:
                    return
                yield payload

        answer = call(requests(), timeout=spec.duration + 300)
        elapsed = time.perf_counter() - started
        stored = answer.stored
    out.put((stored, elapsed))


def bulk(target: str, name: str, spec: IngestSpec) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_stream_worker, args=(target, f"{name}-bulk-{n}", spec, out))
        for n in range(spec.streams)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=spec.duration + 600) for _ in procs]
    for proc in procs:
        proc.join()
    stored = sum(s for s, _ in results)
    elapsed = max(e for _, e in results)
    return {"events": float(stored), "seconds": elapsed, "events_per_s": stored / elapsed}


async def _unary(
    target: str, name: str, spec: IngestSpec, *, callers: int | None = None
) -> dict[str, float]:
    latencies: list[float] = []
    stored = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(
            FEEDBACK,
            request_serializer=lambda raw: raw,
            response_deserializer=pb.FeedbackResponse.FromString,
        )
        deadline = time.perf_counter() + spec.duration

        async def caller(n: int) -> None:
            nonlocal stored
            i = 0
            while time.perf_counter() < deadline:
                payload = pb.FeedbackRequest(
                    events=_events(f"{name}-unary-{n}-{i}", spec.unary_batch)
                ).SerializeToString()
                sent = time.perf_counter()
                answer = await call(payload, timeout=30)
                latencies.append(time.perf_counter() - sent)
                stored += answer.stored
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(caller(n) for n in range(callers or spec.callers)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "events": float(stored),
        "events_per_s": stored / elapsed,
        "calls": float(len(latencies)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


class Databases:
    """A fresh PostgreSQL database per server (dropped afterwards), or SQLite files."""

    def __init__(self, admin_url: str, root: Path) -> None:
        self._admin_url = make_url(admin_url)
        self._root = root
        self._created: list[str] = []

    def new(self, name: str) -> str:
        if self._admin_url.get_backend_name() == "sqlite":
            return f"sqlite:///{self._root / f'{name}.db'}"
        database = f"recserve_bench_{name.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
        url = self._admin_url.set(database=database).render_as_string(hide_password=False)
        ensure_database(url)
        self._created.append(database)
        return url

    def synchronous_commit(self) -> str:
        if self._admin_url.get_backend_name() != "postgresql":
            return "n/a (SQLite, synchronous=FULL)"
        admin = self._admin_url.render_as_string(hide_password=False)
        return server_setting(admin, "synchronous_commit")

    def drop(self) -> None:
        if not self._created:
            return
        drop_databases(self._admin_url.render_as_string(hide_password=False), self._created)


def run_ingest_bench(
    settings: Settings, *, database_url: str | None, spec: IngestSpec, output: Path | None
) -> dict[str, Any]:
    from shared.storage.engine import migrate

    root = settings.data_dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    databases = Databases(database_url or DEFAULT_DATABASE, root)
    durable = databases.synchronous_commit()
    if durable not in ("on", "remote_apply", "remote_write") and not durable.startswith("n/a"):
        raise RuntimeError(
            f"synchronous_commit is {durable}: acknowledgements would not be durable"
        )
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, extra in SERVERS:
            url = databases.new(name)
            migrate(url)
            server_settings = settings.model_copy(update={"database_url": url})
            server = ServerProcess(
                server_settings, name, extra, require_model=False, naive=name == "naive"
            )
            try:
                results[name] = {
                    "bulk": bulk(server.target, name, spec),
                    "unary": asyncio.run(_unary(server.target, name, spec)),
                    "single": asyncio.run(_unary(server.target, f"{name}-1", spec, callers=1)),
                }
            finally:
                server.stop()
    finally:
        databases.drop()
    ours, naive = results["recserve"], results["naive"]
    quiet = results["recserve-no-invalidation"]
    report: dict[str, Any] = {
        "events_per_s": ours["bulk"]["events_per_s"],
        "vs_naive": ours["bulk"]["events_per_s"] / naive["bulk"]["events_per_s"],
        "unary_vs_naive": ours["unary"]["events_per_s"] / naive["unary"]["events_per_s"],
        "invalidation_cost_p50_ms": ours["single"]["p50_ms"] - quiet["single"]["p50_ms"],
        "invalidation_cost_p99_ms": ours["single"]["p99_ms"] - quiet["single"]["p99_ms"],
        "database": make_url(database_url or DEFAULT_DATABASE).get_backend_name(),
        "synchronous_commit": durable,
        "spec": spec.__dict__,
        "servers": results,
        "cpu": cpu_model(),
        "cores": multiprocessing.cpu_count(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print_table(report)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2, sort_keys=True))
        print(f"wrote {output}")
    return report


def print_table(report: dict[str, Any]) -> None:
    spec = report["spec"]
    print(
        f"\ningest into {report['database']} (synchronous_commit {report['synchronous_commit']})"
        f" on {report['cpu']}, {report['cores']} cores, {report['date']}"
    )
    print(
        f"bulk: {spec['streams']} FeedbackStream calls of {spec['batch']}-event batches; "
        f"unary: {spec['callers']} concurrent Feedback calls of {spec['unary_batch']} event(s); "
        f"{spec['duration']:.0f} s each"
    )
    print(
        f"{'server':26} {'bulk ev/s':>10} {'unary ev/s':>11} {'p50 ms':>7} {'p99 ms':>7}"
        f"  {'single p50':>10} {'p99':>6}"
    )
    for name, row in report["servers"].items():
        unary, single = row["unary"], row["single"]
        print(
            f"{name:26} {row['bulk']['events_per_s']:>10,.0f} {unary['events_per_s']:>11,.0f}"
            f" {unary['p50_ms']:>7.2f} {unary['p99_ms']:>7.2f}"
            f"  {single['p50_ms']:>10.2f} {single['p99_ms']:>6.2f}"
        )
    print(
        f"recserve vs naive: bulk {report['vs_naive']:.1f}x, "
        f"unary {report['unary_vs_naive']:.1f}x; "
        f"invalidation adds {report['invalidation_cost_p50_ms']:+.2f} ms p50, "
        f"{report['invalidation_cost_p99_ms']:+.2f} ms p99 to a single-event Feedback call"
    )
