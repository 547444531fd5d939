"""The machinery every reader shares: strict text decoding, delimited rows with their line
numbers, header checks, and turning parsed columns into canonical events with bad rows
reported or kept as nulls.

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
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from evorec.data.schema import BEHAVIOR, ITEM, LINE, TIME, USER, VALUE, canonical_events
from evorec.errors import ConfigError, DataError

MAX_BAD_FRACTION = 0.5
DELIMITED_SUFFIXES = (".csv", ".tsv", ".txt", ".dat", ".data")  # text tables by suffix
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
_REQUIRED = (USER, ITEM, TIME)
EXTRA_FIELDS = "__evorec_extra_fields__"
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


# --------------------------------------------------------------------------- bad rows


@dataclass
class Field:
    """One parsed column and what is needed to report its bad rows."""

    name: str  # canonical column, or "row" for a row-level check
    source: str  # source column named in errors
    raw: pl.Series  # values as read
    parsed: pl.Series  # null where missing or unparseable
    required: bool
    problem: str | None = None  # message for a bad row, instead of "cannot parse ..."
    expected: str | None = None  # what a value must be, e.g. "an integer id"


def row_check(flag: pl.Series, problem: str) -> Field:
    """A pseudo-field that marks the rows where ``flag`` is not null as bad."""
    nulls = pl.Series([None] * flag.len(), dtype=pl.String)
    return Field("row", "row", flag, nulls, False, problem=problem)


def assemble(
    path: Path,
    line: pl.Series,
    fields: list[Field],
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


def _expecting(f: Field) -> str:
    return f" ({f.expected} expected)" if f.expected else ""


def _clean_str(s: pl.Series) -> pl.Series:
    """Cast to strings, strip whitespace and turn empty strings into nulls."""
    text = s.cast(pl.String, strict=False).str.strip_chars()
    return text.to_frame("v").select(pl.when(pl.col("v") != "").then(pl.col("v"))).to_series()


def parse_id(s: pl.Series) -> pl.Series:
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
    USER: parse_id,
    ITEM: parse_id,
    TIME: _parse_time,
    VALUE: _parse_value,
    BEHAVIOR: _clean_str,
}


def events_from_table(
    path: Path,
    df: pl.DataFrame,
    line: pl.Series,
    columns: dict[str, str] | None,
    on_bad_rows: str,
    check: Field | None = None,
    describe: Callable[[int], str | None] | None = None,
) -> tuple[pl.DataFrame, bool]:
    """Parse the mapped columns of ``df`` (rows at ``line``); ``check`` flags rows as bad,
    ``describe`` explains a bad row by its line (see :func:`assemble`)."""
    names = [c for c in df.columns if c != EXTRA_FIELDS]
    mapping = _resolve_columns(path, names, columns)
    fields = [
        Field(canon, src, df[src], _PARSERS[canon](df[src]), canon in _REQUIRED)
        for canon, src in mapping.items()
    ]
    if EXTRA_FIELDS in df.columns:
        fields.append(row_check(df[EXTRA_FIELDS], f"more than {len(names)} fields"))
    if check is not None:
        fields.append(check)
    return assemble(path, line, fields, on_bad_rows, describe), TIME in mapping


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


def header_names(path: Path, fields: list[str]) -> list[str]:
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


def field_count_check(
    path: Path, sep: str, expected: int, encoding: str, *, header: bool, quote: str | None = '"'
) -> Callable[[int], str | None]:
    """A describer for bad rows: how many fields the row's line has, when not ``expected``."""

    def describe(line: int) -> str | None:
        text = _line_text(path, line, encoding)
        found = len(split_fields(text, sep, quote)) if text is not None else expected
        if found == expected:
            return None
        where = "the header has" if header else "expected"
        return f"the line has {found} field{'s' * (found != 1)}, {where} {expected}"

    return describe


# --------------------------------------------------------------------------- side tables


def category_table(events: pl.DataFrame, category: pl.Series) -> pl.DataFrame:
    """Each item's category (its first one), from a category column aligned with events."""
    return (
        pl.DataFrame({ITEM: events[ITEM], "category": parse_id(category)})
        .drop_nulls()
        .unique(ITEM, keep="first", maintain_order=True)
    )


def align_ids(table: pl.DataFrame | None, key: str, dtype: pl.DataType) -> pl.DataFrame | None:
    """Give a side table's ids the events' id type, dropping ids that cannot have it."""
    if table is None:
        return None
    return table.with_columns(pl.col(key).cast(dtype, strict=False)).drop_nulls(key)


# --------------------------------------------------------------------------- text input


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


def read_rows(
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
    extras = [EXTRA_FIELDS]
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
                raise DataError(f"cannot read: {polars_problem(exc)}", path=path) from None
            extras += [f"{EXTRA_FIELDS}{k}" for k in range(int(wider.group(1)))]
    if len(extras) > 1:
        df = df.with_columns(pl.coalesce(extras).alias(EXTRA_FIELDS)).drop(extras[1:])
    first_line = 1 + int(skip_header)
    df = df.with_columns((pl.int_range(pl.len(), dtype=pl.Int64) + first_line).alias(LINE))
    df = df.filter(~pl.all_horizontal(pl.col(names).is_null()))
    return df.drop(LINE), df[LINE]


def polars_problem(exc: Exception) -> str:
    """The gist of a Polars error, without its advice on Polars arguments."""
    message = str(exc)
    original = re.search(r"Original error: ```(.*?)```", message, re.S)
    if original:
        message = original.group(1)
    message = re.split(r"\s*(?:You might want to try|Specify these names)", message)[0]
    return " ".join(message.split()).rstrip(".")


def read_csv(
    path: Path, sep: str, n_rows: int | None = None, encoding: str = DEFAULT_ENCODING
) -> pl.DataFrame:
    """Read a headered csv file as strings (used for small side tables)."""
    source = path if encoding == "utf-8" else _utf8_bytes(path, encoding)
    try:
        return pl.read_csv(source, separator=sep, n_rows=n_rows, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        if encoding == "utf-8":
            _decode(path, encoding, keep=False)
        raise DataError(f"cannot read: {polars_problem(exc)}", path=path) from None


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


def read_lines(path: Path, encoding: str = DEFAULT_ENCODING) -> pl.DataFrame:
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


def split_fields(text: str, sep: str, quote: str | None = '"') -> list[str]:
    """The fields of one delimited line (quotes honoured for a one-character ``sep``)."""
    if len(sep) > 1:
        return text.split(sep)
    if quote is None:
        return next(csv.reader([text], delimiter=sep, quoting=csv.QUOTE_NONE))
    return next(csv.reader([text], delimiter=sep, quotechar=quote), [])


def head(path: Path, n: int = 20, encoding: str = DEFAULT_ENCODING) -> list[str]:
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


def sniff_sep(line: str) -> str:
    counts = {c: line.count(c) for c in (",", "\t", ";", "|")}
    best = max(counts, key=lambda c: counts[c])
    return best if counts[best] else ","


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
