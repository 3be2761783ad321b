"""Streaming import of interaction files into the feedback table.

Formats (``--format``, or guessed from the name):
- ``seq``: ``user item`` per line, chronological within each user, no timestamps
  (the SASRec files). Event times are synthesised as one second apart per user, from
  2000-01-01, so the file order is the time order.
- ``movielens``: ``user::item::rating::timestamp`` (or tab separated), seconds.
- ``inter``: RecBole ``.inter`` TSV with a header naming user_id, item_id and timestamp
  columns (``rating`` becomes the value).
- ``csv``: a header with ``user``, ``item``, ``timestamp`` and optionally ``kind``,
  ``value``. Timestamps are Unix seconds or milliseconds (values above 1e11 are ms), or
  ISO 8601.

Event ids are derived from the content (user, item, time, kind; for ``seq`` the user's
ordinal), so importing the same file again stores nothing new. Lines are read and
inserted in chunks, so memory stays bounded. A malformed line raises ImportLineError
with its line number, or is counted and skipped when ``skip_bad`` is set.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from shared.storage import user_store
from shared.storage.engine import session_scope
from shared.storage.ingest import EventRow, EventStore
from shared.wire.errors import InvalidArgument

FORMATS = ("seq", "movielens", "inter", "csv")
SEQ_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
CHUNK = 20_000


class ImportLineError(InvalidArgument):
    def __init__(self, path: Path, line_no: int, message: str) -> None:
        super().__init__(f"{path}:{line_no}", message)
        self.line_no = line_no


@dataclass
class ImportSummary:
    lines: int = 0
    stored: int = 0
    duplicates: int = 0
    skipped: int = 0
    deleted_user_events: int = 0
    """Refused: their user was deleted (DeleteUser) after the event's time."""
    users: int = 0
    seconds: float = 0.0
    quality: dict[str, Any] = field(default_factory=dict)
    """The data-quality report (DataQuality.report)."""


MIN_HISTORY = 3
"""Events a user needs to be evaluated (the leave-one-out split holds out two)."""
BOT_EVENTS_PER_MINUTE = 30
"""More events than this in one minute of one user's time flags the user as a suspected
bot (a person does not click 30 items a minute)."""


class DataQuality:
    """Counts what an import read, in one pass and O(users + items) memory: the report
    `recserve import` prints and saves.

    Event times are the file's; the ``seq`` format has none (its times are each user's
    ordinals), so out-of-order events and bots are not judged there. Suspected bots are
    flagged in the database (flagged_user), and training leaves them out
    (training.exclude_flagged).
    """

    def __init__(self, *, timestamps: bool) -> None:
        self.timestamps = timestamps
        self.per_user: dict[str, int] = {}
        self.per_item: dict[str, int] = {}
        self.last_time: dict[str, datetime] = {}
        self.minute: dict[str, tuple[int, int]] = {}  # user -> (minute, events in it)
        self.bots: dict[str, int] = {}  # user -> most events in one minute
        self.out_of_order = 0
        self.first: datetime | None = None
        self.last: datetime | None = None

    def add(self, event: EventRow) -> None:
        user, when = event.user_id, event.event_time
        self.per_user[user] = self.per_user.get(user, 0) + 1
        self.per_item[event.item_id] = self.per_item.get(event.item_id, 0) + 1
        self.first = when if self.first is None or when < self.first else self.first
        self.last = when if self.last is None or when > self.last else self.last
        if not self.timestamps:
            return
        previous = self.last_time.get(user)
        if previous is not None and when < previous:
            self.out_of_order += 1
        self.last_time[user] = when if previous is None else max(previous, when)
        minute = int(when.timestamp() // 60)
        current, count = self.minute.get(user, (minute, 0))
        count = count + 1 if current == minute else 1
        self.minute[user] = (minute, count)
        if count > BOT_EVENTS_PER_MINUTE:
            self.bots[user] = max(count, self.bots.get(user, 0))

    def report(self, summary: ImportSummary) -> dict[str, Any]:
        judged = self.timestamps
        return {
            "rows_read": summary.lines,
            "malformed": summary.skipped,
            "duplicates_dropped": summary.duplicates,
            "stored": summary.stored,
            "users": len(self.per_user),
            "items": len(self.per_item),
            "min_history": MIN_HISTORY,
            "users_below_min_history": sum(1 for n in self.per_user.values() if n < MIN_HISTORY),
            "items_seen_once": sum(1 for n in self.per_item.values() if n == 1),
            "first_event": self.first.isoformat() if self.first and judged else None,
            "last_event": self.last.isoformat() if self.last and judged else None,
            "events_out_of_order": self.out_of_order if judged else None,
            "bot_events_per_minute": BOT_EVENTS_PER_MINUTE,
            "suspected_bots": len(self.bots) if judged else None,
            "suspected_bot_users": sorted(self.bots, key=lambda u: -self.bots[u])[:100],
            "timestamps": "from the file" if judged else "none (seq format): not judged",
        }


def guess_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".inter"):
        return "inter"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".dat"):
        return "movielens"
    with path.open(encoding="utf-8", errors="replace") as handle:
        first = handle.readline()
    if "::" in first:
        return "movielens"
    if len(first.split()) == 2:
        return "seq"
    if len(first.split("\t")) >= 3 and first.split("\t")[0].strip().isdigit():
        return "movielens"
    raise InvalidArgument("format", f"cannot guess the format of {path}; pass one of {FORMATS}")


def _event_id(*parts: object) -> str:
    return "imp-" + hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _parse_time(raw: str) -> datetime:
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        parsed = datetime.fromisoformat(raw)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if value > 1e11:
        value /= 1000.0
    return datetime.fromtimestamp(value, UTC)


Parsed = tuple[int, EventRow | str]  # (line number, event or error message)


