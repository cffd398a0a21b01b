"""How records are encoded: decoding uploads and files into Arrow tables, and
encoding landed tables as Parquet.

One decoder serves HTTP uploads, the batch build's CSV/JSON inputs and Kafka
messages. File-level problems (binary garbage, truncated JSON, invalid UTF-8)
raise `InputError` with a code and message fit for an HTTP 4xx body; row-level
problems are left to `recsys_ray.validation`.
"""

from __future__ import annotations

import csv
import json
import re
from typing import Any, Iterable, Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from recsys_ray import schemas

Format = Literal["csv", "json", "ndjson", "parquet"]
FORMATS: tuple[str, ...] = ("csv", "json", "ndjson", "parquet")

CONTENT_TYPES: dict[str, Format] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/jsonlines": "ndjson",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
}
EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
    ".pq": "parquet",
}
PARQUET_MAGIC = b"PAR1"
UTF8_BOM = b"\xef\xbb\xbf"
# Records are flat objects (an array of them is two levels); deeper JSON is refused before
# any parser sees it: Arrow's JSON reader crashes the process on very deep input.
MAX_JSON_DEPTH = 32


def looks_like_parquet(source: pa.NativeFile) -> bool:
    """Whether a random-access file starts and ends with Parquet's magic bytes (the one check
    every reader makes before handing a file to the Parquet reader)."""
    size = source.size()
    return size >= 12 and source.read_at(4, 0) == PARQUET_MAGIC and source.read_at(4, size - 4) == PARQUET_MAGIC


class InputError(ValueError):
    """A whole input is unusable; `code` and `details` go into the error body."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    def __reduce__(self):
        # Raised in Ray tasks and re-raised in the driver: it must survive pickling.
        return type(self), (self.code, self.message, self.details)


# ---- the outline of JSON text, read at the byte level before any parser sees it ------------------

_TOKENS = b'"[]{}\n'
_NOT_TOKENS = bytes(c for c in range(256) if c not in _TOKENS)
_NESTING = np.zeros(256, dtype=np.int8)
_NESTING[list(b"[{")] = 1
_NESTING[list(b"]}")] = -1
_QUOTE, _NEWLINE, _OPEN_OBJECT = b'"'[0], b"\n"[0], b"{"[0]
_NOT_BACKSLASH = re.compile(rb"[^\\]")
_JSON_SPACE = re.compile(rb"[ \t\r\n]*")


def scan_json(data: bytes | memoryview, *, record_depth: int, max_records: int | None = None,
              max_depth: int = MAX_JSON_DEPTH, block_bytes: int = 256 << 10) -> int:
    """How many JSON objects open at nesting level `record_depth` (0: the lines of
    NDJSON, 1: the elements of a top-level array), read without parsing.

    Raises InputError `invalid_json` naming the line where nesting first goes
    beyond `max_depth`, and `too_many_rows` as soon as more than `max_records`
    records were seen, without reading further. Brackets inside strings do not
    count; a string ends at its line (JSON text holds no raw line break), and a
    stray closing bracket never hides later opening ones, so no parser, even one
    resuming after an error, nests deeper than this allows.

    Each block of `block_bytes` is cut down in C to its quotes, brackets and line
    breaks (escaped quotes and quote pairs with nothing structural between them
    dropped, which leaves every other token inside or outside its string as it
    was); NumPy then follows the few tokens left.
    """
    view = memoryview(data).cast("B")
    size = len(view)
    depth, in_string, lines, records = 0, False, 0, 0
    start = 0
    while start < size:
        end = min(size, start + block_bytes)
        if end < size and view[end - 1] == 0x5C:  # keep each run of backslashes in one block
            following = _NOT_BACKSLASH.search(view, end - 1)
            end = following.start() + 1 if following else size
        block = view[start:end].tobytes()
        start = end
        if b"\\" in block:
            # Pairs of backslashes go first, so a quote after what is left is an escaped one.
            block = block.replace(b"\\\\", b"").replace(b'\\"', b"")
        kinds = np.frombuffer(block.translate(None, _NOT_TOKENS).replace(b'""', b""), dtype=np.uint8)
        if not len(kinds):
            continue
        is_newline = kinds == _NEWLINE
        line_of = np.cumsum(is_newline)
        steps = _NESTING[kinds]
        is_quote = kinds == _QUOTE
        if in_string or is_quote.any():
            quotes_before = np.cumsum(is_quote) - is_quote
            line_base = np.concatenate(([-int(in_string)], quotes_before[is_newline]))
            steps = np.where((quotes_before - line_base[line_of]) & 1, 0, steps)
            in_string = bool((int(is_quote.sum()) - int(line_base[-1])) & 1)
        elif line_of[-1]:
            in_string = False
        structural = np.flatnonzero(steps)
        if len(structural):
            level = np.cumsum(steps[structural], dtype=np.int64)
            depth_after = level - np.minimum(np.minimum.accumulate(level), -depth)
            too_deep = np.flatnonzero(depth_after > max_depth)
            if len(too_deep):
                line = lines + int(line_of[structural[too_deep[0]]]) + 1
                raise InputError("invalid_json", f"line {line} nests JSON deeper than {max_depth} levels; "
                                 "records are flat objects", {"line": line, "max_depth": max_depth})
            opened = (kinds[structural] == _OPEN_OBJECT) & (depth_after == record_depth + 1)
            records += int(np.count_nonzero(opened))
            if max_records is not None and records > max_records:
                raise too_many_rows(max_records)
            depth = int(depth_after[-1])
        lines += int(line_of[-1])
    return records


def check_json_depth(data: bytes | memoryview, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise InputError `invalid_json` if `data` nests JSON deeper than `max_depth`."""
    if isinstance(data, bytes) and data.count(b"[") + data.count(b"{") <= max_depth:
        return
    scan_json(data, record_depth=0, max_depth=max_depth)


