"""SQLite WAL checkpoints run by the server, not inside Feedback commits."""

from __future__ import annotations

from sqlalchemy import text

from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage.engine import make_engine


def autocheckpoint(engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("PRAGMA wal_autocheckpoint")).scalar_one())


async def test_the_server_checkpoints_what_its_commits_leave_in_the_log(client, server) -> None:
    assert server.checkpoints is not None
    assert autocheckpoint(server.engine) == 0, "commits never checkpoint"
    await client.recommender.Feedback(
        pb.FeedbackRequest(
            events=[pb.Event(event_id="wal-1", user_id="u00001", item_id="i000-001")]
        )
    )
    busy, frames, copied = server.checkpoints.checkpoint()
    assert busy == 0 and frames > 0 and copied == frames


def test_other_engines_keep_sqlites_automatic_checkpoints(tmp_path) -> None:
    plain = make_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    background = make_engine(f"sqlite:///{tmp_path / 'server.db'}", background_checkpoints=True)
    try:
        assert autocheckpoint(plain) == 1000
        assert autocheckpoint(background) == 0
    finally:
        plain.dispose()
        background.dispose()
