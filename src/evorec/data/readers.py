"""Read event logs in common public formats into canonical events (see ``evorec.data.schema``).

Every reader returns a :class:`~evorec.data.schema.RawData` whose ``line`` column is the
1-based line of the event in its source file, counting header lines, so that it matches
what an editor shows. Fields that cannot be parsed become nulls (preprocessing drops those
rows and reports their lines); a :class:`~evorec.errors.DataError` is raised instead when a
required column (user, item, and timestamp when there is one) has no usable value at all,
when more than half of the rows are bad, or when ``on_bad_rows="error"`` and any row is bad.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from evorec.data.schema import (
    BEHAVIOR,
    ITEM,
    LINE,
    TIME,
    USER,
    VALUE,
    RawData,
    canonical_events,
)
from evorec.errors import ConfigError, DataError

SUPPORTED_FORMATS = (
    "csv",
    "tsv",
    "parquet",
    "jsonl",
    "sequence",
    "movielens",
    "taobao",
    "unisrec",
    "ciao",
    "lastfm",
    "disencdr",
    "amazon",
)
TABLE_FORMATS = ("csv", "tsv", "parquet", "jsonl")
TAOBAO_BEHAVIORS = ("pv", "cart", "fav", "buy")
MAX_BAD_FRACTION = 0.5
DEFAULT_ENCODING = "utf-8"

# Source column names recognised for each canonical column, in order of preference; they are
# compared with the file's names lower-cased and stripped of "_", "-" and spaces.
COLUMN_CANDIDATES: dict[str, tuple[str, ...]] = {
    USER: ("user", "userid", "uid", "visitorid", "customerid", "reviewerid", "sessionid"),
    ITEM: ("item", "itemid", "iid", "movieid", "productid", "artistid", "asin"),
    TIME: ("timestamp", "time", "ts", "datetime", "date", "eventtime", "unixreviewtime"),
    VALUE: ("rating", "value", "weight", "count", "overall"),
    BEHAVIOR: ("behavior", "behaviour", "event", "eventtype", "type", "action"),
}

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

_REQUIRED = (USER, ITEM, TIME)
_EXTRA = "__evorec_extra_fields__"
_UNIT_SEP = "\x1f"
_CHUNK = 1 << 20  # bytes decoded at a time
_DATE_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
)
_UNISREC_SPLITS = ("train", "valid", "test")


def read_events(
    path: str | Path,
    format: str = "auto",
    *,
    columns: dict[str, str] | None = None,
    sep: str | None = None,
    on_bad_rows: str = "drop",
    encoding: str = DEFAULT_ENCODING,
) -> RawData:
    """Read the events (and item/user tables where the format has them) at ``path``.

    ``format`` is one of :data:`SUPPORTED_FORMATS` or ``"auto"`` (see :func:`detect_format`).
    For the table formats (csv, tsv, parquet, jsonl) ``columns`` maps canonical names
    (``user_id``, ``item_id``, ``timestamp``, ``value``, ``behavior``) to source columns;
    canonical columns it leaves out are guessed from common names. Headerless csv/tsv files
    name their columns ``"1"``, ``"2"``... ``sep`` overrides the csv/tsv separator (it may
    be several characters, e.g. ``"::"``). ``on_bad_rows`` is ``"drop"`` (keep nulls for
    preprocessing to drop) or ``"error"`` (raise at the first bad row). ``encoding`` is
    the text encoding of the data files (a Python codec name); bytes that are not valid in
    it are a :class:`~evorec.errors.DataError` naming their line and offset.
    """
    path = Path(path)
    if on_bad_rows not in ("drop", "error"):
        raise ConfigError(f"on_bad_rows must be 'drop' or 'error', not {on_bad_rows!r}")
    encoding = check_encoding(encoding)
    if not path.exists():
        raise DataError("no such file or directory", path=path)
    fmt = detect_format(path, encoding) if format == "auto" else format
    if fmt not in SUPPORTED_FORMATS:
        raise DataError(
            f"unknown format {format!r}; supported formats: auto, {', '.join(SUPPORTED_FORMATS)}"
        )
    if fmt not in TABLE_FORMATS and (columns is not None or sep is not None):
        raise ConfigError(
            f"columns= and sep= apply only to the formats {', '.join(TABLE_FORMATS)}, not {fmt}"
        )
    if path.is_dir() and fmt not in (
        "movielens",
        "unisrec",
        "ciao",
        "lastfm",
        "disencdr",
        "amazon",
    ):
        raise DataError(f"the {fmt} format reads a file, not a directory", path=path)
    try:
        return _dispatch(path, fmt, columns, sep, on_bad_rows, encoding)
    except (OSError, EOFError, pl.exceptions.PolarsError) as exc:  # EOFError: cut-off gzip
        raise DataError(f"cannot read: {_polars_problem(exc)}", path=path) from exc


def _dispatch(
    path: Path,
    fmt: str,
    columns: dict[str, str] | None,
    sep: str | None,
    on_bad_rows: str,
    encoding: str,
) -> RawData:
    """Call the reader of ``fmt``."""
    if fmt in ("csv", "tsv"):
        return _read_delimited(path, fmt, columns, sep, on_bad_rows, encoding)
    if fmt == "parquet":
        return _read_parquet(path, columns, on_bad_rows)
    if fmt == "jsonl":
        return _read_jsonl(path, columns, on_bad_rows, encoding)
    readers = {
        "sequence": _read_sequence,
        "movielens": _read_movielens,
        "taobao": _read_taobao,
        "ciao": _read_ciao,
        "lastfm": _read_lastfm,
        "disencdr": _read_disencdr,
        "amazon": _read_amazon,
        "unisrec": _read_unisrec,
    }
    return readers[fmt](path, on_bad_rows, encoding)


def detect_format(path: str | Path, encoding: str = DEFAULT_ENCODING) -> str:
    """Guess the format of ``path`` from directory contents, file name and first lines."""
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or directory", path=path)
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if names & {"u.data", "ratings.dat", "ratings.csv"}:
            return "movielens"
        if any(n.endswith(".inter") for n in names):
            return "unisrec"
        if {"rating.txt", "trust.txt"} <= names:
            return "ciao"
        if "user_artists.dat" in names:
            return "lastfm"
        if {"train.txt", "test_original.txt"} <= names:
            return "disencdr"
        if _amazon_files(path):
            return "amazon"
        raise DataError(
            "cannot detect the format of this directory (expected MovieLens u.data, "
            "ratings.dat or ratings.csv, UniSRec *.inter files, Ciao rating.txt and trust.txt, "
            "HetRec Last.fm user_artists.dat, DisenCDR train.txt and test_original.txt, or "
            "Amazon <Category>.csv with meta_<Category>.json.gz); "
            "pass one of the formats " + ", ".join(SUPPORTED_FORMATS),
            path=path,
        )
    name = path.name.lower()
    suffix = path.suffix.lower()
    if name in ("u.data", "ratings.dat") or (
        name == "ratings.csv" and (path.parent / "movies.csv").exists()
    ):
        return "movielens"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".inter", ".text"):
        return "unisrec"
    if suffix == ".csv" and (path.parent / f"meta_{path.stem}.json.gz").exists():
        return "amazon"
    head = _head(path, encoding=check_encoding(encoding))
    if suffix == ".json" and head and _is_json_object(head[0]):
        return "jsonl"
    if suffix in (".csv", ".tsv", ".txt", ".dat", ".data"):
        if suffix == ".txt" and _is_sequence(head):
            return "sequence"
        fields = head[0].split(",") if head else []
        if len(fields) == 5 and fields[3] in TAOBAO_BEHAVIORS:
            return "taobao"
        if suffix == ".tsv" or (head and _sniff_sep(head[0]) == "\t"):
            return "tsv"
        return "csv"
    raise DataError(
        "cannot detect the format from the file name; pass one of the formats "
        + ", ".join(SUPPORTED_FORMATS),
        path=path,
    )


def read_item_text(path: str | Path, encoding: str = DEFAULT_ENCODING) -> pl.DataFrame:
    """Read a UniSRec ``.text`` file (``item_id<TAB>text``, optional header): ``item_id``, ``text``.

    ``path`` may also be a directory holding exactly one ``.text`` file.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.text"))
        if len(found) != 1:
            raise DataError(
                f"expected one .text file in the directory, found {len(found)}", path=path
            )
        path = found[0]
    if not path.exists():
        raise DataError("no such file or directory", path=path)
    lines = _read_lines(path, check_encoding(encoding))
    if lines.height and lines[0, "text"].split("\t", 1)[0].split(":", 1)[0] == "item_id":
        lines = lines.slice(1)
    lines = lines.filter(pl.col("text").str.strip_chars().str.len_bytes() > 0)
    parts = lines.with_columns(
        pl.col("text").str.splitn("\t", 2).struct.rename_fields(["id", "body"]).alias("p")
    ).unnest("p")
    bad = parts.filter(pl.col("body").is_null() | (pl.col("id").str.strip_chars() == ""))
    if bad.height:
        raise DataError("expected 'item_id<TAB>text'", path=path, line=int(bad[0, LINE]))
    return pl.DataFrame({ITEM: _parse_id(parts["id"]), "text": parts["body"].str.strip_chars_end()})


