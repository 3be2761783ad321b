"""Queries against a throwaway SQLite file and a fresh PostgreSQL database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect

from shared.storage import event_store, job_store, model_store
from shared.storage.engine import make_engine, migrate, session_scope
from shared.storage.tables import (
    FeedbackEventCreate,
    Job,
    JobCreate,
    JobStatus,
    ModelActivation,
    ModelStatus,
    ModelVersion,
)
from shared.wire.errors import FailedPrecondition, NotFound

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def engine(both_engines):
    return both_engines


MICRO = timedelta(minutes=1, microseconds=123_457)


def ev(event_id: str, user: str, item: str, minutes: int) -> FeedbackEventCreate:
    return FeedbackEventCreate(
        event_id=event_id, user_id=user, item_id=item, event_time=T0 + timedelta(minutes=minutes)
    )


def test_migrations_create_the_schema(engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert {
        "feedback_event",
        "item",
        "model_version",
        "job",
        "model_activation",
        "replica",
        "alembic_version",
    } <= tables
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("feedback_event")}
    assert "ix_feedback_user_time" in indexes


def test_event_ids_are_idempotency_keys(engine) -> None:
    with session_scope(engine) as s:
        stored = event_store.insert_events(
            s, events=[ev("a", "u", "x", 1), ev("a", "u", "x", 1), ev("b", "u", "y", 2)]
        )
    assert stored == {"a", "b"}
    with session_scope(engine) as s:
        assert event_store.insert_events(
            s, events=[ev("b", "u", "y", 2), ev("c", "u", "z", 0)]
        ) == {"c"}
        assert event_store.count_events(s) == 3


def test_event_store_stores_what_the_orm_stores(engine) -> None:
    """The writer's fast path (COPY on PostgreSQL, a held connection on SQLite) stores
    the same rows as the ORM path, idempotently, first of repeated ids winning, and says
    which (event, user) it stored."""
    from shared.storage.ingest import EventRow, EventStore

    def row(event_id: str, user: str, item: str, minutes: int) -> EventRow:
        return EventRow(event_id, user, item, "click", 1.0, T0 + timedelta(minutes=minutes))

    with session_scope(engine) as s:
        assert event_store.insert_events(s, events=[ev("orm", "u", "x", 1)]) == {"orm"}
    store = EventStore(engine)
    try:
        batch = [row("fast", "u", "y", 2), row("fast", "other", "z", 3), row("orm", "u", "x", 1)]
        assert store.store(batch) == [("fast", "u")]
        assert store.store([row("fast", "u", "y", 2)]) == []
        assert store.store([row(f"n{i}", f"v{i % 7}", "w", i) for i in range(500)]) == [
            (f"n{i}", f"v{i % 7}") for i in range(500)
        ], "arrival order"
    finally:
        store.close()
    with session_scope(engine) as s:
        assert event_store.count_events(s) == 502
        assert event_store.recent_history(s, user_id="u", limit=10) == [
            ("x", T0 + timedelta(minutes=1)),
            ("y", T0 + timedelta(minutes=2)),
        ]
        assert event_store.recent_history(s, user_id="other", limit=10) == []
        # The server's fast read gives the same events, times to the microsecond.
        event_store.insert_events(
            s, events=[ev("micro", "u", "m", 3).model_copy(update={"event_time": T0 + MICRO})]
        )
        expected = [
            (when.timestamp(), item)
            for item, when in event_store.recent_history(s, user_id="u", limit=2)
        ]
        assert event_store.recent_history_times(s, user_id="u", limit=2) == expected
        assert expected[0][0] == (T0 + MICRO).timestamp()
        assert event_store.recent_history_times(s, user_id="other", limit=2) == []
    if engine.dialect.name == "sqlite":
        with engine.connect() as c:
            stored = c.exec_driver_sql(
                "SELECT event_time, typeof(received_time) FROM feedback_event ORDER BY id LIMIT 2"
            )
            first, second = stored.all()
        assert first[1] == second[1] == "text"
        assert second[0] == first[0].replace("00:01:00", "00:02:00")  # the ORM's exact format


def test_impressions_are_stored_as_the_orm_stores_them(engine) -> None:
    """The impression writer's driver-level insert (ready tuples, JSON encoded once per
    rule) stores exactly what SQLAlchemy's own insert of the same values stores, times
    to the microsecond, audits included."""
    from sqlmodel import select

    from shared.model.rules import Effect, Rule, Sourced
    from shared.storage import impression_store
    from shared.storage.tables import Impression

    label = 'genre:b\u00e9bop "live"'
    boost = Sourced(Rule("boost", label=label, factor=2.0), "request", f"boost {label} x2")
    pin = Sourced(Rule("pin", item_id="i9", slot=3), "rule set x", "pin i9 at 3")
    effects = [Effect("i1", boost, "moved up"), Effect('i"9', pin, "pinned")]
    row = {
        "user_id": "u", "items": ["i1", 'i"9', "\u00e9"], "model_version": 3, "arm": "v3",
        "served_at": T0 + MICRO, "shadow_version": 4, "shadow_overlap": 0.5, "shadow_ms": 1.25,
    }  # fmt: skip
    with session_scope(engine) as s:
        impression_store.insert_impressions(
            s, rows=[{**row, "recommendation_id": "fast", "rules": effects}]
        )
        s.add(
            Impression(
                **{**row, "recommendation_id": "orm", "rules": [e.to_json() for e in effects]}
            )
        )
        impression_store.insert_impressions(
            s, rows=[{**row, "recommendation_id": "none", "rules": None, "shadow_version": None}]
        )
    with session_scope(engine) as s:
        stored = {i.recommendation_id: i for i in s.exec(select(Impression)).all()}
    fast, orm = stored["fast"], stored["orm"]
    assert [fast.items, fast.rules, fast.served_at] == [orm.items, orm.rules, orm.served_at]
    assert fast.rules[1] == {"item_id": 'i"9', "rule": "pin i9 at 3", "source": "rule set x",
                             "effect": "pinned"}  # fmt: skip
    assert (fast.shadow_version, fast.shadow_overlap, fast.shadow_ms) == (4, 0.5, 1.25)
    assert stored["none"].rules is None and stored["none"].shadow_version is None
    if engine.dialect.name == "sqlite":
        with engine.connect() as c:
            texts = c.exec_driver_sql("SELECT served_at FROM impression ORDER BY id").scalars()
            assert len(set(texts)) == 1, "the same time text from both paths"


def test_postgres_store_notifies_other_replicas(postgres_url: str) -> None:
    import psycopg

    from shared.storage.ingest import EventRow, EventStore

    migrate(postgres_url)
    engine = make_engine(postgres_url)
    listener = psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True)
    listener.execute("LISTEN recserve_test")
    store = EventStore(engine, notify_channel="recserve_test", origin="replica-a")
    try:
        rows = [EventRow(f"e{i}", f"user-{i % 3}", "x", "click", 1.0, T0) for i in range(9)]
        store.store(rows)
        (note,) = list(listener.notifies(timeout=5, stop_after=1))
        assert note.payload.split("\n") == ["replica-a", "user-0", "user-1", "user-2"]
        assert store.store(rows) == []
        assert list(listener.notifies(timeout=0.5)) == [], "nothing stored, nothing sent"
    finally:
        store.close()
        listener.close()
        engine.dispose()


def test_notify_payloads_fit_postgres_limit() -> None:
    from shared.storage.ingest import NOTIFY_PAYLOAD_BYTES, notify_payloads

    users = [f"user-{i:06d}-" + "x" * 100 for i in range(500)]
    payloads = notify_payloads("origin", users)
    assert len(payloads) > 1
    assert all(len(p.encode()) <= NOTIFY_PAYLOAD_BYTES for p in payloads)
    assert all(p.split("\n")[0] == "origin" for p in payloads)
    assert sorted(u for p in payloads for u in p.split("\n")[1:]) == sorted(users)


def test_history_is_ordered_by_event_time(engine) -> None:
    with session_scope(engine) as s:
        event_store.insert_events(
            s,
            events=[
                ev("1", "u", "late", 30),
                ev("2", "u", "early", 10),
                ev("3", "u", "mid", 20),
                ev("4", "other", "x", 5),
            ],
        )
    with session_scope(engine) as s:
        assert [i for i, _ in event_store.recent_history(s, user_id="u", limit=10)] == [
            "early",
            "mid",
            "late",
        ]
        assert [i for i, _ in event_store.recent_history(s, user_id="u", limit=2)] == [
            "mid",
            "late",
        ]
        sequences = event_store.user_sequences(
            s, watermark=event_store.max_event_row(s), batch_rows=2
        )
        assert sequences == {"u": ["early", "mid", "late"], "other": ["x"]}
        assert event_store.item_popularity(s, limit=1)[0][1] == 1


def test_exactly_one_active_model(engine) -> None:
    with session_scope(engine) as s:
        a = model_store.create_model_version(s, model=ModelVersion(status=ModelStatus.READY))
        b = model_store.create_model_version(s, model=ModelVersion(status=ModelStatus.READY))
        f = model_store.create_model_version(s, model=ModelVersion(status=ModelStatus.FAILED))
    with session_scope(engine) as s:
        model_store.activate_model(s, version=a.version, reason="test")
    with session_scope(engine) as s:
        model_store.activate_model(s, version=b.version, reason="test")
    with session_scope(engine) as s:
        active = model_store.get_active_model(s)
        assert active is not None and active.version == b.version
        assert model_store.get_model_version(s, version=a.version).status == ModelStatus.RETIRED
        with pytest.raises(FailedPrecondition):
            model_store.activate_model(s, version=f.version, reason="test")
        with pytest.raises(NotFound):
            model_store.activate_model(s, version=999, reason="test")


def test_the_database_itself_refuses_a_second_active_version(engine) -> None:
    from sqlalchemy import update
    from sqlalchemy.exc import IntegrityError

    with session_scope(engine) as s:
        a = model_store.create_model_version(s, model=ModelVersion(status=ModelStatus.ACTIVE))
        b = model_store.create_model_version(s, model=ModelVersion(status=ModelStatus.READY))
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        s.execute(
            update(ModelVersion)
            .where(ModelVersion.version == b.version)
            .values(status=ModelStatus.ACTIVE)
        )
    with session_scope(engine) as s:
        assert model_store.get_active_model(s).version == a.version  # type: ignore[union-attr]


def test_concurrent_activations_leave_one_active_version_and_a_true_history(engine) -> None:
    """Eight activations of eight versions at the same moment, each on its own
    connection: one version ends active, and each recorded activation names the version
    that was really active before it."""
    import threading

    with session_scope(engine) as s:
        versions = [
            int(
                model_store.create_model_version(
                    s, model=ModelVersion(status=ModelStatus.READY)
                ).version
            )
            for _ in range(8)
        ]
    start = threading.Barrier(len(versions))
    errors: list[BaseException] = []

    def activate(version: int) -> None:
        start.wait()
        try:
            with session_scope(engine) as s:
                model_store.activate_model(s, version=version, reason="race")
        except BaseException as exc:  # collected: every activation must succeed
            errors.append(exc)

    threads = [threading.Thread(target=activate, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with session_scope(engine) as s:
        active = [
            v for v in versions if model_store.get_model_version(s, version=v).status == "active"
        ]
        history = list(reversed(model_store.list_activations(s, limit=20)))
    assert len(active) == 1
    assert [h.previous_version for h in history] == [None, *[h.version for h in history[:-1]]]
    assert history[-1].version == active[0]


def test_prune_keeps_a_version_activated_after_it_was_listed(engine) -> None:
    with session_scope(engine) as s:
        old = model_store.create_model_version(s, model=ModelVersion(status=ModelStatus.READY))
        model_store.create_model_version(s, model=ModelVersion(status=ModelStatus.READY))
    with session_scope(engine) as s:
        listed = [m.version for m in model_store.prune_candidates(s, keep_ready=1)]
    assert listed == [old.version]
    with session_scope(engine) as s:  # activated between the listing and the deletion
        model_store.activate_model(s, version=int(old.version), reason="race")
    with session_scope(engine) as s:
        assert not model_store.claim_prune(s, version=int(old.version), keep_ready=1)
    with session_scope(engine) as s:
        assert (
            model_store.get_model_version(s, version=int(old.version)).status == ModelStatus.ACTIVE
        )


def test_prune_leaves_a_version_whose_activation_is_in_progress(engine) -> None:
    with session_scope(engine) as s:
        loading = model_store.create_model_version(s, model=ModelVersion(status=ModelStatus.READY))
        model_store.create_model_version(s, model=ModelVersion(status=ModelStatus.READY))
    with session_scope(engine) as s:  # an ActivateModel begins: its bundle is loading
        model_store.begin_activation(s, version=int(loading.version))
    with session_scope(engine) as s:
        assert model_store.prune_candidates(s, keep_ready=1) == []
        assert not model_store.claim_prune(s, version=int(loading.version), keep_ready=1)
    with session_scope(engine) as s:  # it failed to load: prunable again
        model_store.end_activation(s, version=int(loading.version))
    with session_scope(engine) as s:
        assert [m.version for m in model_store.prune_candidates(s, keep_ready=1)] == [
            loading.version
        ]


def test_ids_versions_and_watermarks_hold_64_bit_values(engine) -> None:
    big = 2**40 + 7
    with session_scope(engine) as s:
        s.add(Job(id=big, params={}, data_watermark=big, model_version=big))
        s.add(ModelVersion(version=big, data_watermark=big, job_id=big, status=ModelStatus.READY))
        s.add(ModelActivation(id=big, version=big, previous_version=big))
    if engine.dialect.name == "postgresql":  # explicit ids do not move PostgreSQL's sequences
        from sqlalchemy import text

        with session_scope(engine) as s:
            for sequence in ("job_id_seq", "model_version_version_seq"):
                s.execute(text("SELECT setval(:s, :v)"), {"s": sequence, "v": big})
    with session_scope(engine) as s:
        job = job_store.create_job(s, job=JobCreate(params={}))
        model = model_store.create_model_version(s, model=ModelVersion(status=ModelStatus.READY))
    assert int(job.id or 0) > big and int(model.version or 0) > big, "sequences go on past 2^31"
    with session_scope(engine) as s:
        assert job_store.get_job(s, job_id=big).data_watermark == big
        assert model_store.get_model_version(s, version=big).job_id == big


def test_job_claim_progress_curve_and_log(engine) -> None:
    with session_scope(engine) as s:
        job = job_store.create_job(s, job=JobCreate(params={"epochs": 3}))
    with session_scope(engine) as s:
        assert job_store.claim_job(s, job_id=job.id, worker="host:1")
    with session_scope(engine) as s:
        assert not job_store.claim_job(s, job_id=job.id, worker="host:2"), "claimed only once"
        job_store.report_job_progress(
            s,
            job_id=job.id,
            attempt=1,
            progress=0.5,
            message="half way",
            point={"epoch": 1, "loss": 2.5},
        )
    with session_scope(engine) as s:
        job_store.finish_job(s, job_id=job.id, status=JobStatus.FAILED, error="boom\ntrace")
    with session_scope(engine) as s:
        done = job_store.get_job(s, job_id=job.id)
        assert done.status == JobStatus.FAILED and done.progress == 0.5
        assert done.worker == "host:1" and done.attempts == 1
        assert done.curve == [{"epoch": 1, "loss": 2.5}]
        assert done.log[0].endswith("half way") and done.log[-1].endswith("error: boom")
        assert done.params == {"epochs": 3}
        assert done.lock_key is None, "a finished job releases the training lock"


def test_one_training_job_at_a_time(engine) -> None:
    with session_scope(engine) as s:
        first = job_store.create_job(s, job=JobCreate(params={}))
    with pytest.raises(FailedPrecondition, match=f"training job {first.id} is queued"):
        with session_scope(engine) as s:
            job_store.create_job(s, job=JobCreate(params={}))
    with session_scope(engine) as s:
        job_store.claim_job(s, job_id=first.id, worker="w")
    with pytest.raises(FailedPrecondition, match=f"CancelJob {first.id}"):
        with session_scope(engine) as s:
            job_store.create_job(s, job=JobCreate(params={}))
    with session_scope(engine) as s:
        job_store.finish_job(s, job_id=first.id, status=JobStatus.SUCCEEDED)
    with session_scope(engine) as s:
        second = job_store.create_job(s, job=JobCreate(params={}))
    assert second.id == first.id + 1


def test_the_database_enforces_the_training_lock(engine) -> None:
    """Two writers that both saw no holder: the unique lock key lets only one in."""
    from sqlalchemy.exc import IntegrityError

    from shared.storage.tables import TRAINING_LOCK, Job

    with session_scope(engine) as s:
        s.add(Job(params={}, lock_key=TRAINING_LOCK))
    with pytest.raises(IntegrityError):
        with session_scope(engine) as s:
            s.add(Job(params={}, lock_key=TRAINING_LOCK))


def test_cancel_queued_and_running_jobs(engine) -> None:
    with session_scope(engine) as s:
        queued = job_store.create_job(s, job=JobCreate(params={}))
    with session_scope(engine) as s:
        cancelled = job_store.cancel_job(s, job_id=queued.id)
        assert cancelled.status == JobStatus.CANCELLED and cancelled.lock_key is None
    with session_scope(engine) as s:
        assert not job_store.claim_job(s, job_id=queued.id, worker="w"), (
            "a cancelled job never starts"
        )
        running = job_store.create_job(s, job=JobCreate(params={}))
    with session_scope(engine) as s:
        assert job_store.claim_job(s, job_id=running.id, worker="w")
    with session_scope(engine) as s:
        flagged = job_store.cancel_job(s, job_id=running.id)
        assert flagged.status == JobStatus.RUNNING and flagged.cancel_requested
        job = job_store.report_job_progress(
            s, job_id=running.id, attempt=1, progress=0.1, message="epoch 1"
        )
        assert job.cancel_requested, "the worker learns of it at its next report"
    with session_scope(engine) as s:
        job_store.finish_job(s, job_id=running.id, status=JobStatus.CANCELLED)
    with session_scope(engine) as s:
        assert job_store.cancel_job(s, job_id=running.id).status == JobStatus.CANCELLED, (
            "idempotent"
        )
        done = job_store.create_job(s, job=JobCreate(params={}))
        job_store.finish_job(s, job_id=done.id, status=JobStatus.SUCCEEDED)
    with pytest.raises(FailedPrecondition, match="already finished"):
        with session_scope(engine) as s:
            job_store.cancel_job(s, job_id=done.id)


def later(seconds: float):
    from shared.storage.tables import utcnow

    return utcnow() + timedelta(seconds=seconds)


def test_the_reaper_requeues_a_lost_attempt_then_fails_the_last(engine) -> None:
    """A clock passed in, no sleeps: a lost attempt is requeued as the next one while
    attempts remain, the stale attempt's writes are refused, and the last lost attempt
    fails the job and frees the lock."""
    from shared.wire.errors import StaleAttempt

    with session_scope(engine) as s:
        job = job_store.create_job(s, job=JobCreate(params={}))
    with session_scope(engine) as s:
        assert job_store.claim_job(s, job_id=job.id, worker="dead-host:9") == 1
    with session_scope(engine) as s:
        found = job_store.reap_lost_jobs(s, lost_after_s=60, max_attempts=2, now=later(1))
        assert found == ([], []), "a fresh heartbeat is alive"
    with session_scope(engine) as s:
        assert job_store.heartbeat_job(s, job_id=job.id, attempt=1)
        found = job_store.reap_lost_jobs(s, lost_after_s=60, max_attempts=2, now=later(61))
        assert found == ([job.id], [])
    with session_scope(engine) as s:
        requeued = job_store.get_job(s, job_id=job.id)
        assert requeued.status == JobStatus.QUEUED and requeued.lock_key is not None
        assert "attempt 1 lost: dead-host:9" in requeued.log[-1]
        assert not job_store.heartbeat_job(s, job_id=job.id, attempt=1), "the stale beat is refused"
    with session_scope(engine) as s:
        assert job_store.claim_job(s, job_id=job.id, worker="other-host:3") == 2
    for stale_write in (
        lambda s: job_store.report_job_progress(
            s, job_id=job.id, attempt=1, progress=1, message="x"
        ),
        lambda s: job_store.finish_job(s, job_id=job.id, attempt=1, status=JobStatus.SUCCEEDED),
        lambda s: job_store.set_job_watermark(s, job_id=job.id, attempt=1, watermark=5),
        lambda s: job_store.fence(s, job_id=job.id, attempt=1),
    ):
        with pytest.raises(StaleAttempt), session_scope(engine) as s:
            stale_write(s)
    with session_scope(engine) as s:
        assert job_store.reap_lost_jobs(s, lost_after_s=60, max_attempts=2, now=later(61)) == (
            [],
            [job.id],
        )
    with session_scope(engine) as s:
        lost = job_store.get_job(s, job_id=job.id)
        assert lost.status == JobStatus.FAILED and lost.lock_key is None
        assert "attempt 2 lost: other-host:3" in lost.error and "of 2" in lost.error


def test_a_job_whose_message_was_lost_fails_after_the_queue_timeout(engine) -> None:
    with session_scope(engine) as s:
        job = job_store.create_job(s, job=JobCreate(params={}))
    with session_scope(engine) as s:
        assert job_store.expire_queued_jobs(s, queue_timeout_s=600, now=later(10)) == []
        assert job_store.expire_queued_jobs(s, queue_timeout_s=600, now=later(601)) == [job.id]
    with session_scope(engine) as s:
        expired = job_store.get_job(s, job_id=job.id)
        assert expired.status == JobStatus.FAILED and expired.lock_key is None
        assert "worker.queue_timeout_s" in expired.error
        job_store.create_job(s, job=JobCreate(params={}))  # the lock is free again


def test_migrations_match_the_models(engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == []


def test_event_pages_stream_every_user_in_time_order(engine, tmp_path: Path) -> None:
    """Pages cut users anywhere; order is user, event time, then arrival (row id)."""
    events = [ev(str(n), f"u{n % 3}", f"i{n}", 100 - n // 2) for n in range(30)]
    with session_scope(engine) as s:
        event_store.insert_events(s, events=events)
    with session_scope(engine) as s:
        watermark = event_store.max_event_row(s)
        pages = list(event_store.user_event_pages(s, watermark=watermark, batch_rows=4))
        assert [len(page) for page in pages] == [4] * 7 + [2]
        rows = [row for page in pages for row in page]
        assert [user for user, _ in rows] == sorted(user for user, _ in rows)
        for user in ("u0", "u1", "u2"):
            numbers = [n for n in range(30) if f"u{n % 3}" == user]
            by_time = sorted(numbers, key=lambda n: (100 - n // 2, n))
            assert [item for u, item in rows if u == user] == [f"i{n}" for n in by_time]
        assert (
            sum(map(len, event_store.user_event_pages(s, watermark=watermark - 5, batch_rows=4)))
            == 25
        )


def test_event_pages_carry_each_events_weight_when_asked(engine) -> None:
    from shared.config import EventSettings

    events = EventSettings(kinds={"view": {"weight": 0.1}, "return": {"role": "negative"}})
    kinds = ["view", "purchase", "return", "view"]
    rows = [
        ev(str(n), "u1", f"i{n}", n).model_copy(update={"kind": kind})
        for n, kind in enumerate(kinds)
    ]
    with session_scope(engine) as s:
        event_store.insert_events(s, events=rows)
    with session_scope(engine) as s:
        watermark = event_store.max_event_row(s)
        pages = event_store.user_event_pages(
            s, watermark=watermark, negative=events.negative, weight=events.weight
        )
        assert [row for page in pages for row in page] == [
            ("u1", "i0", pytest.approx(0.1)),
            ("u1", "i1", 1.0),
            ("u1", "i3", pytest.approx(0.1)),
        ]


def test_retention_deletes_old_impressions_and_keeps_events_by_default(engine, tmp_path) -> None:
    from shared.config import Settings, WorkerSettings
    from shared.storage.retention import apply_data_retention
    from shared.storage.tables import Impression, utcnow

    now = utcnow()
    with session_scope(engine) as s:
        event_store.insert_events(
            s,
            events=[
                FeedbackEventCreate(
                    event_id=f"old-{n}",
                    user_id="u",
                    item_id="i",
                    event_time=now - timedelta(days=400),
                )
                for n in range(3)
            ]
            + [FeedbackEventCreate(event_id="new", user_id="u", item_id="i", event_time=now)],
        )
        for n, age in enumerate((100, 91, 89, 1)):
            s.add(
                Impression(
                    recommendation_id=f"r{n}",
                    user_id="u",
                    items=["i"],
                    model_version=1,
                    served_at=now - timedelta(days=age),
                )
            )
    settings = Settings(data_dir=tmp_path)
    done = apply_data_retention(settings, engine, now=now)
    assert (done.events, done.impressions) == (0, 2), "events forever, impressions 90 days"
    yearly = settings.model_copy(update={"worker": WorkerSettings(retain_events_days=365)})
    assert apply_data_retention(yearly, engine, now=now).events == 3
    with session_scope(engine) as s:
        assert event_store.count_events(s) == 1


def test_postgres_sessions_pin_synchronous_commit(postgres_url: str) -> None:
    """A database whose default is synchronous_commit=off still gets durable commits."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(postgres_url).database
    admin = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    admin.dispose()
    plain = create_engine(postgres_url)
    with plain.connect() as conn:
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == "off"
    plain.dispose()
    engine = make_engine(postgres_url, statement_timeout_s=5)
    with engine.connect() as conn:
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "5s"
    engine.dispose()
