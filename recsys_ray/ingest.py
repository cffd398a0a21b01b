"""Landing validated rows in a tenant's raw zone: shared by HTTP and Kafka ingestion.

`prepare_batch` validates and de-duplicates a decoded table; `land_batch`
writes the valid rows as one Parquet object under the raw zone and the rejected
rows as one object under the quarantine, both named by the caller
(deterministically, so a retried write replaces instead of duplicating).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from recsys_ray import validation
from recsys_ray.config import ValidationConfig
from recsys_ray.io import layout, storage

MAX_REPORTED_ERRORS = 100


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
        head = self.rejected.slice(0, limit).select(["row", "field", "reason", "message"])
        return head.to_pylist()


@dataclass(frozen=True)
class LandedBatch:
    prepared: PreparedBatch
    objects: list[str] = field(default_factory=list)
    bytes_written: int = 0


def prepare_batch(
    table: pa.Table,
    dataset: str,
    cfg: ValidationConfig,
    *,
    source: str | None = None,
    row_offset: int = 0,
) -> PreparedBatch:
    """Validate `table` as `dataset`; drop repeated events (interactions) or
    repeated item ids (items, the last one wins)."""
    result = validation.validate(table, dataset, cfg, source=source, row_offset=row_offset)
    valid, duplicates = result.valid, 0
    if dataset == "interactions":
        valid, duplicates = validation.deduplicate_events(valid)
    elif dataset == "items":
        valid, duplicates = validation.deduplicate_items(valid)
    return PreparedBatch(dataset, valid, result.rejected, duplicates)


def land_batch(
    prepared: PreparedBatch,
    *,
    root: str,
    tenant: str,
    object_name: str,
    options: storage.StorageOptions | None = None,
) -> LandedBatch:
    """Write the valid rows to the raw zone and the rejected rows to the quarantine.

    Valid rows are written first; the report of what landed is only true once
    both writes have returned.
    """
    objects: list[str] = []
    written = 0
    if prepared.valid.num_rows:
        uri = layout.raw_object(root, tenant, prepared.dataset, object_name)
        written += storage.write_table(uri, prepared.valid, options)
        objects.append(uri)
    if prepared.rejected.num_rows:
        uri = layout.quarantine_object(root, tenant, prepared.dataset, object_name)
        written += storage.write_table(uri, prepared.rejected, options)
        objects.append(uri)
    return LandedBatch(prepared, objects, written)
