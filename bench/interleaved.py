"""What the A/B benchmarks share (`bench rules`, `bench http`): the medians of
interleaved rounds, their ratio, a table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.ingest import cpu_model

KEYS = ("throughput", "p50_ms", "p99_ms")


def report(
    rows: dict[str, list[dict[str, Any]]],
    *,
    baseline: str,
    candidate: str,
    title: str,
    level: int,
    duration: float,
    output: Path,
    errors: int,
) -> dict[str, Any]:
    """Medians per side, the candidate over the baseline, printed and written as JSON."""
    median = {
        name: {key: statistics.median(r[key] for r in found) for key in KEYS}
        for name, found in rows.items()
    }
    base, other = median[baseline], median[candidate]
    rounds = len(rows[baseline])
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "concurrency": level,
        "rounds": rounds,
        "duration_s": duration,
        "median": median,
        "p99_ratio": other["p99_ms"] / max(1e-9, base["p99_ms"]),
        "throughput_ratio": other["throughput"] / max(1e-9, base["throughput"]),
        "errors": errors,
        "rounds_detail": rows,
    }
    width = max(len(name) for name in median)
    print(f"\nmedian of {rounds} interleaved rounds at {level} callers ({result['cpu']}):")
    print(f"{'':>{width}}  {'req/s':>8}  {'p50 ms':>7}  {'p99 ms':>7}")
    for name, figures in median.items():
        print(
            f"{name:>{width}}  {figures['throughput']:8.1f}  {figures['p50_ms']:7.2f}  "
            f"{figures['p99_ms']:7.2f}"
        )
    print(f"{title}: throughput {result['throughput_ratio']:.3f}x, p99 {result['p99_ratio']:.3f}x")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(f"wrote {output.resolve()}")
    return result
