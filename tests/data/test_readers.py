"""Readers: every format on the shared real datasets, and every error case on small files."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import shared_dataset

from evorec.data.formats import (
    FORMATS,
    Format,
    ReadOptions,
    detect_format,
    format_names,
    formats_help,
    read_events,
    read_item_text,
    register,
)
from evorec.data.schema import EVENT_COLUMNS, RawData, canonical_events
from evorec.errors import ConfigError, DataError

shared = shared_dataset


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def error_of(*args: object, **kwargs: object) -> DataError:
    with pytest.raises(DataError) as info:
        read_events(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------- real datasets


def test_s3rec_sequence_beauty() -> None:
    path = shared("amazon-s3rec/Beauty.txt")
    assert detect_format(path) == "sequence"
    raw = read_events(path)
    events = raw.events
    assert events.columns == list(EVENT_COLUMNS)
    assert events.height == 198_502
    assert events["user_id"].n_unique() == 22_363
    assert events["item_id"].n_unique() == 12_101
    assert events["user_id"].dtype == pl.Int64 and events["item_id"].dtype == pl.Int64
    assert not raw.has_time
    assert events.select("user_id", "item_id", "timestamp").null_count().row(0) == (0, 0, 0)
    # timestamps are positions 0..n-1 and line numbers are the user's line
    first = events.filter(pl.col("user_id") == 2)
    assert first["item_id"].to_list() == [6, 7, 8, 9, 10, 4, 11]
    assert first["timestamp"].to_list() == list(range(7))
    assert set(first["line"].to_list()) == {2}
    assert raw.items is not None and raw.items.columns == ["item_id", "attributes"]
    assert raw.items.schema["attributes"] == pl.List(pl.Int64)
    assert raw.items.filter(pl.col("item_id") == 4)["attributes"].to_list() == [[1, 2, 3]]


def test_s3rec_sports_is_fast() -> None:
    path = shared("amazon-s3rec/Sports_and_Outdoors.txt")
    start = time.perf_counter()
    raw = read_events(path)
    assert time.perf_counter() - start < 3.0
    assert raw.events.height == 296_337
    assert raw.events["user_id"].n_unique() == 35_598


def test_movielens_latest_small() -> None:
    path = shared("ml-latest-small")
    assert detect_format(path) == "movielens"
    assert detect_format(path / "ratings.csv") == "movielens"
    raw = read_events(path)
    events = raw.events
    assert events.height == 100_836
    assert events["user_id"].n_unique() == 610
    assert raw.has_time
    assert events.row(0) == (1, 1, 964982703, None, 4.0, 2)  # line 2: after the header
    assert events["value"].min() == 0.5 and events["value"].max() == 5.0
    assert raw.items is not None and raw.items.height == 9_742
    toy = raw.items.filter(pl.col("item_id") == 1).row(0, named=True)
    assert toy["title"] == "Toy Story (1995)"
    assert toy["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert raw.items.filter(pl.col("genres").list.len() == 0).height > 0  # "(no genres listed)"
    assert raw.users is None


def test_taobao_behaviour_sample() -> None:
    path = shared("taobao-behavior-sample/UserBehavior_head84k.csv")
    assert detect_format(path) == "taobao"
    raw = read_events(path)
    events = raw.events
    assert events.height == 84_287
    assert events["user_id"].n_unique() == 814
    assert events["item_id"].n_unique() == 55_233
    counts = dict(events["behavior"].value_counts().iter_rows())
    assert counts == {"pv": 75_693, "cart": 4_494, "fav": 2_351, "buy": 1_749}
    assert events["timestamp"].min() > 1_500_000_000
    assert raw.items is not None and raw.items.columns == ["item_id", "category"]
    assert raw.items.height == 55_233
    assert raw.items["category"].n_unique() == 2_911


def test_unisrec_scientific() -> None:
    path = shared("amazon-scientific-text")
    assert detect_format(path) == "unisrec"
    raw = read_events(path)
    events = raw.events
    assert events.height == 19_712
    assert events["user_id"].n_unique() == 2_928
    assert events["item_id"].n_unique() == 1_585
    assert not raw.has_time
    # user 0 is A1AXCV2WYDA4PD; the test row holds the full history then the target
    test_row = (path / "Scientific.test.inter").read_text().splitlines()[1].split("\t")
    index = dict(
        reversed(line.split("\t"))
        for line in (path / "Scientific.item2index").read_text().splitlines()
    )
    expected = [index[i] for i in test_row[1].split()] + [index[test_row[2]]]
    user0 = events.filter(pl.col("user_id") == "A1AXCV2WYDA4PD")
    assert user0["item_id"].to_list() == expected
    assert user0["timestamp"].to_list() == list(range(len(expected)))
    assert raw.items is not None and raw.items.columns == ["item_id", "text"]
    assert events.join(raw.items, on="item_id", how="anti").height == 0
    text = read_item_text(path / "Scientific.text")
    assert text.height == 1_585
    assert text.filter(pl.col("item_id") == "B0000223UV")["text"][0].startswith("Gorilla")


# --------------------------------------------------------------------------- generic tables


def test_csv_guesses_columns_and_reports_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "log.csv",
        "userId,movieId,rating,timestamp,type\n"
        "u1,10,4.5,1600000000,click\n"
        "\n"
        "u1,11,3,1600000100000,buy\n"  # milliseconds column: all values scaled
        "u2,10,, 1600000200 ,click\n",
    )
    raw = read_events(path)
    assert raw.has_time
    assert raw.events.to_dicts() == [
        dict(user_id="u1", item_id=10, timestamp=1600000, behavior="click", value=4.5, line=2),
        dict(user_id="u1", item_id=11, timestamp=1600000100, behavior="buy", value=3.0, line=4),
        dict(user_id="u2", item_id=10, timestamp=1600000, behavior="click", value=None, line=5),
    ]


def test_seconds_are_not_scaled_and_dates_are_parsed(tmp_path: Path) -> None:
    path = write(
        tmp_path / "log.tsv",
        "user\titem\tdate\n"
        "1\t1\t2020-01-01\n1\t2\t2020-01-01T00:00:10Z\n1\t3\t2020-01-01 00:01:00\n",
    )
    assert detect_format(path) == "tsv"
    events = read_events(path).events
    assert events["timestamp"].to_list() == [1577836800, 1577836810, 1577836860]


def test_float_timestamps_and_sessions(tmp_path: Path) -> None:
    path = write(tmp_path / "clicks.txt", "SessionId\tItemId\tTime\n7\t1\t1396860669.9\n")
    events = read_events(path).events
    assert events.row(0) == (7, 1, 1396860669, None, None, 2)


def test_ids_keep_their_type(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item\n001,5\n2,6\n")
    events = read_events(path).events
    assert events["user_id"].to_list() == ["001", "2"]  # a leading zero keeps strings
    assert events["item_id"].dtype == pl.Int64


def test_no_timestamp_column_uses_order(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item\na,1\nb,2\na,3\na,1\n")
    raw = read_events(path)
    assert not raw.has_time
    assert raw.events["timestamp"].to_list() == [0, 0, 1, 2]


def test_explicit_columns_headerless_and_multichar_sep(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ratings.txt", "B0001::A9::5.0::1005177600\nB0002::A9::3.0::1005177601\n"
    )
    columns = {"item_id": "1", "user_id": "2", "value": "3", "timestamp": "4"}
    events = read_events(path, "csv", columns=columns, sep="::").events
    assert events.select("user_id", "item_id", "value", "line").rows() == [
        ("A9", "B0001", 5.0, 1),
        ("A9", "B0002", 3.0, 2),
    ]


def test_columns_mapping_overrides_guess(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "visitor,sku,when,user\n1,2,3,x\n")
    events = read_events(
        path, columns={"user_id": "visitor", "item_id": "sku", "timestamp": "when"}
    )
    assert events.events.row(0)[:3] == (1, 2, 3)


def test_parquet_with_datetimes(tmp_path: Path) -> None:
    from datetime import datetime

    path = tmp_path / "log.parquet"
    pl.DataFrame(
        {
            "user_id": [1, 2],
            "item_id": ["a", "b"],
            "time": [datetime(2020, 1, 1), datetime(2020, 1, 2)],
        }
    ).write_parquet(path)
    assert detect_format(path) == "parquet"
    events = read_events(path).events
    assert events.rows() == [
        (1, "a", 1577836800, None, None, 1),
        (2, "b", 1577923200, None, None, 2),
    ]


def test_jsonl_bad_line_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path / "log.jsonl",
        '{"user": 1, "item": 2, "ts": 5}\n\n{"user": 1, bad json\n'
        '{"user": 2, "item": 3, "ts": 6}\n',
    )
    events = read_events(path).events
    assert events["line"].to_list() == [1, 3, 4]
    assert events.filter(pl.col("line") == 3)["user_id"][0] is None
    error = error_of(path, on_bad_rows="error")
    assert error.line == 3 and "not a JSON object" in str(error)


# --------------------------------------------------------------------------- errors


def test_malformed_line_is_null_or_error(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item,ts\n1,2,100\n1,3,200\n2,4,yesterday\n2,5,300\n")
    events = read_events(path).events
    assert events.filter(pl.col("timestamp").is_null())["line"].to_list() == [4]
    error = error_of(path, on_bad_rows="error")
    assert (error.line, error.field) == (4, "ts")
    assert str(error).startswith(f"{path}:4, field 'ts'") and "yesterday" in str(error)


def test_ragged_and_short_rows_are_bad(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item,ts\n1,2,100\n1,3,200,9\n2\n2,5,300\n")
    events = read_events(path).events
    assert events.filter(pl.col("item_id").is_null())["line"].to_list() == [4]
    error = error_of(path, on_bad_rows="error")
    assert error.line == 3 and "the line has 4 fields, the header has 3" in str(error)
    short = write(tmp_path / "short.csv", "user,item,ts\n1,2,100\n2\n2,5,300\n")
    error = error_of(short, on_bad_rows="error")
    assert error.line == 3 and "the line has 1 field, the header has 3" in str(error)


def test_mostly_bad_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item,ts\n1,2,100\n1,x,\n,3,5\n")
    error = error_of(path)
    assert "2 of 3 rows" in str(error) and error.line == 3


def test_non_numeric_timestamp_column(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item,ts\n1,2,monday\n1,3,tuesday\n")
    error = error_of(path)
    assert error.field == "ts" and error.line == 2
    assert "2 of 2 rows have an unparseable timestamp (first at line 2: 'monday')" in str(error)


def test_missing_required_column(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,thing,ts\n1,2,3\n")
    error = error_of(path)
    assert error.field == "item_id" and "user, thing, ts" in str(error)
    error = error_of(path, columns={"item_id": "product"})
    assert error.field == "product" and "not found" in str(error)


def test_empty_and_header_only(tmp_path: Path) -> None:
    assert "no events" in str(error_of(write(tmp_path / "empty.csv", "")))
    assert "no events" in str(error_of(write(tmp_path / "header.csv", "user,item,ts\n")))
    assert "no events" in str(error_of(write(tmp_path / "blank.txt", "\n\n"), "sequence"))


def test_unknown_and_undetectable_formats(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item\n1,2\n")
    error = error_of(path, "excel")
    assert "unknown format 'excel'" in str(error)
    assert all(f in str(error) for f in format_names())
    error = error_of(write(tmp_path / "log.xyz", "user,item\n1,2\n"))
    assert all(f in str(error) for f in format_names())
    error = error_of(tmp_path)
    assert "cannot detect" in str(error)


def test_missing_file_and_bad_options(tmp_path: Path) -> None:
    assert "no such file" in str(error_of(tmp_path / "nope.csv"))
    path = write(tmp_path / "log.csv", "user,item\n1,2\n")
    with pytest.raises(ConfigError):
        read_events(path, on_bad_rows="skip")
    with pytest.raises(ConfigError):
        read_events(path, "taobao", sep=";")


# --------------------------------------------------------------------------- dataset layouts


def test_sequence_file_with_attributes(tmp_path: Path) -> None:
    path = write(tmp_path / "Toy.txt", "1 5 6 7\n2 6\n3\n4 8 5\n")
    write(tmp_path / "Toy_item2attributes.json", json.dumps({"5": [1, 2, 1], "6": [3], "9": []}))
    assert detect_format(path) == "sequence"
    raw = read_events(path)
    assert raw.events.filter(pl.col("user_id") == 1)["timestamp"].to_list() == [0, 1, 2]
    bad = raw.events.filter(pl.col("item_id").is_null())
    assert bad["line"].to_list() == [3]  # a user with no items
    assert raw.items is not None
    assert dict(raw.items.iter_rows()) == {5: [1, 2], 6: [3], 9: []}
    assert error_of(path, "sequence", on_bad_rows="error").line == 3


def test_ml100k_layout(tmp_path: Path) -> None:
    d = tmp_path / "ml-100k"
    d.mkdir()
    write(d / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    flags = "|".join(["0"] * 19)
    genre_flags = "0|0|0|1|1|1" + "|0" * 13
    write(
        d / "u.item",
        f"242|Kolya (1996)|24-Jan-1997||http://x|{genre_flags}\n"
        f"302|Ça va (1997)|01-Jan-1997||http://y|{flags}\n",
        encoding="latin-1",
    )
    write(d / "u.user", "196|49|M|writer|55105\n186|39|F|executive|00000\n")
    assert detect_format(d) == "movielens" and detect_format(d / "u.data") == "movielens"
    raw = read_events(d / "u.data")
    assert raw.events.rows() == [
        (196, 242, 881250949, None, 3.0, 1),
        (186, 302, 891717742, None, 3.0, 2),
    ]
    assert raw.items is not None
    assert raw.items.rows() == [
        (242, "Kolya (1996)", ["Animation", "Children's", "Comedy"]),
        (302, "Ça va (1997)", []),
    ]
    assert raw.users is not None
    assert raw.users.rows() == [
        (196, 49, "M", "writer", "55105"),
        (186, 39, "F", "executive", "00000"),
    ]


def test_ml1m_layout(tmp_path: Path) -> None:
    d = tmp_path / "ml-1m"
    d.mkdir()
    write(d / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\nx::1::2::3\n")
    write(
        d / "movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "73::Misérables, Les (1995)::Drama|Musical\n",
        encoding="latin-1",
    )
    write(d / "users.dat", "1::F::1::10::48067\n")
    raw = read_events(d)
    assert raw.events.select("user_id", "item_id", "value", "line").rows() == [
        ("1", 1193, 5.0, 1),
        ("1", 661, 3.0, 2),
        ("x", 1, 2.0, 3),
    ]
    assert raw.items is not None
    assert raw.items.filter(pl.col("item_id") == 73).row(0) == (
        73,
        "Misérables, Les (1995)",
        ["Drama", "Musical"],
    )
    assert raw.users is not None
    assert raw.users.row(0) == ("1", 1, "F", "K-12 student", "48067")  # ids typed as events


def test_unisrec_rebuilds_truncated_reversed_rows(tmp_path: Path) -> None:
    # one user, sequence a b c d e f g with histories truncated to 3 and rows longest first
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    write(
        tmp_path / "Toy.train.inter",
        header + "0\tc d e\tf\n0\tb c d\te\n0\ta b c\td\n0\ta b\tc\n0\ta\tb\n",
    )
    write(tmp_path / "Toy.valid.inter", header + "0\td e f\tg\n")
    write(tmp_path / "Toy.test.inter", header + "0\te f g\th\n")
    write(tmp_path / "Toy.user2index", "U7\t0\n")
    write(tmp_path / "Toy.text", "item_id:token\ttext:token_seq\na\tthe a\tthing\nb\tbee\n")
    raw = read_events(tmp_path)
    assert raw.events["item_id"].to_list() == list("abcdefgh")
    assert raw.events["user_id"].unique().to_list() == ["U7"]
    assert raw.items is not None and raw.items.rows() == [("a", "the a\tthing"), ("b", "bee")]
    write(tmp_path / "Toy.test.inter", header + "0\tx y\tz\n")
    error = error_of(tmp_path)
    assert error.path == str(tmp_path / "Toy.test.inter") and error.line == 2


def test_taobao_detected_from_first_line(tmp_path: Path) -> None:
    path = write(tmp_path / "UserBehavior.csv", "1,10,100,pv,1511544070\n1,11,100,buy,oops\n")
    assert detect_format(path) == "taobao"
    raw = read_events(path)
    assert raw.events["behavior"].to_list() == ["pv", "buy"]
    assert raw.events.filter(pl.col("timestamp").is_null())["line"].to_list() == [2]
    assert raw.items is not None and raw.items.rows() == [(10, 100), (11, 100)]


def test_cli_info(tmp_path: Path, run) -> None:
    path = write(
        tmp_path / "log.csv", "user,item,ts,event\n1,2,1600000000,pv\n2,2,1600000100,buy\n"
    )
    result = run("data", "info", "--data", path)
    assert result.code == 0, result.err
    assert "events" in result.out and "2020-09-13" in result.out and "buy 1" in result.out
    result = run("data", "info", "--data", tmp_path / "missing.csv")
    assert result.code == 1
    assert result.err.startswith("error:") and "missing.csv" in result.err
    assert "Traceback" not in result.err


def test_unreadable_inputs(tmp_path: Path) -> None:
    assert "not a directory" in str(error_of(tmp_path, "csv"))
    broken = write(tmp_path / "log.parquet", "not parquet")
    assert str(error_of(broken)).startswith(f"{broken}: cannot read")


def test_amazon_category_with_metadata(datasets_dir: Path) -> None:
    directory = datasets_dir / "amazon-magazine"
    assert detect_format(directory) == "amazon"
    assert detect_format(directory / "Magazine_Subscriptions.csv") == "amazon"
    raw = read_events(directory)
    assert raw.events.height == 89_689 and raw.has_time
    assert raw.events["value"].is_between(1, 5).all()
    items = raw.items
    assert items is not None and items.height == 2_320  # metadata rows, repeats dropped
    text = items.filter(pl.col("item_id") == "B00005N7P0")["text"][0]
    assert "MaximumPC" in text or "Maximum PC" in text
    # HTML (cut-off title tags, entities) does not reach the text
    assert not items["text"].str.contains("<span|&amp;").any()
    assert (items["text"].str.len_chars() > 0).all()


def test_amazon_metadata_bad_line_is_named(tmp_path: Path) -> None:

    (tmp_path / "Toys.csv").write_text("i1,u1,5.0,100\ni2,u1,4.0,200\n")
    with gzip.open(tmp_path / "meta_Toys.json.gz", "wt") as handle:
        handle.write('{"asin": "i1", "category": ["Toys", "Cars"], "title": "Racer"}\n')
        handle.write("{not json\n")
    with pytest.raises(DataError, match=r"meta_Toys.json.gz:2: not a JSON object"):
        read_events(tmp_path)


# --------------------------------------------------------------------------- hardening


def latin1_log(tmp_path: Path) -> Path:
    """Two items whose ids differ only by a non-ASCII letter (café, cafè), in Latin-1."""
    rows = "".join(f"u{u},caf{c},{100 + u}\n" for u in range(3) for c in "éè")
    return write(tmp_path / "latin.csv", "user_id,item_id,timestamp\n" + rows, "latin-1")


def test_non_utf8_bytes_fail_naming_line_offset_and_encoding(tmp_path: Path) -> None:
    path = latin1_log(tmp_path)
    error = error_of(path)
    assert error.path == str(path) and error.line == 2
    offset = len(b"user_id,item_id,timestamp\nu0,caf")
    assert f"byte 0xe9 at offset {offset}" in str(error) and "--encoding latin-1" in str(error)
    raw = read_events(path, encoding="latin-1")
    assert raw.events["item_id"].unique(maintain_order=True).to_list() == ["café", "cafè"]
    assert raw.events.height == 6


@pytest.mark.parametrize(
    "name,text,fmt",
    [
        ("log.jsonl", '{"user": 1, "item": "tea", "ts": 5}\n{"user": 1, "item": "café"}\n', "auto"),
        ("Toy.txt", "alice tea sock\nbob café hat\n", "sequence"),
        ("log.tsv", "user\titem\n1\ttea\n1\tcafé\n", "auto"),
    ],
)
def test_every_text_reader_refuses_undecodable_bytes(
    tmp_path: Path, name: str, text: str, fmt: str
) -> None:
    path = write(tmp_path / name, text, "latin-1")
    error = error_of(path, fmt)
    assert "not valid utf-8" in str(error)
    assert error.line == text[: text.index("é")].count("\n") + 1
    items = read_events(path, fmt, encoding="latin-1").events["item_id"].to_list()
    assert "café" in items


def test_a_utf16_file_gets_a_utf16_hint_and_reads_with_it(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item\nu1,café\nu2,cafè\n", "utf-16")
    assert "--encoding utf-16" in str(error_of(path))
    assert read_events(path, encoding="utf-16").events["item_id"].to_list() == ["café", "cafè"]


def test_unknown_encoding_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item\n1,2\n")
    for encoding in ("klingon", "base64"):  # no codec, a codec that is not a text encoding
        with pytest.raises(ConfigError, match="unknown text encoding"):
            read_events(path, encoding=encoding)


def test_duplicate_header_names_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp,timestamp\n1,2,100,x\n")
    error = error_of(path)
    assert (error.line, error.field) == (1, "timestamp")
    assert "'timestamp' 2 times (columns 3, 4)" in str(error)
    # a quoted separator is part of a name, and unnamed columns are not duplicates
    path = write(tmp_path / "quoted.csv", '"user",item,"ts, utc",,\n1,2,100,,\n')
    assert read_events(path, columns={"timestamp": "ts, utc"}).events.row(0)[:3] == (1, 2, 100)


def test_sequence_file_with_a_non_integer_item(tmp_path: Path) -> None:
    lines = [f"{u} " + " ".join(str(i) for i in range(1, 6)) for u in range(1, 5)]
    lines[2] = "3 1 2 x3 4"
    path = write(tmp_path / "Beauty.txt", "\n".join(lines) + "\n")
    assert detect_format(path) == "sequence"
    events = read_events(path).events
    assert events["item_id"].dtype == pl.Int64
    assert events.filter(pl.col("user_id").is_null())["line"].to_list() == [3]
    error = error_of(path, on_bad_rows="error")
    assert (error.line, error.field) == (3, "item")
    assert "'x3' (an integer id expected)" in str(error)
    header = write(tmp_path / "words.txt", "user item\n1 2\n")
    assert detect_format(header) != "sequence"  # a header line is not a user


def test_sequence_file_of_string_ids_keeps_them(tmp_path: Path) -> None:
    path = write(tmp_path / "seq.txt", "alice shoe sock\nbob sock hat\n")
    events = read_events(path, "sequence").events
    assert events["item_id"].to_list() == ["shoe", "sock", "sock", "hat"]


def test_all_timestamps_unparseable_counts_them(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item,ts\n1,2,abc\n1,3,\n2,2,xyz\n")
    error = error_of(path)
    assert (error.line, error.field) == (2, "ts")
    assert "2 of 3 rows have an unparseable timestamp (first at line 2: 'abc')" in str(error)
    assert "the other 1 none" in str(error)


def test_wrong_field_counts_name_line_and_counts(tmp_path: Path) -> None:
    # the first row is the widest: Polars would size the table by it
    path = write(tmp_path / "log.csv", "user,item,ts\n1,2,3,4,5,6,7,8\n1,3,4\n1,4,5\n")
    events = read_events(path).events
    assert events.filter(pl.col("user_id").is_null())["line"].to_list() == [2]
    error = error_of(path, on_bad_rows="error")
    assert error.line == 2 and error.field is None
    assert str(error).endswith("the line has 8 fields, the header has 3")
    taobao = write(tmp_path / "UserBehavior.csv", "1,10,100,pv,1511544070\n1,11,100,buy\n")
    error = error_of(taobao, "taobao", on_bad_rows="error")
    assert error.line == 2 and "the line has 4 fields, expected 5" in str(error)


def test_csv_syntax_errors_leave_out_polars_advice(tmp_path: Path) -> None:
    error = error_of(write(tmp_path / "log.csv", 'user,item\n"1,2\n'))
    assert "cannot read" in str(error) and "not properly escaped" in str(error)
    assert "You might want to try" not in str(error) and "infer_schema" not in str(error)


def test_no_events_left_says_which_rows_went_and_why(tmp_path: Path) -> None:
    from evorec.data.load import load_dataset

    rows = "".join(f"u{u},i{i},{'abc' if i % 2 else 100 + i}\n" for u in range(4) for i in range(6))
    path = write(tmp_path / "log.csv", "user,item,ts\n" + rows)
    with pytest.raises(DataError) as info:
        load_dataset(path, cache=False)
    message = str(info.value)
    assert "12 of 24 rows were dropped as unreadable (12 with no parseable timestamp" in message
    assert "lines 3, 5, 7, 9, 11 ..." in message and "then k-core removed 12" in message
    assert "lower min_user_events" in message


def test_amazon_metadata_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    (tmp_path / "Toys.csv").write_text("i1,u1,5.0,100\ni2,u1,4.0,200\n")
    with gzip.open(tmp_path / "meta_Toys.json.gz", "wb") as handle:
        handle.write(b'{"asin": "i1", "title": "Racer"}\n{"asin": "i2", "title": "Caf\xe9"}\n')
    with pytest.raises(DataError, match=r"meta_Toys.json.gz:2: not valid UTF-8 JSON: byte 0xe9"):
        read_events(tmp_path)


# --------------------------------------------------------------------------- the registry


def _read_pairs(path: Path, options: ReadOptions) -> RawData:
    """A toy format: ``user>item`` lines, one event each, in order."""
    lines = [line.split(">") for line in path.read_text(options.encoding).splitlines() if line]
    events = pl.DataFrame(
        {
            "user_id": [int(user) for user, _ in lines],
            "item_id": [int(item) for _, item in lines],
            "timestamp": list(range(len(lines))),
            "line": list(range(1, len(lines) + 1)),
        }
    )
    return RawData(canonical_events(events), has_time=False, name=path.stem, sources=[path])


def test_a_registered_format_is_read_detected_and_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from evorec.cli.data_commands import app

    pairs = Format("pairs", _read_pairs, lambda probe: probe.suffix == ".pairs", "a .pairs file")
    monkeypatch.setitem(FORMATS, pairs.name, pairs)
    path = write(tmp_path / "log.pairs", "1>10\n1>11\n2>10\n")
    assert detect_format(path) == "pairs"
    raw = read_events(path)
    assert raw.events.select("user_id", "item_id").rows() == [(1, 10), (1, 11), (2, 10)]
    assert "pairs" in str(error_of(path, "excel")) and "pairs" in formats_help()
    with pytest.raises(ConfigError, match="apply only to the formats csv, tsv, parquet, jsonl"):
        read_events(path, columns={"user_id": "u"})
    listing = CliRunner().invoke(app, ["formats"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0
    assert "pairs" in listing.output and "a .pairs file" in listing.output
    with pytest.raises(ValueError, match="taken"):
        register(pairs)
