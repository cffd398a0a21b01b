"""Validating and landing many uploads as one write batch (no Ray here).

`prepare_many` validates several decoded tables in one vectorized pass and
returns exactly what `ingest.prepare_batch` returns for each of them, so that
a hundred 100-row requests cost about one validation call instead of a hundred.
`land_uploads` writes their rows as one raw object and one quarantine object,
then the batch's reports, then any idempotency records: once it returns, every
upload in the batch is durable. Reports name objects relative to the storage root.

Whole files go through `prepare_file`, which decodes and validates them in
chunks into local Parquet files, and `land_file`, which copies those into
storage only once the whole file was read without a file-level error, so a
file that turns out broken half-way stores nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys_ray import validation
from recsys_ray.config import ValidationConfig
from recsys_ray.ingest import MAX_REPORTED_ERRORS, PreparedBatch, land_batch, prepare_batch
from recsys_ray.io import formats, layout, storage
from recsys_ray.io.formats import InputError
from recsys_ray.schemas import QUARANTINE, required_columns, schema_for
from recsys_ray.serve.reports import (IdempotencyClaim, batch_of, batch_report, new_batch_id, stored_path,
                                      upload_id_for, upload_report)

# Formats with a header or schema, which must name every required column.
TABULAR_FORMATS = ("csv", "parquet")


def prepare_many(tables: Sequence[pa.Table], dataset: str, cfg: ValidationConfig) -> list[PreparedBatch]:
    """`[prepare_batch(t, dataset, cfg) for t in tables]`, validating same-shaped tables together."""
    results: list[PreparedBatch | None] = [None] * len(tables)
    by_schema: dict[pa.Schema, list[int]] = {}
    for index, table in enumerate(tables):
        by_schema.setdefault(table.schema, []).append(index)
    for indices in by_schema.values():
        if len(indices) == 1:
            results[indices[0]] = prepare_batch(tables[indices[0]], dataset, cfg)
            continue
        group = [tables[i] for i in indices]
        for index, prepared in zip(indices, _prepare_same_schema(group, dataset, cfg)):
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
    kept, kept_counts = _deduplicate_per_table(result.valid, valid_counts, dataset)
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


def _deduplicate_per_table(valid: pa.Table, counts: np.ndarray, dataset: str) -> tuple[pa.Table, np.ndarray]:
    """De-duplicate the concatenated valid rows of several tables as if each table were alone.

    The identity column (event_id, or item_id for items) is prefixed with the
    table's index for one call of the shared de-duplication, then restored; the
    result is grouped by table, each group as that function returns it alone.
    """
    key = "event_id" if dataset == "interactions" else "item_id"
    deduplicate = validation.deduplicate_events if dataset == "interactions" else validation.deduplicate_items
    origin = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    prefix = pa.array([f"{i:08d}" for i in range(len(counts))], pa.string()).take(pa.array(origin))
    position = valid.schema.get_field_index(key)
    keyed = valid.set_column(position, key, pc.binary_join_element_wise(prefix, valid.column(key), "\x1f"))
    keyed = keyed.append_column("_origin", pa.array(origin)).append_column("_key", valid.column(key))
    kept, _ = deduplicate(keyed)
    kept_counts = np.bincount(kept.column("_origin").to_numpy(), minlength=len(counts))
    restored = kept.set_column(position, key, kept.column("_key")).drop_columns(["_origin", "_key"])
    return restored.cast(valid.schema), kept_counts


def land_uploads(
    prepared: Sequence[PreparedBatch],
    *,
    root: str,
    tenant: str,
    dataset: str,
    options: storage.StorageOptions | None = None,
    claims: Sequence[IdempotencyClaim | None] | None = None,
    batch_id: str | None = None,
) -> list[dict[str, Any]]:
    """Land every upload of one tenant and dataset as one batch; returns their reports."""
    claims = list(claims) if claims is not None else [None] * len(prepared)
    now = datetime.now(timezone.utc)
    batch_id = batch_id or new_batch_id(now)
    upload_ids = [upload_id_for(batch_id, i) for i in range(len(prepared))]
    rejected = [
        p.rejected.set_column(p.rejected.schema.get_field_index("source"), "source",
                              pa.array([upload_id] * p.rejected.num_rows, pa.string()))
        for p, upload_id in zip(prepared, upload_ids) if p.rejected.num_rows
    ]
    combined = PreparedBatch(
        dataset,
        _concat([p.valid for p in prepared], schema_for(dataset)),
        _concat(rejected, QUARANTINE),
        sum(p.duplicates for p in prepared),
    )
    land_batch(combined, root=root, tenant=tenant, object_name=batch_id, options=options)
    raw_uri = stored_path(root, layout.raw_object(root, tenant, dataset, batch_id))
    quarantine_uri = stored_path(root, layout.quarantine_object(root, tenant, dataset, batch_id))
    reports = []
    for p, upload_id in zip(prepared, upload_ids):
        objects = ([raw_uri] if p.valid.num_rows else []) + ([quarantine_uri] if p.rejected.num_rows else [])
        reports.append(batch_report(upload_id, p, objects, now))
    _write_reports(reports, claims, root=root, tenant=tenant, dataset=dataset, batch_id=batch_id, options=options)
    return reports


def _write_reports(reports: list[dict[str, Any]], claims: Sequence[IdempotencyClaim | None], *, root: str,
                   tenant: str, dataset: str, batch_id: str, options: storage.StorageOptions | None) -> None:
    """The batch's reports, then the idempotency records: written after the rows they describe."""
    batch = {"batch_id": batch_id, "tenant": tenant, "dataset": dataset, "uploads": reports}
    storage.write_bytes(layout.upload_report(root, tenant, batch_id), _json(batch), options)
    for claim, report in zip(claims, reports):
        if claim is not None:
            record = {"fingerprint": claim.fingerprint, "response": report}
            storage.write_bytes(layout.upload_report(root, tenant, claim.record), _json(record), options)


