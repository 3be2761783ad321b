"""Keeping replicas' per-user caches consistent: a Feedback accepted by any replica is
seen by the next Recommend on every replica.

Each server caches users' recent histories and encoded states. When another replica
stores events, this replica drops those users' entries, so their next Recommend reads the
database again.

- **PostgreSQL (push)**: the writer's transaction ends with ``pg_notify`` on CHANNEL
  naming the users whose events it stored (shared.storage.ingest), so the notification goes out
  exactly when the events become visible. Every replica LISTENs on its own connection,
  in a thread, and hands the user ids to the event loop. A replica ignores its own
  notifications (its caches were updated by the Feedback itself). After the listening
  connection is lost and re-established, notifications may have been missed, so every
  cached history is dropped.
- **Other databases (poll)**: with several server processes on SQLite (``--workers``),
  each polls the event table for rows newer than the last one it saw, every
  ``server.invalidation_poll_s``.
- **Read-your-writes across replicas**: a notification can reach this process while a
  Recommend for that user is already queued on the event loop (the listening thread
  still has to read it and hand it over). So before a Recommend reads the caches,
  ``caught_up()`` waits, at most CATCH_UP_S, while a notification is on the listening
  socket unread or read but not yet applied: one non-blocking ``select`` per Recommend.
- The history TTL (``server.history_ttl_s``) stays as a safety net only.
- **Other changes** (a rule set put or deleted; lists shown to users, for shown-item
  capping) travel the same way: on PostgreSQL a NOTIFY on change_feed.CHANGES, sent when
  the change commits; elsewhere the change table (and the impression table), polled with
  the events. Each is handed to ``changed(topic, subject)`` on the
  event loop, this replica's own included (applying a change twice is harmless). After a
  lost connection, ``changed("*", "")``: everything may have changed.
"""

from __future__ import annotations

import asyncio
import logging
import select
import threading
import time
from collections.abc import Callable

from sqlalchemy.engine import Engine, make_url

from shared.storage import change_feed, event_store, impression_store

log = logging.getLogger(__name__)

CHANNEL = "recserve_feedback"
POLL_ROWS = 10_000
"""Events read per poll where there is no change feed (SQLite)."""
START_WAIT_S = 5.0
"""The longest start() waits for the first LISTEN or the poller's starting point."""
CATCH_UP_S = 0.02
"""The longest a Recommend waits for notifications already on their way."""
Forget = Callable[[list[str]], None]
"""Called on the event loop with the user ids to drop; [] with ``everyone`` set."""
Changed = Callable[[str, str], None]
"""Called on the event loop with a change's topic and subject."""


class Invalidations:
    """The listening side; ``start()`` spawns the thread, ``stop()`` ends it."""

    def __init__(
        self,
        engine: Engine,
        *,
        origin: str,
        forget: Forget,
        forget_all: Callable[[], None],
        poll_s: float,
        changed: Changed | None = None,
    ) -> None:
        self._changed = changed
        self._engine = engine
        self._origin = origin
        self._forget = forget
        self._forget_all = forget_all
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.received = 0
        """Notifications from other replicas handed to the event loop so far."""
        self.applied = 0
        """Of those, applied to the caches (on the event loop)."""
        self._fd: int | None = None  # the listening connection's socket, while connected

    @property
    def mode(self) -> str:
        return "notify" if self._engine.dialect.name == "postgresql" else "poll"

    def start(self) -> None:
        """Starts following, and returns once the listener listens (or the poller knows
        where to start), at most START_WAIT_S: what the caller loads next (the rule sets)
        then cannot miss a change made meanwhile."""
        self._loop = asyncio.get_running_loop()
        target = self._listen if self.mode == "notify" else self._poll
        self._thread = threading.Thread(target=target, name="invalidations", daemon=True)
        self._thread.start()
        self._ready.wait(START_WAIT_S)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _deliver(self, users: list[str]) -> None:
        if users and self._loop is not None and not self._loop.is_closed():
            self.received += 1
            self._loop.call_soon_threadsafe(self._apply, users)

    def _apply(self, users: list[str]) -> None:
        self.applied += 1
        self._forget(users)

    def _deliver_change(self, topic: str, subject: str) -> None:
        if self._changed is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._changed, topic, subject)

    def behind(self) -> bool:
        """True while a notification is unread on the listening socket, or read and not
        yet applied."""
        if self.applied != self.received:
            return True
        fd = self._fd
        if fd is None:
            return False
        try:
            return bool(select.select([fd], [], [], 0)[0])
        except (OSError, ValueError):  # the connection closed under us
            return False

    async def caught_up(self) -> None:
        """Returns once every notification already on its way is applied, or after
        CATCH_UP_S (the history TTL is the safety net beyond it)."""
        deadline = time.monotonic() + CATCH_UP_S
        # Polled: "unread on the socket" has no event to wait on. Sleeping lets the loop
        # block in its poll, so the listening thread gets to read and hand over.
        while self.behind() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.0005)

    def _listen(self) -> None:
        import psycopg

        url = make_url(self._engine.url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                    change_feed.listen(conn, CHANNEL)
                    change_feed.listen(conn, change_feed.CHANGES)
                    self._fd = conn.fileno()
                    self._ready.set()
                    if not first and self._loop is not None:
                        # Notifications sent while we were away are lost: start afresh.
                        self._loop.call_soon_threadsafe(self._forget_all)
                        self._deliver_change("*", "")
                    first = False
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            origin, _, body = note.payload.partition("\n")
                            if note.channel == change_feed.CHANGES:
                                topic, _, subject = body.partition("\n")
                                # A replica counts its own showings when it serves them.
                                if topic != "shown" or origin != self._origin:
                                    self._deliver_change(topic, subject)
                            elif origin != self._origin:
                                self._deliver(body.split("\n"))
                self._fd = None
            except Exception:
                self._fd = None
                if self._stop.is_set():
                    return
                log.warning(
                    "invalidation listener lost its connection; reconnecting", exc_info=True
                )
                self._stop.wait(1.0)

    def _poll(self) -> None:
        last = last_change = last_shown = None
        wait = 0.0  # the starting point at once (start() waits for it), then every poll_s
        while not self._stop.wait(wait):
            wait = self._poll_s
            try:
                with self._engine.connect() as conn:
                    if last is None or last_change is None or last_shown is None:
                        last = event_store.max_event_row(conn)
                        last_change = change_feed.latest_change(conn)
                        last_shown = impression_store.latest_impression(conn)
                        self._ready.set()
                        continue
                    rows = event_store.users_after(conn, row=last, limit=POLL_ROWS)
                    changes = change_feed.changes_after(conn, after=last_change, limit=POLL_ROWS)
                    shown = impression_store.users_shown_after(
                        conn, after=last_shown, limit=POLL_ROWS
                    )
            except Exception:
                log.warning("invalidation poll failed", exc_info=True)
                continue
            if rows:
                last = rows[-1][0]
                self._deliver(sorted({user for _, user in rows}))
            for change_id, topic, subject, _ in changes:
                last_change = change_id
                self._deliver_change(topic, subject)
            if shown:  # lists other processes served (and this one's: read again, harmless)
                last_shown = shown[-1][0]
                self._deliver_change("shown", "\n".join(sorted({u for _, u in shown})))
