"""What an operator scrapes and reads: Prometheus /metrics of a server process and of a
worker process (fetched over HTTP, parsed with prometheus-client's parser), request ids
in trailing metadata and in JSON logs."""

from __future__ import annotations

import json
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.proto.recserve.v1 import recommender_pb2_grpc
from shared.storage import event_store, job_store
from shared.storage.engine import make_engine, migrate, session_scope
from shared.training.jobs import submit_training
from tests.conftest import TINY_SPEC, event_rows, make_settings
from tests.support.processes import ServerProcess, WorkerProcess, free_port
from tests.support.waits import wait_until


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of http://127.0.0.1:port/metrics as {(name, labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_server_metrics_request_ids_and_json_logs(settings) -> None:
    port = free_port()
    server = ServerProcess(
        settings,
        "observed",
        TELEMETRY__METRICS_PORT=str(port),
        TELEMETRY__LOG_FORMAT="json",
        TELEMETRY__ACCESS_LOG="true",
    )
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            for _ in range(3):
                stub.Recommend(pb.RecommendRequest(user_id="u00001", k=5), timeout=10)
            _, call = stub.Recommend.with_call(
                pb.RecommendRequest(user_id="u00002", k=5),
                metadata=(("x-request-id", "trace-me-42"),),
                timeout=10,
            )
            assert ("x-request-id", "trace-me-42") in call.trailing_metadata()
            with pytest.raises(grpc.RpcError) as err:
                stub.Recommend(pb.RecommendRequest(user_id="u00001", k=-1), timeout=10)
            trailing = dict(err.value.trailing_metadata())
            assert trailing["x-request-id"] not in ("", "trace-me-42"), "a fresh id for this call"
            stub.Feedback(
                pb.FeedbackRequest(
                    events=[pb.Event(event_id="obs-1", user_id="u00001", item_id="i000-001")]
                ),
                timeout=10,
            )
            stub.Feedback(
                pb.FeedbackRequest(
                    events=[pb.Event(event_id="obs-1", user_id="u00001", item_id="i000-001")]
                ),
                timeout=10,
            )
        samples = scrape(port)
        assert value(samples, "recserve_requests_total", method="Recommend", code="OK") == 4
        assert (
            value(samples, "recserve_requests_total", method="Recommend", code="INVALID_ARGUMENT")
            == 1
        )
        assert value(samples, "recserve_requests_total", method="Feedback", code="OK") == 2
        assert value(samples, "recserve_request_seconds_count", method="Recommend") == 5
        assert value(samples, "recserve_request_seconds_bucket", method="Recommend", le="+Inf") == 5
        assert value(samples, "recserve_batch_size_count") >= 2
        assert value(samples, "recserve_cache_lookups_total", cache="state", result="hit") >= 1
        assert value(samples, "recserve_cache_lookups_total", cache="history", result="miss") >= 2
        assert (
            value(samples, "recserve_model_info", version="1", backend="onnxruntime", device="cpu")
            == 1
        )
        assert value(samples, "recserve_model_version") == 1
        assert value(samples, "recserve_feedback_events_total", result="stored") == 1
        assert value(samples, "recserve_feedback_events_total", result="duplicate") == 1
        assert ("recserve_queue_depth", (("queue", "batcher"),)) in samples
        assert ("recserve_queue_depth", (("queue", "feedback_writer"),)) in samples
    finally:
        server.stop()
    lines = [
        json.loads(line)
        for line in server.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    traced = [line for line in lines if line.get("request_id") == "trace-me-42"]
    assert traced and traced[0]["logger"] == "recserve.access"
    assert traced[0]["message"].startswith("Recommend anonymous OK ")  # method, caller, code


def test_worker_metrics(tmp_path) -> None:
    settings = make_settings(tmp_path / "var")
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    with session_scope(engine) as s:
        event_store.insert_events(s, events=event_rows(TINY_SPEC))
    port = free_port()
    worker = WorkerProcess(settings, "worker", TELEMETRY__METRICS_PORT=str(port))
    try:
        job = submit_training(settings, engine, {"epochs": 2, "d_model": 8, "max_len": 8})

        def succeeded() -> bool:
            with session_scope(engine) as s:
                return job_store.get_job(s, job_id=int(job.id or 0)).status == "succeeded"

        wait_until(succeeded, "the job succeeded", timeout=120, every=0.3, explain=worker.tail)

        def counted() -> dict:  # the counter is written right after the job row
            samples = scrape(port)
            done = value(samples, "recserve_jobs_total", kind="train", outcome="succeeded")
            return samples if done else {}

        samples = wait_until(counted, "the finished job counted", timeout=5, every=0.1)
        assert value(samples, "recserve_jobs_total", kind="train", outcome="succeeded") == 1
        assert value(samples, "recserve_job_seconds_count", kind="train", outcome="succeeded") == 1
        assert value(samples, "recserve_jobs", status="queued") == 0
        assert value(samples, "recserve_jobs", status="running") == 0
        assert ("recserve_broker_queue_depth", (("queue", settings.worker.queue),)) in samples
    finally:
        worker.discard()
        engine.dispose()