# --------------------------------------------------------------------------- table formats


def _read_delimited(
    path: Path,
    fmt: str,
    columns: dict[str, str] | None,
    sep: str | None,
    on_bad_rows: str,
    encoding: str,
) -> RawData:
    head = _head(path, encoding=encoding)
    if not head:
        raise DataError("no events", path=path)
    sep = sep or ("\t" if fmt == "tsv" else _sniff_sep(head[0]))
    header = _split_fields(head[0], sep)
    first = [f.strip().strip('"') for f in header]
    positional = bool(columns) and all(v.isdigit() and v not in first for v in columns.values())
    headerless = positional or all(_is_number(f) for f in first)
    if headerless:
        names = [str(i) for i in range(1, len(first) + 1)]
    else:
        names = _header_names(path, first if len(sep) > 1 else header)
    df, line = _read_rows(path, sep, names, skip_header=not headerless, encoding=encoding)
    describe = _field_count_check(path, sep, len(names), encoding, header=not headerless)
    events, has_time = _events_from_table(path, df, line, columns, on_bad_rows, describe=describe)
    return RawData(events, has_time=has_time, name=path.stem, sources=[path])


def _header_names(path: Path, fields: list[str]) -> list[str]:
    """Column names from a header line: a name given twice is an error (which column would
    it mean?); an unnamed column is called by its 1-based position, ``column 4``."""
    names = [field or f"column {i}" for i, field in enumerate(fields, 1)]
    for name in names:
        where = [i for i, other in enumerate(names, 1) if other == name]
        if len(where) > 1:
            raise DataError(
                f"the header names the column '{name}' {len(where)} times (columns "
                f"{', '.join(map(str, where))}); give each column its own name",
                path=path,
                line=1,
                field=name,
            )
    return names


def _read_parquet(path: Path, columns: dict[str, str] | None, on_bad_rows: str) -> RawData:
    df = pl.read_parquet(path)
    line = pl.Series(LINE, range(1, df.height + 1), dtype=pl.Int64)
    events, has_time = _events_from_table(path, df, line, columns, on_bad_rows)
    return RawData(events, has_time=has_time, name=path.stem, sources=[path])


def _read_jsonl(
    path: Path, columns: dict[str, str] | None, on_bad_rows: str, encoding: str
) -> RawData:
    lines = _read_lines(path, encoding).filter(pl.col("text").str.strip_chars() != "")
    if lines.height == 0:
        raise DataError("no events", path=path)
    check = None
    try:
        df = _ndjson(path, lines["text"])
    except DataError:
        # Some lines are not JSON objects: find them (slow path, only for broken files) and
        # keep them as all-null rows that are reported like any other bad row.
        ok = pl.Series([_is_json_object(t) for t in lines["text"]])
        if not ok.any():
            raise DataError(
                "no line is a JSON object", path=path, line=int(lines[0, LINE])
            ) from None
        good = _ndjson(path, lines.filter(ok)["text"])
        order = pl.concat([ok.arg_true(), (~ok).arg_true()]).arg_sort()
        df = pl.concat([good, good.clear(int((~ok).sum()))])[order]
        not_json = lines.select(pl.when(~ok).then(pl.col("text"))).to_series()
        check = _row_check(not_json, "not a JSON object")
    events, has_time = _events_from_table(path, df, lines[LINE], columns, on_bad_rows, check)
    return RawData(events, has_time=has_time, name=path.stem, sources=[path])


def _ndjson(path: Path, texts: pl.Series) -> pl.DataFrame:
    try:
        return pl.read_ndjson("\n".join(texts.to_list()).encode(), infer_schema_length=None)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"cannot read JSON lines: {exc}", path=path) from exc


