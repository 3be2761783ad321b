"""`recserve rules ...`: business rule sets through a running server's ModelAdmin API.

    recserve rules list
    recserve rules put spring --boost brand:acme=2 --bury clearance=0.5 \\
        --cap 'brand:*=2' --pin sku-42=1 --from 2026-03-01 --until 2026-03-31
    recserve rules put spring --file spring.json     (a RuleSet in the proto's JSON)
    recserve rules delete spring

A put replaces the whole set of that name; every replica applies it within 2 seconds.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from recserve.admin_cli import _when, call
from shared.model.rules import Rule
from shared.proto.recserve.v1 import admin_pb2


def _pair(kind: str, value: type) -> Callable[[str], admin_pb2.Rule]:
    """LABEL=NUMBER (boost, bury, cap) or ITEM=SLOT (pin), split at the last '='."""

    def parse(text: str) -> admin_pb2.Rule:
        name, sep, number = text.rpartition("=")
        try:
            parsed = value(number)
        except ValueError:
            parsed = None
        if not sep or not name or parsed is None:
            example = {"boost": "brand:acme=2", "bury": "clearance=0.5", "cap": "brand:*=2",
                       "pin": "sku-42=1"}[kind]  # fmt: skip
            raise argparse.ArgumentTypeError(f"--{kind} {text!r}: expected e.g. {example}")
        if kind == "pin":
            return admin_pb2.Rule(kind=kind, item_id=name, slot=parsed)
        if kind == "cap":
            return admin_pb2.Rule(kind=kind, label=name, max_items=parsed)
        return admin_pb2.Rule(kind=kind, label=name, factor=parsed)

    return parse


def _epoch_ms(text: str) -> int:
    """An ISO 8601 date or time (UTC unless it names a zone) as epoch milliseconds."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected an ISO 8601 date or time, e.g. 2026-03-01 or 2026-03-01T09:00"
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def print_rule_sets(rule_sets: list[admin_pb2.RuleSet]) -> None:
    if not rule_sets:
        print("no rule sets")
    for r in rule_sets:
        state = "active" if r.active else "inactive"
        print(
            f"{r.name}  ({state}; from {_when(r.active_from_ms)} until {_when(r.active_until_ms)};"
            f" put {_when(r.updated_ms)} by {r.updated_by or '-'})"
        )
        if r.description:
            print(f"  {r.description}")
        for rule in r.rules:
            print(f"  {describe(rule)}")


def describe(rule: admin_pb2.Rule) -> str:
    return Rule(
        rule.kind, rule.label, rule.factor, rule.max_items, rule.item_id, rule.slot
    ).describe()


def _rule_set(args: argparse.Namespace) -> admin_pb2.RuleSet:
    if args.file:
        rule_set = json_format.Parse(Path(args.file).read_text(), admin_pb2.RuleSet())
        rule_set.name = args.name
        return rule_set
    rules = [*(args.boost or []), *(args.bury or []), *(args.cap or []), *(args.pin or [])]
    return admin_pb2.RuleSet(
        name=args.name,
        rules=rules,
        active_from_ms=args.start or 0,
        active_until_ms=args.until or 0,
        description=args.description or "",
    )


def cmd_rules(args: argparse.Namespace) -> int:
    if args.action in ("put", "delete") and not args.name:
        raise SystemExit(f"recserve rules {args.action} needs the rule set's NAME")
    if args.action == "put":
        request = admin_pb2.PutRuleSetRequest(rule_set=_rule_set(args))
        stored = call(args, lambda c: c.admin.PutRuleSet(request, metadata=c.metadata))
        print_rule_sets([stored])
    elif args.action == "delete":
        request = admin_pb2.DeleteRuleSetRequest(name=args.name)
        call(args, lambda c: c.admin.DeleteRuleSet(request, metadata=c.metadata))
        print(f"deleted rule set {args.name}")
    else:
        found = call(
            args,
            lambda c: c.admin.ListRuleSets(admin_pb2.ListRuleSetsRequest(), metadata=c.metadata),
        )
        if args.json:
            print(json_format.MessageToJson(found))
        else:
            print_rule_sets(list(found.rule_sets))
    return 0


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser(
        "rules",
        help="Business rule sets: boost, bury, cap and pin items (via the server).",
        description=(
            "list: every rule set; put NAME: create or replace one (--boost LABEL=FACTOR, "
            "--bury LABEL=FACTOR, --cap LABEL=N with LABEL key:* for each value, --pin "
            "ITEM=SLOT, --from/--until ISO times, or --file with a RuleSet in JSON); "
            "delete NAME. See docs/rules.md."
        ),
    )
    p.set_defaults(func=cmd_rules)
    p.add_argument("action", choices=["list", "put", "delete"])
    p.add_argument("name", nargs="?", help="put / delete: the rule set's name")
    p.add_argument(
        "--boost", type=_pair("boost", float), action="append", help="LABEL=FACTOR (1, 100]"
    )
    p.add_argument(
        "--bury", type=_pair("bury", float), action="append", help="LABEL=FACTOR [0.01, 1)"
    )
    p.add_argument(
        "--cap", type=_pair("cap", int), action="append", help="LABEL=N (LABEL key:* per value)"
    )
    p.add_argument("--pin", type=_pair("pin", int), action="append", help="ITEM=SLOT (1 is first)")
    p.add_argument("--from", dest="start", type=_epoch_ms, help="active from (ISO 8601, UTC)")
    p.add_argument("--until", type=_epoch_ms, help="active until, exclusive (ISO 8601, UTC)")
    p.add_argument("--description", help="what the set is for")
    p.add_argument("--file", help="put: a RuleSet as JSON (the proto's JSON mapping)")
    p.add_argument("--json", action="store_true", help="list: print JSON")
    common(p)
