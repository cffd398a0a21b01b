"""The landing core: what every ingestion channel does with decoded rows.

HTTP small batches (`serve.landing.land_uploads`), HTTP whole files
(`serve.landing.land_file`) and Kafka (`kafka.landing`) all come through here.

Prepare (validate, then de-duplicate with `validation.deduplicate`):
`prepare_batch` does one decoded table; `prepare_many` many tables in one
vectorized pass, each with exactly the result `prepare_batch` gives it alone;
`prepare_file` reads a file through `io.reader` chunk by chunk and keeps each
chunk's rows in local Parquet files until the whole file is known to be good.

Land: `land_batch` writes a prepared batch as one raw object and one quarantine
object; `land_file` writes a prepared file the same way, a pair of objects per
chunk. As in Kafka Connect's S3 sink, where rows go is `io.layout`
(`landed_objects`, `part_name`), how they are encoded is `io.formats`, and
where bytes land is `io.storage` (atomic writes). A channel names what it lands
deterministically (a write batch id, a Kafka offset range), so a retried write
replaces instead of duplicating, and adds only what is its own: reports and
idempotency records (HTTP), offsets and dead letters (Kafka).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray import validation
from recsys_ray.config import ValidationConfig
from recsys_ray.io import layout, reader, storage

MAX_REPORTED_ERRORS = 100
# Formats with a header or schema, which must name every required column.
TABULAR_FORMATS = ("csv", "parquet")
ERROR_FIELDS = ["row", "field", "reason", "message"]


@dataclass(frozen=True)
class PreparedBatch:
    dataset: str
    valid: pa.Table
    rejected: pa.Table
    duplicates: int

    @property
    def reason_counts(self) -> dict[str, int]:
        return validation.reason_counts(self.rejected)

    def errors(self, limit: int = MAX_REPORTED_ERRORS) -> list[dict[str, Any]]:
        """Row-level errors for a response body: row, field, reason, message."""
        return self.rejected.slice(0, limit).select(ERROR_FIELDS).to_pylist()


@dataclass(frozen=True)
class Landed:
    """The objects one landing wrote (full URIs) and their size."""

    raw: tuple[str, ...] = ()
    quarantine: tuple[str, ...] = ()
    bytes_written: int = 0

    @property
    def objects(self) -> list[str]:
        return [*self.raw, *self.quarantine]


def prepare_batch(
    table: pa.Table,
    dataset: str,
    cfg: ValidationConfig,
    *,
    source: str | None = None,
    row_offset: int = 0,
) -> PreparedBatch:
    """Validate `table` as `dataset` and drop its duplicates (`validation.deduplicate`)."""
    result = validation.validate(table, dataset, cfg, source=source, row_offset=row_offset)
    valid, duplicates = validation.deduplicate(result.valid, dataset)
    return PreparedBatch(dataset, valid, result.rejected, duplicates)


def prepare_many(tables: Sequence[pa.Table], dataset: str, cfg: ValidationConfig) -> list[PreparedBatch]:
    """`[prepare_batch(t, dataset, cfg) for t in tables]`, validating same-shaped tables together,
    so that a hundred 100-row requests cost about one validation call instead of a hundred."""
    results: list[PreparedBatch | None] = [None] * len(tables)
    by_schema: dict[pa.Schema, list[int]] = {}
    for index, table in enumerate(tables):
        by_schema.setdefault(table.schema, []).append(index)
    for indices in by_schema.values():
        if len(indices) == 1:
            results[indices[0]] = prepare_batch(tables[indices[0]], dataset, cfg)
            continue
        for index, prepared in zip(indices, _prepare_same_schema([tables[i] for i in indices], dataset, cfg)):
            results[index] = prepared
    return results  # type: ignore[return-value]


def _prepare_same_schema(tables: list[pa.Table], dataset: str, cfg: ValidationConfig) -> list[PreparedBatch]:
    sizes = np.array([t.num_rows for t in tables], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    result = validation.validate(pa.concat_tables(tables), dataset, cfg)
    owner = np.searchsorted(starts, result.rejected.column("row").to_numpy(), side="right") - 1
    rejected_counts = np.bincount(owner, minlength=len(tables))
    rejected_starts = np.concatenate([[0], np.cumsum(rejected_counts)])  # rejected rows come in row order
    valid_counts = sizes - rejected_counts
    kept, kept_counts = validation.deduplicate_runs(result.valid, dataset, valid_counts)
    kept_starts = np.concatenate([[0], np.cumsum(kept_counts)])
    row_field = result.rejected.schema.get_field_index("row")
    out = []
    for i in range(len(tables)):
        mine = result.rejected.slice(rejected_starts[i], rejected_counts[i])
        if mine.num_rows:
            local_rows = pc.subtract(mine.column("row"), pa.scalar(int(starts[i]), pa.int64()))
            mine = mine.set_column(row_field, "row", local_rows)
        valid = kept.slice(kept_starts[i], kept_counts[i])
        out.append(PreparedBatch(dataset, valid, mine, int(valid_counts[i] - kept_counts[i])))
    return out


def land_batch(
    prepared: PreparedBatch,
    *,
    root: str,
    tenant: str,
    object_name: str,
    options: storage.StorageOptions | None = None,
) -> Landed:
    """Write the valid rows to the raw zone and the rejected rows to the quarantine.

    Valid rows are written first; the report of what landed is only true once
    both writes have returned. An empty side writes no object.
    """
    raw_uri, quarantine_uri = layout.landed_objects(root, tenant, prepared.dataset, object_name)
    raw, quarantine, written = [], [], 0
    if prepared.valid.num_rows:
        written += storage.write_table(raw_uri, prepared.valid, options)
        raw.append(raw_uri)
    if prepared.rejected.num_rows:
        written += storage.write_table(quarantine_uri, prepared.rejected, options)
        quarantine.append(quarantine_uri)
    return Landed(tuple(raw), tuple(quarantine), written)


@dataclass
class PreparedFile:
    """A file validated chunk by chunk: its counts, its first rejected rows and, when
    it is to be landed, each chunk's valid and rejected rows waiting in local Parquet files."""

    dataset: str
    keep_rejected: int = MAX_REPORTED_ERRORS
    parts: list[tuple[str | None, str | None]] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    reason_counts: Counter = field(default_factory=Counter)
    first_rejected: list[pa.Table] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.accepted + self.rejected + self.duplicates

    def add(self, prepared: PreparedBatch, work_dir: str | None = None) -> None:
        """Count one prepared chunk; with `work_dir`, keep its rows there for `land_file`."""
        self.accepted += prepared.valid.num_rows
        self.rejected += prepared.rejected.num_rows
        self.duplicates += prepared.duplicates
        self.reason_counts.update(prepared.reason_counts)
        room = self.keep_rejected - sum(t.num_rows for t in self.first_rejected)
        if prepared.rejected.num_rows and room > 0:
            self.first_rejected.append(prepared.rejected.slice(0, room))
        if work_dir is not None:
            self.parts.append((_spill(prepared.valid, work_dir), _spill(prepared.rejected, work_dir)))

    def errors(self, fields: Sequence[str] = ERROR_FIELDS) -> list[dict[str, Any]]:
        """The first rejected rows (at most `keep_rejected`), each as `fields`."""
        return [row for table in self.first_rejected for row in table.select(list(fields)).to_pylist()]

    def remove(self) -> None:
        """Delete the local files of the kept rows."""
        for path in (p for part in self.parts for p in part if p is not None):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.parts = []