def too_many_rows(limit: int) -> InputError:
    return InputError("too_many_rows", f"the input holds more than {limit} rows, the limit per request",
                      {"limit": limit})


def without_bom(data: bytes | memoryview) -> bytes | memoryview:
    """`data` without a leading UTF-8 byte order mark."""
    return memoryview(data)[len(UTF8_BOM):] if bytes(data[:len(UTF8_BOM)]) == UTF8_BOM else data


def format_from_content_type(content_type: str | None) -> Format | None:
    if not content_type:
        return None
    return CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())


def format_from_path(path: str) -> Format | None:
    lower = path.lower()
    for ext, fmt in EXTENSIONS.items():
        if lower.endswith(ext):
            return fmt
    return None


def _string_columns(dataset: str | None) -> dict[str, pa.DataType]:
    """CSV columns read as text so validation sees the original values."""
    names = set(schemas.INTERACTIONS.names) | set(schemas.ITEMS.names)
    if dataset is not None:
        names = set(schemas.schema_for(dataset).names)
    return {name: pa.string() for name in names}


def decode(data: bytes | memoryview, fmt: Format, dataset: str | None = None, *,
           max_rows: int | None = None) -> pa.Table:
    """Decode a whole upload or file of format `fmt` into a table.

    With `max_rows`, more rows raise InputError `too_many_rows`; JSON and NDJSON
    are counted before they are parsed, so an oversized body costs one scan.
    """
    if fmt == "json":
        return decode_json(data, dataset, max_rows=max_rows)
    if fmt == "ndjson":
        return decode_ndjson(data, dataset, max_rows=max_rows)
    if fmt == "parquet":
        table = decode_parquet(data)
    elif fmt == "csv":
        table = decode_csv(data, dataset)
    else:
        raise InputError("unsupported_format", f"unsupported format {fmt!r}; expected one of {list(FORMATS)}")
    if max_rows is not None and table.num_rows > max_rows:
        raise too_many_rows(max_rows)
    return table


def decode_parquet(data: bytes | memoryview) -> pa.Table:
    return next(iter_parquet(open_parquet(pa.BufferReader(data))))