def _events_from_table(
    path: Path,
    df: pl.DataFrame,
    line: pl.Series,
    columns: dict[str, str] | None,
    on_bad_rows: str,
    check: _Field | None = None,
    describe: Callable[[int], str | None] | None = None,
) -> tuple[pl.DataFrame, bool]:
    """Parse the mapped columns of ``df`` (rows at ``line``); ``check`` flags rows as bad,
    ``describe`` explains a bad row by its line (see :func:`_assemble`)."""
    names = [c for c in df.columns if c != _EXTRA]
    mapping = _resolve_columns(path, names, columns)
    fields = [
        _Field(canon, src, df[src], _PARSERS[canon](df[src]), canon in _REQUIRED)
        for canon, src in mapping.items()
    ]
    if _EXTRA in df.columns:
        fields.append(_row_check(df[_EXTRA], f"more than {len(names)} fields"))
    if check is not None:
        fields.append(check)
    return _assemble(path, line, fields, on_bad_rows, describe), TIME in mapping


def _resolve_columns(
    path: Path, names: list[str], columns: dict[str, str] | None
) -> dict[str, str]:
    """Map canonical names to source columns: explicit ``columns`` first, then common names."""
    mapping: dict[str, str] = {}
    for canon, src in (columns or {}).items():
        if canon not in COLUMN_CANDIDATES:
            raise ConfigError(
                f"unknown column {canon!r} in columns=; use {', '.join(COLUMN_CANDIDATES)}"
            )
        if src not in names:
            raise DataError(
                f"column not found; the file has columns {', '.join(names)}", path=path, field=src
            )
        mapping[canon] = src
    normalised = {n: re.sub(r"[\s_\-]", "", n.lower()) for n in names}
    for canon, candidates in COLUMN_CANDIDATES.items():
        if canon in mapping:
            continue
        free = [n for n in names if n not in mapping.values()]
        for cand in candidates:
            match = next((n for n in free if normalised[n] == cand), None)
            if match is not None:
                mapping[canon] = match
                break
    for canon in (USER, ITEM):
        if canon not in mapping:
            raise DataError(
                f"cannot find the {canon} column among the columns {', '.join(names)}; "
                f"name it with columns={{'{canon}': ...}} (headerless files: 1-based positions)",
                path=path,
                field=canon,
            )
    return mapping


# --------------------------------------------------------------------------- sequences


def _read_sequence(path: Path, on_bad_rows: str, encoding: str) -> RawData:
    """Read one line per user, ``user item item ...`` (S3-Rec), whitespace-separated, in
    order. Ids are integers as in S3-Rec, a token that is not one a bad row; a file whose
    tokens are mostly not integers has string ids."""
    lines = _read_lines(path, encoding).with_columns(tok=pl.col("text").str.extract_all(r"\S+"))
    lines = lines.filter(pl.col("tok").list.len() > 0)
    rows = (
        lines.with_columns(n=pl.col("tok").list.len(), user=pl.col("tok").list.first())
        .explode("tok")
        .with_columns(pos=pl.int_range(pl.len()).over(LINE))
        .filter((pl.col("pos") > 0) | (pl.col("n") == 1))
        .with_columns(item=pl.when(pl.col("pos") > 0).then(pl.col("tok")))
    )
    fields = [_sequence_ids(USER, "user", rows["user"]), _sequence_ids(ITEM, "item", rows["item"])]
    events = _assemble(path, rows[LINE], fields, on_bad_rows)
    sources = [path]
    items = None
    attributes = path.with_name(f"{path.stem}_item2attributes.json")
    if attributes.exists():
        items = _read_item_attributes(attributes, events[ITEM].dtype)
        sources.append(attributes)
    return RawData(events, items=items, has_time=False, name=path.stem, sources=sources)


def _sequence_ids(name: str, source: str, tokens: pl.Series) -> _Field:
    """Integer ids when most tokens are plain integers (a leading zero or a sign is not),
    the other tokens then unparseable; else string ids."""
    integer = tokens.str.contains(r"^(?:0|[1-9]\d*)$")
    if integer.sum() <= MAX_BAD_FRACTION * tokens.drop_nulls().len():
        return _Field(name, source, tokens, _parse_id(tokens), True)
    parsed = (
        pl.DataFrame({"token": tokens, "integer": integer})
        .select(pl.when("integer").then(pl.col("token").cast(pl.Int64, strict=False)))
        .to_series()
    )
    return _Field(name, source, tokens, parsed, True, expected="an integer id")


def _read_item_attributes(path: Path, id_dtype: pl.DataType) -> pl.DataFrame:
    """Read an S3-Rec ``{"item": [attribute ids]}`` file into ``item_id``, ``attributes``."""
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read item attributes: {exc}", path=path) from exc
    if not isinstance(mapping, dict) or not all(isinstance(v, list) for v in mapping.values()):
        raise DataError("expected a JSON object mapping item ids to lists", path=path)
    items = pl.DataFrame({ITEM: list(mapping), "attributes": list(mapping.values())}, strict=False)
    items = items.with_columns(pl.col("attributes").list.unique(maintain_order=True))
    return _align_ids(items, ITEM, id_dtype)


def _read_unisrec(path: Path, on_bad_rows: str, encoding: str) -> RawData:
    """Rebuild full sequences from UniSRec/RecBole ``user_id  item_id_list  item_id`` files.

    A user's rows are put in order: train, valid, test, and within a file by history length
    (rows whose history was truncated to the same length keep the file's order, read in
    reverse when the file lists each user's rows longest first, as UniSRec writes them).
    The sequence is then the history of the first row followed by every row's target, which
    undoes prefix augmentation and history truncation. Ids are mapped back to the original
    tokens with ``.user2index`` / ``.item2index`` when present, so that they match the
    ``.text`` item table. ``line`` is the line, in its own ``.inter`` file, of the row that
    contributed the event.
    """
    directory, stem = _unisrec_stem(path)
    files = [directory / f"{stem}.{s}.inter" for s in _UNISREC_SPLITS]
    files = [f for f in files if f.exists()] or [directory / f"{stem}.inter"]
    if not files[0].exists():
        raise DataError(f"no {stem}.train/valid/test.inter or {stem}.inter file", path=directory)
    rows = pl.concat([_read_inter(f, rank, encoding) for rank, f in enumerate(files)]).with_columns(
        row=pl.int_range(pl.len(), dtype=pl.Int64)
    )
    rows = rows.with_columns(
        hlen=pl.col("hist").list.len().fill_null(0), urank=pl.col("row").min().over("user")
    )
    descending = (
        rows.with_columns(step=pl.col("hlen").diff().over("rank", "user").sign())
        .group_by("rank")
        .agg(desc=pl.col("step").sum() < 0)
    )
    rows = (
        rows.join(descending, on="rank", how="left")
        .with_columns(tie=pl.when(pl.col("desc")).then(-pl.col("row")).otherwise(pl.col("row")))
        .sort("urank", "rank", "hlen", "tie")
        .with_columns(order=pl.int_range(pl.len()))
    )
    history = (
        rows.group_by("user", maintain_order=True)
        .first()
        .select("user", "order", LINE, item=pl.col("hist"), part=pl.lit(0))
        .explode("item")
        .drop_nulls("item")
    )
    targets = rows.select("user", "order", LINE, item=pl.col("target"), part=pl.lit(1))
    # history events carry the order of their user's first row: they sort before its targets
    events = pl.concat([history, targets]).sort("order", "part", maintain_order=True)
    _check_unisrec_suffix(rows, events, files)
    sources = list(files)
    for column, suffix in (("user", "user2index"), ("item", "item2index")):
        index_file = directory / f"{stem}.{suffix}"
        if index_file.exists():
            events = events.with_columns(
                pl.col(column).replace_strict(
                    _read_index(index_file, encoding), default=None, return_dtype=pl.String
                )
            )
            sources.append(index_file)
    fields = [
        _Field(USER, "user_id", events["user"], _parse_id(events["user"]), True),
        _Field(ITEM, "item_id", events["item"], _parse_id(events["item"]), True),
    ]
    out = _assemble(files[0], events[LINE], fields, on_bad_rows)
    items = None
    text_file = directory / f"{stem}.text"
    if text_file.exists():
        items = _align_ids(read_item_text(text_file, encoding), ITEM, out[ITEM].dtype)
        sources.append(text_file)
    return RawData(out, items=items, has_time=False, name=stem, sources=sources)


