"""The operator commands as a person runs them: `recserve models ...`, `recserve jobs ...`
and `recserve train` as processes, against a real server process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from shared.client import Client
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage import impression_store, model_store
from shared.storage.engine import make_engine, session_scope
from shared.storage.tables import ModelStatus, ModelVersion
from tests.support.models import register_copy
from tests.support.processes import ServerProcess, process_env
from tests.support.waits import wait_until


def recserve(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recserve", *args],
        env=process_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_models_and_jobs_commands(settings) -> None:
    engine = make_engine(settings.db_url)
    with session_scope(engine) as s:
        v1 = model_store.get_model_version(s, version=1)
        for n in (2, 3, 4):
            shutil.copytree(settings.bundle_path("job-1-1"), settings.bundles_dir / f"copy-{n}")
            model_store.create_model_version(
                s,
                model=ModelVersion(
                    status=ModelStatus.READY,
                    metrics=v1.metrics,
                    artifact_path=f"copy-{n}",
                    config=v1.config,
                    checksum=v1.checksum,
                ),
            )
    engine.dispose()
    server = ServerProcess(settings)
    target = ("--target", server.target)
    try:
        listed = recserve(settings, "models", "list", *target)
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0].split()[:3] == ["version", "status", "ndcg@10"]
        assert any(line.split()[:2] == ["1*", "active"] for line in lines)

        similar = recserve(settings, "similar", "i003-002", "nope", "-k", "3", *target)
        assert similar.returncode == 0, similar.stderr
        shown = similar.stdout.splitlines()
        assert shown[:2] == ["model version 1", "unknown to the model (not counted): nope"]
        assert [line.split(".")[0].strip() for line in shown[2:]] == ["1", "2", "3"]
        missing = recserve(settings, "similar", "nope", *target)
        assert missing.returncode == 2 and "NOT_FOUND: item_ids" in missing.stderr

        activated = recserve(settings, "models", "activate", "4", *target)
        assert activated.stdout.strip() == "model version 4 is now active", activated.stderr
        rolled = recserve(settings, "models", "rollback", *target)
        assert "model version 1 is now active" in rolled.stdout, rolled.stderr

        # Kept: active 1, previous 4, newest ready 3.
        plan = recserve(settings, "models", "prune", "--keep", "1", "--dry-run", *target)
        assert plan.stdout.startswith("would prune 2 "), plan.stdout + plan.stderr
        pruned = recserve(settings, "models", "prune", "--keep", "1", *target)
        assert pruned.stdout.startswith("pruned 2 "), pruned.stderr
        assert not (settings.bundles_dir / "copy-2").exists()

        shown = recserve(settings, "models", "show", "1", *target)
        assert "problem: none" in shown.stdout and "promoted by job 1" in shown.stdout

        queued = recserve(settings, "train", "--param", "epochs=2")
        assert queued.returncode == 0 and "queued train job 2" in queued.stdout, queued.stderr
        busy = recserve(settings, "train")
        assert busy.returncode == 2
        assert "training job 2 is queued" in busy.stderr and "Traceback" not in busy.stderr

        jobs = recserve(settings, "jobs", "list", *target)
        assert any(
            line.split()[:4] == ["2", "train", "manual", "queued"]
            for line in jobs.stdout.splitlines()
        )
        cancelled = recserve(settings, "jobs", "cancel", "2", *target)
        assert cancelled.stdout.strip() == "job 2: cancelled", cancelled.stderr
        finished = recserve(settings, "jobs", "cancel", "1", *target)
        assert finished.returncode == 2
        assert "FAILED_PRECONDITION: job 1 already finished" in finished.stderr
    finally:
        server.stop()


def stored_impressions(engine) -> int:
    with session_scope(engine) as session:
        return impression_store.count_impressions(session)


def test_experiment_commands(settings) -> None:
    engine = make_engine(settings.db_url)
    assert register_copy(engine) == 2
    engine.dispose()
    server = ServerProcess(settings)
    target = ("--target", server.target)
    try:
        shown = recserve(settings, "experiment", "show", *target)
        assert "traffic split: none" in shown.stdout, shown.stderr
        split = recserve(settings, "experiment", "split", "--arm", "1:1", "--arm", "2:3", *target)
        assert "traffic split: v1 25%, v2 75%" in split.stdout, split.stderr
        bad = recserve(settings, "experiment", "split", "--arm", "1:1", *target)
        assert bad.returncode == 2 and "INVALID_ARGUMENT: arms: has 1 arm" in bad.stderr
        client = Client(server.target)
        try:
            for n in range(30):
                request = pb.RecommendRequest(user_id=f"u{n:05d}", k=3)
                client.recommender.Recommend(request, timeout=10)
        finally:
            client.close()
        engine = make_engine(settings.db_url)
        try:  # impressions are written in batches every half second
            wait_until(lambda: stored_impressions(engine) >= 30, "30 impressions stored")
        finally:
            engine.dispose()
        measured = recserve(settings, "experiment", "measure", *target)
        assert measured.returncode == 0, measured.stderr
        rows = [line.split() for line in measured.stdout.splitlines() if line[:7].strip()]
        arms = {row[1] for row in rows if row[0] in ("1", "2")}
        assert arms == {"v1", "v2"}, measured.stdout
        promoted = recserve(settings, "experiment", "promote", "2", *target)
        assert "model version 2 is active" in promoted.stdout, promoted.stderr
        assert "traffic split: none" in promoted.stdout
    finally:
        server.stop()


def test_rules_and_user_data_commands(settings, tmp_path) -> None:
    server = ServerProcess(settings)
    target = ("--target", server.target)
    try:
        put = recserve(
            settings, "rules", "put", "spring", "--boost", "topic-1=2", "--bury", "topic-2=0.5",
            "--cap", "topic:*=2", "--pin", "i003-002=1", "--from", "2026-03-01",
            "--until", "2026-04-01", "--description", "spring sale", *target,
        )  # fmt: skip
        assert put.returncode == 0, put.stderr
        assert put.stdout.splitlines()[0].startswith(
            "spring  (inactive; from 2026-03-01 00:00:00 until 2026-04-01 00:00:00;"
        ), put.stdout
        assert "  pin i003-002 at 1" in put.stdout and "  cap topic:* 2" in put.stdout
        spec = tmp_path / "always.json"
        spec.write_text('{"rules": [{"kind": "pin", "itemId": "i003-002", "slot": 1}]}')
        filed = recserve(settings, "rules", "put", "always", "--file", str(spec), *target)
        assert filed.returncode == 0 and "always  (active;" in filed.stdout, filed.stderr
        listed = recserve(settings, "rules", "list", *target)
        names = [line.split()[0] for line in listed.stdout.splitlines() if not line.startswith(" ")]
        assert names == ["always", "spring"], listed.stdout
        client = Client(server.target)
        try:
            request = pb.RecommendRequest(user_id="someone-new", k=3)
            answer = client.recommender.Recommend(request, timeout=10)
            assert answer.items[0].item_id == "i003-002", answer
        finally:
            client.close()
        bad = recserve(settings, "rules", "put", "x", "--boost", "topic-1=0.5", *target)
        assert bad.returncode == 2 and "INVALID_ARGUMENT: rules[0].factor" in bad.stderr, bad.stderr
        typo = recserve(settings, "rules", "put", "x", "--pin", "sku", *target)
        assert typo.returncode == 2 and "expected e.g. sku-42=1" in typo.stderr, typo.stderr
        deleted = recserve(settings, "rules", "delete", "always", *target)
        assert deleted.stdout.strip() == "deleted rule set always", deleted.stderr
        missing = recserve(settings, "rules", "delete", "always", *target)
        assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr

        out = tmp_path / "u00003.json"
        exported = recserve(settings, "export-user", "u00003", "--output", str(out), *target)
        assert exported.returncode == 0, exported.stderr
        data = json.loads(out.read_text())
        assert data["user_id"] == "u00003" and len(data["events"]) > 0
        unconfirmed = recserve(settings, "delete-user", "u00003", *target)
        assert unconfirmed.returncode != 0 and "--yes" in unconfirmed.stderr
        deleted = recserve(settings, "delete-user", "u00003", "--yes", *target)
        assert deleted.returncode == 0, deleted.stderr
        assert f"deleted user u00003: {len(data['events']):,} events" in deleted.stdout
        audit = recserve(settings, "audit", *target)
        rows = [line.split()[2:4] for line in audit.stdout.splitlines()[1:]]
        assert rows[:2] == [["delete_user", "u00003"], ["export_user", "u00003"]], audit.stdout
    finally:
        server.stop()