def check_parquet(source: pa.NativeFile, name: str | None = None) -> None:
    """Raise InputError `invalid_parquet` (naming `name` if given) unless `source` has
    Parquet's magic bytes at both ends: the cheap check, without reading the footer."""
    if not looks_like_parquet(source):
        raise InputError("invalid_parquet", f"{name or 'body'} is not a Parquet file (missing PAR1 magic bytes)")


def open_parquet(source: pa.NativeFile, name: str | None = None) -> pq.ParquetFile:
    """`source` as a Parquet file, after the one check every reader makes: its magic bytes
    (`check_parquet`), then its footer. Raises InputError `invalid_parquet`."""
    check_parquet(source, name)
    try:
        return pq.ParquetFile(source, pre_buffer=True)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable_parquet(exc, name) from exc


def iter_parquet(parquet: pq.ParquetFile, *, row_groups: list[int] | None = None,
                 row_slice: tuple[int, int] | None = None, chunk_rows: int | None = None,
                 name: str | None = None) -> Iterator[pa.Table]:
    """The rows of `row_groups` (all by default) as tables of `chunk_rows` rows, or as one
    table when `chunk_rows` is None; `row_slice` = (start, length) keeps only those rows of
    the selected groups (then as one table). A file without rows gives one empty table."""
    try:
        if chunk_rows is None or row_slice is not None:
            table = parquet.read() if row_groups is None else parquet.read_row_groups(row_groups)
            yield table.slice(*row_slice) if row_slice is not None else table
            return
        if parquet.metadata.num_rows == 0:
            yield parquet.schema_arrow.empty_table()
        for batch in parquet.iter_batches(batch_size=chunk_rows, row_groups=row_groups):
            yield pa.Table.from_batches([batch])
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable_parquet(exc, name) from exc


def _unreadable_parquet(exc: Exception, name: str | None) -> InputError:
    return InputError("invalid_parquet", f"cannot read Parquet{' ' + name if name else ''}: {exc}")


