"""Ratings with a user-user network: Ciao (``rating.txt`` + ``trust.txt``) and HetRec 2011
Last.fm (``user_artists.dat`` + ``user_friends.dat``); the edges become each user's
``friends`` in the user table."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from evorec.data.formats.registry import Format, ReadOptions, register
from evorec.data.formats.rows import (
    EXTRA_FIELDS,
    category_table,
    events_from_table,
    parse_id,
    read_lines,
    read_rows,
)
from evorec.data.schema import ITEM, LINE, TIME, USER, VALUE, RawData
from evorec.errors import DataError


def _read_ciao(path: Path, options: ReadOptions) -> RawData:
    """Read Ciao (Tang et al. 2012): ``rating.txt`` rows ``user item category rating
    helpfulness time``, numbers written as floats (``1.0000000e+000``), whitespace-separated;
    ``trust.txt`` beside it (``truster trustee``) becomes each user's ``friends``."""
    on_bad_rows, encoding = options.on_bad_rows, options.encoding
    d = path if path.is_dir() else path.parent
    ratings = d / "rating.txt"
    names = ["user", "item", "category", "rating", "helpfulness", "time"]
    df, line = _read_numbers(ratings, names, encoding)
    mapping = {USER: "user", ITEM: "item", VALUE: "rating", TIME: "time"}
    events, _ = events_from_table(ratings, df, line, mapping, on_bad_rows)
    items = category_table(events, df["category"])
    sources = [ratings]
    users = None
    trust = d / "trust.txt"
    if trust.exists():
        edges, _ = _read_numbers(trust, ["user", "friend"], encoding)
        users = _friends_table(trust, edges, events[USER].dtype)
        sources.append(trust)
    return RawData(events, items=items, users=users, has_time=True, name=d.name, sources=sources)


def _read_lastfm(path: Path, options: ReadOptions) -> RawData:
    """Read HetRec 2011 Last.fm: ``user_artists.dat`` (``userID artistID weight``, the
    listening count as ``value``) and ``user_friends.dat`` beside it (``userID friendID``)
    as each user's ``friends``.

    The data has no listening times and the file lists artists by id, so each user's
    artists are put in order of increasing listening count (ties in file order): the last
    event, held out by leave-one-out, is the user's most played artist."""
    on_bad_rows, encoding = options.on_bad_rows, options.encoding
    d = path if path.is_dir() else path.parent
    listens = d / "user_artists.dat"
    df, line = read_rows(
        listens, "\t", ["user", "artist", "weight"], skip_header=True, encoding=encoding
    )
    mapping = {USER: "user", ITEM: "artist", VALUE: "weight"}
    events, _ = events_from_table(listens, df, line, mapping, on_bad_rows)
    events = events.with_columns(
        pl.col(VALUE).rank("ordinal").over(USER).cast(pl.Int64).sub(1).alias(TIME)
    )
    sources = [listens]
    users = None
    friends = d / "user_friends.dat"
    if friends.exists():
        edges, _ = read_rows(friends, "\t", ["user", "friend"], skip_header=True, encoding=encoding)
        users = _friends_table(friends, edges, events[USER].dtype)
        sources.append(friends)
    return RawData(events, users=users, has_time=False, name=d.name, sources=sources)


def _read_numbers(path: Path, names: list[str], encoding: str) -> tuple[pl.DataFrame, pl.Series]:
    """Whitespace-separated numbers (any float notation) as Float64 columns ``names``, with
    their lines; a missing or unparseable number is null, extra fields flag the row."""
    lines = read_lines(path, encoding).filter(pl.col("text").str.strip_chars() != "")
    tokens = lines["text"].str.extract_all(r"\S+")
    df = pl.DataFrame(
        {
            name: tokens.list.get(i, null_on_oob=True).cast(pl.Float64, strict=False)
            for i, name in enumerate(names)
        }
    ).with_columns(
        pl.Series(EXTRA_FIELDS, tokens.list.len() > len(names)).replace(False, None).cast(pl.String)
    )
    return df, lines[LINE]


def _friends_table(path: Path, edges: pl.DataFrame, dtype: pl.DataType) -> pl.DataFrame:
    """Directed ``user -> friend`` edges as a user table with a ``friends`` list column
    (original ids); self-loops, repeats and unparseable rows are dropped."""
    table = (
        pl.DataFrame({USER: parse_id(edges["user"]), "friend": parse_id(edges["friend"])})
        .with_columns(pl.all().cast(dtype, strict=False))
        .drop_nulls()
        .filter(pl.col(USER) != pl.col("friend"))
        .unique(maintain_order=True)
    )
    if table.height == 0:
        raise DataError("no user-user edges", path=path)
    return table.group_by(USER, maintain_order=True).agg(friends=pl.col("friend"))


register(
    Format(
        "ciao",
        _read_ciao,
        lambda probe: {"rating.txt", "trust.txt"} <= probe.names,
        "Ciao rating.txt and trust.txt",
        reads_directory=True,
    )
)
register(
    Format(
        "lastfm",
        _read_lastfm,
        lambda probe: "user_artists.dat" in probe.names,
        "HetRec Last.fm user_artists.dat",
        reads_directory=True,
    )
)
