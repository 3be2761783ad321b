"""First come, first served SQLite writes within one process.

SQLite lets one connection write at a time. A connection that finds the write lock taken
polls for it (the busy timeout: sleeps of 1 ms growing to 100 ms), and a poller has no
place in a queue: under load the server's impression log writes a batch every few
milliseconds, each write finds the lock free, and a poller that wakes while one is under
way sleeps again. An activation, a replica report or a Feedback commit then waited past
the 30 s busy timeout and failed with "database is locked" while the impression log went
on writing.

So every SQLite engine of a recserve process passes its writes through a gate: the first
write statement of a transaction (INSERT, UPDATE, DELETE, REPLACE, or DDL) waits its turn
in a FIFO queue, and the transaction's end (commit, rollback, or the connection's return
to the pool) hands the gate to the longest waiter. The hand-over comes as the commit
starts (SQLAlchemy has no event after it), so the next writer may still meet the lock
for the commit's own few milliseconds, in SQLite's short first polls. Reads never wait.
Writers in other processes (workers, the CLI) still meet SQLite's own polling; each
process is one writer among them. A write that waits longer than the busy timeout goes
on without the gate, and SQLite's own timeout then decides, as it did before.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
_HELD = "recserve_write_gate"
"""Key in a pooled connection's ``info``: this connection's transaction holds the gate."""


class FifoGate:
    """A lock handed to its waiters in the order they came; released by any thread."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, timeout_s: float) -> bool:
        """True when the gate is this caller's; False after ``timeout_s`` without it."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        if turn.acquire(timeout=timeout_s):
            return True
        with self._mutex:
            if turn in self._waiters:
                self._waiters.remove(turn)
                return False
        return True  # handed over just as the wait ran out: the gate is ours

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()  # handed over: the gate stays held
            else:
                self._held = False

    @property
    def waiting(self) -> int:
        return len(self._waiters)


def install(engine: Engine, timeout_s: float) -> FifoGate:
    """Gives ``engine``'s writes a FifoGate (see the module docstring); returns it."""
    gate = FifoGate()

    def before_execute(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if conn.info.get(_HELD) or not _is_write(statement):
            return
        if gate.acquire(timeout_s):
            conn.info[_HELD] = True

    def end(info: dict[str, Any]) -> None:
        if info.pop(_HELD, False):
            gate.release()

    event.listen(engine, "before_cursor_execute", before_execute)
    event.listen(engine, "commit", lambda conn: end(conn.info))
    event.listen(engine, "rollback", lambda conn: end(conn.info))
    for name in ("checkin", "reset", "invalidate", "close"):
        event.listen(engine.pool, name, lambda _dbapi, record, *_: end(record.info))
    return gate


def _is_write(statement: str) -> bool:
    return statement.lstrip()[:8].upper().startswith(_WRITES)
