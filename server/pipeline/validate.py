"""The validate stage: every field of a request checked before any work, each error naming
the field and what would be accepted (InvalidArgument, mapped to INVALID_ARGUMENT)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from server.pipeline.request import FeedbackEventIn, RecommendQuery, SimilarQuery
from shared.config import ServerSettings
from shared.model.rules import request_rules
from shared.storage.ingest import EventRow
from shared.wire.errors import InvalidArgument

MAX_ID_LEN = 256
MAX_EVENT_ID_LEN = 128
MAX_RECOMMENDATION_ID_LEN = 64
MAX_LABEL_FILTERS = 100
MAX_LABEL_LEN = 64
DEFAULT_K = 10
KIND_PATTERN = re.compile(r"^[a-z0-9_]{1,32}$")
FUTURE_SLACK_MS = 86_400_000
MAX_EPOCH_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last millisecond a stored time can hold."""


def check_id(field_name: str, value: str, max_len: int = MAX_ID_LEN) -> None:
    """An id: 1..max_len printable characters. Control characters (NUL included), format
    characters (bidirectional overrides, zero-width joiners) and separators other than
    the plain space are refused: they break storage, logs and what an operator reads."""
    if not value:
        raise InvalidArgument(
            field_name, f"is required: a non-empty string of 1..{max_len} characters"
        )
    if len(value) > max_len:
        raise InvalidArgument(
            field_name, f"is {len(value)} characters long; at most {max_len} are accepted"
        )
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise InvalidArgument(
            field_name,
            f"contains the character U+{ord(bad):04X} at position {value.index(bad)}; "
            "accepted: printable characters only (no control, format or bidi characters)",
        )


def check_epoch_ms(field_name: str, value: int, *, zero: str) -> None:
    """A time in Unix epoch milliseconds between 1970 and the end of 9999 (``zero``: what
    0 means for this field)."""
    if not 0 <= value <= MAX_EPOCH_MS:
        raise InvalidArgument(
            field_name,
            f"is {value}; accepted: Unix epoch milliseconds from 0 (1970-01-01) to "
            f"{MAX_EPOCH_MS} (9999-12-31), 0 meaning {zero}",
        )


def check_list(field_name: str, values: Sequence[str], limit: int) -> None:
    if len(values) > limit:
        raise InvalidArgument(
            field_name, f"has {len(values)} entries; at most {limit} are accepted"
        )
    if not values:
        return
    lengths = list(map(len, values))  # C-level passes; name the culprit only on failure
    if min(lengths) == 0 or max(lengths) > MAX_ID_LEN or not all(map(str.isprintable, values)):
        for i, value in enumerate(values):
            check_id(f"{field_name}[{i}]", value)


def validate_query(settings: ServerSettings, query: RecommendQuery) -> int:
    """Checks every field of a Recommend; returns the effective k."""
    if query.history:
        if len(query.user_id) > MAX_ID_LEN:
            check_id("user_id", query.user_id)
    else:
        check_id("user_id", query.user_id)
    check_list("history", query.history, settings.max_history_items)
    if query.boost or query.bury:
        request_rules(query.boost, query.bury)
    if not -1 <= query.shown_cap <= 1000:
        raise InvalidArgument(
            "shown_cap",
            f"is {query.shown_cap}; accepted: 1..1000, 0 (the server's setting) or -1 (off)",
        )
    window = query.shown_window_hours
    if not (window == 0 or 0 < window <= 720):  # NaN fails both
        raise InvalidArgument(
            "shown_window_hours", f"is {window}; accepted: (0, 720], or 0 (the server's setting)"
        )
    return check_filters(settings, query)


def validate_similar(settings: ServerSettings, query: SimilarQuery) -> int:
    """Checks every field of a SimilarItems; returns the effective k."""
    limit = settings.max_similar_query_items
    if not query.item_ids:
        raise InvalidArgument("item_ids", f"is empty; accepted: 1..{limit} item ids")
    check_list("item_ids", query.item_ids, limit)
    if query.user_id:
        check_id("user_id", query.user_id)
    return check_filters(settings, query)


