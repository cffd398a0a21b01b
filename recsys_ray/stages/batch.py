"""Adapters that let the build run validation inside Ray Data map tasks.

A map task returns one table, so validated and rejected rows travel together:
canonical columns for valid rows, `q_*` quarantine columns for rejected ones
(exactly one of the two is filled on each row). `valid_rows` and
`rejected_rows` take them apart again.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray import schemas, validation
from recsys_ray.config import ValidationConfig
from recsys_ray.io import formats, reader

_QUARANTINE_PREFIX = "q_"


def combined_schema(dataset: str) -> pa.Schema:
    canonical = schemas.schema_for(dataset)
    fields = [f.with_nullable(True) for f in canonical]
    fields += [pa.field(_QUARANTINE_PREFIX + f.name, f.type) for f in schemas.QUARANTINE]
    return pa.schema(fields)


def combine(result: validation.ValidationResult, dataset: str) -> pa.Table:
    schema = combined_schema(dataset)
    valid = result.valid
    rejected = result.rejected.rename_columns([_QUARANTINE_PREFIX + n for n in result.rejected.column_names])
    parts = []
    if valid.num_rows:
        parts.append(_pad(valid, schema))
    if rejected.num_rows:
        parts.append(_pad(rejected, schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _pad(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def validate_table_batch(batch: pa.Table, dataset: str, cfg: ValidationConfig, source: str | None = None,
                         row_offset: int = 0) -> pa.Table:
    """Validate rows of one source (a file, or None) in the combined valid + quarantine
    layout; rejected rows are numbered from `row_offset`, the batch's position in its source.

    A source without a column the dataset requires is the wrong file (a catalog
    among interaction files, say), not a file of bad rows: `InputError`.
    """
    validation.require_columns(batch.schema, dataset, source)
    return combine(validation.validate(batch, dataset, cfg, source=source, row_offset=row_offset), dataset)


def decode_and_validate_files(batch: pa.Table, dataset: str, fmt: str, cfg: ValidationConfig) -> pa.Table:
    """Decode whole CSV/JSON/NDJSON files (`bytes`, `path` columns, as Ray Data reads them)
    with the one reader and validate their rows."""
    parts = []
    for data, path in zip(batch.column("bytes").to_pylist(), batch.column("path").to_pylist()):
        try:
            chunks = list(reader.read_data(data, fmt, dataset))
        except formats.InputError as exc:
            raise formats.InputError(exc.code, f"{path}: {exc.message}", {**exc.details, "path": path}) from exc
        parts.extend(validate_table_batch(chunk.table, dataset, cfg, source=path, row_offset=chunk.row_offset)
                     for chunk in chunks)
    return pa.concat_tables(parts) if parts else combined_schema(dataset).empty_table()


def valid_rows(batch: pa.Table, dataset: str) -> pa.Table:
    keep = pc.is_null(batch.column(_QUARANTINE_PREFIX + "reason"))
    return batch.filter(keep).select(schemas.schema_for(dataset).names).cast(schemas.schema_for(dataset))


def rejected_rows(batch: pa.Table) -> pa.Table:
    keep = pc.is_valid(batch.column(_QUARANTINE_PREFIX + "reason"))
    names = [_QUARANTINE_PREFIX + n for n in schemas.QUARANTINE.names]
    return batch.filter(keep).select(names).rename_columns(schemas.QUARANTINE.names).cast(schemas.QUARANTINE)


def validation_summary(batch: pa.Table) -> pa.Table:
    """Counts of valid rows and of rejected rows by reason, as (reason, count) rows."""
    reasons = batch.column(_QUARANTINE_PREFIX + "reason")
    valid = int(pc.sum(pc.cast(pc.is_null(reasons), pa.int64())).as_py() or 0)
    counts = validation.reason_counts(pa.table({"reason": pc.drop_null(reasons)}))
    return pa.table({"reason": ["valid", *counts.keys()],
                     "count": np.array([valid, *counts.values()], dtype=np.int64)})


def unique_events(events: pa.Table) -> pa.Table:
    """Unique events of whole users; `event_id` has done its job here and is
    dropped, so the events the later stages share take less object-store memory."""
    unique, _ = validation.deduplicate(events, "interactions")
    return unique.drop_columns(["event_id"])
