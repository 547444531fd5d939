"""Event tables with a column mapping: CSV, TSV, Parquet and JSON lines.

Canonical columns (``user_id``, ``item_id``, ``timestamp``, ``value``, ``behavior``) are
taken from ``columns=`` where given, else guessed from common source names; headerless
csv/tsv files name their columns ``"1"``, ``"2"``...
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from evorec.data.formats.registry import Format, Probe, ReadOptions, register
from evorec.data.formats.rows import (
    DELIMITED_SUFFIXES,
    events_from_table,
    field_count_check,
    head,
    header_names,
    is_json_object,
    is_number,
    read_lines,
    read_rows,
    row_check,
    sniff_sep,
    split_fields,
)
from evorec.data.schema import LINE, RawData
from evorec.errors import DataError


def _read_delimited(path: Path, options: ReadOptions, tabs: bool) -> RawData:
    first_lines = head(path, encoding=options.encoding)
    if not first_lines:
        raise DataError("no events", path=path)
    columns, encoding = options.columns, options.encoding
    sep = options.sep or ("\t" if tabs else sniff_sep(first_lines[0]))
    header = split_fields(first_lines[0], sep)
    first = [f.strip().strip('"') for f in header]
    positional = bool(columns) and all(v.isdigit() and v not in first for v in columns.values())
    headerless = positional or all(is_number(f) for f in first)
    if headerless:
        names = [str(i) for i in range(1, len(first) + 1)]
    else:
        names = header_names(path, first if len(sep) > 1 else header)
    df, line = read_rows(path, sep, names, skip_header=not headerless, encoding=encoding)
    describe = field_count_check(path, sep, len(names), encoding, header=not headerless)
    events, has_time = events_from_table(
        path, df, line, columns, options.on_bad_rows, describe=describe
    )
    return RawData(events, has_time=has_time, name=path.stem, sources=[path])


def _read_parquet(path: Path, options: ReadOptions) -> RawData:
    df = pl.read_parquet(path)
    line = pl.Series(LINE, range(1, df.height + 1), dtype=pl.Int64)
    events, has_time = events_from_table(path, df, line, options.columns, options.on_bad_rows)
    return RawData(events, has_time=has_time, name=path.stem, sources=[path])


def _read_jsonl(path: Path, options: ReadOptions) -> RawData:
    lines = read_lines(path, options.encoding).filter(pl.col("text").str.strip_chars() != "")
    if lines.height == 0:
        raise DataError("no events", path=path)
    check = None
    try:
        df = _ndjson(path, lines["text"])
    except DataError:
        # Some lines are not JSON objects: find them (slow path, only for broken files) and
        # keep them as all-null rows that are reported like any other bad row.
        ok = pl.Series([is_json_object(t) for t in lines["text"]])
        if not ok.any():
            raise DataError(
                "no line is a JSON object", path=path, line=int(lines[0, LINE])
            ) from None
        good = _ndjson(path, lines.filter(ok)["text"])
        order = pl.concat([ok.arg_true(), (~ok).arg_true()]).arg_sort()
        df = pl.concat([good, good.clear(int((~ok).sum()))])[order]
        not_json = lines.select(pl.when(~ok).then(pl.col("text"))).to_series()
        check = row_check(not_json, "not a JSON object")
    events, has_time = events_from_table(
        path, df, lines[LINE], options.columns, options.on_bad_rows, check
    )
    return RawData(events, has_time=has_time, name=path.stem, sources=[path])


def _ndjson(path: Path, texts: pl.Series) -> pl.DataFrame:
    try:
        return pl.read_ndjson("\n".join(texts.to_list()).encode(), infer_schema_length=None)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"cannot read JSON lines: {exc}", path=path) from exc


def _is_tsv(probe: Probe) -> bool:
    return probe.suffix in DELIMITED_SUFFIXES and (
        probe.suffix == ".tsv" or bool(probe.head) and sniff_sep(probe.head[0]) == "\t"
    )


def _is_jsonl(probe: Probe) -> bool:
    if probe.suffix in (".jsonl", ".ndjson"):
        return True
    return probe.suffix == ".json" and bool(probe.head) and is_json_object(probe.head[0])


register(
    Format(
        "csv",
        lambda path, options: _read_delimited(path, options, tabs=False),
        lambda probe: probe.suffix in DELIMITED_SUFFIXES and not _is_tsv(probe),
        "a delimited file (.csv, .txt, .dat, .data)",
        takes_columns=True,
        fallback=True,
    )
)
register(
    Format(
        "tsv",
        lambda path, options: _read_delimited(path, options, tabs=True),
        _is_tsv,
        "a tab-separated file",
        takes_columns=True,
        fallback=True,
    )
)
register(
    Format(
        "parquet",
        _read_parquet,
        lambda probe: probe.suffix in (".parquet", ".pq"),
        "a .parquet file",
        takes_columns=True,
    )
)
register(
    Format(
        "jsonl",
        _read_jsonl,
        _is_jsonl,
        "a .jsonl/.ndjson file (or .json of one object a line)",
        takes_columns=True,
    )
)
