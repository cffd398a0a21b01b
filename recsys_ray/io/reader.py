"""How a file is read: the one reader of every file the project takes in.

A file, local or `s3://`, of any format in `formats.FORMATS`, is read as
`Chunk`s: decoded tables of about `chunk_rows` rows, each with the position of
its first row in the file, so a rejected row names the file row it came from
however the file was cut. The build's read tasks, `recsys-ray validate` and the
service's whole-file uploads all read through here; `storage` says where the
bytes are and `formats` how they are decoded (a new format touches only that).

Parquet is checked once, by `formats.open_parquet` (magic bytes, then footer),
whichever caller opens the file. A build task reads one piece of a Parquet file
(`read_parquet_piece`: row groups, or a row slice of them) as one table;
which pieces there are is the build's plan, not the reader's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from recsys_ray.io import formats, storage

DEFAULT_CHUNK_ROWS = 1_000_000


@dataclass(frozen=True)
class Chunk:
    """Decoded rows of a file; `row_offset` is the position of the first one in the file."""

    table: pa.Table
    row_offset: int


@contextmanager
def open_file(uri: str, options: storage.StorageOptions | None = None) -> Iterator[pa.NativeFile]:
    """The file at `uri` for random access (ranged reads on S3)."""
    fs, path = storage.resolve(uri, options)
    with fs.open_input_file(path) as source:
        yield source


def read_file(uri: str, fmt: formats.Format, dataset: str | None = None, *,
              options: storage.StorageOptions | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
              name: str | None = None) -> Iterator[Chunk]:
    """The file at `uri` as chunks of about `chunk_rows` rows (JSON and NDJSON as one).

    File-level problems raise `formats.InputError`, possibly after earlier chunks;
    Parquet errors name `name` (say, the URI) when given.
    """
    with open_file(uri, options) as source:
        yield from _numbered(formats.iter_decode(source, fmt, dataset, chunk_rows=chunk_rows, name=name))


def read_data(data: bytes | memoryview, fmt: formats.Format, dataset: str | None = None, *,
              chunk_rows: int | None = None) -> Iterator[Chunk]:
    """A file already in memory, as chunks; with `chunk_rows` None, decoded whole by
    `formats.decode` (as an upload body is) into one chunk."""
    if chunk_rows is None:
        yield Chunk(formats.decode(data, fmt, dataset), 0)
        return
    yield from _numbered(formats.iter_decode(pa.BufferReader(data), fmt, dataset, chunk_rows=chunk_rows))


def read_parquet_piece(uri: str, *, options: storage.StorageOptions | None = None,
                       row_groups: list[int] | None = None, row_slice: tuple[int, int] | None = None,
                       name: str | None = None) -> Chunk:
    """Row groups `row_groups` of a Parquet file (all by default), or only the rows
    `row_slice` = (start, length) of them, as one chunk numbered from the start of the file."""
    with open_file(uri, options) as source:
        parquet = formats.open_parquet(source, name)
        first = row_groups[0] if row_groups else 0
        offset = sum(parquet.metadata.row_group(g).num_rows for g in range(first))
        if row_slice is not None:
            offset += row_slice[0]
        table = next(formats.iter_parquet(parquet, row_groups=row_groups, row_slice=row_slice, name=name))
        return Chunk(table, offset)


def parquet_metadata(uri: str, options: storage.StorageOptions | None = None,
                     name: str | None = None) -> pq.FileMetaData:
    """The footer of the Parquet file at `uri` (after the Parquet check)."""
    with open_file(uri, options) as source:
        return formats.open_parquet(source, name).metadata


def check_parquet(uri: str, options: storage.StorageOptions | None = None, name: str | None = None) -> None:
    """Raise `formats.InputError` unless the file at `uri` has Parquet's magic bytes at both ends
    (the footer is not read: the cheap check for files read whole later)."""
    with open_file(uri, options) as source:
        formats.check_parquet(source, name)


def _numbered(tables: Iterable[pa.Table]) -> Iterator[Chunk]:
    offset = 0
    for table in tables:
        yield Chunk(table, offset)
        offset += table.num_rows
