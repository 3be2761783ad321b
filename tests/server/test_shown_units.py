"""Shown-item capping alone: an injected clock, the impression log's answer stubbed; no
database, no sockets, no sleeps (the unit layer)."""

from __future__ import annotations

from typing import Any

import pytest

from server.pipeline.shown import ShownLog
from shared.config import ServerSettings

pytestmark = pytest.mark.unit
HOUR = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def log(stored: list[Any] | None = None, **settings: Any) -> tuple[ShownLog, Clock, list[str]]:
    clock = Clock()
    shown = ShownLog(None, None, ServerSettings(**settings), clock=clock)  # type: ignore[arg-type]
    reads: list[str] = []

    def select(user_id: str, since: object) -> list[Any]:
        reads.append(user_id)
        return list(stored or [])

    shown._select = select  # type: ignore[method-assign]
    return shown, clock, reads


async def test_a_served_list_counts_at_once_and_n_showings_leave_an_item_out() -> None:
    shown, clock, reads = log(shown_cap=2)
    no_events: dict[str, float] = {}
    assert await shown.capped("u", 2, 24 * HOUR, lambda: no_events) == frozenset()
    shown.record("u", "r1", ["a", "b"])
    clock.now += 1
    assert await shown.capped("u", 2, 24 * HOUR, lambda: no_events) == frozenset()
    shown.record("u", "r2", ["a", "c"])
    assert await shown.capped("u", 2, 24 * HOUR, lambda: no_events) == {"a"}
    assert reads == ["u"], "read once; this replica's showings are counted as served"


async def test_an_interaction_since_resets_the_count() -> None:
    shown, clock, _ = log(shown_cap=2)
    shown.record("u", "r1", ["a"])
    clock.now += 10
    clicked = clock.now
    clock.now += 10
    shown.record("u", "r2", ["a"])
    assert await shown.capped("u", 2, 24 * HOUR, lambda: {"a": clicked}) == frozenset()
    clock.now += 10
    shown.record("u", "r3", ["a"])
    assert await shown.capped("u", 2, 24 * HOUR, lambda: {"a": clicked}) == {"a"}


async def test_showings_older_than_the_window_do_not_count() -> None:
    shown, clock, _ = log(shown_cap=2)
    shown.record("u", "r1", ["a"])
    clock.now += 2 * HOUR
    shown.record("u", "r2", ["a"])
    assert await shown.capped("u", 2, 1 * HOUR, dict) == frozenset()
    assert await shown.capped("u", 2, 3 * HOUR, dict) == {"a"}


async def test_stored_lists_merge_with_this_replicas_own_without_counting_twice() -> None:
    clock_now = 1_000_000.0
    stored = [("r1", clock_now - 50, ("a", "b")), ("other-replica", clock_now - 40, ("a",))]
    shown, clock, reads = log(stored, shown_cap=3)
    shown.record("u", "r1", ["a", "b"])  # this replica's, stored since
    assert await shown.capped("u", 3, 24 * HOUR, dict) == frozenset()
    shown.record("u", "r3", ["a"])  # not stored yet
    assert await shown.capped("u", 3, 24 * HOUR, dict) == {"a"}
    shown.forget(["u"])  # another replica showed u a list: read again, keep r3
    assert await shown.capped("u", 3, 24 * HOUR, dict) == {"a"}
    assert reads == ["u", "u"]


def test_a_request_overrides_the_cap_and_the_window_or_switches_it_off() -> None:
    shown, _, _ = log(shown_cap=3, shown_window_h=12)
    assert shown.limits(0, 0) == (3, 12 * HOUR)
    assert shown.limits(5, 2) == (5, 2 * HOUR)
    assert shown.limits(-1, 0) == (0, 0.0)
    off, _, _ = log()
    assert off.limits(0, 0)[0] == 0, "off by default"
    off.record("u", "r1", ["a"])
    assert not off._users, "with capping off nobody is followed"
    assert off.limits(2, 0) == (2, 24 * HOUR)


async def test_users_are_bounded() -> None:
    shown, _, _ = log(shown_cap=1, shown_cache_users=3)
    for n in range(10):
        shown.record(f"u{n}", f"r{n}", ["a"])
    assert len(shown._users) == 3