def prepare_file(uri: str, fmt: str, dataset: str, cfg: ValidationConfig, *, chunk_rows: int,
                 work_dir: str | None, source: str | None = None,
                 options: storage.StorageOptions | None = None) -> PreparedFile:
    """Read and validate the file at `uri` chunk by chunk, rows numbered from its start.

    With `work_dir`, each chunk's valid and rejected rows are kept there as
    Parquet for `land_file`; without, only the counts are kept (validation only).
    Every chunk accepts the same time window. A CSV or Parquet file must name
    every required column. Raises InputError,
    leaving nothing behind, if the file is unusable anywhere.
    """
    prepared = PreparedFile(dataset)
    cfg = cfg.with_window_fixed()  # one time window, however many chunks
    try:
        for chunk in reader.read_file(uri, fmt, dataset, options=options, chunk_rows=chunk_rows):
            if chunk.row_offset == 0 and fmt in TABULAR_FORMATS:
                validation.require_columns(chunk.table.schema, dataset)
            prepared.add(prepare_batch(chunk.table, dataset, cfg, source=source, row_offset=chunk.row_offset),
                         work_dir)
    except BaseException:
        prepared.remove()
        raise
    return prepared


def land_file(prepared: PreparedFile, *, root: str, tenant: str, object_name: str,
              options: storage.StorageOptions | None = None) -> Landed:
    """Copy a prepared file's rows into storage, one raw and one quarantine object per chunk
    (named `layout.part_name(object_name, chunk, chunks)`)."""
    raw, quarantine, written = [], [], 0
    for index, (valid_path, rejected_path) in enumerate(prepared.parts):
        raw_uri, quarantine_uri = layout.landed_objects(
            root, tenant, prepared.dataset, layout.part_name(object_name, index, len(prepared.parts)))
        if valid_path is not None:
            written += storage.upload_file(valid_path, raw_uri, options)
            raw.append(raw_uri)
        if rejected_path is not None:
            written += storage.upload_file(rejected_path, quarantine_uri, options)
            quarantine.append(quarantine_uri)
    return Landed(tuple(raw), tuple(quarantine), written)


def _spill(table: pa.Table, work_dir: str) -> str | None:
    if table.num_rows == 0:
        return None
    path = os.path.join(work_dir, f"rows-{uuid.uuid4().hex}.parquet")
    storage.write_table(path, table)
    return path
