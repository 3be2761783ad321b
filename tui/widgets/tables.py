"""Refreshing a DataTable in place, so that the operator keeps their place."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

Row = tuple[str, Sequence[Any]]
"""(row key, cell values in column order)"""


def sync_table(
    table: DataTable[Any], rows: Sequence[Row], *, order: Callable[[Any], Any] | None = None
) -> None:
    """Makes ``table`` show ``rows``: changed cells are updated, new rows added, gone rows
    removed. The cursor stays on the same row (by key) and the scroll position is kept;
    clearing and refilling would send both back to the top every refresh.

    ``order``: a sort key over a row's first cell, applied when rows were added.
    """
    cursor_key = _cursor_key(table)
    scroll = (table.scroll_x, table.scroll_y)
    wanted = {key: cells for key, cells in rows}
    columns = list(table.columns)
    for row_key in list(table.rows):
        if row_key.value not in wanted:
            table.remove_row(row_key)
    added = False
    for key, cells in rows:
        try:
            current = table.get_row(key)
        except RowDoesNotExist:
            table.add_row(*cells, key=key)
            added = True
            continue
        for column, old, new in zip(columns, current, cells, strict=False):
            if old != new:
                table.update_cell(key, column, new, update_width=True)
    if added and order is not None and columns:
        table.sort(columns[0], key=order)
    if cursor_key is not None and cursor_key in wanted:
        table.move_cursor(row=table.get_row_index(cursor_key), scroll=False)
    table.scroll_to(*scroll, animate=False, immediate=True)


def _cursor_key(table: DataTable[Any]) -> str | None:
    if not table.row_count:
        return None
    try:
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
    except Exception:  # the cursor is off the table (an emptied table)
        return None
    return None if key.value is None else str(key.value)


def selected_key(table: DataTable[Any]) -> str | None:
    """The key of the row under the cursor, or None for an empty table."""
    return _cursor_key(table)