def _unisrec_stem(path: Path) -> tuple[Path, str]:
    if path.is_file():
        return path.parent, path.name.split(".", 1)[0]
    stems = sorted({p.name.split(".", 1)[0] for p in path.glob("*.inter")})
    if len(stems) != 1:
        found = ", ".join(stems) or "none"
        raise DataError(
            f"expected the .inter files of one dataset, found: {found}; pass one of its files",
            path=path,
        )
    return path, stems[0]


def _read_inter(path: Path, rank: int, encoding: str) -> pl.DataFrame:
    lines = _read_lines(path, encoding)
    if lines.height == 0:
        raise DataError("no events", path=path)
    header = [h.split(":", 1)[0] for h in lines[0, "text"].split("\t")]
    missing = [c for c in ("user_id", "item_id_list", "item_id") if c not in header]
    if missing:
        raise DataError(
            f"the header lacks {', '.join(missing)}",
            path=path,
            line=1,
        )
    parts = pl.col("text").str.split("\t")
    return (
        lines.slice(1)
        .filter(pl.col("text").str.strip_chars() != "")
        .select(
            LINE,
            rank=pl.lit(rank),
            user=parts.list.get(header.index("user_id"), null_on_oob=True).str.strip_chars(),
            hist=parts.list.get(header.index("item_id_list"), null_on_oob=True).str.extract_all(
                r"\S+"
            ),
            target=parts.list.get(header.index("item_id"), null_on_oob=True).str.strip_chars(),
        )
    )


def _check_unisrec_suffix(rows: pl.DataFrame, events: pl.DataFrame, files: list[Path]) -> None:
    """Check that each user's last row (history + target) ends the rebuilt sequence."""
    last = rows.group_by("user", maintain_order=True).last()
    last = last.select(
        "user", "rank", LINE, want=pl.concat_list(pl.col("hist").fill_null([]), pl.col("target"))
    )
    built = events.group_by("user", maintain_order=True).agg(got=pl.col("item"))
    both = last.join(built, on="user", how="left", nulls_equal=True)
    bad = both.filter(pl.col("got").list.tail(pl.col("want").list.len()) != pl.col("want"))
    if bad.height:
        raise DataError(
            f"the sequence of user {bad[0, 'user']} does not extend their earlier rows",
            path=files[int(bad[0, "rank"])],
            line=int(bad[0, LINE]),
        )


def _read_index(path: Path, encoding: str) -> dict[str, str]:
    """Read a UniSRec ``token<TAB>index`` file into ``{index: token}``."""
    df, _ = _read_rows(
        path, "\t", ["token", "index"], skip_header=False, quote=None, encoding=encoding
    )
    return dict(zip(df["index"].str.strip_chars(), df["token"].str.strip_chars(), strict=True))


# --------------------------------------------------------------------------- known datasets


def _read_movielens(path: Path, on_bad_rows: str, encoding: str) -> RawData:
    """Read MovieLens 100K (``u.data``), 1M/10M (``ratings.dat``) or CSV (``ratings.csv``)."""
    d = path if path.is_dir() else path.parent
    if (d / "u.data").exists():
        df, line = _read_rows(
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
        df, line = _read_rows(
            ratings, "::", ["u", "i", "r", "t"], skip_header=False, quote=None, encoding=encoding
        )
        items, users = _ml_dat_items(d), _ml1m_users(d)
    elif (d / "ratings.csv").exists():
        ratings = d / "ratings.csv"
        names = _read_csv(ratings, ",", n_rows=0, encoding=encoding).columns
        expected = ["userId", "movieId", "rating", "timestamp"]
        if names[:4] != expected:
            raise DataError(f"expected the columns {','.join(expected)}", path=ratings, line=1)
        df, line = _read_rows(ratings, ",", names, skip_header=True, encoding=encoding)
        df = df.rename(dict(zip(expected, ["u", "i", "r", "t"], strict=True)))
        items, users = _ml_csv_items(d, encoding), None
    else:
        raise DataError(
            "not a MovieLens directory: expected u.data, ratings.dat or ratings.csv", path=d
        )
    events, _ = _events_from_table(
        ratings, df, line, {USER: "u", ITEM: "i", VALUE: "r", TIME: "t"}, on_bad_rows
    )
    items = _align_ids(items, ITEM, events[ITEM].dtype)
    users = _align_ids(users, USER, events[USER].dtype)
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
        g, _ = _read_rows(
            genre_file, "|", ["name", "index"], skip_header=False, quote=None, encoding="latin-1"
        )
        genres = g.sort(pl.col("index").cast(pl.Int64, strict=False))["name"].to_list()
    names = ["id", "title", "released", "video", "url"] + [f"g{i}" for i in range(len(genres))]
    df, _ = _read_rows(path, "|", names, skip_header=False, quote=None, encoding="latin-1")
    flags = [pl.when(pl.col(f"g{i}") == "1").then(pl.lit(g)) for i, g in enumerate(genres)]
    return pl.DataFrame(
        {
            ITEM: _parse_id(df["id"]),
            "title": df["title"],
            "genres": df.select(pl.concat_list(flags).list.drop_nulls()).to_series(),
        }
    ).drop_nulls(ITEM)


def _ml100k_users(d: Path) -> pl.DataFrame | None:
    path = d / "u.user"
    if not path.exists():
        return None
    df, _ = _read_rows(
        path,
        "|",
        ["u", "age", "gender", "occ", "zip"],
        skip_header=False,
        quote=None,
        encoding="latin-1",
    )
    return _users_table(df, df["occ"])


def _ml1m_users(d: Path) -> pl.DataFrame | None:
    path = d / "users.dat"
    if not path.exists():
        return None
    df, _ = _read_rows(
        path,
        "::",
        ["u", "gender", "age", "occ", "zip"],
        skip_header=False,
        quote=None,
        encoding="latin-1",
    )
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
            USER: _parse_id(df["u"]),
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
    df, _ = _read_rows(
        path, "::", ["id", "title", "genres"], skip_header=False, quote=None, encoding="auto"
    )
    return _movies_table(df)


def _ml_csv_items(d: Path, encoding: str) -> pl.DataFrame | None:
    path = d / "movies.csv"
    if not path.exists():
        return None
    df = _read_csv(path, ",", encoding=encoding)
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
        {ITEM: _parse_id(df["id"]), "title": df["title"], "genres": genres}
    ).drop_nulls(ITEM)


