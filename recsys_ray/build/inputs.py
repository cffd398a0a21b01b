"""Input pieces: how the build's files are cut into tasks and read (no Ray here).

A Parquet file is read and validated by the task that owns its piece (a range
of row groups, or a row slice of one large row group), so raw rows never pass
through the object store; CSV and JSON files are decoded whole by one task
each. Rows keep their position in their file, so quarantined rows name the
file row they came from however the file was cut.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from recsys_ray.build.plan import BuildError
from recsys_ray.config import ValidationConfig
from recsys_ray.io import formats, reader, storage
from recsys_ray.stages import batch as batch_stage

# Each slice decodes its whole row group, so slices of one group multiply its
# decoded size in memory (and its reads from S3) while they run side by side.
MAX_SLICES_PER_GROUP = 4

# Input bytes per CPU and validation round: more read blocks as the input grows.
READ_BYTES_PER_CPU_ROUND = 16 * 2**20


def read_blocks(files: list[storage.FileEntry], cpus: int) -> int:
    """Blocks to validate in: every CPU busy, and more blocks as the input grows."""
    size = sum(f.size for f in files)
    return min(256, cpus * max(1, int(np.ceil(size / READ_BYTES_PER_CPU_ROUND))))


# Input bytes per user partition: about 1M events of compressed Parquet. Text formats
# (CSV, JSON) take about eight times the bytes per event, so count an eighth of their size.
PARTITION_INPUT_BYTES = 8 * 2**20
TEXT_BYTES_PER_PARQUET_BYTE = 8


def user_partitions(files: list[storage.FileEntry], cpus: int) -> int:
    """How many user partitions a build of `files` uses by default, chosen from the input's
    size before it is read: one per `PARTITION_INPUT_BYTES`, so a task's share stays the same
    however large the input grows, rounded up to whole rounds of the cluster's `cpus`."""
    weighted = sum(f.size if formats.format_from_path(f.uri) == "parquet" else f.size / TEXT_BYTES_PER_PARQUET_BYTE
                   for f in files)
    return max(1, int(np.ceil(weighted / PARTITION_INPUT_BYTES / cpus))) * cpus


def group_by_format(files: list[storage.FileEntry]) -> list[tuple[str, list[storage.FileEntry]]]:
    """Files grouped by format (and by local/S3), in a deterministic order."""
    groups: dict[tuple[str, bool], list[storage.FileEntry]] = {}
    for entry in files:
        fmt = formats.format_from_path(entry.uri)
        groups.setdefault((fmt, storage.is_s3(entry.uri)), []).append(entry)
    return [(fmt, entries) for (fmt, _), entries in sorted(groups.items(), key=lambda kv: kv[0])]


def piece(uri: str, row_groups: list[int] | None, row_offset: int, group_rows: int | None = None,
          row_slice: list[int] | None = None) -> dict[str, Any]:
    """One read task's share of a Parquet file.

    `row_groups` None: the whole file; `row_offset`: the piece's first row in
    its file; `group_rows`: the rows of a piece that is one row group (which
    `slice_row_groups` may cut); `row_slice`: [start, length] within that group.
    """
    return {"uri": uri, "row_groups": row_groups, "row_offset": row_offset, "row_slice": row_slice,
            "group_rows": group_rows}


def parquet_pieces(entry: storage.FileEntry, options: storage.StorageOptions | None,
                   piece_bytes: int) -> list[dict[str, Any]]:
    """Consecutive row-group ranges of one Parquet file of about `piece_bytes` each.

    Only a file larger than one piece has its footer read here (which checks it
    is Parquet); a smaller one only its magic bytes, so it is never sliced.
    """
    if entry.size <= piece_bytes:
        check_parquet(entry.uri, options)
        return [piece(entry.uri, None, 0)]
    try:
        meta = reader.parquet_metadata(entry.uri, options, name=entry.uri)
    except (formats.InputError, OSError) as exc:
        raise BuildError(f"input file {entry.uri} is not a valid Parquet file: {_cause(exc)}") from None
    pieces: list[dict[str, Any]] = []
    current: list[int] = []
    current_bytes = start_row = rows = 0
    for index in range(meta.num_row_groups):
        current.append(index)
        group = meta.row_group(index)
        current_bytes += sum(group.column(c).total_compressed_size for c in range(group.num_columns))
        rows += group.num_rows
        if current_bytes >= piece_bytes or index == meta.num_row_groups - 1:
            pieces.append(piece(entry.uri, current, start_row, group.num_rows if len(current) == 1 else None))
            current, current_bytes, start_row = [], 0, rows
    if len(pieces) == 1:
        return [piece(entry.uri, None, 0, pieces[0]["group_rows"])]
    return pieces


