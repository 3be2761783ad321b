"""`recserve import-items`: catalogue files into the item table, with typed properties.

Formats (``--format``, else guessed from the name and first line):

- **csv**: a header, then one item per row. ``item_id`` is required; ``title``,
  ``labels`` (``|``-separated) and ``available`` (true/false, default true) are optional.
  Every other column is a property whose kind its name gives: ``cat:genre``
  (categorical, ``|``-separated values), ``num:year`` (a number) or ``text:summary``.
  An empty cell leaves that property out.
- **jsonl**: one object per line, ``{"item_id": ..., "title": ..., "labels": [...],
  "available": true, "properties": {"genre": ["Comedy"], "year": 1995, "summary": "..."}}``:
  a list of strings is categorical, a number numeric, a string text.
- **movielens**: ``movies.dat`` (``id::Title (Year)::Genre|Genre``, ISO-8859-1): title,
  ``genre`` (categorical) and ``year`` (numeric, from the title).
- **item-tsv**: RecBole's ``.item`` (ml-100k): a tab-separated header naming
  ``item_id:token``, ``movie_title:token_seq``, ``release_year:token`` and
  ``class:token_seq`` (space-separated genres), read as title, ``year`` and ``genre``.

``--item-map`` (``our_id original_id`` per line, e.g. sas_to_original_items.txt) maps the
ids used in the events to the file's. A row that cannot be stored is reported with its
row number and field, and the other rows are stored.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from shared.model.properties import PropertyError, checked
from shared.storage import item_store
from shared.storage.engine import session_scope
from shared.storage.tables import Item

FORMATS = ("csv", "jsonl", "movielens", "item-tsv")
MAX_TITLE = 1024
MAX_LABELS = 32
BATCH = 1000
YEAR = re.compile(r"\((\d{4})\)\s*$")


class RowError(ValueError):
    """A row that cannot be stored: its number (1-based, the header counting) and field."""

    def __init__(self, row: int, field: str, reason: str) -> None:
        super().__init__(f"row {row}: {field}: {reason}")
        self.row, self.field, self.reason = row, field, reason


Row = tuple[int, "dict[str, Any] | RowError"]


@dataclass
class ItemImport:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    """Rows not in --item-map (when one is given)."""
    errors: list[RowError] = field(default_factory=list)


def guess_item_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".item"):
        return "item-tsv"
    if name.endswith(".dat"):
        return "movielens"
    return "csv"


def _item(raw: dict[str, Any], row: int) -> Item:
    """An Item from a parsed row, or RowError naming the field."""
    item_id = str(raw.get("item_id") or "").strip()
    if not item_id or len(item_id) > 256 or not item_id.isprintable():
        raise RowError(row, "item_id", "is required: 1..256 printable characters")
    title = str(raw.get("title") or "")
    if len(title) > MAX_TITLE:
        raise RowError(row, "title", f"is {len(title)} characters; at most {MAX_TITLE}")
    labels = raw.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise RowError(row, "labels", "accepted: a list of non-empty strings")
    if len(labels) > MAX_LABELS or any(len(x) > 64 for x in labels):
        raise RowError(row, "labels", f"accepted: at most {MAX_LABELS} labels of 1..64 characters")
    available = raw.get("available", True)
    if not isinstance(available, bool):
        raise RowError(row, "available", f"is {available!r}; accepted: true or false")
    try:
        properties = checked(raw.get("properties"))
    except PropertyError as exc:
        raise RowError(row, exc.field, exc.reason) from None
    return Item(
        item_id=item_id, title=title, labels=labels, available=available, properties=properties
    )


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for column in columns:
            kind, _, key = column.partition(":")
            if column not in ("item_id", "title", "labels", "available") and (
                kind not in ("cat", "num", "text") or not key
            ):
                reason = (
                    "unknown column; accepted: item_id, title, labels, available, cat:KEY, "
                    "num:KEY, text:KEY"
                )
                yield 1, RowError(1, column, reason)
                return  # the header decides every row: nothing is read past it
        for row_no, cells in enumerate(reader, start=2):
            try:
                yield row_no, _csv_item(cells, row_no)
            except RowError as exc:
                yield row_no, exc


def _csv_item(cells: dict[str, str], row_no: int) -> dict[str, Any]:
    raw: dict[str, Any] = {"item_id": cells.get("item_id"), "title": cells.get("title") or ""}
    if cells.get("labels"):
        raw["labels"] = [x for x in cells["labels"].split("|") if x]
    flag = (cells.get("available") or "true").strip().lower()
    raw["available"] = {"true": True, "1": True, "false": False, "0": False}.get(flag, flag)
    properties: dict[str, Any] = {}
    for column, cell in cells.items():
        kind, _, key = (column or "").partition(":")
        if not cell or kind not in ("cat", "num", "text"):
            continue
        if kind == "cat":
            properties[key] = [x for x in cell.split("|") if x]
        elif kind == "num":
            try:
                properties[key] = float(cell)
            except ValueError:
                raise RowError(row_no, column, f"is {cell!r}; accepted: a number") from None
        else:
            properties[key] = cell
    raw["properties"] = properties
    return raw


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8") as handle:
        for row_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                yield row_no, RowError(row_no, "line", f"is not JSON ({exc.msg})")
                continue
            if not isinstance(raw, dict):
                yield row_no, RowError(row_no, "line", "accepted: one JSON object per line")
                continue
            yield row_no, raw


def _movielens_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="latin-1") as handle:
        for row_no, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").split("::")
            if len(parts) < 2:
                yield row_no, RowError(row_no, "line", "accepted: id::title::genre|genre")
                continue
            properties: dict[str, Any] = {}
            if len(parts) > 2 and parts[2]:
                properties["genre"] = parts[2].split("|")
            if year := YEAR.search(parts[1]):
                properties["year"] = float(year.group(1))
            yield row_no, {"item_id": parts[0], "title": parts[1], "properties": properties}


def _item_tsv_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="latin-1") as handle:
        header = [name.split(":")[0] for name in handle.readline().rstrip("\n").split("\t")]
        for row_no, line in enumerate(handle, start=2):
            cells = dict(zip(header, line.rstrip("\n").split("\t"), strict=False))
            properties: dict[str, Any] = {}
            if cells.get("class"):
                properties["genre"] = cells["class"].split()
            year = (cells.get("release_year") or "").strip()
            if year.isdigit():
                properties["year"] = float(year)
            yield (
                row_no,
                {
                    "item_id": cells.get("item_id"),
                    "title": cells.get("movie_title", ""),
                    "properties": properties,
                },
            )


READERS = {
    "csv": _csv_rows,
    "jsonl": _jsonl_rows,
    "movielens": _movielens_rows,
    "item-tsv": _item_tsv_rows,
}


def read_item_map(path: Path) -> dict[str, str]:
    """``our_id original_id`` per line, as {original_id: our_id}."""
    originals: dict[str, str] = {}
    for line in path.read_text().split("\n"):
        parts = line.split()
        if len(parts) == 2:
            originals[parts[1]] = parts[0]
    return originals


def import_item_file(
    engine: Engine, path: Path, *, fmt: str | None = None, item_map: Path | None = None
) -> ItemImport:
    """Stores every row that can be stored, in batches; reports the others."""
    fmt = fmt or guess_item_format(path)
    originals = read_item_map(item_map) if item_map is not None else None
    result = ItemImport()
    batch: list[Item] = []

    def flush() -> None:
        if batch:
            with session_scope(engine) as session:
                created, updated = item_store.upsert_items(session, items=batch)
            result.created += created
            result.updated += updated
            batch.clear()

    for row_no, raw in READERS[fmt](path):
        if isinstance(raw, RowError):
            result.errors.append(raw)
            continue
        if originals is not None:
            ours = originals.get(str(raw.get("item_id")))
            if ours is None:
                result.skipped += 1
                continue
            raw["item_id"] = ours
        try:
            batch.append(_item(raw, row_no))
        except RowError as exc:
            result.errors.append(exc)
        if len(batch) >= BATCH:
            flush()
    flush()
    return result
