"""DeleteUser and ExportUser on two real replicas, on SQLite (polled changes) and
PostgreSQL (NOTIFY): the export pages through everything stored, the deletion removes it
all (events, impressions, flags, import-report mentions) and every replica's caches, a
replayed event or a re-imported old file stores nothing of the user timed before the
deletion and says so, a new event is stored, and both calls are audited."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sqlmodel import select

from shared.proto.recserve.v1 import admin_pb2
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage import user_store
from shared.storage.engine import make_engine, session_scope
from shared.storage.importers import import_file
from shared.storage.tables import FeedbackEvent, FlaggedUser, Impression
from tests.conftest import TINY_SPEC, event_rows
from tests.support.replicas import two_replicas
from tests.support.waits import eventually

USER = "u00007"


def stored_rows(engine, table) -> int:
    with session_scope(engine) as s:
        return len(s.exec(select(table).where(table.user_id == USER)).all())


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
async def test_delete_and_export_a_user_across_two_replicas(
    request: pytest.FixtureRequest, tmp_path: Path, engine_name: str
) -> None:
    events = list(event_rows(TINY_SPEC))
    mine = [e for e in events if e.user_id == USER]
    old_file = tmp_path / "old.csv"
    old_file.write_text(
        "user_id,item_id,timestamp\n"
        + "".join(f"{USER},{e.item_id},{int(e.event_time.timestamp())}\n" for e in mine)
    )
    # Impressions are written when the test says (B's list must still be queued).
    replicas = two_replicas(
        request, tmp_path, engine_name, events=events, impression_flush_ms=60_000
    )
    async with replicas as (a, b, client_a, client_b):
        settings = a.admin.settings
        engine = make_engine(settings.db_url)
        with session_scope(engine) as s:
            user_store.flag_users(s, flags={USER: ("bot", "a test flag")})
        reports = settings.data_dir / "import-reports"
        reports.mkdir(parents=True)
        (reports / "old.json").write_text(json.dumps({"suspected_bot_users": [USER, "u00001"]}))
        # B caches the user's history and queues an impression of theirs.
        await client_b.recommender.Recommend(pb.RecommendRequest(user_id=USER, k=3))
        assert b.parts.history.is_cached(USER)
        await client_a.recommender.Recommend(pb.RecommendRequest(user_id=USER, k=3))
        await a.parts.impressions.flush()

        # Export, a page of 5 at a time: everything stored, then nothing more.
        pages, token = [], ""
        while True:
            page = await client_a.admin.ExportUser(
                admin_pb2.ExportUserRequest(user_id=USER, page_token=token, page_size=5)
            )
            pages.append(json.loads(page.json))
            token = page.next_page_token
            if not token:
                break
        exported = [e["event_id"] for p in pages for e in p["events"]]
        assert sorted(exported) == sorted(e.event_id for e in mine)
        assert len(pages) >= len(mine) // 5
        assert pages[0]["flags"][0]["reason"] == "bot" and pages[0]["experiment_arm"] == ""
        assert sum(len(p["impressions"]) for p in pages) == 1
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await client_a.admin.ExportUser(
                admin_pb2.ExportUserRequest(user_id=USER, page_token="forged")
            )
        assert "page_token" in (bad.value.details() or "")

        deleted = await client_a.admin.DeleteUser(admin_pb2.DeleteUserRequest(user_id=USER))
        assert (deleted.events, deleted.flags, deleted.import_reports) == (len(mine), 1, 1)
        assert deleted.impressions == 1
        for table in (FeedbackEvent, Impression, FlaggedUser):
            assert stored_rows(engine, table) == 0, table
        report = json.loads((reports / "old.json").read_text())
        assert report == {"suspected_bot_users": ["u00001"]}

        # Replica B drops its caches within 2 s of the deletion.
        await eventually(
            lambda: not b.parts.history.is_cached(USER), "B forgets the user", timeout=2.0
        )
        history = await client_b.admin.GetUserHistory(admin_pb2.GetUserHistoryRequest(user_id=USER))
        assert not history.events
        await b.parts.impressions.flush()
        assert stored_rows(engine, Impression) == 0, "B's queued list is never written"

        # A replayed old event and a re-imported old file store nothing, and say so.
        old = mine[0]
        replay = pb.Event(
            event_id=old.event_id, user_id=USER, item_id=old.item_id,
            timestamp_ms=int(old.event_time.timestamp() * 1000),
        )  # fmt: skip
        answer = await client_b.recommender.Feedback(pb.FeedbackRequest(events=[replay]))
        assert (answer.stored, answer.duplicates, answer.deleted_user_events) == (0, 0, 1)
        summary = import_file(engine, old_file, fmt="csv")
        assert summary.stored == 0 and summary.deleted_user_events == len(mine)
        assert stored_rows(engine, FeedbackEvent) == 0 and stored_rows(engine, FlaggedUser) == 0
        # A new event, after the deletion, is stored: the user came back.
        later = datetime.now(UTC) + timedelta(seconds=1)
        back = pb.Event(
            event_id="back-1", user_id=USER, item_id=old.item_id,
            timestamp_ms=int(later.timestamp() * 1000),
        )  # fmt: skip
        answer = await client_a.recommender.Feedback(pb.FeedbackRequest(events=[back]))
        assert (answer.stored, answer.deleted_user_events) == (1, 0)

        audit = await client_b.admin.ListAuditEntries(admin_pb2.ListAuditEntriesRequest())
        actions = [(e.action, e.subject, e.by) for e in audit.entries]
        assert actions[0] == ("delete_user", USER, "anonymous")
        assert json.loads(audit.entries[0].detail_json)["events"] == len(mine)
        assert actions.count(("export_user", USER, "anonymous")) == len(pages)
        engine.dispose()
