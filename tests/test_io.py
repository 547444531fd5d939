"""Atomic writes of a stream of frames: every format, one frame at a time, nothing partial."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from evorec.io import FRAME_FORMATS, write_frames

READERS = {
    ".csv": pl.read_csv,
    ".tsv": lambda path: pl.read_csv(path, separator="\t"),
    ".parquet": pl.read_parquet,
    ".jsonl": pl.read_ndjson,
    ".json": pl.read_json,
}


def parts() -> list[pl.DataFrame]:
    return [
        pl.DataFrame({"user_id": [f"u{u}"] * 3, "item_id": ["a", "b", "c"], "rank": [1, 2, 3]})
        for u in range(4)
    ]


@pytest.mark.parametrize("suffix", FRAME_FORMATS)
def test_frames_written_in_order_as_one_table(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    assert write_frames(path, iter(parts())) == 12
    assert READERS[suffix](path).equals(pl.concat(parts()))


def test_a_failing_stream_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    write_frames(path, parts()[:1])

    def broken() -> Iterator[pl.DataFrame]:
        yield parts()[1]
        raise RuntimeError("ranking failed")

    with pytest.raises(RuntimeError):
        write_frames(path, broken())
    assert pl.read_parquet(path).equals(parts()[0])
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


@pytest.mark.parametrize("bad", ["out.xlsx", "out"])
def test_unknown_extension_or_empty_stream_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="cannot write"):
        write_frames(tmp_path / bad, parts())
    with pytest.raises(ValueError, match="no frames"):
        write_frames(tmp_path / "out.csv", [])
    assert not list(tmp_path.iterdir())