def _read_taobao(path: Path, on_bad_rows: str, encoding: str) -> RawData:
    """Read Taobao UserBehavior (``user,item,category,behavior,timestamp``, no header)."""
    names = ["user", "item", "category", "behavior", "timestamp"]
    df, line = _read_rows(path, ",", names, skip_header=False, encoding=encoding)
    mapping = {USER: "user", ITEM: "item", BEHAVIOR: "behavior", TIME: "timestamp"}
    describe = _field_count_check(path, ",", len(names), encoding, header=False)
    events, _ = _events_from_table(path, df, line, mapping, on_bad_rows, describe=describe)
    items = _category_table(events, df["category"])
    return RawData(events, items=items, has_time=True, name=path.stem, sources=[path])


def _category_table(events: pl.DataFrame, category: pl.Series) -> pl.DataFrame:
    """Each item's category (its first one), from a category column aligned with events."""
    return (
        pl.DataFrame({ITEM: events[ITEM], "category": _parse_id(category)})
        .drop_nulls()
        .unique(ITEM, keep="first", maintain_order=True)
    )


def _read_ciao(path: Path, on_bad_rows: str, encoding: str) -> RawData:
    """Read Ciao (Tang et al. 2012): ``rating.txt`` rows ``user item category rating
    helpfulness time``, numbers written as floats (``1.0000000e+000``), whitespace-separated;
    ``trust.txt`` beside it (``truster trustee``) becomes each user's ``friends``."""
    d = path if path.is_dir() else path.parent
    ratings = d / "rating.txt"
    names = ["user", "item", "category", "rating", "helpfulness", "time"]
    df, line = _read_numbers(ratings, names, encoding)
    mapping = {USER: "user", ITEM: "item", VALUE: "rating", TIME: "time"}
    events, _ = _events_from_table(ratings, df, line, mapping, on_bad_rows)
    items = _category_table(events, df["category"])
    sources = [ratings]
    users = None
    trust = d / "trust.txt"
    if trust.exists():
        edges, _ = _read_numbers(trust, ["user", "friend"], encoding)
        users = _friends_table(trust, edges, events[USER].dtype)
        sources.append(trust)
    return RawData(events, items=items, users=users, has_time=True, name=d.name, sources=sources)


def _read_lastfm(path: Path, on_bad_rows: str, encoding: str) -> RawData:
    """Read HetRec 2011 Last.fm: ``user_artists.dat`` (``userID artistID weight``, the
    listening count as ``value``) and ``user_friends.dat`` beside it (``userID friendID``)
    as each user's ``friends``.

    The data has no listening times and the file lists artists by id, so each user's
    artists are put in order of increasing listening count (ties in file order): the last
    event, held out by leave-one-out, is the user's most played artist."""
    d = path if path.is_dir() else path.parent
    listens = d / "user_artists.dat"
    df, line = _read_rows(
        listens, "\t", ["user", "artist", "weight"], skip_header=True, encoding=encoding
    )
    mapping = {USER: "user", ITEM: "artist", VALUE: "weight"}
    events, _ = _events_from_table(listens, df, line, mapping, on_bad_rows)
    events = events.with_columns(
        pl.col(VALUE).rank("ordinal").over(USER).cast(pl.Int64).sub(1).alias(TIME)
    )
    sources = [listens]
    users = None
    friends = d / "user_friends.dat"
    if friends.exists():
        edges, _ = _read_rows(
            friends, "\t", ["user", "friend"], skip_header=True, encoding=encoding
        )
        users = _friends_table(friends, edges, events[USER].dtype)
        sources.append(friends)
    return RawData(events, users=users, has_time=False, name=d.name, sources=sources)


def _amazon_files(directory: Path) -> list[tuple[Path, Path]]:
    """``(<Category>.csv, meta_<Category>.json.gz)`` pairs in ``directory``."""
    return [
        (ratings, directory / f"meta_{ratings.stem}.json.gz")
        for ratings in sorted(directory.glob("*.csv"))
        if (directory / f"meta_{ratings.stem}.json.gz").exists()
    ]


def _read_amazon(path: Path, on_bad_rows: str, encoding: str) -> RawData:
    """Read one category of the Amazon review data (Ni, Li, McAuley 2019): the ratings-only
    file ``<Category>.csv`` (``item,user,rating,time`` rows, no header; rating as ``value``)
    and the metadata ``meta_<Category>.json.gz`` beside it as the item table: ``categories``
    (the category path below the top level) and ``text`` (title, brand, categories and
    description, HTML stripped)."""
    if path.is_file():
        pairs = [(path, path.parent / f"meta_{path.stem}.json.gz")]
    else:
        pairs = _amazon_files(path)
        if len(pairs) != 1:
            raise DataError(
                "expected one <Category>.csv with meta_<Category>.json.gz beside it, found "
                f"{len(pairs)}; pass the ratings file",
                path=path,
            )
    ratings, meta = pairs[0]
    df, line = _read_rows(
        ratings, ",", ["item", "user", "rating", "time"], skip_header=False, encoding=encoding
    )
    mapping = {USER: "user", ITEM: "item", VALUE: "rating", TIME: "time"}
    events, _ = _events_from_table(ratings, df, line, mapping, on_bad_rows)
    sources = [ratings]
    items = None
    if meta.exists():
        items = _align_ids(_amazon_items(meta), ITEM, events[ITEM].dtype)
        sources.append(meta)
    return RawData(events, items=items, has_time=True, name=ratings.stem, sources=sources)


