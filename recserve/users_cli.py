"""`recserve delete-user USER` and `recserve export-user USER`: a user's data through a
running server's ModelAdmin API (DeleteUser and ExportUser; docs/privacy.md).

    recserve delete-user u42 --yes
    recserve export-user u42 --output u42.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recserve.admin_cli import _when, call
from shared.proto.recserve.v1 import admin_pb2


def cmd_delete_user(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise SystemExit("recserve delete-user deletes data for good: add --yes to confirm")
        answer = input(f"Delete everything stored about {args.user}? Type the user id: ")
        if answer.strip() != args.user:
            print("not deleted")
            return 1
    request = admin_pb2.DeleteUserRequest(user_id=args.user)
    done = call(args, lambda c: c.admin.DeleteUser(request, metadata=c.metadata, timeout=120))
    print(
        f"deleted user {args.user}: {done.events:,} events, {done.impressions:,} impressions, "
        f"{done.flags:,} flags, {done.import_reports:,} import reports edited; tombstone at "
        f"{_when(done.deleted_at_ms)} UTC"
    )
    return 0


def cmd_export_user(args: argparse.Namespace) -> int:
    """Every page, merged into one JSON object."""
    merged: dict[str, Any] = {}
    token, pages = "", 0
    while True:
        page = call(args, _export_page(args.user, token))
        body = json.loads(page.json)
        pages += 1
        for key, value in body.items():
            if isinstance(value, list) and isinstance(merged.get(key), list):
                merged[key].extend(value)
            else:
                merged[key] = value
        token = page.next_page_token
        if not token:
            break
    text = json.dumps(merged, indent=2, sort_keys=True)
    if args.output:
        Path(args.output).write_text(text)
        print(
            f"exported user {args.user}: {len(merged.get('events', [])):,} events, "
            f"{len(merged.get('impressions', [])):,} impressions in {pages} page(s) to "
            f"{args.output}"
        )
    else:
        print(text)
    return 0


def _export_page(user: str, token: str) -> Callable[[Any], Any]:
    request = admin_pb2.ExportUserRequest(user_id=user, page_token=token)
    return lambda c: c.admin.ExportUser(request, metadata=c.metadata)


def cmd_audit(args: argparse.Namespace) -> int:
    request = admin_pb2.ListAuditEntriesRequest(limit=args.limit)
    found = call(args, lambda c: c.admin.ListAuditEntries(request, metadata=c.metadata))
    print(f"{'when (UTC)':19}  {'action':12}  {'user':24}  {'by':16}  rows")
    for e in found.entries:
        print(f"{_when(e.at_ms):19}  {e.action:12}  {e.subject:24}  {e.by:16}  {e.detail_json}")
    return 0


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser(
        "delete-user",
        help="Delete everything stored about a user (via the server; audited).",
        description="DeleteUser: events, impressions, flags, import-report mentions and "
        "every replica's caches; a tombstone keeps replays out. See docs/privacy.md.",
    )
    p.set_defaults(func=cmd_delete_user)
    p.add_argument("user")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    common(p)
    p = sub.add_parser(
        "export-user",
        help="Everything stored about a user, as JSON (via the server; audited).",
        description="ExportUser, every page merged: events, impressions, flags, experiment arm.",
    )
    p.set_defaults(func=cmd_export_user)
    p.add_argument("user")
    p.add_argument("--output", help="write the JSON here (default: print it)")
    common(p)
    p = sub.add_parser("audit", help="User deletions and exports: who, when, how many rows.")
    p.set_defaults(func=cmd_audit)
    p.add_argument("--limit", type=int, default=100)
    common(p)
