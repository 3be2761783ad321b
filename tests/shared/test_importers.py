"""`recserve import` formats: streaming, idempotent, malformed lines by number."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.storage import event_store, item_store, user_store
from shared.storage.engine import make_engine, session_scope
from shared.storage.importers import ImportLineError, guess_format, import_file
from shared.storage.item_files import import_item_file


@pytest.fixture
def engine(empty_settings):
    engine = make_engine(empty_settings.db_url)
    yield engine
    engine.dispose()


def test_seq_format_keeps_file_order_and_is_idempotent(engine, tmp_path: Path) -> None:
    path = tmp_path / "seq.txt"
    path.write_text("1 10\n1 11\n1 10\n2 12\n")
    assert guess_format(path) == "seq"
    first = import_file(engine, path)
    assert (first.stored, first.users) == (4, 2)
    again = import_file(engine, path)
    assert (again.stored, again.duplicates) == (0, 4)
    with session_scope(engine) as s:
        assert [i for i, _ in event_store.recent_history(s, user_id="1", limit=5)] == [
            "10",
            "11",
            "10",
        ]


def test_seq_users_whose_lines_are_not_contiguous(engine, tmp_path: Path) -> None:
    """A user's ordinal continues where their earlier lines stopped: no colliding ids
    (which would drop events as duplicates) and times still in file order."""
    path = tmp_path / "seq.txt"
    path.write_text("1 10\n2 20\n1 11\n2 21\n1 10\n")
    summary = import_file(engine, path)
    assert (summary.stored, summary.duplicates) == (5, 0)
    with session_scope(engine) as s:
        assert [i for i, _ in event_store.recent_history(s, user_id="1", limit=5)] == [
            "10",
            "11",
            "10",
        ]
        assert [i for i, _ in event_store.recent_history(s, user_id="2", limit=5)] == ["20", "21"]


def test_movielens_inter_and_csv(engine, tmp_path: Path) -> None:
    ml = tmp_path / "ratings.dat"
    ml.write_text("1::5::4::978300760\n1::6::3::978300761\n")
    inter = tmp_path / "x.inter"
    inter.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n7\t8\t5\t881250949\n"
    )
    csv = tmp_path / "x.csv"
    csv.write_text("user,item,timestamp,kind,value\na,b,2026-01-01T00:00:00,purchase,2.5\n")
    assert import_file(engine, ml).stored == 2
    assert import_file(engine, inter).stored == 1
    assert import_file(engine, csv).stored == 1
    with session_scope(engine) as s:
        assert event_store.count_events(s) == 4


def test_malformed_line_aborts_or_is_skipped(engine, tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("1 10\n1 11 12\n2 13\n")
    with pytest.raises(ImportLineError) as err:
        import_file(engine, path, fmt="seq")
    assert err.value.line_no == 2 and "bad.txt:2" in str(err.value)
    skipped: list[int] = []
    summary = import_file(
        engine, path, fmt="seq", skip_bad=True, on_skip=lambda n, _m: skipped.append(n)
    )
    assert skipped == [2] and summary.skipped == 1


def test_movielens_items_with_genres_and_year(engine, tmp_path: Path) -> None:
    movies = tmp_path / "movies.dat"
    movies.write_text(
        "1::Toy Story (1995)::Animation|Comedy\n2::Jumanji (1995)::Adventure\n", encoding="latin-1"
    )
    mapping = tmp_path / "map.txt"
    mapping.write_text("10 1\n")
    result = import_item_file(engine, movies, item_map=mapping)
    assert (result.created, result.skipped, result.errors) == (1, 1, [])
    with session_scope(engine) as s:
        assert item_store.item_titles(s, item_ids=["10"]) == {"10": "Toy Story (1995)"}
        (item,) = item_store.get_items(s, item_ids=["10"])
    assert item.properties == {"genre": ["Animation", "Comedy"], "year": 1995.0}
    assert item.labels == ["genre:Animation", "genre:Comedy"], "one namespace with labels"
    assert item.properties_version == 1


def test_item_tsv_of_ml_100k(engine, tmp_path: Path) -> None:
    path = tmp_path / "ml-100k.item"
    path.write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n2\tGoldenEye\t\tAction\n"
    )
    assert import_item_file(engine, path).created == 2
    with session_scope(engine) as s:
        first, second = item_store.get_items(s, item_ids=["1", "2"])
    assert first.properties == {"genre": ["Animation", "Children's", "Comedy"], "year": 1995.0}
    assert second.properties == {"genre": ["Action"]}, "no year given, none stored"


def test_csv_and_jsonl_items_report_bad_rows_and_store_the_rest(engine, tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        "item_id,title,labels,cat:brand,num:price,text:summary\n"
        "a,Anvil,heavy|sale,acme,9.5,An anvil\n"
        "b,Bad price,,acme,cheap,\n"
        ",No id,,acme,1,\n"
        "c,Cup,,acme|zenith,,\n"
    )
    result = import_item_file(engine, path)
    assert result.created == 2
    assert [(e.row, e.field) for e in result.errors] == [(3, "num:price"), (4, "item_id")]
    assert "accepted: a number" in str(result.errors[0])
    with session_scope(engine) as s:
        anvil, cup = item_store.get_items(s, item_ids=["a", "c"])
    assert anvil.properties == {"brand": ["acme"], "price": 9.5, "summary": "An anvil"}
    assert anvil.labels == ["heavy", "sale", "brand:acme"]
    assert cup.properties == {"brand": ["acme", "zenith"]}

    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(
        '{"item_id": "a", "title": "Anvil", "properties": {"brand": ["acme"], "price": 12}}\n'
        "not json\n"
        '{"item_id": "d", "properties": {"Bad Key": 1}}\n'
        '{"item_id": "e", "properties": {"year": true}}\n'
        '{"item_id": "f", "available": false, "properties": {"size": ["XL"]}}\n'
    )
    result = import_item_file(engine, jsonl)
    assert (result.created, result.updated) == (1, 1)
    assert [(e.row, e.field) for e in result.errors] == [
        (2, "line"),
        (3, "properties.Bad Key"),
        (4, "properties.year"),
    ]
    with session_scope(engine) as s:
        anvil, fresh = item_store.get_items(s, item_ids=["a", "f"])
    assert anvil.properties == {"brand": ["acme"], "price": 12.0}
    assert anvil.properties_version == 2, "a change of properties is a new version"
    assert fresh.available is False and fresh.labels == ["size:XL"]


def test_an_unknown_csv_column_is_refused_before_any_row(engine, tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("item_id,colour\na,red\n")
    result = import_item_file(engine, path)
    assert result.created == 0 and [(e.row, e.field) for e in result.errors] == [(1, "colour")]


def test_import_reports_the_quality_of_what_it_read(engine, tmp_path: Path) -> None:
    rows = ["user,item,rating,timestamp"]
    rows += ["u1,a,5,1700000000", "u1,b,5,1700000600", "u1,c,5,1699999000"]  # c: earlier
    rows += ["u2,a,5,1700000000", "not a row", "u1,a,5,1700000000"]  # a repeat of line 2
    rows += [f"bot,i{i},1,{1700000000 + i}" for i in range(31)]  # 31 events in 31 seconds
    path = tmp_path / "events.csv"
    path.write_text("\n".join(rows) + "\n")
    summary = import_file(engine, path, skip_bad=True)
    quality = summary.quality
    assert quality["rows_read"] == 38 and quality["malformed"] == 1
    assert quality["duplicates_dropped"] == 1 and quality["stored"] == 35
    assert quality["users"] == 3 and quality["items"] == 34
    assert quality["users_below_min_history"] == 1, "u2 has one event"
    assert quality["items_seen_once"] == 33, "every item but a"
    assert quality["events_out_of_order"] == 2, "c, and the repeat of a after b"
    assert quality["suspected_bots"] == 1 and quality["suspected_bot_users"] == ["bot"]
    assert quality["newly_flagged_users"] == 1
    with session_scope(engine) as s:
        assert user_store.flagged_user_ids(s) == {"bot"}, "flagged for training to leave out"
    assert import_file(engine, path, skip_bad=True).quality["newly_flagged_users"] == 0
    assert quality["first_event"].startswith("2023-11-14T21:56:40")


def test_seq_files_have_no_times_to_judge(engine, tmp_path: Path) -> None:
    path = tmp_path / "events.txt"
    path.write_text("".join(f"1 {i}\n" for i in range(50)))
    quality = import_file(engine, path).quality
    assert quality["users"] == 1 and quality["items"] == 50
    assert quality["suspected_bots"] is None and quality["events_out_of_order"] is None