_HTML_TAG = re.compile(r"<[^>]*(>|$)")  # a tag, or a tag cut off at the end of a field


def _amazon_items(meta: Path) -> pl.DataFrame:
    """One row per item of an Amazon metadata file (the first of repeated ``asin`` rows);
    a line that is not a JSON object is a :class:`DataError` naming it."""
    rows: dict[str, dict[str, object]] = {}
    with gzip.open(meta, "rb") as handle:
        for number, data in enumerate(handle, 1):
            if not data.strip():
                continue
            try:
                record = json.loads(data.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"not valid UTF-8 JSON: byte 0x{data[exc.start]:02x} ({exc.reason})",
                    path=meta,
                    line=number,
                ) from None
            except json.JSONDecodeError as exc:
                raise DataError(f"not a JSON object: {exc.msg}", path=meta, line=number) from None
            asin = record.get("asin") if isinstance(record, dict) else None
            if not isinstance(asin, str) or not asin or asin in rows:
                continue
            categories = [html.unescape(str(c)) for c in record.get("category") or []][1:]
            parts = [
                str(record.get("title") or ""),
                str(record.get("brand") or ""),
                ", ".join(categories),
                *(str(d) for d in record.get("description") or []),
            ]
            clean = (" ".join(html.unescape(_HTML_TAG.sub(" ", p)).split()) for p in parts)
            text = ". ".join(p for p in clean if p)
            rows[asin] = {ITEM: asin, "categories": categories, "text": text}
    return pl.DataFrame(
        list(rows.values()),
        schema={ITEM: pl.String, "categories": pl.List(pl.String), "text": pl.String},
    )


def _read_disencdr(path: Path, on_bad_rows: str, encoding: str) -> RawData:
    """Read one domain of a DisenCDR cross-domain pair (Cao et al. 2022): ``train.txt``
    (``user<TAB>item<TAB>1``) followed by ``test_original.txt`` (each user's held-out item)
    in the same directory. The data has no times: a user's events keep file order, the
    held-out items last, so that leave-one-out tests on them. Users share ids across the
    two domains of a pair (``sport_cloth`` and ``cloth_sport``); items do not."""
    d = path if path.is_dir() else path.parent
    parts = []
    for name in ("train.txt", "test_original.txt"):
        df, line = _read_rows(
            d / name, "\t", ["user", "item", "rating"], skip_header=False, encoding=encoding
        )
        events, _ = _events_from_table(
            d / name, df, line, {USER: "user", ITEM: "item"}, on_bad_rows
        )
        parts.append(events)
    train, test = parts
    test = test.with_columns(pl.col(TIME) + train[TIME].max() + 1)
    events = canonical_events(pl.concat([train, test]))
    return RawData(
        events, has_time=False, name=d.name, sources=[d / "train.txt", d / "test_original.txt"]
    )


def _read_numbers(path: Path, names: list[str], encoding: str) -> tuple[pl.DataFrame, pl.Series]:
    """Whitespace-separated numbers (any float notation) as Float64 columns ``names``, with
    their lines; a missing or unparseable number is null, extra fields flag the row."""
    lines = _read_lines(path, encoding).filter(pl.col("text").str.strip_chars() != "")
    tokens = lines["text"].str.extract_all(r"\S+")
    df = pl.DataFrame(
        {
            name: tokens.list.get(i, null_on_oob=True).cast(pl.Float64, strict=False)
            for i, name in enumerate(names)
        }
    ).with_columns(
        pl.Series(_EXTRA, tokens.list.len() > len(names)).replace(False, None).cast(pl.String)
    )
    return df, lines[LINE]


def _friends_table(path: Path, edges: pl.DataFrame, dtype: pl.DataType) -> pl.DataFrame:
    """Directed ``user -> friend`` edges as a user table with a ``friends`` list column
    (original ids); self-loops, repeats and unparseable rows are dropped."""
    table = (
        pl.DataFrame({USER: _parse_id(edges["user"]), "friend": _parse_id(edges["friend"])})
        .with_columns(pl.all().cast(dtype, strict=False))
        .drop_nulls()
        .filter(pl.col(USER) != pl.col("friend"))
        .unique(maintain_order=True)
    )
    if table.height == 0:
        raise DataError("no user-user edges", path=path)
    return table.group_by(USER, maintain_order=True).agg(friends=pl.col("friend"))


def _align_ids(table: pl.DataFrame | None, key: str, dtype: pl.DataType) -> pl.DataFrame | None:
    """Give a side table's ids the events' id type, dropping ids that cannot have it."""
    if table is None:
        return None
    return table.with_columns(pl.col(key).cast(dtype, strict=False)).drop_nulls(key)


# --------------------------------------------------------------------------- parsing


@dataclass
class _Field:
    """One parsed column and what is needed to report its bad rows."""

    name: str  # canonical column, or "row" for a row-level check
    source: str  # source column named in errors
    raw: pl.Series  # values as read
    parsed: pl.Series  # null where missing or unparseable
    required: bool
    problem: str | None = None  # message for a bad row, instead of "cannot parse ..."
    expected: str | None = None  # what a value must be, e.g. "an integer id"


def _row_check(flag: pl.Series, problem: str) -> _Field:
    """A pseudo-field that marks the rows where ``flag`` is not null as bad."""
    nulls = pl.Series([None] * flag.len(), dtype=pl.String)
    return _Field("row", "row", flag, nulls, False, problem=problem)