def check_filters(settings: ServerSettings, query: RecommendQuery | SimilarQuery) -> int:
    """k, the item lists and the label filters, as Recommend and SimilarItems share
    them; returns the effective k."""
    k = query.k or DEFAULT_K
    if not 1 <= k <= settings.max_k:
        raise InvalidArgument(
            "k", f"is {query.k}; accepted: 1..{settings.max_k} (0 means {DEFAULT_K})"
        )
    check_list("exclude_item_ids", query.exclude_item_ids, settings.max_list_items)
    check_list("candidate_item_ids", query.candidate_item_ids, settings.max_list_items)
    for name in ("include_labels", "exclude_labels"):
        labels: Sequence[str] = getattr(query, name)
        if len(labels) > MAX_LABEL_FILTERS:
            raise InvalidArgument(
                name, f"has {len(labels)} labels; at most {MAX_LABEL_FILTERS} are accepted"
            )
        for i, label in enumerate(labels):
            check_id(f"{name}[{i}]", label, MAX_LABEL_LEN)
    return k


def validate_batch(settings: ServerSettings, queries: Sequence[RecommendQuery]) -> list[int]:
    """RecommendBatch: the call's own limits, then each query (an error names
    ``requests[i].field``); returns each query's effective k."""
    limit = settings.max_batch_requests
    if not queries:
        raise InvalidArgument("requests", f"is empty; accepted: 1..{limit} requests")
    if len(queries) > limit:
        raise InvalidArgument(
            "requests", f"has {len(queries)} entries; at most {limit} are accepted"
        )
    explained = sum(1 for query in queries if query.explain)
    if explained > settings.max_explained_per_call:
        raise InvalidArgument(
            "requests",
            f"ask for explanations in {explained} requests; at most "
            f"{settings.max_explained_per_call} per call are accepted "
            "(server.max_explained_per_call): split the call",
        )
    ks = []
    for i, query in enumerate(queries):
        try:
            ks.append(validate_query(settings, query))
        except InvalidArgument as exc:
            raise InvalidArgument(f"requests[{i}].{exc.field}", exc.description) from exc
    return ks


def validate_events(settings: ServerSettings, events: Sequence[FeedbackEventIn]) -> list[EventRow]:
    """Checks every event of a Feedback; returns the rows to store."""
    if not events:
        raise InvalidArgument("events", "is empty; send 1 or more events")
    limit = settings.max_feedback_batch
    if len(events) > limit:
        raise InvalidArgument("events", f"has {len(events)} events; at most {limit} per call")
    now_ms = int(time.time() * 1000)
    out: list[EventRow] = []
    for i, event in enumerate(events):
        where = f"events[{i}]"
        check_id(f"{where}.event_id", event.event_id, MAX_EVENT_ID_LEN)
        check_id(f"{where}.user_id", event.user_id)
        check_id(f"{where}.item_id", event.item_id)
        if event.recommendation_id:
            check_id(
                f"{where}.recommendation_id", event.recommendation_id, MAX_RECOMMENDATION_ID_LEN
            )
        kind = event.kind or "click"
        if not KIND_PATTERN.match(kind):
            raise InvalidArgument(
                f"{where}.kind", f"is {kind[:40]!r}; accepted: 1..32 characters of [a-z0-9_]"
            )
        if not math.isfinite(event.value):
            raise InvalidArgument(f"{where}.value", "must be a finite number")
        value = event.value or 1.0
        check_epoch_ms(f"{where}.timestamp_ms", event.timestamp_ms, zero="now")
        ts = event.timestamp_ms or now_ms
        if ts > now_ms + FUTURE_SLACK_MS:
            raise InvalidArgument(
                f"{where}.timestamp_ms",
                f"is {event.timestamp_ms}; accepted: Unix epoch milliseconds, at most one day "
                "in the future (0 means now)",
            )
        out.append(
            EventRow(
                event.event_id, event.user_id, event.item_id, kind, value,
                datetime.fromtimestamp(ts / 1000.0, UTC), event.recommendation_id or None,
            )
        )  # fmt: skip
    return out