@dataclass
class PreparedFile:
    """A whole-file upload, validated chunk by chunk; its rows wait in local Parquet files."""

    dataset: str
    parts: list[tuple[str | None, str | None]] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    reason_counts: Counter = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, prepared: PreparedBatch, work_dir: str | None) -> None:
        self.accepted += prepared.valid.num_rows
        self.rejected += prepared.rejected.num_rows
        self.duplicates += prepared.duplicates
        self.reason_counts.update(prepared.reason_counts)
        if prepared.rejected.num_rows and len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.extend(prepared.errors(MAX_REPORTED_ERRORS - len(self.errors)))
        if work_dir is not None:
            self.parts.append((_spill(prepared.valid, work_dir), _spill(prepared.rejected, work_dir)))

    def report(self, upload_id: str | None, objects: list[str], created_at: datetime | None = None) -> dict:
        return upload_report(upload_id, self.dataset, accepted=self.accepted, rejected=self.rejected,
                             duplicates=self.duplicates, rejected_by_reason=dict(self.reason_counts),
                             errors=self.errors, objects=objects, created_at=created_at)

    def remove(self) -> None:
        for path in (p for part in self.parts for p in part if p is not None):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.parts = []


def prepare_file(path: str, fmt: str, dataset: str, cfg: ValidationConfig, *, chunk_rows: int,
                 work_dir: str | None, source: str | None = None) -> PreparedFile:
    """Decode and validate a local file chunk by chunk.

    With `work_dir`, each chunk's valid and rejected rows are kept there as
    Parquet for `land_file`; without, only the counts are kept (validation only).
    Raises InputError, leaving nothing behind, if the file is unusable anywhere.
    """
    prepared = PreparedFile(dataset)
    offset = 0
    try:
        for chunk in formats.iter_decode_file(path, fmt, dataset, chunk_rows=chunk_rows):
            if offset == 0 and fmt in TABULAR_FORMATS:
                missing = validation.missing_columns(chunk.schema, dataset)
                if missing:
                    raise InputError("missing_columns", f"the {fmt} input lacks required columns {missing}",
                                     {"missing": missing, "required": list(required_columns(dataset))})
            prepared.add(prepare_batch(chunk, dataset, cfg, source=source, row_offset=offset), work_dir)
            offset += chunk.num_rows
    except BaseException:
        prepared.remove()
        raise
    return prepared


def land_file(prepared: PreparedFile, *, root: str, tenant: str, batch_id: str,
              options: storage.StorageOptions | None = None,
              claim: IdempotencyClaim | None = None) -> dict[str, Any]:
    """Copy a prepared file's rows into storage (one object per chunk), then its report."""
    raw, quarantine = [], []
    for index, (valid_path, rejected_path) in enumerate(prepared.parts):
        name = batch_id if len(prepared.parts) == 1 else f"{batch_id}-{index:05d}"
        if valid_path is not None:
            raw.append(_copy_in(valid_path, layout.raw_object(root, tenant, prepared.dataset, name), options))
        if rejected_path is not None:
            quarantine.append(
                _copy_in(rejected_path, layout.quarantine_object(root, tenant, prepared.dataset, name), options))
    report = prepared.report(upload_id_for(batch_id, 0), [stored_path(root, uri) for uri in raw + quarantine])
    _write_reports([report], [claim], root=root, tenant=tenant, dataset=prepared.dataset, batch_id=batch_id,
                   options=options)
    return report


def _spill(table: pa.Table, work_dir: str) -> str | None:
    if table.num_rows == 0:
        return None
    handle, path = tempfile.mkstemp(prefix="rows-", suffix=".parquet", dir=work_dir)
    os.close(handle)
    pq.write_table(table, path, compression="zstd")
    return path


def _copy_in(local_path: str, uri: str, options: storage.StorageOptions | None) -> str:
    with open(local_path, "rb") as handle:
        storage.write_bytes(uri, handle.read(), options)
    return uri


def read_report(root: str, tenant: str, upload_id: str,
                options: storage.StorageOptions | None = None) -> dict[str, Any] | None:
    """The report of `upload_id` in `tenant`'s storage, or None if there is none."""
    parsed = batch_of(upload_id)
    if parsed is None:
        return None
    batch_id, position = parsed
    batch = _read_json(layout.upload_report(root, tenant, batch_id), options)
    if batch is None or position >= len(batch.get("uploads", [])):
        return None
    return batch["uploads"][position]


def read_idempotency_record(root: str, tenant: str, claim: IdempotencyClaim,
                            options: storage.StorageOptions | None = None) -> dict[str, Any] | None:
    """`{"fingerprint", "response"}` stored for this key, or None if the key is new."""
    return _read_json(layout.upload_report(root, tenant, claim.record), options)


def _read_json(uri: str, options: storage.StorageOptions | None) -> dict[str, Any] | None:
    try:
        return json.loads(storage.read_bytes(uri, options))
    except FileNotFoundError:
        return None


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()