def _assemble(
    path: Path,
    line: pl.Series,
    fields: list[_Field],
    on_bad_rows: str,
    describe: Callable[[int], str | None] | None = None,
) -> pl.DataFrame:
    """Check bad rows (see the module docstring) and build canonical events.

    ``describe(line)``, where given, may explain the reported bad row better than its
    fields do (a line with the wrong number of fields)."""
    n = line.len()
    if n == 0:
        raise DataError("no events", path=path)
    line = line.cast(pl.Int64)
    bad_any = pl.Series([False] * n)
    for f in fields:
        bad = f.parsed.is_null() if f.required else f.parsed.is_null() & f.raw.is_not_null()
        if f.required and bad.all():
            present = f.raw.is_not_null()
            if not present.any():
                raise DataError(f"no {f.name} values", path=path, field=f.source)
            i, unparseable = int(present.arg_true()[0]), int(present.sum())
            missing = f", the other {n - unparseable:,} none" if unparseable < n else ""
            raise DataError(
                f"{unparseable:,} of {n:,} rows have an unparseable {f.name} (first at line "
                f"{int(line[i])}: '{f.raw[i]}'){_expecting(f)}{missing}",
                path=path,
                line=int(line[i]),
                field=f.source,
            )
        bad_any = bad_any | bad
    n_bad = int(bad_any.sum())
    if n_bad and (on_bad_rows == "error" or n_bad > MAX_BAD_FRACTION * n):
        i = int(bad_any.arg_true()[0])
        f = next(  # a row-level problem explains the row best, then the first bad field
            f
            for f in sorted(fields, key=lambda f: f.problem is None)
            if f.parsed[i] is None and (f.required or f.raw[i] is not None)
        )
        raw, field = f.raw[i], f.source
        problem = describe(int(line[i])) if describe is not None else None
        if problem is not None:
            field = None  # the whole line is at fault
        elif f.problem is not None:
            problem = f.problem
        else:
            problem = f"missing {f.name}" if raw is None else f"cannot parse {f.name} '{raw}'"
            problem += "" if raw is None else _expecting(f)
        if on_bad_rows != "error":
            problem = f"{n_bad} of {n} rows are malformed (more than half); the first: {problem}"
        raise DataError(problem, path=path, line=int(line[i]), field=field)
    events = pl.DataFrame([f.parsed.alias(f.name) for f in fields if f.name in _PARSERS])
    # A malformed row loses its user, so preprocessing drops it and reports its line.
    events = events.with_columns(
        pl.when(bad_any).then(None).otherwise(pl.col(USER)).alias(USER), line.alias(LINE)
    )
    if TIME not in events.columns:
        events = events.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over(USER).alias(TIME))
    return canonical_events(events)


def _expecting(f: _Field) -> str:
    return f" ({f.expected} expected)" if f.expected else ""


def _clean_str(s: pl.Series) -> pl.Series:
    """Cast to strings, strip whitespace and turn empty strings into nulls."""
    text = s.cast(pl.String, strict=False).str.strip_chars()
    return text.to_frame("v").select(pl.when(pl.col("v") != "").then(pl.col("v"))).to_series()


def _parse_id(s: pl.Series) -> pl.Series:
    """Int64 when every id is a plain integer (no sign, no leading zero), else stripped Utf8."""
    if s.dtype.is_integer():
        return s.cast(pl.Int64)
    if s.dtype.is_float():
        values = s.drop_nulls()
        if (values == values.floor()).all():
            return s.cast(pl.Int64, strict=False)
    text = _clean_str(s)
    ints = text.cast(pl.Int64, strict=False)
    if ints.null_count() == text.null_count() and not text.str.contains(r"^(?:[+-]|0\d)").any():
        return ints
    return text


def _parse_time(s: pl.Series) -> pl.Series:
    """Unix seconds from integers/floats (ms, us, ns by magnitude), datetimes or ISO strings."""
    if s.dtype == pl.Date:
        return s.cast(pl.Datetime("ms")).dt.epoch("s")
    if isinstance(s.dtype, pl.Datetime):
        return s.dt.epoch("s")
    if s.dtype.is_numeric():
        return _numeric_seconds(s)
    text = _clean_str(s)
    ints = text.cast(pl.Int64, strict=False)
    if ints.null_count() == text.null_count():
        return _numeric_seconds(ints)
    out = _numeric_seconds(text.cast(pl.Float64, strict=False))
    for fmt in _DATE_FORMATS:
        if not (out.is_null() & text.is_not_null()).any():
            break
        parsed = text.str.to_datetime(fmt, strict=False).dt.epoch("s")
        out = out.to_frame("o").select(pl.col("o").fill_null(parsed)).to_series()
    return out


def _numeric_seconds(s: pl.Series) -> pl.Series:
    biggest = s.abs().max()
    divisor = 1
    for limit, div in ((1e17, 10**9), (1e14, 10**6), (1e11, 10**3)):
        if biggest is not None and biggest > limit:
            divisor = div
            break
    if s.dtype.is_integer():
        return s.cast(pl.Int64) // divisor
    return (s.cast(pl.Float64) / divisor).floor().cast(pl.Int64, strict=False)


def _parse_value(s: pl.Series) -> pl.Series:
    if s.dtype.is_numeric() or s.dtype == pl.Boolean:
        return s.cast(pl.Float64)
    return _clean_str(s).cast(pl.Float64, strict=False)


_PARSERS = {
    USER: _parse_id,
    ITEM: _parse_id,
    TIME: _parse_time,
    VALUE: _parse_value,
    BEHAVIOR: _clean_str,
}


# --------------------------------------------------------------------------- low-level input