def _read_seq(path: Path) -> Iterator[Parsed]:
    # A user's ordinal counts their lines wherever they are in the file, so lines of one
    # user that are not contiguous still get distinct ids and increasing times.
    ordinals: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                yield line_no, f"expected 'user item', got {len(parts)} fields"
                continue
            user, item = parts
            ordinal = ordinals[user] = ordinals.get(user, -1) + 1
            yield (
                line_no,
                EventRow(
                    _event_id("seq", user, ordinal, item),
                    user,
                    item,
                    "interaction",
                    1.0,
                    SEQ_EPOCH + timedelta(seconds=ordinal),
                ),
            )


def _read_movielens(path: Path) -> Iterator[Parsed]:
    with path.open(encoding="latin-1") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("::") if "::" in line else line.rstrip("\n").split("\t")
            if len(parts) < 4:
                yield line_no, "expected user::item::rating::timestamp"
                continue
            try:
                rating, when = float(parts[2]), _parse_time(parts[3])
            except ValueError as exc:
                yield line_no, f"bad rating or timestamp ({exc})"
                continue
            user, item = parts[0].strip(), parts[1].strip()
            yield (
                line_no,
                EventRow(
                    _event_id(user, item, when.timestamp(), "rating"),
                    user,
                    item,
                    "rating",
                    rating,
                    when,
                ),
            )


def _read_table(
    path: Path, delimiter: str, columns: dict[str, tuple[str, ...]]
) -> Iterator[Parsed]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = [h.split(":")[0].strip().lower() for h in next(reader, [])]
        index: dict[str, int] = {}
        for key, names in columns.items():
            for name in names:
                if name in header:
                    index[key] = header.index(name)
                    break
        missing = [k for k in ("user", "item", "timestamp") if k not in index]
        if missing:
            yield 1, f"header lacks column(s) {missing}; it has {header}"
            return
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                user, item = row[index["user"]].strip(), row[index["item"]].strip()
                when = _parse_time(row[index["timestamp"]])
                kind = (
                    row[index["kind"]].strip()
                    if "kind" in index
                    else ("rating" if "value" in index else "click")
                )
                value = float(row[index["value"]]) if "value" in index else 1.0
            except (IndexError, ValueError) as exc:
                yield line_no, f"cannot parse row ({exc})"
                continue
            if not user or not item:
                yield line_no, "empty user or item"
                continue
            yield (
                line_no,
                EventRow(
                    _event_id(user, item, when.timestamp(), kind),
                    user,
                    item,
                    kind or "click",
                    value,
                    when,
                ),
            )


def read_events(path: Path, fmt: str) -> Iterator[Parsed]:
    if fmt == "seq":
        return _read_seq(path)
    if fmt == "movielens":
        return _read_movielens(path)
    if fmt == "inter":
        return _read_table(
            path,
            "\t",
            {
                "user": ("user_id",),
                "item": ("item_id",),
                "timestamp": ("timestamp",),
                "value": ("rating",),
            },
        )
    if fmt == "csv":
        return _read_table(
            path,
            ",",
            {
                "user": ("user", "user_id"),
                "item": ("item", "item_id"),
                "timestamp": ("timestamp", "time", "ts"),
                "kind": ("kind",),
                "value": ("value", "rating"),
            },
        )
    raise InvalidArgument("format", f"is {fmt!r}; accepted: {', '.join(FORMATS)}")


def flag_bots(engine: Engine, quality: DataQuality, deleted_users: set[str]) -> int:
    """Flags the suspected bots an import found (a deleted user is neither flagged nor
    named in the report again); returns how many were new."""
    for user in deleted_users:
        quality.bots.pop(user, None)
    flags = {
        user: ("bot", f"{count} events in one minute (more than {BOT_EVENTS_PER_MINUTE})")
        for user, count in quality.bots.items()
    }
    with session_scope(engine) as session:
        return user_store.flag_users(session, flags=flags)


def import_file(
    engine: Engine,
    path: Path,
    *,
    fmt: str | None = None,
    skip_bad: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    on_skip: Callable[[int, str], None] | None = None,
) -> ImportSummary:
    """Imports ``path``; returns counts. on_progress(bytes_read_estimate, lines)."""
    import time

    started = time.perf_counter()
    if not path.is_file():
        raise InvalidArgument("file", f"{path} does not exist or is not a file")
    fmt = fmt or guess_format(path)
    summary = ImportSummary()
    chunk: list[EventRow] = []
    store = EventStore(engine)  # the Feedback writer's path: COPY on PostgreSQL

    deleted_users: set[str] = set()

    def flush() -> None:
        stored = store.store(chunk)
        summary.stored += len(stored)
        summary.deleted_user_events += len(store.refused)
        deleted_users.update(user for _, user in store.refused)
        summary.duplicates += len(chunk) - len(stored) - len(store.refused)
        chunk.clear()

    quality = DataQuality(timestamps=fmt != "seq")
    for line_no, parsed in read_events(path, fmt):
        summary.lines = line_no
        if isinstance(parsed, str):
            if not skip_bad:
                raise ImportLineError(
                    path, line_no, parsed + " (use --skip-bad to skip such lines)"
                )
            summary.skipped += 1
            if on_skip:
                on_skip(line_no, parsed)
            continue
        quality.add(parsed)
        chunk.append(parsed)
        if len(chunk) >= CHUNK:
            flush()
            if on_progress:
                on_progress(line_no, summary.stored)
    if chunk:
        flush()
    store.close()
    summary.users = len(quality.per_user)
    flagged = flag_bots(engine, quality, deleted_users)
    summary.seconds = time.perf_counter() - started
    summary.quality = {**quality.report(summary), "newly_flagged_users": flagged}
    return summary
