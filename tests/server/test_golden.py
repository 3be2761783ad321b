"""The request path's answers, replayed against those recorded before it was rebuilt
(tests/server/golden.py): the same items in the same order, the same scores (to float32
noise), sources, history counts, titles and explanations.

Where a fix of the eligibility policy changes an answer, the case is listed in FIXED with
the reason, and the new answer is checked for what the fix promises instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.app import start_server
from tests.server import golden

RECORDED = json.loads(golden.ANSWERS.read_text())
LABELLED_FALLBACK = "before any model, the popularity fallback ignored label filters"
FIXED = {
    f"no-model/{prefix}{name}": LABELLED_FALLBACK
    for prefix in ("", "batch:")
    for name in ("include-label", "exclude-label", "sale-only", "unknown-label",
                 "new-user-labels")
}  # fmt: skip


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    import asyncio

    async def replay() -> dict[str, dict]:
        folder = tmp_path_factory.mktemp("golden")
        result: dict[str, dict] = {}
        for scenario, with_model in (("model", True), ("no-model", False)):
            settings = golden.build(folder / scenario, with_model=with_model)
            running = await start_server(settings)
            try:
                got = await golden.answers(running.target)
            finally:
                await running.stop(0)
            result.update({f"{scenario}/{name}": value for name, value in got.items()})
        return result

    return asyncio.run(replay())


def test_every_recorded_case_is_replayed(replayed: dict[str, dict]) -> None:
    assert set(replayed) == set(RECORDED)
    assert set(FIXED) <= set(RECORDED)


@pytest.mark.parametrize("name", sorted(set(RECORDED) - set(FIXED)))
def test_the_answer_is_unchanged(replayed: dict[str, dict], name: str) -> None:
    before, now = RECORDED[name], replayed[name]
    assert now["items"] == before["items"]
    assert now["scores"] == pytest.approx(before["scores"], rel=1e-3, abs=1e-3)
    for key in ("source", "model_version", "history_used", "titles"):
        assert now[key] == before[key], key
    for then, later in zip(before["explanations"], now["explanations"], strict=True):
        assert [e[0] for e in later] == [e[0] for e in then]
        assert [e[2] for e in later] == [e[2] for e in then]
        assert [e[1] for e in later] == pytest.approx([e[1] for e in then], rel=1e-3, abs=1e-3)


def label_violations(name: str, items: list[str]) -> list[str]:
    """The items of an answer that break the query's label filters (the golden catalogue's
    labels: topic-T, and sale)."""
    fields = golden.queries()[name.split("/", 1)[1].removeprefix("batch:")]
    include, exclude = set(fields.get("include_labels", [])), set(fields.get("exclude_labels", []))
    wrong = []
    for item in items:
        carried = {f"topic-{int(item[1:4])}", *(["sale"] if item in golden.ON_SALE else [])}
        if (include and not carried & include) or carried & exclude:
            wrong.append(item)
    return wrong


@pytest.mark.parametrize("name", sorted(FIXED))
def test_a_fixed_answer_keeps_the_filters(replayed: dict[str, dict], name: str) -> None:
    """The recorded answer broke the label filters (the bug); the new one does not."""
    assert label_violations(name, RECORDED[name]["items"]), "the recorded answer was wrong"
    assert label_violations(name, replayed[name]["items"]) == []


def test_golden_data_is_what_was_recorded(tmp_path: Path) -> None:
    """The recorded answers came from this module's data: rebuilding gives the same
    catalogue and log (so a change of the generator cannot pass for a change of path)."""
    settings = golden.build(tmp_path, with_model=False)
    from shared.storage import event_store
    from shared.storage.engine import make_engine, session_scope

    engine = make_engine(settings.db_url)
    with session_scope(engine) as session:
        assert event_store.count_events(session) == len(list(golden.synthetic.events(golden.SPEC)))
    engine.dispose()
