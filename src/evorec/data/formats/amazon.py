"""One category of the Amazon 2018 review data: ``<Category>.csv`` ratings with
``meta_<Category>.json.gz`` beside them (categories and HTML-stripped text as the item table)."""

from __future__ import annotations

import gzip
import html
import json
import re
from pathlib import Path

import polars as pl

from evorec.data.formats.registry import Format, Probe, ReadOptions, register
from evorec.data.formats.rows import align_ids, events_from_table, read_rows
from evorec.data.schema import ITEM, TIME, USER, VALUE, RawData
from evorec.errors import DataError


def _amazon_files(directory: Path) -> list[tuple[Path, Path]]:
    """``(<Category>.csv, meta_<Category>.json.gz)`` pairs in ``directory``."""
    return [
        (ratings, directory / f"meta_{ratings.stem}.json.gz")
        for ratings in sorted(directory.glob("*.csv"))
        if (directory / f"meta_{ratings.stem}.json.gz").exists()
    ]


def _read_amazon(path: Path, options: ReadOptions) -> RawData:
    """Read one category of the Amazon review data (Ni, Li, McAuley 2019): the ratings-only
    file ``<Category>.csv`` (``item,user,rating,time`` rows, no header; rating as ``value``)
    and the metadata ``meta_<Category>.json.gz`` beside it as the item table: ``categories``
    (the category path below the top level) and ``text`` (title, brand, categories and
    description, HTML stripped)."""
    on_bad_rows, encoding = options.on_bad_rows, options.encoding
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
    df, line = read_rows(
        ratings, ",", ["item", "user", "rating", "time"], skip_header=False, encoding=encoding
    )
    mapping = {USER: "user", ITEM: "item", VALUE: "rating", TIME: "time"}
    events, _ = events_from_table(ratings, df, line, mapping, on_bad_rows)
    sources = [ratings]
    items = None
    if meta.exists():
        items = align_ids(_amazon_items(meta), ITEM, events[ITEM].dtype)
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


def _is_amazon(probe: Probe) -> bool:
    if probe.is_dir:
        return bool(_amazon_files(probe.path))
    path = probe.path
    return probe.suffix == ".csv" and (path.parent / f"meta_{path.stem}.json.gz").exists()


register(
    Format(
        "amazon",
        _read_amazon,
        _is_amazon,
        "Amazon <Category>.csv with meta_<Category>.json.gz",
        reads_directory=True,
    )
)
