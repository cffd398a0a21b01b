"""Upload ids, upload reports and idempotency records.

Rows from many small requests land together as one write batch, so an upload id
names its batch and its place in it: `{batch_id}.{n}`. The batch's reports are
one JSON object at `uploads/{batch_id}.json`; an upload sent with an
`Idempotency-Key` also gets a record `uploads/key-{digest}.json` holding the
response to replay.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from recsys_ray.ingest import MAX_REPORTED_ERRORS, PreparedBatch

_UPLOAD_ID = re.compile(r"^(\d{8}T\d{6}Z-[0-9a-f]{16})\.(\d{1,5})$")


def new_batch_id(now: datetime | None = None) -> str:
    """A unique, time-ordered name for one write batch (also its objects' name)."""
    now = now or datetime.now(timezone.utc)
    return f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:16]}"


def upload_id_for(batch_id: str, index: int) -> str:
    return f"{batch_id}.{index}"


def batch_of(upload_id: str) -> tuple[str, int] | None:
    """(batch id, position) of an upload id, or None if it is not one."""
    match = _UPLOAD_ID.match(upload_id)
    return (match.group(1), int(match.group(2))) if match else None


@dataclass(frozen=True)
class IdempotencyClaim:
    """An `Idempotency-Key` as stored: the record's name and the request it was first used for."""

    record: str
    fingerprint: str

    @classmethod
    def for_request(cls, tenant: str, key: str, route: str, body_sha256: str) -> "IdempotencyClaim":
        digest = hashlib.sha256(f"{tenant}\x00{key}".encode()).hexdigest()[:48]
        fingerprint = hashlib.sha256(f"{route}\n{body_sha256}".encode()).hexdigest()
        return cls(f"key-{digest}", fingerprint)


def stored_path(root: str, uri: str) -> str:
    """`uri` relative to the storage root `root`, as reports name stored objects: answers
    show where rows are within the tenant's storage, not the bucket or local path behind it."""
    prefix = root.rstrip("/") + "/"
    return uri[len(prefix):] if uri.startswith(prefix) else uri


def upload_report(upload_id: str | None, dataset: str, *, accepted: int, rejected: int, duplicates: int,
                  rejected_by_reason: dict[str, int], errors: list[dict[str, Any]], objects: list[str],
                  created_at: datetime | None = None) -> dict[str, Any]:
    """The response body of an ingestion request (and what `GET /v1/uploads/{id}` returns)."""
    return {
        "upload_id": upload_id,
        "dataset": dataset,
        "accepted": accepted,
        "rejected": rejected,
        "duplicates": duplicates,
        "rejected_by_reason": rejected_by_reason,
        "errors": errors[:MAX_REPORTED_ERRORS],
        "objects": objects,
        "created_at": (created_at or datetime.now(timezone.utc)).isoformat(),
    }


def batch_report(upload_id: str | None, prepared: PreparedBatch, objects: list[str],
                 created_at: datetime | None = None) -> dict[str, Any]:
    """`upload_report` of one prepared table."""
    return upload_report(
        upload_id, prepared.dataset, accepted=prepared.valid.num_rows, rejected=prepared.rejected.num_rows,
        duplicates=prepared.duplicates, rejected_by_reason=prepared.reason_counts,
        errors=prepared.errors(MAX_REPORTED_ERRORS) if prepared.rejected.num_rows else [],
        objects=objects, created_at=created_at)
