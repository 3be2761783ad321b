"""`recserve bench rules`: what business rules cost a Recommend, on the user's path (and
`recserve bench similar-latency`: SimilarItems beside Recommend, the same way).

One `recserve serve` process with the ML-1M-sized model (random weights unless --bundle
names a trained one) and its catalogue labelled through UpsertItems (a brand per item,
a tenth on promotion, a tenth in clearance). Closed-loop Recommend traffic for returning
users at RULES_LEVEL callers, interleaved for --rounds rounds (default 3): without rules,
then with one rule set of 10 rules put through PutRuleSet (2 boosts, 2 buries, 3 caps
and 3 pins), which is deleted again before the next round. The medians of p99 and
throughput, and their ratios, go to a table and to JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.interleaved import report
from bench.processes import ServerProcess
from bench.serve_measure import measure, warm_histories
from bench.serve_stage import prepare
from shared.client import Client
from shared.proto.recserve.v1 import admin_pb2

RULES_LEVEL = 8
BRANDS = 40


def labels_for(items: list[str]) -> list[admin_pb2.CatalogueItem]:
    out = []
    for n, item in enumerate(items):
        labels = [f"brand:b{n % BRANDS}"]
        if n % 10 == 3:
            labels.append("promo")
        if n % 10 == 7:
            labels.append("clearance")
        out.append(admin_pb2.CatalogueItem(item_id=item, title=item, labels=labels, available=True))
    return out


def ten_rules(items: list[str]) -> admin_pb2.RuleSet:
    rule = admin_pb2.Rule
    return admin_pb2.RuleSet(
        name="bench-ten",
        rules=[
            rule(kind="boost", label="promo", factor=2.0),
            rule(kind="boost", label="brand:b1", factor=1.5),
            rule(kind="bury", label="clearance", factor=0.5),
            rule(kind="bury", label="brand:b2", factor=0.7),
            rule(kind="cap", label="brand:*", max_items=2),
            rule(kind="cap", label="promo", max_items=3),
            rule(kind="cap", label="clearance", max_items=1),
            rule(kind="pin", item_id=items[5], slot=1),
            rule(kind="pin", item_id=items[50], slot=4),
            rule(kind="pin", item_id=items[500], slot=8),
        ],
    )


def interleaved(
    server: ServerProcess, items: list[str], users: list[str], rounds: int, duration: float
) -> dict[str, list[dict[str, Any]]]:
    """The catalogue labelled, then ``rounds`` rounds of: no rules, ten rules."""
    rows: dict[str, list[dict[str, Any]]] = {"none": [], "ten rules": []}
    client = Client(server.target)
    try:
        for start in range(0, len(items), 5000):
            request = admin_pb2.UpsertItemsRequest(items=labels_for(items[start : start + 5000]))
            client.admin.UpsertItems(request, timeout=60)
        warm_histories(server, users)
        rule_set = ten_rules(items)
        for _ in range(rounds):
            for name, found in rows.items():
                if name == "ten rules":
                    client.admin.PutRuleSet(
                        admin_pb2.PutRuleSetRequest(rule_set=rule_set), timeout=30
                    )
                row = measure(
                    server, "mixed", items, users, concurrency=RULES_LEVEL, clients=2,
                    duration=duration, feedback_share=0.0,
                )  # fmt: skip
                if name == "ten rules":
                    gone = admin_pb2.DeleteRuleSetRequest(name=rule_set.name)
                    client.admin.DeleteRuleSet(gone, timeout=30)
                found.append(row)
                print(
                    f"{name:>10}: {row['throughput']:8.1f} req/s  p50 {row['p50_ms']:6.2f} ms"
                    f"  p99 {row['p99_ms']:6.2f} ms  errors {sum(row['errors'].values())}",
                    flush=True,
                )
    finally:
        client.close()
    return rows


def run_rules_bench(
    data_dir: Path, bundle: Path | None, *, rounds: int, duration: float, output: Path
) -> dict[str, Any]:
    settings, items, users = prepare(data_dir, bundle)
    server = ServerProcess(settings, "recserve", {})
    try:
        rows = interleaved(server, items, users, rounds, duration)
    finally:
        server.stop()
    errors = sum(sum(r["errors"].values()) for found in rows.values() for r in found)
    return report(
        rows, baseline="none", candidate="ten rules", title="ten rules / none",
        level=RULES_LEVEL, duration=duration, output=output, errors=errors,
    )  # fmt: skip


def run_similar_latency_bench(
    data_dir: Path, bundle: Path | None, *, rounds: int, duration: float, output: Path
) -> dict[str, Any]:
    """`recserve bench similar-latency`: SimilarItems (one random item, k=10) against
    Recommend for returning users, closed loop at RULES_LEVEL callers on one server,
    interleaved for ``rounds`` rounds; the same table and JSON as the rules' cost."""
    settings, items, users = prepare(data_dir, bundle)
    server = ServerProcess(settings, "recserve", {})
    rows: dict[str, list[dict[str, Any]]] = {"Recommend": [], "SimilarItems": []}
    try:
        warm_histories(server, users)
        for _ in range(rounds):
            for name, traffic in (("Recommend", "mixed"), ("SimilarItems", "similar")):
                row = measure(
                    server, traffic, items, users, concurrency=RULES_LEVEL, clients=2,
                    duration=duration, feedback_share=0.0,
                )  # fmt: skip
                rows[name].append(row)
                print(f"{name:>12}: {row['throughput']:8.1f} req/s  p99 {row['p99_ms']:6.2f} ms")
    finally:
        server.stop()
    errors = sum(sum(r["errors"].values()) for found in rows.values() for r in found)
    return report(
        rows, baseline="Recommend", candidate="SimilarItems", title="SimilarItems / Recommend",
        level=RULES_LEVEL, duration=duration, output=output, errors=errors,
    )  # fmt: skip
