"""`make security`: every attack of the secure-defaults and integrity work, against real
processes.

Each row is one attack on a `recserve serve` child process (or the deploy files, or the
command line), the outcome it must have, and the outcome observed. Prints a table,
writes JSON (``bench-results/security.json``) and exits 1 if any row fails.

    python -m bench.security [--fast] [--data-dir DIR] [--output FILE]

``--fast`` runs only the rows that take seconds (CI runs them through
tests/test_security_bench.py); the others (the idle-stream timeout at its production
default, the memory and latency rows under the label and explanation attacks) run in
`make security`. The servers run with production limits, except where a row says.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench.ingest import cpu_model
from bench.security_access import (
    anonymous_admin,
    concurrent_activations,
    deploy_files,
    forged_clicks,
    guessable_ids,
    lower_role,
    out_of_range_times,
    paused_worker,
    planted_bundle,
    public_listener,
    refused_from_headers,
)
from bench.security_lab import (
    Attack,
    Lab,
    Row,
)
from bench.security_load import (
    history_budget,
    idle_stream_timeout,
    idle_streams,
    memory_under_attack,
    p99_under_attack,
)
from shared.config import Settings

# --- authentication and authorisation ---------------------------------------------------


# --- integrity ------------------------------------------------------------------------


# --- idle and slow clients --------------------------------------------------------------


# --- memory and admission under hostile traffic -------------------------------------------


ATTACKS = [
    Attack(
        "anonymous calls, only tokens of other roles set",
        "UNAUTHENTICATED everywhere",
        True,
        anonymous_admin,
    ),
    Attack("a token of a lower role", "PERMISSION_DENIED; its own role OK", True, lower_role),
    Attack(
        "bodiless call with a forged token",
        "UNAUTHENTICATED from headers, < 1 s",
        True,
        refused_from_headers,
    ),
    Attack(
        "public listener without authentication",
        "refused to start (TLS alone too)",
        True,
        public_listener,
    ),
    Attack("deploy files", "no literal secret, only gRPC published", True, deploy_files),
    Attack("guessing recommendation ids", "128 random bits each", True, guessable_ids),
    Attack(
        "clicks on another user's list, or an unlisted item", "CTR counts none", True, forged_clicks
    ),
    Attack(
        "a bundle with a planted file",
        "ActivateModel refused, old version serves",
        True,
        planted_bundle,
    ),
    Attack(
        "times past 9999 and int64 extremes",
        "INVALID_ARGUMENT / NOT_FOUND, never INTERNAL",
        True,
        out_of_range_times,
    ),
    Attack(
        "100 idle streams + 20 bodiless unary calls",
        "Recommend OK < 1 s, health SERVING",
        True,
        idle_streams,
    ),
    Attack("an idle FeedbackStream", "DEADLINE_EXCEEDED after 10 s", False, idle_stream_timeout),
    Attack(
        "six concurrent activations",
        "one active version, a true history",
        False,
        concurrent_activations,
    ),
    Attack(
        "a worker paused past its lease, then resumed",
        "its writes refused, one model activated",
        False,
        paused_worker,
    ),
    Attack(
        "12,000 distinct labels, 20 explained batches",
        "caches within bounds, cap enforced",
        False,
        memory_under_attack,
    ),
    Attack("history cache at a 4 MiB budget", "measured size <= budget", False, history_budget),
    Attack("plain traffic beside the attacks", "p99 within 2x of alone", False, p99_under_attack),
]


def run(lab: Lab, *, fast: bool) -> list[Row]:
    rows = []
    for attack in ATTACKS:
        if fast and not attack.fast:
            continue
        row = Row(attack.name, attack.expected)
        started = time.perf_counter()
        try:
            row.observed, row.passed, row.figures = attack.run(lab)
        except Exception as exc:  # a row that cannot run fails, and the others still run
            row.observed, row.passed = f"error: {type(exc).__name__}: {exc}"[:300], False
        row.seconds = time.perf_counter() - started
        rows.append(row)
        mark = "pass" if row.passed else "FAIL"
        print(f"{mark:4}  {row.attack:48}  {row.observed}", flush=True)
    return rows


def prepare_lab(data_dir: Path, users: int) -> Lab:
    """The bench's ML-1M-sized model and stored users (bench/serve.py), or a data folder
    that already holds an active model and users (the tests pass theirs)."""
    from bench.serve_stage import prepare

    if (data_dir / "recserve.db").exists() and not (data_dir / "models" / "bench-random").exists():
        from shared.storage import event_store
        from shared.storage.engine import engine_for, session_scope

        engine = engine_for(Settings(data_dir=data_dir))
        with session_scope(engine) as session:
            found = event_store.some_user_ids(session, limit=users)
        engine.dispose()
        return Lab(data_dir, found)
    settings, _, stored = prepare(data_dir, None, n_users=users)
    return Lab(settings.data_dir, stored)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.security", description=__doc__)
    parser.add_argument("--fast", action="store_true", help="only the rows that take seconds")
    parser.add_argument("--data-dir", type=Path, default=Path("var/bench/security"))
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=Path("bench-results/security.json"))
    args = parser.parse_args(argv)
    lab = prepare_lab(args.data_dir, args.users)
    try:
        rows = run(lab, fast=args.fast)
    finally:
        lab.close()
    report = {
        "host": platform.node(),
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
        "fast": args.fast,
        "rows": [asdict(row) for row in rows],
        "passed": all(row.passed for row in rows),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str))
    print("\n| attack | expected | observed |\n| --- | --- | --- |")
    for row in rows:
        print(
            f"| {row.attack} | {row.expected} | {'' if row.passed else '**FAIL** '}{row.observed} |"
        )
    print(f"\nwrote {args.output}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