def slice_row_groups(pieces: list[dict[str, Any]], target: int) -> list[dict[str, Any]]:
    """Cut single-row-group pieces into row slices until there are `target` pieces
    (or no piece can be cut further), largest slices first, at most
    `MAX_SLICES_PER_GROUP` per group.

    A slice's task decodes its whole row group and keeps its rows, so slicing
    repeats decoding (and, on S3, reading): worth it only while CPUs would
    otherwise idle, which is why `target` is the cluster's CPU count, not the
    number of blocks.
    """
    counts = [1] * len(pieces)
    while sum(counts) < target:
        rows_per_slice = [p["group_rows"] // (c + 1) if p["group_rows"] and c < MAX_SLICES_PER_GROUP else 0
                          for p, c in zip(pieces, counts)]
        best = int(np.argmax(rows_per_slice)) if rows_per_slice else 0
        if not rows_per_slice or rows_per_slice[best] == 0:
            break
        counts[best] += 1
    out = []
    for one, count in zip(pieces, counts):
        if count == 1:
            out.append(one)
            continue
        rows = one["group_rows"]
        bounds = [i * rows // count for i in range(count + 1)]
        out.extend({**one, "row_offset": one["row_offset"] + lo, "row_slice": [lo, hi - lo]}
                   for lo, hi in zip(bounds[:-1], bounds[1:]))
    return out


def plan_parquet_pieces(entries: list[storage.FileEntry], options: storage.StorageOptions | None, blocks: int,
                        cpus: int) -> list[dict[str, Any]]:
    """The pieces of every Parquet file in `entries`: about `blocks` overall, sliced up to `cpus`."""
    piece_bytes = max(1, sum(e.size for e in entries) // max(1, blocks))
    pieces = [one for entry in entries for one in parquet_pieces(entry, options, piece_bytes)]
    return slice_row_groups(pieces, cpus)


def read_and_validate_parquet(batch: pa.Table, dataset: str, cfg: ValidationConfig,
                              options: storage.StorageOptions | None) -> pa.Table:
    """Read the Parquet pieces named in `batch` (`uri`, `row_groups`, `row_slice`) with the one
    reader and validate their rows (rows numbered from the start of their file)."""
    parts = []
    for one in batch.to_pylist():
        try:
            chunk = reader.read_parquet_piece(one["uri"], options=options, row_groups=one["row_groups"],
                                              row_slice=one["row_slice"], name=one["uri"])
        except (formats.InputError, OSError) as exc:
            raise BuildError(f"input file {one['uri']} could not be read as Parquet: {_cause(exc)}") from None
        parts.append(batch_stage.validate_table_batch(chunk.table, dataset, cfg,
                                                      source=storage.resolve(one["uri"], options)[1],
                                                      row_offset=chunk.row_offset))
    return pa.concat_tables(parts)


def check_parquet(uri: str, options: storage.StorageOptions | None) -> None:
    """Raise BuildError unless the file at `uri` starts and ends with Parquet's magic bytes."""
    try:
        reader.check_parquet(uri, options)
    except formats.InputError as exc:
        raise BuildError(f"input file {uri} is not a valid Parquet file") from None


def _cause(exc: Exception) -> Exception:
    """What went wrong beneath the reader's own error, to name once in the build's message.

    The BuildError is raised `from None`: the build reports the innermost cause of
    an error, and a chained InputError would be reported in place of the BuildError."""
    return (exc.__cause__ or exc) if isinstance(exc, formats.InputError) else exc