def decode_csv(data: bytes | memoryview, dataset: str | None = None) -> pa.Table:
    if len(data) == 0:
        raise InputError("empty_body", "CSV input is empty (no header row)")
    _reject_binary(data, "CSV")
    try:
        return pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(block_size=16 << 20),
            convert_options=pacsv.ConvertOptions(
                column_types=_string_columns(dataset),
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise _unparsable_csv(exc) from exc


def _unparsable_csv(exc: pa.ArrowInvalid) -> InputError:
    message = str(exc)
    code = "invalid_utf8" if "UTF8" in message or "utf8" in message.lower() else "invalid_csv"
    return InputError(code, f"cannot parse CSV: {message}")


def decode_ndjson(data: bytes | memoryview, dataset: str | None = None, *, max_rows: int | None = None) -> pa.Table:
    """NDJSON records, one object per line (a leading UTF-8 BOM is ignored)."""
    data = without_bom(data)
    _reject_binary(data, "NDJSON")
    scan_json(data, record_depth=0, max_records=max_rows)
    # Arrow's JSON reader lets invalid UTF-8 through, so the text is decoded first.
    return _decode_ndjson_text(data, _utf8(data), dataset)


_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"  # what bytes.strip() removes


def _decode_ndjson_text(data: bytes | memoryview, text: str, dataset: str | None) -> pa.Table:
    """NDJSON whose UTF-8 `text` is already decoded from `data` (decoded once, not per step)."""
    if not text.strip(_ASCII_WHITESPACE):
        return _empty_input_table(dataset)
    # Text fields stay text: an id such as "2024-01-01" must not be inferred as a date.
    text_fields = pa.schema([(name, pa.string()) for name in schemas.text_fields(dataset)])
    try:
        return pajson.read_json(
            pa.BufferReader(data), read_options=pajson.ReadOptions(block_size=16 << 20),
            parse_options=pajson.ParseOptions(explicit_schema=text_fields, unexpected_field_behavior="infer"),
        )
    except pa.ArrowInvalid:
        pass  # mixed value types or a bad line: the careful path says exactly what is wrong
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError("invalid_json", f"line {line_no} is not valid JSON: {exc.msg}",
                             {"line": line_no}) from exc
        if not isinstance(record, dict):
            raise InputError("expected_object", f"line {line_no} is not a JSON object",
                             {"line": line_no})
        records.append(record)
    return records_to_table(records, dataset)


def decode_json(data: bytes | memoryview, dataset: str | None = None, *, max_rows: int | None = None) -> pa.Table:
    """A JSON array of objects (a single JSON object per line is also accepted; a
    leading UTF-8 BOM is ignored)."""
    data = without_bom(data)
    first = _JSON_SPACE.match(data).end()
    lines_of_objects = bytes(data[first:first + 1]) == b"{"
    scan_json(data, record_depth=0 if lines_of_objects else 1, max_records=max_rows)
    text = _utf8(data)
    stripped = text.lstrip()
    if not stripped:
        raise InputError("empty_body", "JSON input is empty")
    if stripped[0] == "{":
        # Several lines of objects: NDJSON sent as application/json.
        if "\n" in stripped.strip():
            _reject_binary(data, "NDJSON")
            return _decode_ndjson_text(data, text, dataset)
        raise InputError("expected_array", "expected a JSON array of records, got a JSON object")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError("invalid_json", f"body is not valid JSON: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}", {"line": exc.lineno, "column": exc.colno}) from exc
    if not isinstance(payload, list):
        raise InputError("expected_array", f"expected a JSON array of records, got {type(payload).__name__}")
    for index, record in enumerate(payload):
        if not isinstance(record, dict):
            raise InputError("expected_object", f"element {index} of the array is not a JSON object",
                             {"row": index})
    return records_to_table(payload, dataset)


def records_to_table(records: Iterable[dict[str, Any]], dataset: str | None = None) -> pa.Table:
    """Build a table from JSON-like records, keeping contract fields only.

    Where a field holds values of mixed JSON types (a timestamp given as text in
    one record and as a number in another), the values become text so that the
    validator judges each one instead of the whole batch failing to convert.
    """
    records = list(records)
    try:
        return _records_to_table(records, dataset)
    except UnicodeEncodeError as exc:
        raise InputError("invalid_utf8", LONE_SURROGATE) from exc


LONE_SURROGATE = ("input holds a lone UTF-16 surrogate escape (such as \\ud800 without its pair), "
                   "which is not valid Unicode text")


def has_lone_surrogate(record: Any) -> bool:
    """Whether a decoded JSON value holds text that is not valid Unicode (a lone surrogate escape)."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _records_to_table(records: list[dict[str, Any]], dataset: str | None) -> pa.Table:
    names = list(schemas.schema_for(dataset).names) if dataset else _union_keys(records)
    columns: dict[str, pa.Array] = {}
    text = _text_columns(records, names, dataset)
    for name in names:
        if name in text:
            column = text[name]
            if column.null_count < len(records):
                columns[name] = column
            elif any(name in r for r in records):
                columns[name] = pa.nulls(len(records))
            continue
        values = [r.get(name) for r in records]
        if all(v is None for v in values):
            if any(name in r for r in records):
                columns[name] = pa.nulls(len(records))
            continue
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[name] = pa.array(
                [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values],
                pa.string(),
            )
    if not columns:
        return _empty_input_table(dataset) if not records else pa.table({"_": pa.nulls(len(records))}).drop_columns(["_"])
    return pa.table(columns)


def _text_columns(records: list[dict[str, Any]], names: list[str], dataset: str | None) -> dict[str, pa.Array]:
    """The usual text fields as string columns, converted in one pass; {} if any value is not text.

    Gives exactly what the per-column conversion gives for all-text columns; a
    number, boolean or object anywhere sends every column the per-column way.
    """
    fields = [name for name in schemas.text_fields(dataset) if name in names] if dataset else []
    if not fields or not records:
        return {}
    try:
        struct = pa.array(records, type=pa.struct([(name, pa.string()) for name in fields]))
    except (pa.ArrowException, TypeError, ValueError):
        return {}
    return dict(zip(fields, struct.flatten()))


def encode_parquet(table: pa.Table, *, compression: str = "zstd") -> bytes:
    """Parquet bytes of `table` (the format landed objects are written in)."""
    sink = pa.BufferOutputStream()
    write_parquet(sink, [table], table.schema, compression=compression)
    return sink.getvalue().to_pybytes()


def write_parquet(sink: pa.NativeFile, tables: Iterable[pa.Table], schema: pa.Schema, *,
                  compression: str = "zstd", transient: bool = False) -> None:
    """Encode consecutive `tables` (each of `schema`, each one or more row groups) into `sink`
    as one Parquet file, as they arrive, so only one table is held at a time.

    A `transient` file (read once, then deleted) is written without column statistics: on
    a user partition's rows with their history lists that writes in about 63 % of the time
    (4.8 s against 7.7 s for 1.8M rows), the file the same size."""
    extra = {"write_statistics": False} if transient else {}
    with pq.ParquetWriter(sink, schema, compression=compression, **extra) as writer:
        for table in tables:
            writer.write_table(table)


def iter_decode(source: pa.NativeFile, fmt: Format, dataset: str | None = None, *,
                chunk_rows: int = 1_000_000, name: str | None = None) -> Iterator[pa.Table]:
    """Decode a random-access file as tables of about `chunk_rows` rows, same values as `decode`.

    CSV and Parquet are read incrementally, so memory follows the chunk size,
    not the file size; JSON and NDJSON are decoded whole. File-level problems
    raise `InputError`, possibly after earlier chunks were yielded.
    """
    if fmt == "csv":
        yield from _iter_csv(source, dataset, chunk_rows)
    elif fmt == "parquet":
        yield from iter_parquet(open_parquet(source, name), chunk_rows=chunk_rows, name=name)
    else:
        yield decode(source.read_buffer(), fmt, dataset)


def _iter_csv(source: pa.NativeFile, dataset: str | None, chunk_rows: int) -> Iterator[pa.Table]:
    head = source.read_at(min(1 << 16, source.size()), 0)
    if not head:
        raise InputError("empty_body", "CSV input is empty (no header row)")
    _reject_binary(head, "CSV")
    # Every column is read as text (as `decode_csv` does for contract columns), so a
    # later block cannot contradict a type guessed from the first one.
    try:
        header_line = head.split(b"\n", 1)[0].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError("invalid_utf8", f"cannot parse CSV: header is not valid UTF-8 (byte {exc.start})") from exc
    names = next(csv.reader([header_line]), [])
    column_types = {**{name: pa.string() for name in names}, **_string_columns(dataset)}
    try:
        # Blocks of roughly `chunk_rows` rows (at ~64 bytes a row), between 4 KiB and 16 MiB.
        block_size = min(16 << 20, max(4 << 10, chunk_rows * 64))
        source.seek(0)
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=block_size),
            convert_options=pacsv.ConvertOptions(column_types=column_types, strings_can_be_null=True,
                                                 quoted_strings_can_be_null=False),
        )
        pending: list[pa.RecordBatch] = []
        rows, chunks = 0, 0
        for batch in reader:
            pending.append(batch)
            rows += batch.num_rows
            if rows >= chunk_rows:
                yield pa.Table.from_batches(pending)
                pending, rows, chunks = [], 0, chunks + 1
        if pending or chunks == 0:
            yield pa.Table.from_batches(pending, schema=reader.schema)
    except pa.ArrowInvalid as exc:
        raise _unparsable_csv(exc) from exc


def _union_keys(records: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        for key in record:
            seen.setdefault(key, None)
    return list(seen)


def _empty_input_table(dataset: str | None) -> pa.Table:
    names = schemas.schema_for(dataset).names if dataset else []
    return pa.table({name: pa.array([], pa.string()) for name in names})


def _utf8(data: bytes | memoryview) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("invalid_utf8", f"input is not valid UTF-8 (byte offset {exc.start})",
                         {"offset": exc.start}) from exc


def _reject_binary(data: bytes | memoryview, what: str) -> None:
    head = bytes(data[:4096])
    if b"\x00" in head or head[:4] == PARQUET_MAGIC:
        raise InputError("binary_body", f"input looks like binary data, not {what}")
