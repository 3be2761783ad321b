"""SQLite writes in one process take turns first come, first served."""

from __future__ import annotations

import threading
import time

from sqlalchemy import create_engine, text

from shared.storage import write_gate
from shared.storage.engine import make_engine
from shared.storage.write_gate import FifoGate

DEADLINE_S = 10.0


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def test_the_gate_goes_to_its_waiters_in_the_order_they_came() -> None:
    gate = FifoGate()
    assert gate.acquire(1)
    order: list[int] = []

    def waiter(n: int) -> None:
        assert gate.acquire(DEADLINE_S)
        order.append(n)
        gate.release()

    threads = []
    for n in range(4):
        threads.append(threading.Thread(target=waiter, args=(n,)))
        threads[-1].start()
        _wait_until(lambda n=n: gate.waiting == n + 1, f"waiter {n} to queue")
    gate.release()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert order == [0, 1, 2, 3]
    assert gate.acquire(0.01)  # free again once everyone is through


def test_a_wait_that_runs_out_leaves_the_queue() -> None:
    gate = FifoGate()
    assert gate.acquire(1)
    assert not gate.acquire(0.01)
    assert gate.waiting == 0
    gate.release()
    assert gate.acquire(0.01)


def test_a_writer_gets_its_turn_between_the_writes_of_a_busy_one(tmp_path) -> None:
    """The shape of the fault: one thread commits small writes back to back (the
    impression log under load); another writer must get in after at most a few of them,
    not poll SQLite's lock until its busy timeout runs out."""
    engine = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (who TEXT)"))
    stop = threading.Event()
    busy_writes: list[int] = []

    def busy() -> None:
        while not stop.is_set():
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES ('busy')"))
                time.sleep(0.002)  # the write's own work, holding the lock
            busy_writes.append(1)

    hog = threading.Thread(target=busy)
    hog.start()
    try:
        _wait_until(lambda: len(busy_writes) >= 5, "the busy writer to run")
        before = len(busy_writes)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES ('other')"))
        waited_for = len(busy_writes) - before
    finally:
        stop.set()
        hog.join(DEADLINE_S)
    assert waited_for <= 2, f"the other writer waited out {waited_for} of the busy one's writes"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t WHERE who = 'other'")).scalar() == 1


def test_the_gate_is_held_from_a_write_to_the_transactions_end(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    gate = write_gate.install(engine, timeout_s=DEADLINE_S)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    assert _free(gate)

    writer = engine.connect()
    transaction = writer.begin()
    assert writer.execute(text("SELECT count(*) FROM t")).scalar() == 0
    assert _free(gate)  # reading takes no turn
    writer.execute(text("INSERT INTO t VALUES (1)"))
    assert not _free(gate)
    with engine.connect() as reader:  # others' reads go straight through
        assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 0
    transaction.rollback()
    assert _free(gate)

    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))
    assert _free(gate)

    writer.begin()
    writer.execute(text("UPDATE t SET n = 3"))
    writer.close()  # back to the pool mid-transaction: rolled back, and the turn ends
    assert _free(gate)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t")).scalars().all() == [2]


def _free(gate: FifoGate) -> bool:
    if gate.acquire(0.001):
        gate.release()
        return True
    return False
