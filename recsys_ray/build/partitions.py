"""Validated rows on their way through the build as files, not as objects held in Ray's
object store (no Ray here; `recsys_ray.build.dataflow` runs these in its tasks).

* `land_rejected`: the task that validates a piece of input writes that piece's
  rejected rows to the quarantine itself and passes on only the valid rows, so
  validated rows are read once and never held whole; `rejected_counts` sums the
  counts each quarantine file records in its footer.
* `write_user_features`: each partition's user features as of the cutoff are
  written by the task that computes them, as one file of `features/users/`.
* `write_event_partition`: a user partition's unique events become one
  Parquet file under `_exchange/events/`; every later step reads the
  partitions from there (`read_event_partition`), one task per partition, so
  after the shuffle the object store holds only what the running tasks work on.
  (The shuffle itself still gathers each partition's rows in Ray's hash-shuffle
  aggregators until its inputs are done.)

File names come from the smallest key of the rows (`exchange.producer_name`),
which no other task holds: a retried task overwrites its own file.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from recsys_ray import schemas, validation
from recsys_ray.build.exchange import EXCHANGE_COMPRESSION, producer_name
from recsys_ray.build.writer import event_partition_path, quarantine_dir, quarantine_path, user_features_path
from recsys_ray.io import storage
from recsys_ray.stages import batch as batch_stage
from recsys_ray.stages import training_rows

# Footer key of a quarantine file: JSON of its rows per reason.
REJECTED_COUNTS_KEY = b"recsys_ray.rejected_counts"
PARTITION_FILES = pa.schema([("path", pa.string()), ("valid_rows", pa.int64()), ("events", pa.int64())])
USER_FEATURE_FILES = pa.schema([("path", pa.string()), ("users", pa.int64())])


def land_rejected(batch: pa.Table, *, dataset: str, out: str, options: storage.StorageOptions) -> pa.Table:
    """Write the rejected rows of a validated `batch` (valid and quarantine columns) as one
    quarantine file of `dataset`; return its valid rows (`schemas.schema_for(dataset)`)."""
    rejected = batch_stage.rejected_rows(batch)
    if rejected.num_rows:
        counts = validation.reason_counts(rejected.select(["reason"]))
        producer = producer_name(rejected.select(["source", "row"]).cast(
            pa.schema([pa.field("source", pa.string()), pa.field("row", pa.int64())])))
        tagged = rejected.replace_schema_metadata({REJECTED_COUNTS_KEY: json.dumps(counts).encode()})
        storage.write_table(storage.join(out, quarantine_path(dataset, producer)), tagged, options)
    return batch_stage.valid_rows(batch, dataset)


def rejected_counts(out: str, dataset: str, options: storage.StorageOptions) -> dict[str, int]:
    """Rejected rows of `dataset` by reason, from the footers of its quarantine files."""
    totals: dict[str, int] = {}
    root = storage.join(out, quarantine_dir(dataset))
    if not storage.exists(root, options):
        return totals
    for entry in storage.list_files(root, options):
        fs, path = storage.resolve(entry.uri, options)
        metadata = pq.read_schema(path, filesystem=fs).metadata or {}
        for reason, count in json.loads(metadata.get(REJECTED_COUNTS_KEY, b"{}")).items():
            totals[reason] = totals.get(reason, 0) + int(count)
    return totals


def write_event_partition(batch: pa.Table, *, out: str, options: storage.StorageOptions) -> pa.Table:
    """De-duplicate one partition of whole users' valid events (`batch_stage.unique_events`)
    and write it as one file; returns one `PARTITION_FILES` row (none for an empty partition):
    its path relative to `out`, the valid rows it came from and its unique events."""
    if batch.num_rows == 0:
        return PARTITION_FILES.empty_table()
    events = batch_stage.unique_events(batch)
    relative = event_partition_path(producer_name(events.select(["user_id"])))
    storage.write_table(storage.join(out, relative), events, options, compression=EXCHANGE_COMPRESSION)
    return pa.table({"path": [relative], "valid_rows": [batch.num_rows], "events": [events.num_rows]},
                    schema=PARTITION_FILES)


def read_event_partition(batch: pa.Table, *, out: str, options: storage.StorageOptions) -> pa.Table:
    """The events of the partition files named in `batch` (`path` relative to `out`)."""
    tables = [storage.read_table(storage.join(out, path), options).cast(schemas.EVENTS)
              for path in batch.column("path").to_pylist()]
    return pa.concat_tables(tables) if tables else schemas.EVENTS.empty_table()


def write_user_features(events: pa.Table, *, out: str, options: storage.StorageOptions,
                        **feature_options) -> pa.Table:
    """`training_rows.user_features_at_cutoff` of one partition, written as one file of
    `features/users/`; returns one `USER_FEATURE_FILES` row (none without users)."""
    users = training_rows.user_features_at_cutoff(events, **feature_options)
    if users.num_rows == 0:
        return USER_FEATURE_FILES.empty_table()
    relative = user_features_path(producer_name(users.select(["user_id"])))
    storage.write_table(storage.join(out, relative), users, options)
    return pa.table({"path": [relative], "users": [users.num_rows]}, schema=USER_FEATURE_FILES)
