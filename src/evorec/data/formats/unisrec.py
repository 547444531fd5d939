"""UniSRec / RecBole ``.inter`` files (``user_id  item_id_list  item_id`` rows, one file per
split) rebuilt into full sequences, with the ``.text`` item texts as the item table."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from evorec.data.formats.registry import Format, ReadOptions, register
from evorec.data.formats.rows import (
    DEFAULT_ENCODING,
    Field,
    align_ids,
    assemble,
    check_encoding,
    parse_id,
    read_lines,
    read_rows,
)
from evorec.data.schema import ITEM, LINE, USER, RawData
from evorec.errors import DataError

_UNISREC_SPLITS = ("train", "valid", "test")


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
    lines = read_lines(path, check_encoding(encoding))
    if lines.height and lines[0, "text"].split("\t", 1)[0].split(":", 1)[0] == "item_id":
        lines = lines.slice(1)
    lines = lines.filter(pl.col("text").str.strip_chars().str.len_bytes() > 0)
    parts = lines.with_columns(
        pl.col("text").str.splitn("\t", 2).struct.rename_fields(["id", "body"]).alias("p")
    ).unnest("p")
    bad = parts.filter(pl.col("body").is_null() | (pl.col("id").str.strip_chars() == ""))
    if bad.height:
        raise DataError("expected 'item_id<TAB>text'", path=path, line=int(bad[0, LINE]))
    return pl.DataFrame({ITEM: parse_id(parts["id"]), "text": parts["body"].str.strip_chars_end()})


def _read_unisrec(path: Path, options: ReadOptions) -> RawData:
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
    on_bad_rows, encoding = options.on_bad_rows, options.encoding
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
        Field(USER, "user_id", events["user"], parse_id(events["user"]), True),
        Field(ITEM, "item_id", events["item"], parse_id(events["item"]), True),
    ]
    out = assemble(files[0], events[LINE], fields, on_bad_rows)
    items = None
    text_file = directory / f"{stem}.text"
    if text_file.exists():
        items = align_ids(read_item_text(text_file, encoding), ITEM, out[ITEM].dtype)
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
    lines = read_lines(path, encoding)
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
    df, _ = read_rows(
        path, "\t", ["token", "index"], skip_header=False, quote=None, encoding=encoding
    )
    return dict(zip(df["index"].str.strip_chars(), df["token"].str.strip_chars(), strict=True))


register(
    Format(
        "unisrec",
        _read_unisrec,
        lambda probe: (
            any(n.endswith(".inter") for n in probe.names)
            if probe.is_dir
            else probe.suffix in (".inter", ".text")
        ),
        "UniSRec *.inter files",
        reads_directory=True,
    )
)
