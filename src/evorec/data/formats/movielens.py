"""MovieLens: 100K (``u.data``, ``u.item``, ``u.user``), 1M/10M (``ratings.dat``,
``movies.dat``, ``users.dat``) and the CSV layouts (``ratings.csv``, ``movies.csv``); titles
and genres as the item table, 100K/1M demographics as the user table."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from evorec.data.formats.registry import Format, Probe, ReadOptions, register
from evorec.data.formats.rows import align_ids, events_from_table, parse_id, read_csv, read_rows
from evorec.data.schema import ITEM, TIME, USER, VALUE, RawData
from evorec.errors import DataError

ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)


def _read_movielens(path: Path, options: ReadOptions) -> RawData:
    """Read MovieLens 100K (``u.data``), 1M/10M (``ratings.dat``) or CSV (``ratings.csv``)."""
    on_bad_rows, encoding = options.on_bad_rows, options.encoding
    d = path if path.is_dir() else path.parent
    if (d / "u.data").exists():
        df, line = read_rows(
            d / "u.data",
            "\t",
            ["u", "i", "r", "t"],
            skip_header=False,
            quote=None,
            encoding=encoding,
        )
        items, users = _ml100k_items(d), _ml100k_users(d)
        ratings = d / "u.data"
    elif (d / "ratings.dat").exists():
        ratings = d / "ratings.dat"
        df, line = read_rows(
            ratings, "::", ["u", "i", "r", "t"], skip_header=False, quote=None, encoding=encoding
        )
        items, users = _ml_dat_items(d), _ml1m_users(d)
    elif (d / "ratings.csv").exists():
        ratings = d / "ratings.csv"
        names = read_csv(ratings, ",", n_rows=0, encoding=encoding).columns
        expected = ["userId", "movieId", "rating", "timestamp"]
        if names[:4] != expected:
            raise DataError(f"expected the columns {','.join(expected)}", path=ratings, line=1)
        df, line = read_rows(ratings, ",", names, skip_header=True, encoding=encoding)
        df = df.rename(dict(zip(expected, ["u", "i", "r", "t"], strict=True)))
        items, users = _ml_csv_items(d, encoding), None
    else:
        raise DataError(
            "not a MovieLens directory: expected u.data, ratings.dat or ratings.csv", path=d
        )
    events, _ = events_from_table(
        ratings, df, line, {USER: "u", ITEM: "i", VALUE: "r", TIME: "t"}, on_bad_rows
    )
    items = align_ids(items, ITEM, events[ITEM].dtype)
    users = align_ids(users, USER, events[USER].dtype)
    sources = [ratings] + [
        d / n
        for n in ("u.item", "u.user", "movies.dat", "users.dat", "movies.csv")
        if (d / n).exists()
    ]
    return RawData(events, items=items, users=users, has_time=True, name=d.name, sources=sources)


def _ml100k_items(d: Path) -> pl.DataFrame | None:
    path = d / "u.item"
    if not path.exists():
        return None
    genres = list(ML100K_GENRES)
    genre_file = d / "u.genre"
    if genre_file.exists():
        g, _ = read_rows(
            genre_file, "|", ["name", "index"], skip_header=False, quote=None, encoding="latin-1"
        )
        genres = g.sort(pl.col("index").cast(pl.Int64, strict=False))["name"].to_list()
    names = ["id", "title", "released", "video", "url"] + [f"g{i}" for i in range(len(genres))]
    df, _ = read_rows(path, "|", names, skip_header=False, quote=None, encoding="latin-1")
    flags = [pl.when(pl.col(f"g{i}") == "1").then(pl.lit(g)) for i, g in enumerate(genres)]
    return pl.DataFrame(
        {
            ITEM: parse_id(df["id"]),
            "title": df["title"],
            "genres": df.select(pl.concat_list(flags).list.drop_nulls()).to_series(),
        }
    ).drop_nulls(ITEM)


def _user_rows(path: Path, sep: str, names: list[str]) -> pl.DataFrame | None:
    """The rows of a MovieLens user file (Latin-1, no header); None when there is none."""
    if not path.exists():
        return None
    df, _ = read_rows(path, sep, names, skip_header=False, quote=None, encoding="latin-1")
    return df


def _ml100k_users(d: Path) -> pl.DataFrame | None:
    df = _user_rows(d / "u.user", "|", ["u", "age", "gender", "occ", "zip"])
    return None if df is None else _users_table(df, df["occ"])


def _ml1m_users(d: Path) -> pl.DataFrame | None:
    df = _user_rows(d / "users.dat", "::", ["u", "gender", "age", "occ", "zip"])
    if df is None:
        return None
    codes = dict(enumerate(ML1M_OCCUPATIONS))
    occupation = (
        df["occ"]
        .cast(pl.Int64, strict=False)
        .replace_strict(codes, default=None, return_dtype=pl.String)
    )
    return _users_table(df, occupation)


def _users_table(df: pl.DataFrame, occupation: pl.Series) -> pl.DataFrame:
    return pl.DataFrame(
        {
            USER: parse_id(df["u"]),
            "age": df["age"].str.strip_chars().cast(pl.Int64, strict=False),
            "gender": df["gender"],
            "occupation": occupation,
            "zip": df["zip"],
        }
    ).drop_nulls(USER)


def _ml_dat_items(d: Path) -> pl.DataFrame | None:
    path = d / "movies.dat"
    if not path.exists():
        return None
    df, _ = read_rows(
        path, "::", ["id", "title", "genres"], skip_header=False, quote=None, encoding="auto"
    )
    return _movies_table(df)


def _ml_csv_items(d: Path, encoding: str) -> pl.DataFrame | None:
    path = d / "movies.csv"
    if not path.exists():
        return None
    df = read_csv(path, ",", encoding=encoding)
    if not {"movieId", "title", "genres"} <= set(df.columns):
        raise DataError("expected the columns movieId,title,genres", path=path, line=1)
    return _movies_table(df.rename({"movieId": "id"}))


def _movies_table(df: pl.DataFrame) -> pl.DataFrame:
    genres = (
        df["genres"]
        .fill_null("")
        .str.split("|")
        .list.eval(
            pl.element().filter((pl.element() != "") & (pl.element() != "(no genres listed)"))
        )
    )
    return pl.DataFrame(
        {ITEM: parse_id(df["id"]), "title": df["title"], "genres": genres}
    ).drop_nulls(ITEM)


_RATINGS = ("u.data", "ratings.dat", "ratings.csv")


def _is_movielens(probe: Probe) -> bool:
    if probe.is_dir:
        return bool(probe.names & set(_RATINGS))
    return probe.name in _RATINGS[:2] or (
        probe.name == "ratings.csv" and (probe.path.parent / "movies.csv").exists()
    )


register(
    Format(
        "movielens",
        _read_movielens,
        _is_movielens,
        "MovieLens u.data, ratings.dat or ratings.csv",
        reads_directory=True,
    )
)