def check_encoding(encoding: str) -> str:
    """Python's name for the text encoding ``encoding`` (``latin-1`` -> ``iso8859-1``)."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        info = None
    if info is None or not getattr(info, "_is_text_encoding", True):
        raise ConfigError(
            f"unknown text encoding {encoding!r}; e.g. utf-8, latin-1, cp1252, utf-16"
        )
    return info.name


def _read_rows(
    path: Path,
    sep: str,
    names: list[str],
    *,
    skip_header: bool,
    quote: str | None = '"',
    encoding: str = DEFAULT_ENCODING,
) -> tuple[pl.DataFrame, pl.Series]:
    """Read a delimited file as strings into ``names`` plus their 1-based line numbers.

    Blank lines are dropped; fields beyond ``names`` go to an extra column so that ragged
    rows can be reported. ``sep`` may have several characters; ``encoding`` is a Python
    codec name or ``auto`` (UTF-8, else Latin-1).
    """
    source: Path | bytes = path
    if len(sep) > 1 or encoding != "utf-8":
        data = path.read_bytes() if encoding == "utf-8" else _utf8_bytes(path, encoding)
        if len(sep) > 1:
            data = data.replace(sep.encode(), _UNIT_SEP.encode())
            sep = _UNIT_SEP
        source = data
    extras = [_EXTRA]
    while True:
        schema = {n: pl.String for n in [*names, *extras]}
        try:
            df = pl.read_csv(
                source,
                has_header=False,
                skip_rows=int(skip_header),
                separator=sep,
                quote_char=quote,
                schema=schema,
                missing_columns="insert",
                truncate_ragged_lines=True,
                encoding="utf8",
                raise_if_empty=False,
            )
            break
        except pl.exceptions.PolarsError as exc:
            # Polars sizes the table by the first row read: room for a longer first row.
            wider = re.search(r"not specified in schema \(n_extra = (\d+)\)", str(exc))
            if wider is None or len(extras) > 1:
                if encoding == "utf-8":
                    _decode(path, encoding, keep=False)  # raises where the file is not UTF-8
                raise DataError(f"cannot read: {_polars_problem(exc)}", path=path) from None
            extras += [f"{_EXTRA}{k}" for k in range(int(wider.group(1)))]
    if len(extras) > 1:
        df = df.with_columns(pl.coalesce(extras).alias(_EXTRA)).drop(extras[1:])
    first_line = 1 + int(skip_header)
    df = df.with_columns((pl.int_range(pl.len(), dtype=pl.Int64) + first_line).alias(LINE))
    df = df.filter(~pl.all_horizontal(pl.col(names).is_null()))
    return df.drop(LINE), df[LINE]


def _polars_problem(exc: Exception) -> str:
    """The gist of a Polars error, without its advice on Polars arguments."""
    message = str(exc)
    original = re.search(r"Original error: ```(.*?)```", message, re.S)
    if original:
        message = original.group(1)
    message = re.split(r"\s*(?:You might want to try|Specify these names)", message)[0]
    return " ".join(message.split()).rstrip(".")


def _read_csv(
    path: Path, sep: str, n_rows: int | None = None, encoding: str = DEFAULT_ENCODING
) -> pl.DataFrame:
    """Read a headered csv file as strings (used for small side tables)."""
    source = path if encoding == "utf-8" else _utf8_bytes(path, encoding)
    try:
        return pl.read_csv(source, separator=sep, n_rows=n_rows, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        if encoding == "utf-8":
            _decode(path, encoding, keep=False)
        raise DataError(f"cannot read: {_polars_problem(exc)}", path=path) from None


def _utf8_bytes(path: Path, encoding: str) -> bytes:
    """The text of ``path`` as UTF-8 bytes; ``auto``: UTF-8 if it is, else Latin-1."""
    if encoding == "auto":
        data = path.read_bytes()
        try:
            data.decode("utf-8")
            return data
        except UnicodeDecodeError:
            return data.decode("latin-1").encode("utf-8")
    return _decode(path, encoding, keep=True)


def _decode(path: Path, encoding: str, *, keep: bool) -> bytes:
    """Decode ``path`` from ``encoding`` chunk by chunk, returning the text as UTF-8 bytes
    when ``keep`` (else only checking it). Bytes that do not decode are a DataError naming
    their offset (and line), never replaced."""
    decoder = codecs.getincrementaldecoder(encoding)()
    out = bytearray()
    offset = newlines = 0  # bytes and line breaks before the current chunk
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                # exc.object may start with bytes carried over from the previous chunk
                at = offset - (len(exc.object) - len(chunk)) + exc.start
                line = newlines + chunk[: max(at - offset, 0)].count(b"\n") + 1
                raise _encoding_error(path, encoding, exc, at, line) from None
            if keep:
                out += text.encode("utf-8")
            if not chunk:
                return bytes(out)
            offset += len(chunk)
            newlines += chunk.count(b"\n")


def _encoding_error(
    path: Path, encoding: str, exc: UnicodeDecodeError, offset: int, line: int
) -> DataError:
    bad = " ".join(f"0x{b:02x}" for b in exc.object[exc.start : exc.end])
    # line numbers count b"\n" bytes, which are line breaks only in ASCII-compatible codecs
    ascii_lines = "a\n".encode(encoding, errors="replace") == b"a\n"
    with path.open("rb") as handle:
        start = handle.read(4)
    boms = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"))
    boms += ((codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
    likely = next((name for bom, name in boms if start.startswith(bom)), "latin-1")
    return DataError(
        f"not valid {encoding} text: byte {bad} at offset {offset} ({exc.reason}); read "
        f"it with its encoding, e.g. --encoding {likely}",
        path=path,
        line=line if ascii_lines else None,
    )


def _read_lines(path: Path, encoding: str = DEFAULT_ENCODING) -> pl.DataFrame:
    """The lines of a text file with their 1-based numbers (columns ``line``, ``text``)."""
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        _decode(path, encoding, keep=False)  # raises, naming the offset and line
        raise
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return pl.DataFrame(
        {LINE: pl.Series(range(1, len(lines) + 1), dtype=pl.Int64), "text": lines},
        schema={LINE: pl.Int64, "text": pl.String},
    ).with_columns(pl.col("text").str.strip_chars_end("\r"))


def _line_text(path: Path, number: int, encoding: str) -> str | None:
    """Line ``number`` (1-based) of a text file, None past its end."""
    with path.open(encoding=encoding, errors="replace", newline="\n") as handle:
        for count, text in enumerate(handle, 1):
            if count == number:
                return text.rstrip("\r\n")
    return None


def _split_fields(text: str, sep: str, quote: str | None = '"') -> list[str]:
    """The fields of one delimited line (quotes honoured for a one-character ``sep``)."""
    if len(sep) > 1:
        return text.split(sep)
    if quote is None:
        return next(csv.reader([text], delimiter=sep, quoting=csv.QUOTE_NONE))
    return next(csv.reader([text], delimiter=sep, quotechar=quote), [])


def _field_count_check(
    path: Path, sep: str, expected: int, encoding: str, *, header: bool, quote: str | None = '"'
) -> Callable[[int], str | None]:
    """A describer for bad rows: how many fields the row's line has, when not ``expected``."""

    def describe(line: int) -> str | None:
        text = _line_text(path, line, encoding)
        found = len(_split_fields(text, sep, quote)) if text is not None else expected
        if found == expected:
            return None
        where = "the header has" if header else "expected"
        return f"the line has {found} field{'s' * (found != 1)}, {where} {expected}"

    return describe


def _head(path: Path, n: int = 20, encoding: str = DEFAULT_ENCODING) -> list[str]:
    """Up to ``n`` non-blank lines from the start of ``path`` (for format detection)."""
    with path.open("rb") as fh:
        chunk = fh.read(1 << 16)
    lines = chunk.decode(encoding, errors="replace").split("\n")
    if len(chunk) == 1 << 16:
        lines = lines[:-1]
    lines = [ln.rstrip("\r") for ln in lines if ln.strip()][:n]
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    return lines


def _sniff_sep(line: str) -> str:
    counts = {c: line.count(c) for c in (",", "\t", ";", "|")}
    best = max(counts, key=lambda c: counts[c])
    return best if counts[best] else ","


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_sequence(head: list[str]) -> bool:
    """Lines of space-separated tokens (no other separator), some with more than one, the
    first opening with an integer user id (no header), most of them integers: a non-integer
    id in a sequence file is reported by the sequence reader, not read as a header."""
    if not head or any(re.search(r"[,;|\t]", ln) for ln in head):
        return False
    tokens = [t for ln in head for t in ln.split()]
    integers = sum(bool(re.fullmatch(r"\d+", t)) for t in tokens)
    return (
        re.fullmatch(r"\d+", head[0].split()[0]) is not None
        and any(len(ln.split()) > 1 for ln in head)
        and integers > MAX_BAD_FRACTION * len(tokens)
    )


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
