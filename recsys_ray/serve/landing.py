"""Landing uploads over HTTP: the landing core (`recsys_ray.ingest`) plus what is HTTP's own.

`land_uploads` lands a write batch of small uploads (each prepared by
`ingest.prepare_many`) as one raw object and one quarantine object, then the
batch's reports, then any idempotency records: once it returns, every upload in
the batch is durable. `land_file` lands a whole file prepared by
`ingest.prepare_file` (stored only once the whole file was read without a
file-level error, so a file that turns out broken half-way stores nothing),
then its report. Reports name objects relative to the storage root.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Sequence

import pyarrow as pa

from recsys_ray import ingest
from recsys_ray.ingest import PreparedBatch, PreparedFile
from recsys_ray.io import layout, storage
from recsys_ray.schemas import QUARANTINE, schema_for
from recsys_ray.serve.reports import (IdempotencyClaim, batch_of, batch_report, new_batch_id, stored_path,
                                      upload_id_for, upload_report)


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
    landed = ingest.land_batch(combined, root=root, tenant=tenant, object_name=batch_id, options=options)
    raw = [stored_path(root, uri) for uri in landed.raw]
    quarantine = [stored_path(root, uri) for uri in landed.quarantine]
    reports = []
    for p, upload_id in zip(prepared, upload_ids):
        objects = (raw if p.valid.num_rows else []) + (quarantine if p.rejected.num_rows else [])
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


def land_file(prepared: PreparedFile, *, root: str, tenant: str, batch_id: str,
              options: storage.StorageOptions | None = None,
              claim: IdempotencyClaim | None = None) -> dict[str, Any]:
    """Land a prepared file as batch `batch_id` (one pair of objects per chunk), then its report."""
    landed = ingest.land_file(prepared, root=root, tenant=tenant, object_name=batch_id, options=options)
    report = file_report(prepared, upload_id_for(batch_id, 0), [stored_path(root, uri) for uri in landed.objects])
    _write_reports([report], [claim], root=root, tenant=tenant, dataset=prepared.dataset, batch_id=batch_id,
                   options=options)
    return report


def file_report(prepared: PreparedFile, upload_id: str | None, objects: list[str],
                created_at: datetime | None = None) -> dict[str, Any]:
    """`upload_report` of a prepared file (`upload_id` None: validated only)."""
    return upload_report(upload_id, prepared.dataset, accepted=prepared.accepted, rejected=prepared.rejected,
                         duplicates=prepared.duplicates, rejected_by_reason=dict(prepared.reason_counts),
                         errors=prepared.errors(), objects=objects, created_at=created_at)


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
