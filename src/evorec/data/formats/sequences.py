"""One line per user, ``user item item ...`` (S3-Rec), with the S3-Rec item attributes
(``<name>_item2attributes.json`` beside the file) as the item table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl

from evorec.data.formats.registry import Format, ReadOptions, register
from evorec.data.formats.rows import (
    MAX_BAD_FRACTION,
    Field,
    align_ids,
    assemble,
    parse_id,
    read_lines,
)
from evorec.data.schema import ITEM, LINE, USER, RawData
from evorec.errors import DataError


def _read_sequence(path: Path, options: ReadOptions) -> RawData:
    """Read one line per user, ``user item item ...`` (S3-Rec), whitespace-separated, in
    order. Ids are integers as in S3-Rec, a token that is not one a bad row; a file whose
    tokens are mostly not integers has string ids."""
    on_bad_rows, encoding = options.on_bad_rows, options.encoding
    lines = read_lines(path, encoding).with_columns(tok=pl.col("text").str.extract_all(r"\S+"))
    lines = lines.filter(pl.col("tok").list.len() > 0)
    rows = (
        lines.with_columns(n=pl.col("tok").list.len(), user=pl.col("tok").list.first())
        .explode("tok")
        .with_columns(pos=pl.int_range(pl.len()).over(LINE))
        .filter((pl.col("pos") > 0) | (pl.col("n") == 1))
        .with_columns(item=pl.when(pl.col("pos") > 0).then(pl.col("tok")))
    )
    fields = [_sequence_ids(USER, "user", rows["user"]), _sequence_ids(ITEM, "item", rows["item"])]
    events = assemble(path, rows[LINE], fields, on_bad_rows)
    sources = [path]
    items = None
    attributes = path.with_name(f"{path.stem}_item2attributes.json")
    if attributes.exists():
        items = _read_item_attributes(attributes, events[ITEM].dtype)
        sources.append(attributes)
    return RawData(events, items=items, has_time=False, name=path.stem, sources=sources)


def _sequence_ids(name: str, source: str, tokens: pl.Series) -> Field:
    """Integer ids when most tokens are plain integers (a leading zero or a sign is not),
    the other tokens then unparseable; else string ids."""
    integer = tokens.str.contains(r"^(?:0|[1-9]\d*)$")
    if integer.sum() <= MAX_BAD_FRACTION * tokens.drop_nulls().len():
        return Field(name, source, tokens, parse_id(tokens), True)
    parsed = (
        pl.DataFrame({"token": tokens, "integer": integer})
        .select(pl.when("integer").then(pl.col("token").cast(pl.Int64, strict=False)))
        .to_series()
    )
    return Field(name, source, tokens, parsed, True, expected="an integer id")


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
    return align_ids(items, ITEM, id_dtype)


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


register(
    Format(
        "sequence",
        _read_sequence,
        lambda probe: probe.suffix == ".txt" and _is_sequence(probe.head),
        "a .txt file of space-separated ids, one user a line",
    )
)
