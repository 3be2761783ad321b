"""Tables printed by `recserve evaluate`."""

from __future__ import annotations

from typing import Any

KS = (1, 5, 10, 20)


def print_evaluation_table(result: dict[str, Any], ks: tuple[int, ...] = KS) -> None:
    """A model beside popularity under the three protocols: full ranking with seen items
    filtered, unfiltered, and 100 sampled negatives."""
    model, pop = result["model"], result["popularity"]
    print(
        f"\n{result['data']}: model version {result.get('version', '-')}, "
        f"{result['users']:,} users, {result['items']:,} items"
    )
    header = (
        f"{'metric':<12}{'model full':>12}{'pop full':>12}{'model unfilt':>14}{'pop unfilt':>12}"
        f"{'model 100neg':>14}{'pop 100neg':>12}"
    )
    print(header)
    print("-" * len(header))
    print("(full: seen items filtered; unfilt: nothing excluded but padding; 100neg: sampled)")
    names = [f"{kind}@{k}" for k in ks for kind in ("hr", "ndcg")] + ["mrr"]
    for name in names:
        if name not in model:
            continue
        print(
            f"{name:<12}{model.get(name, 0):>12.4f}{pop.get(name, 0):>12.4f}"
            f"{model.get('unfiltered_' + name, 0):>14.4f}{pop.get('unfiltered_' + name, 0):>12.4f}"
            f"{model.get('sampled_' + name, 0):>14.4f}{pop.get('sampled_' + name, 0):>12.4f}"
        )
