"""The benchmark and drill commands (`recserve bench KIND`, `recserve drill`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from recserve.args import Add, parse_params, settings_from


def bench_quality(args: argparse.Namespace) -> int:
    from bench.quality import run_quality_bench

    if not args.data:
        raise SystemExit("bench quality needs --data PATH")
    data = Path(args.data)
    settings = settings_from(args)
    if not args.data_dir:
        settings = settings.model_copy(update={"data_dir": Path("var/bench") / data.stem})
    run_quality_bench(
        settings,
        data,
        fmt=args.format,
        params=parse_params(args.param, args.params),
        output=Path(args.output) if args.output else None,
    )
    return 0


def bench_soak(args: argparse.Namespace) -> int:
    from bench.soak import run_soak

    report = run_soak(
        Path(args.data_dir or "var/bench/serve"),
        minutes=args.minutes,
        rate=args.rate,
        clients=args.clients or 2,
        output=Path(args.output or "bench-results/soak.json"),
    )
    return 0 if report["passed"] else 1


def bench_scale(args: argparse.Namespace) -> int:
    from bench.scale import DEFAULT_SIZES, Size, run_scale_bench

    sizes = DEFAULT_SIZES
    if args.sizes:
        sizes = tuple(
            Size(*(int(float(n)) for n in triple.split(":"))) for triple in args.sizes.split(",")
        )
    run_scale_bench(
        Path(args.data_dir or "var/bench/scale"),
        sizes=sizes,
        steps=args.steps,
        duration=args.duration or 10.0,
        output=Path(args.output or "bench-results/scale.json"),
    )
    return 0


def bench_ingest(args: argparse.Namespace) -> int:
    from bench.ingest import IngestSpec, run_ingest_bench

    settings = settings_from(args)
    if not args.data_dir:
        settings = settings.model_copy(update={"data_dir": Path("var/bench/ingest")})
    given = {"duration": args.duration, "streams": args.streams, "callers": args.callers}
    spec = IngestSpec(**{k: v for k, v in given.items() if v is not None})
    output = Path(args.output or "bench-results/ingest.json")
    run_ingest_bench(settings, database_url=args.database_url, spec=spec, output=output)
    return 0


def bench_similar(args: argparse.Namespace) -> int:
    from bench.similar import run_similar_bench

    if not args.data or not args.data_dir:
        raise SystemExit(
            "bench similar needs --data PATH and --data-dir (a `bench quality` run's folder)"
        )
    output = Path(args.output) if args.output else None
    run_similar_bench(Path(args.data), Path(args.data_dir), fmt=args.format, output=output)
    return 0


def _seeds(text: str | None) -> list[int]:
    try:
        return [int(seed) for seed in (text or "42,1").split(",")]
    except ValueError:
        message = f"--seeds: expected integers separated by commas, got {text!r}"
        raise SystemExit(message) from None


def bench_kinds(args: argparse.Namespace) -> int:
    from bench.kinds import run_kinds_bench

    if not args.data:
        raise SystemExit("bench kinds needs --data PATH (a rated log, e.g. ml-100k.inter)")
    data = Path(args.data)
    run_kinds_bench(
        data,
        Path(args.data_dir or Path("var/bench") / f"kinds-{data.stem}"),
        seeds=_seeds(args.seeds),
        params=parse_params(args.param, args.params),
        output=Path(args.output) if args.output else None,
    )
    return 0


def bench_cold(args: argparse.Namespace) -> int:
    from bench.cold import run_cold_bench

    if not args.data or not args.items or not args.item_map:
        raise SystemExit(
            "the cold-start protocol (bench cold, evaluate --cold-items) needs --data (a "
            "`user item` log), --items (its metadata, e.g. "
            "movies.dat) and --item-map (the log's item id, then the metadata's, per line)"
        )
    data = Path(args.data)
    run_cold_bench(
        data,
        (Path(args.items), Path(args.item_map)),
        Path(args.data_dir or Path("var/bench") / f"cold-{data.stem}"),
        seeds=_seeds(args.seeds),
        params=parse_params(args.param, args.params),
        output=Path(args.output) if args.output else None,
        arms=_arms(getattr(args, "arms", None)),
    )
    return 0


def _arms(text: str | None) -> tuple[str, ...]:
    from bench.cold import ARMS

    if not text:
        return ARMS
    arms = tuple(arm.strip().replace("-", " ") for arm in text.split(","))
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise SystemExit(f"--arms: unknown {', '.join(unknown)}; use properties, id-only or both")
    return arms


def bench_serve(args: argparse.Namespace) -> int:
    from bench.serve import run_serve_bench

    return run_serve_bench(args)


def _ab_bench(args: argparse.Namespace, name: str) -> int:
    """`bench rules`, `bench http` and `bench similar-latency`: one server, two sides
    interleaved."""
    from pathlib import Path

    from bench.http_bench import run_http_bench
    from bench.rules import run_rules_bench, run_similar_latency_bench

    runs = {
        "rules": run_rules_bench,
        "http": run_http_bench,
        "similar-latency": run_similar_latency_bench,
    }
    run = runs[name]
    data_dir = Path(args.data_dir or f"var/bench-{name}")
    output = Path(args.output or data_dir / f"bench-{name}.json")
    bundle = Path(args.bundle) if args.bundle else None
    run(data_dir, bundle, rounds=args.rounds or 3, duration=args.duration or 10.0, output=output)
    return 0


def bench_props(args: argparse.Namespace) -> int:
    from bench.props import DEFAULT_LEVEL, run_props_bench

    data_dir = Path(args.data_dir or "var/bench-props")
    levels = [int(x) for x in args.levels.split(",")] if args.levels else [DEFAULT_LEVEL]
    run_props_bench(
        data_dir,
        levels,
        rounds=args.rounds or 3,
        duration=args.duration or 6.0,
        output=Path(args.output or data_dir / "bench-props.json"),
    )
    return 0


BENCHES = {
    "quality": bench_quality,
    "serve": bench_serve,
    "ingest": bench_ingest,
    "soak": bench_soak,
    "scale": bench_scale,
    "similar": bench_similar,
    "kinds": bench_kinds,
    "cold": bench_cold,
    "rules": lambda args: _ab_bench(args, "rules"),
    "http": lambda args: _ab_bench(args, "http"),
    "similar-latency": lambda args: _ab_bench(args, "similar-latency"),
    "props": bench_props,
}


def cmd_bench(args: argparse.Namespace) -> int:
    return BENCHES[args.kind](args)


def cmd_drill(args: argparse.Namespace) -> int:
    from bench.drill import main_args

    return main_args(args)


def add_bench_parsers(add: Add) -> None:
    """The benchmark and drill commands."""
    p = add("bench", cmd_bench, "Benchmarks: quality (train + evaluate) or serve (load test).")
    p.add_argument("kind", choices=list(BENCHES))
    p.add_argument("--data", help="quality: the interaction file to train on")
    p.add_argument("--format", choices=["seq", "movielens", "inter", "csv"])
    p.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="quality, kinds: training parameter (repeatable)",
    )  # fmt: skip
    p.add_argument("--params", help="quality, kinds: training parameters as JSON")
    p.add_argument("--output", help="JSON output path")
    p.add_argument("--seeds", help="kinds, cold: training seeds, comma separated (default 42,1)")
    p.add_argument("--items", help="cold: the item metadata (movies.dat, a CSV or JSONL)")
    p.add_argument("--item-map", help="cold: 'log id metadata id' per line")
    p.add_argument("--arms", help="cold: properties, id-only or both (default both)")
    p.add_argument(
        "--bundle",
        help="serve: a trained bundle to serve (default: random weights "
        "of the ML-1M-sized architecture)",
    )
    p.add_argument("--levels", help="serve: closed-loop concurrency levels, e.g. 1,4,16,64")
    p.add_argument("--duration", type=float, help="serve: seconds measured per level")
    p.add_argument("--clients", type=int, help="serve: load-generator processes")
    p.add_argument("--servers", help="serve: which of noop,naive,recserve to run (default all)")
    p.add_argument(
        "--before",
        help="serve: another checkout (an earlier commit) also served, as 'before', "
        "interleaved with this one at every level",
    )
    p.add_argument("--rounds", type=int, help="serve: rounds per level, median kept (default 1)")
    p.add_argument("--sweeps-only", action="store_true", help="serve: idle, sweeps, stages only")
    p.add_argument(
        "--database-url",
        help="ingest: the database server to create bench databases on "
        "(default: PostgreSQL at 127.0.0.1:5432; a sqlite:/// URL for SQLite)",
    )
    p.add_argument("--streams", type=int, help="ingest: concurrent FeedbackStream calls")
    p.add_argument("--minutes", type=int, default=10, help="soak: length in minutes")
    p.add_argument(
        "--sizes",
        help="scale: ITEMS:USERS:EVENTS,... "
        "(default 1e4:5e4:1e6,1e4:2e5:4e6,1e5:1e5:2e6,1e6:2e5:4e6)",
    )
    p.add_argument("--steps", type=int, default=200, help="scale: timed training steps")
    p.add_argument("--rate", type=float, help="soak: requests/s (default: 70%% of sustainable)")
    p.add_argument("--callers", type=int, help="ingest: concurrent unary Feedback callers")

    p = add(
        "drill",
        cmd_drill,
        "Fault drills on real processes under traffic (database, broker, worker, bundle, "
        "sigterm, hot-swap, disk-full): acknowledged events lost, INTERNAL errors, checks.",
    )
    p.add_argument("--drills", help="comma-separated drills (default: all)")
    p.add_argument("--seconds", type=float, default=2.0, help="length of each phase")
    p.add_argument("--output", help="JSON output (default bench-results/drills.json)")
