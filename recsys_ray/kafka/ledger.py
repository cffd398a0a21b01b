"""The batch ledger: which offset range of a partition is being landed right now.

Landing a batch is write-then-commit. A crash between the two leaves objects
named after offsets [first, last] while the committed offset still points at
`first`; after the restart the consumer could cut its batches differently and
land those messages again under other names. So before writing a batch the
consumer records its range here, one small JSON object per (group, topic,
partition), and a consumer that is assigned the partition later re-creates
exactly that batch first (same messages, same names), replacing the objects
instead of duplicating them. Events keep their `event_id` too (explicit or
content-derived, never from offsets), so the batch build's one-row-per-event
rule covers what no ledger can (a consumer that lost its partition but still
writes).

    {root}/_kafka/{group}/{topic}/{partition}.json   {"first": F, "last": L}

The `_` prefix keeps these objects out of every data listing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from recsys_ray.io import layout, storage


@dataclass(frozen=True)
class BatchRange:
    first: int
    last: int


def ledger_uri(root: str, group_id: str, topic: str, partition: int) -> str:
    return storage.join(root, "_kafka", _segment(group_id), _segment(topic), f"{int(partition)}.json")


def read_range(uri: str, options: storage.StorageOptions | None = None) -> BatchRange | None:
    """The range last recorded at `uri`, or None if there is none."""
    if not storage.exists(uri, options):
        return None
    record = json.loads(storage.read_bytes(uri, options))
    return BatchRange(int(record["first"]), int(record["last"]))


def write_range(uri: str, batch_range: BatchRange, options: storage.StorageOptions | None = None) -> None:
    body = {"first": batch_range.first, "last": batch_range.last}
    storage.write_bytes(uri, json.dumps(body).encode(), options)


def _segment(name: str) -> str:
    """`name` as one safe path segment (hashed when it is not one already)."""
    try:
        return layout.check_name(name)
    except ValueError:
        return "h" + hashlib.sha256(name.encode()).hexdigest()[:24]
