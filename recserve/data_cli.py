"""The commands on data and models: train, import, recommend and evaluate."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recserve.args import Add, parse_params, settings_from
from shared.config import Settings


def cmd_train(args: argparse.Namespace) -> int:
    from recserve.follow import follow_job
    from shared.storage.engine import engine_for, migrate
    from shared.training.jobs import submit_training

    settings = settings_from(args)
    migrate(settings.db_url)
    engine = engine_for(settings)
    job = submit_training(settings, engine, parse_params(args.param, args.params))
    print(f"queued train job {job.id} (celery id {job.celery_id})")
    if not args.wait:
        return 0
    return follow_job(settings, engine, int(job.id or 0), start_worker_if_needed=True)


def cmd_import(args: argparse.Namespace) -> int:
    from shared.storage.engine import engine_for, migrate
    from shared.storage.importers import import_file
    from shared.wire.errors import InvalidArgument

    settings = settings_from(args)
    migrate(settings.db_url)
    engine = engine_for(settings)
    path = Path(args.file)
    total = path.stat().st_size if path.exists() else 0

    lines = _count_lines(path) if path.is_file() else 0
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    task = bar.add_task("importing lines", total=lines or None)

    def progress(line_no: int, stored: int) -> None:
        bar.update(task, completed=line_no, description=f"importing ({stored:,} stored)")

    def skipped(line_no: int, message: str) -> None:
        bar.console.print(f"skipped line {line_no}: {message}")

    try:
        with bar:
            summary = import_file(
                engine,
                path,
                fmt=args.format,
                skip_bad=args.skip_bad,
                on_progress=progress,
                on_skip=skipped,
            )
    except InvalidArgument as exc:
        print(f"import failed: {exc}", file=sys.stderr)
        return 2
    print(
        f"imported {path} ({total / 1e6:.1f} MB): {summary.lines:,} lines, "
        f"{summary.stored:,} stored, {summary.duplicates:,} duplicates, "
        f"{summary.skipped:,} skipped, {summary.users:,} users in {summary.seconds:.1f}s"
    )
    if summary.deleted_user_events:
        print(
            f"not stored: {summary.deleted_user_events:,} events of deleted users, timed before "
            "their deletion (recserve delete-user)"
        )
    report_path = Path(args.report) if args.report else default_report_path(settings, path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(summary.quality, indent=2))
    print_quality(summary.quality)
    print(f"data-quality report: {report_path}")
    return 0


def cmd_import_items(args: argparse.Namespace) -> int:
    from shared.storage.engine import engine_for, migrate
    from shared.storage.item_files import import_item_file

    settings = settings_from(args)
    migrate(settings.db_url)
    engine = engine_for(settings)
    item_map = Path(args.item_map) if args.item_map else None
    result = import_item_file(engine, Path(args.file), fmt=args.format, item_map=item_map)
    for error in result.errors[:50]:
        print(f"not stored: {error}", file=sys.stderr)
    if len(result.errors) > 50:
        print(f"... and {len(result.errors) - 50} more rows not stored", file=sys.stderr)
    print(
        f"imported {args.file}: {result.created:,} items created, {result.updated:,} updated, "
        f"{len(result.errors):,} rows not stored"
        + (f", {result.skipped:,} not in --item-map" if item_map else "")
    )
    engine.dispose()
    return 0 if not result.errors else 1


def default_report_path(settings: Settings, path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.data_dir / "import-reports" / f"{path.stem}-{stamp}.json"


def print_quality(quality: dict[str, Any]) -> None:
    """The data-quality report as aligned lines."""
    labels = {
        "rows_read": "rows read",
        "malformed": "malformed",
        "duplicates_dropped": "duplicates dropped",
        "users": "users",
        "items": "items",
        "users_below_min_history": f"users below {quality['min_history']} events",
        "items_seen_once": "items seen once",
        "first_event": "first event",
        "last_event": "last event",
        "events_out_of_order": "events out of order",
        "suspected_bots": f"suspected bots (> {quality['bot_events_per_minute']} events/min)",
    }
    for key, label in labels.items():
        value = quality[key]
        shown = "not judged (no timestamps)" if value is None else value
        print(f"  {label:<36} {shown:,}" if isinstance(shown, int) else f"  {label:<36} {shown}")


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def cmd_recommend(args: argparse.Namespace) -> int:
    from recserve.admin_cli import call
    from shared.proto.recserve.v1 import recommender_pb2

    response = call(
        args,
        lambda c: c.recommender.Recommend(
            recommender_pb2.RecommendRequest(
                user_id=args.user, k=args.k, history=args.history or [], include_titles=True
            ),
            metadata=c.metadata,
            timeout=10,
        ),
    )
    source = recommender_pb2.Source.Name(response.source)
    print(
        f"model version {response.model_version}, source {source}, "
        f"history used {response.history_used}"
    )
    for rank, item in enumerate(response.items, start=1):
        print(f"{rank:3d}. {item.item_id}  {item.score:.4f}  {item.title}".rstrip())
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    from recserve.admin_cli import call

    fields: dict[str, Any] = {"user_id": args.user or "", "include_titles": True}
    response = call(args, lambda c: c.similar_items(args.items, args.k, **fields))
    print(f"model version {response.model_version}")
    if response.unknown_item_ids:
        print(f"unknown to the model (not counted): {', '.join(response.unknown_item_ids)}")
    for rank, item in enumerate(response.items, start=1):
        print(f"{rank:3d}. {item.item_id}  {item.score:.4f}  {item.title}".rstrip())
    return 0


def print_rerank_table(result: dict[str, Any], reranked: dict[str, dict[str, float]]) -> None:
    """Accuracy against coverage and popularity, per popularity-debiasing weight."""
    names = ("ndcg@10", "hr@10", "coverage@10", "gini@10", "arp@10", "novelty@10", "ild@10")
    print(f"\n{'re-ranking':<22}" + "".join(f"{n:>13}" for n in names))
    rows = [("popularity baseline", _prefixed(result["popularity"]))]
    rows.append(("model (weight 0)", result["model"]))
    rows += [(f"debiased, weight {w}", m) for w, m in reranked.items()]
    for label, metrics in rows:
        cells = "".join(f"{metrics[n]:>13.4f}" if n in metrics else f"{'-':>13}" for n in names)
        print(f"{label:<22}{cells}")


def _prefixed(metrics: dict[str, float]) -> dict[str, float]:
    return {k.removeprefix("pop_"): v for k, v in metrics.items()}


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.cold_items:
        from recserve.bench_cli import bench_cold

        return bench_cold(args)
    from recserve.reports import print_evaluation_table
    from worker.model_eval import evaluate_model_version

    settings = settings_from(args)
    ks = tuple(int(k) for k in args.ks.split(","))
    weights = [float(w) for w in args.rerank.split(",")] if args.rerank else []
    result = evaluate_model_version(
        settings, args.version, ks=ks, explanations=args.explanations, rerank=weights
    )
    print_evaluation_table({**result, "data": settings.safe_db_url}, ks)
    reranked = result.get("rerank")
    if isinstance(reranked, dict):
        print_rerank_table(result, reranked)
    faithfulness = result.get("explanations")
    if isinstance(faithfulness, dict):
        print(
            f"\nexplanations, deletion test on {faithfulness['users']:.0f} users: removing the "
            f"top-weighted event lowers the top item's score more than removing a random "
            f"event for {faithfulness['score_share']:.1%} of users (mean drop "
            f"{faithfulness['drop_top']:.3f} vs {faithfulness['drop_random']:.3f}), its rank "
            f"for {faithfulness['rank_share']:.1%} (mean rank {faithfulness['rank_top']:.1f} "
            f"vs {faithfulness['rank_random']:.1f})"
        )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2, sort_keys=True))
        print(f"wrote {args.output}")
    return 0


def add_data_parsers(add: Add) -> None:
    """The commands on data and models: train, import, recommend, evaluate."""
    p = add("train", cmd_train, "Queue a training job.")
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the job to the end; starts an embedded worker if none runs",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training parameter, e.g. --param epochs=20 (repeatable)",
    )
    p.add_argument("--params", help="training parameters as a JSON object")

    p = add("import", cmd_import, "Import an interaction file into the feedback table.")
    p.add_argument("file", help="seq ('user item'), MovieLens, RecBole .inter or CSV file")
    p.add_argument(
        "--format",
        choices=["seq", "movielens", "inter", "csv"],
        help="file format (default: guessed)",
    )
    p.add_argument(
        "--skip-bad", action="store_true", help="skip malformed lines instead of aborting"
    )
    p.add_argument(
        "--report",
        help="where to save the data-quality report as JSON "
        "(default: DATA_DIR/import-reports/FILE-TIME.json)",
    )

    p = add(
        "import-items",
        cmd_import_items,
        "Import item metadata with typed properties (CSV, JSONL, MovieLens movies.dat, "
        "RecBole .item); docs/data.md has the schema.",
    )
    p.add_argument("file", help="the catalogue file")
    p.add_argument("--format", choices=["csv", "jsonl", "movielens", "item-tsv"])
    p.add_argument("--item-map", help="'our_id original_id' per line: the events' ids")

    p = add("recommend", cmd_recommend, "Call Recommend on a running server.")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--user", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--history", nargs="*", help="inline session history (item ids)")
    p.add_argument("--token", help="bearer token (default RECSERVE_CLIENT__TOKEN)")

    p = add("similar", cmd_similar, "Call SimilarItems: items like the given ones.")
    p.add_argument("items", nargs="+", help="item ids (several: a cart, their vectors averaged)")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--user", help="leave out this user's seen items")
    p.add_argument("--token", help="bearer token (default RECSERVE_CLIENT__TOKEN)")
    add_evaluate_parser(add)


def add_evaluate_parser(add: Add) -> None:
    p = add(
        "evaluate",
        cmd_evaluate,
        "Evaluate a model (default: the active one) with leave-one-out HR@K, NDCG@K and "
        "MRR, full ranking and 100 sampled negatives, beside popularity.",
    )
    p.add_argument("--version", type=int, help="model version (default: the active one)")
    p.add_argument("--ks", default="1,5,10,20", help="cut-offs, comma-separated")
    p.add_argument(
        "--explanations",
        type=int,
        nargs="?",
        const=1000,
        default=0,
        metavar="USERS",
        help="also run the deletion test of explanation faithfulness on USERS random test "
        "users (default 1000)",
    )
    p.add_argument(
        "--rerank",
        metavar="WEIGHTS",
        help="also evaluate popularity-debiased re-ranking at these weights, e.g. "
        "0.25,0.5,1 (server.popularity_debias applies one when serving)",
    )
    p.add_argument("--output", help="write the results as JSON here")
    # Cold items cannot be measured on a model that trained on them: this evaluation
    # trains its own models, on the log without them (the protocol of bench/cold.py).
    p.add_argument(
        "--cold-items",
        action="store_true",
        help="the cold-start protocol instead: hold out 10%% of --data's items (those with "
        ">= 5 events) from training, train a model with --items' properties and an id-only "
        "one (the recipe, 15 min each unless --params says otherwise) per seed, and report "
        "HR@10 / NDCG@10 on users whose target is a held-out item, beside random ranking "
        "and a genre-profile content baseline",
    )
    p.add_argument("--data", help="--cold-items: the `user item` log")
    p.add_argument("--items", help="--cold-items: its item metadata (movies.dat, CSV, JSONL)")
    p.add_argument("--item-map", help="--cold-items: 'log id metadata id' per line")
    p.add_argument("--seeds", help="--cold-items: training seeds, comma separated (42,1)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--params", help="--cold-items: training parameters as JSON")
