"""Cross-replica invalidation on PostgreSQL: a Recommend waits for notifications that
have already reached this process before it reads the caches."""

from __future__ import annotations

import asyncio
import select
import time

from sqlalchemy import text

from server.invalidation import CHANNEL, Invalidations
from shared.storage.engine import make_engine


def arrived(listener: Invalidations, before: int, limit_s: float = 5.0) -> bool:
    """Blocks the event loop until the notification is on the socket or handed over by
    the listening thread (then not yet applied: the loop is blocked here)."""
    fd = listener._fd
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if listener.received > before or (fd is not None and select.select([fd], [], [], 0)[0]):
            return True
        time.sleep(0.0002)
    return False


async def test_a_notification_on_the_socket_is_applied_before_the_caches_are_read(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url)
    forgotten: list[list[str]] = []
    listener = Invalidations(
        engine, origin="me", forget=forgotten.append, forget_all=lambda: None, poll_s=1.0
    )
    listener.start()
    try:
        deadline = time.monotonic() + 10
        while listener._fd is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert listener._fd is not None, "listening (LISTEN runs before the socket is shared)"
        for n in range(5):
            with engine.begin() as conn:  # another replica's commit
                conn.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": CHANNEL, "payload": f"other\nuser-{n}"},
                )
            # The notification has reached this process: a Recommend arriving now must
            # not read the caches before it is applied. (Blocking the loop here keeps the
            # handover from happening by itself.)
            assert arrived(listener, n), "delivered"
            await listener.caught_up()
            assert forgotten[-1:] == [[f"user-{n}"]], n
        with engine.begin() as conn:  # this replica's own notification: ignored
            conn.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": CHANNEL, "payload": "me\nuser-x"},
            )
        arrived(listener, 5, limit_s=0.5)
        await listener.caught_up()
        assert len(forgotten) == 5 and listener.applied == listener.received == 5
        started = time.monotonic()
        await listener.caught_up()  # nothing on its way: no wait
        assert time.monotonic() - started < 0.01
    finally:
        listener.stop()
        engine.dispose()
