"""A canned ModelAdmin/Recommender for screenshots that must not change between runs:
fixed times, figures and series (the console's own Connection, answering from memory)."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from shared.proto.recserve.v1 import admin_pb2
from shared.proto.recserve.v1 import recommender_pb2 as pb
from tui.connection import Connection

T0_MS = 1_796_040_000_000  # 2026-11-30 12:00 UTC


def _models() -> list[admin_pb2.ModelVersion]:
    def model(version: int, status: str, ndcg: float, hr: float) -> admin_pb2.ModelVersion:
        return admin_pb2.ModelVersion(
            version=version,
            status=status,
            metrics={
                "ndcg@10": ndcg,
                "hr@10": hr,
                "pop_ndcg@10": 0.0299,
                "pop_hr@10": 0.054,
                "epochs": 13 + version,
                "train_seconds": 25.4 + version,
                "train_events": 82957 + 1000 * version,
                "users": 2000,
                "items": 600,
            },
            artifact_path=f"job-{version}",
            data_watermark=82957 + 1000 * version,
            config_json=json.dumps({"model": {"d_model": 64, "n_blocks": 2, "max_len": 50}}),
            checksum=f"{version:02d}" * 32,
            created_at_ms=T0_MS + version * 3_600_000,
            job_id=version,
            size_bytes=1_480_000,
        )

    return [
        model(3, "ready", 0.3391, 0.3735),
        model(2, "active", 0.3420, 0.3770),
        model(1, "retired", 0.3012, 0.3350),
    ]


RESOLVED = [
    admin_pb2.ParamChoice(name="epochs", value_json="40", source="given"),
    admin_pb2.ParamChoice(
        name="max_len", value_json="20", source="recipe",
        reason="90% of histories hold <= 14 events",
    ),
    admin_pb2.ParamChoice(
        name="dropout", value_json="0.5", source="recipe",
        reason="sparse data (8.6 events per user < 50)",
    ),
    admin_pb2.ParamChoice(
        name="lr_schedule", value_json='"cosine"', source="recipe",
        reason="a cosine over the time budget, with early stopping",
    ),
    admin_pb2.ParamChoice(name="batch_size", value_json="128", source="default"),
]  # fmt: skip


def _jobs() -> list[admin_pb2.Job]:
    curve = [
        admin_pb2.EpochPoint(
            epoch=e, loss=6.5 * math.exp(-e / 3) + 1.8, val_ndcg_at_10=0.35 * (1 - math.exp(-e / 2))
        )
        for e in range(1, 9)
    ]
    return [
        admin_pb2.Job(
            id=4,
            kind="train",
            status="running",
            progress=0.42,
            message="epoch 8/40 loss 1.9512 val ndcg@10 0.3422",
            trigger="volume",
            worker="worker-1:4242",
            attempts=1,
            started_at_ms=T0_MS + 4 * 3_600_000,
            params_json='{"epochs": 40}',
            resolved=RESOLVED,
            curve=curve,
            log=[f"12:00:{e:02d} epoch {e}/40 loss {p.loss:.4f}" for e, p in enumerate(curve, 1)],
        ),
        admin_pb2.Job(
            id=3,
            kind="train",
            status="succeeded",
            progress=1.0,
            model_version=3,
            message="registered model version 3; not activated",
            trigger="schedule",
            worker="worker-1:4242",
            attempts=1,
            started_at_ms=T0_MS + 3 * 3_600_000,
        ),
        admin_pb2.Job(
            id=2,
            kind="train",
            status="failed",
            progress=0.3,
            error="worker lost: worker-2:77 sent no heartbeat since 2026-11-30 13:10:00 UTC",
            trigger="manual",
            worker="worker-2:77",
            attempts=1,
            started_at_ms=T0_MS + 2 * 3_600_000,
        ),
    ]


def _stats() -> admin_pb2.ServerStats:
    series = [
        admin_pb2.StatsSample(
            at_ms=T0_MS + i * 5000,
            recommend_qps=400 + 150 * math.sin(i / 9),
            latency_p50_ms=3 + math.sin(i / 7),
            latency_p99_ms=12 + 4 * math.sin(i / 5),
            error_rate=0.01 if i % 40 == 0 else 0.0,
            feedback_events_per_s=80 + 30 * math.cos(i / 11),
            mean_batch_size=4 + 2 * math.sin(i / 13),
        )
        for i in range(120)
    ]
    now_ms = int(time.time() * 1000)
    return admin_pb2.ServerStats(
        recommend_qps=412.5,
        latency_p50_ms=3.21,
        latency_p99_ms=14.8,
        error_rate=0.0012,
        mean_batch_size=4.6,
        feedback_events_per_s=95.2,
        backend="onnxruntime",
        device="cpu",
        active_version=2,
        configured_version=2,
        requests_total=1_234_567,
        feedback_events_total=345_678,
        uptime_s=86_400,
        cached_users=12_345,
        batches_total=250_000,
        state_cache_hits=900_000,
        replica_id="host-a:50051:101",
        series=series,
        replicas=[
            admin_pb2.Replica(
                replica_id="host-a:50051:101",
                address="host-a:50051",
                serving_version=2,
                health="SERVING",
                backend="onnxruntime",
                device="cpu",
                last_seen_ms=now_ms - 1500,
                alive=True,
            ),
            admin_pb2.Replica(
                replica_id="host-b:50051:202",
                address="host-b:50051",
                serving_version=1,
                health="SERVING",
                backend="onnxruntime",
                device="cpu",
                last_seen_ms=now_ms - 1500,
                alive=True,
                note="active version 2 cannot be served here: bundle job-2: file "
                "model.onnx fails its sha256 checksum; still serving version 1",
            ),
        ],
    )


ITEMS = [
    admin_pb2.CatalogueItem(
        item_id=f"i{t:03d}-{p:03d}",
        title=f"Topic {t} part {p + 1}",
        labels=[f"topic-{t}"],
        available=(t, p) != (0, 2),
        in_catalogue=True,
        in_model=p < 10,
    )
    for t in range(2)
    for p in range(12)
]


RULE_SETS = [
    admin_pb2.RuleSet(
        name="brand-variety",
        rules=[admin_pb2.Rule(kind="cap", label="brand:*", max_items=2)],
        updated_ms=T0_MS,
        updated_by="ops",
        active=True,
    ),
    admin_pb2.RuleSet(
        name="winter-sale",
        rules=[
            admin_pb2.Rule(kind="boost", label="season:winter", factor=1.5),
            admin_pb2.Rule(kind="bury", label="clearance", factor=0.5),
            admin_pb2.Rule(kind="pin", item_id="i000-003", slot=1),
        ],
        active_from_ms=T0_MS + 86_400_000,
        active_until_ms=T0_MS + 8 * 86_400_000,
        description="winter sale week",
        updated_ms=T0_MS,
        updated_by="merchandising",
    ),
]


class FakeConnection(Connection):
    def __init__(self) -> None:
        super().__init__("fake:50051", None, lambda *_: None)
        self.online = True

    async def admin(self, method: str, request: Any, *, timeout: float = 5.0) -> Any | None:
        if method == "ListModels":
            return admin_pb2.ListModelsResponse(models=_models(), active_version=2)
        if method == "ListJobs":
            return admin_pb2.ListJobsResponse(jobs=_jobs())
        if method == "GetExperiment":
            return admin_pb2.Experiment(
                arms=[
                    admin_pb2.TrafficArm(version=2, weight=1),
                    admin_pb2.TrafficArm(version=3, weight=1),
                ],
                shadow_version=4,
                shadow_share=0.1,
                metrics=[
                    admin_pb2.OnlineMetric(
                        model_version=v,
                        arm=f"v{v}",
                        computed_at_ms=T0_MS,
                        window_hours=24,
                        impressions=n,
                        ctr=ctr,
                        hit_rate=hit,
                        attributed_share=0.41,
                    )
                    for v, n, ctr, hit in ((2, 51_230, 0.062, 0.113), (3, 50_871, 0.067, 0.121))
                ]
                + [
                    admin_pb2.OnlineMetric(
                        model_version=4,
                        arm="shadow",
                        computed_at_ms=T0_MS,
                        window_hours=24,
                        attributed_share=0.41,
                        shadow_requests=10_204,
                        shadow_overlap=0.58,
                        shadow_p50_ms=3.4,
                    )
                ],
            )
        if method == "GetServerStats":
            return _stats()
        if method == "ListAuditEntries":
            return admin_pb2.ListAuditEntriesResponse(
                entries=[
                    admin_pb2.AuditEntry(
                        at_ms=T0_MS + 3_600_000,
                        action="delete_user",
                        subject="u01234",
                        by="ops",
                        detail_json=json.dumps(
                            {"events": 212, "flags": 0, "impressions": 35, "import_reports": 1}
                        ),
                    ),
                    admin_pb2.AuditEntry(
                        at_ms=T0_MS + 3_000_000,
                        action="export_user",
                        subject="u01234",
                        by="ops",
                        detail_json='{"events": 212, "impressions": 35, "page_token": ""}',
                    ),
                ]
            )
        if method == "ListRuleSets":
            return admin_pb2.ListRuleSetsResponse(rule_sets=RULE_SETS)
        if method == "ListItems":
            wanted = set(request.item_ids)
            return admin_pb2.ListItemsResponse(
                items=[i for i in ITEMS if not wanted or i.item_id in wanted]
            )
        if method == "GetUserHistory":
            return admin_pb2.UserHistory(
                user_id=request.user_id,
                events=[
                    admin_pb2.HistoryEvent(
                        item_id=i.item_id,
                        title=i.title,
                        kind="click",
                        timestamp_ms=T0_MS + n * 60_000,
                    )
                    for n, i in enumerate(ITEMS[:5])
                ],
            )
        if method == "GetModelDetails":
            model = next(m for m in _models() if m.version == request.version)
            return admin_pb2.ModelDetails(
                model=model,
                training=RESOLVED,
                files=[
                    admin_pb2.BundleFile(name=n, size_bytes=s, sha256="ab" * 32, ok=True)
                    for n, s in (("config.json", 276), ("model.onnx", 746_612))
                ],
                activations=[
                    admin_pb2.Activation(
                        version=model.version,
                        previous_version=1,
                        activated_at_ms=T0_MS + 7_200_000,
                        reason="promoted by job 2",
                    )
                ],
            )
        if method == "GetTrainingOptions":
            return admin_pb2.TrainingOptions(
                options=[
                    admin_pb2.TrainingOption(
                        name="epochs",
                        type="int",
                        default_json="200",
                        minimum=1,
                        maximum=10000,
                        help="Upper bound on epochs; early stopping usually ends training sooner.",
                        source="recipe",
                    ),
                    admin_pb2.TrainingOption(
                        name="learning_rate",
                        type="float",
                        default_json="0.001",
                        minimum=0,
                        exclusive_minimum=True,
                        maximum=1,
                        help="AdamW's peak learning rate.",
                        source="recipe",
                    ),
                    admin_pb2.TrainingOption(
                        name="loss",
                        type="choice",
                        default_json='"ce"',
                        choices=["ce", "sampled"],
                        help="ce: full softmax; sampled: sampled softmax.",
                        source="recipe",
                    ),
                    admin_pb2.TrainingOption(
                        name="exclude_seen",
                        type="bool",
                        default_json="true",
                        help="Leave seen items out of each position's softmax.",
                    ),
                ]
            )
        return None

    async def recommender(self, method: str, request: Any, *, timeout: float = 5.0) -> Any | None:
        return pb.RecommendResponse(
            items=[
                pb.ScoredItem(
                    item_id=i.item_id,
                    title=i.title,
                    score=9.5 - n,
                    explanations=[
                        pb.Explanation(
                            item_id=e.item_id, title=e.title, weight=0.8 - 0.3 * m, events_ago=m + n
                        )
                        for m, e in enumerate(ITEMS[n : n + 2])
                    ]
                    if request.explain
                    else [],
                )
                for n, i in enumerate(ITEMS[12:17])
            ],
            model_version=2,
            source=pb.SOURCE_MODEL,
            history_used=5,
        )
