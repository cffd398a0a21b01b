"""Validated rows as files: rejected rows land in the quarantine from the validating task with
their counts in the footer; a user partition's unique events and its user features are one
file each, named so that a retried task replaces its own file."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from recsys_ray import schemas
from recsys_ray.build import partitions
from recsys_ray.config import ValidationConfig
from recsys_ray.io import storage
from recsys_ray.stages import batch as batch_stage
from recsys_ray.stages import training_rows

LOCAL = storage.StorageOptions()
US = 1_000_000
DAY = 86_400 * US


def raw_interactions(rows):
    names = ["user_id", "item_id", "interaction_type", "timestamp", "rating"]
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def validated(rows, source="in.csv", offset=0):
    return batch_stage.validate_table_batch(raw_interactions(rows), "interactions", ValidationConfig(),
                                            source=source, row_offset=offset)


GOOD = [("u1", "i1", "view", "2024-01-01T00:00:00Z", None), ("u2", "i2", "click", "2024-01-02T00:00:00Z", 4.0),
        ("u1", "i2", "purchase", "2024-01-03T00:00:00Z", None)]
BAD = [("u3", "i1", "teleport", "2024-01-01T00:00:00Z", None), ("", "i1", "view", "2024-01-01T00:00:00Z", None),
       ("u4", "i1", "view", "yesterday", None)]


def test_rejected_rows_land_in_the_quarantine_and_only_valid_rows_go_on(tmp_path):
    batch = validated(GOOD + BAD)
    valid = partitions.land_rejected(batch, dataset="interactions", out=str(tmp_path), options=LOCAL)
    assert valid.schema == schemas.INTERACTIONS
    assert valid.column("user_id").to_pylist() == ["u1", "u2", "u1"]
    files = sorted((tmp_path / "quarantine" / "interactions").glob("*.parquet"))
    assert len(files) == 1
    landed = pq.read_table(files[0])
    assert landed.num_rows == 3 and set(landed.column("row").to_pylist()) == {3, 4, 5}
    counts = partitions.rejected_counts(str(tmp_path), "interactions", LOCAL)
    assert counts == {"unknown_interaction_type": 1, "missing_field": 1, "bad_timestamp": 1}


def test_a_retried_task_replaces_its_quarantine_file_and_other_pieces_add_theirs(tmp_path):
    first = validated(GOOD + BAD, source="a.csv")
    for _ in range(2):
        partitions.land_rejected(first, dataset="interactions", out=str(tmp_path), options=LOCAL)
    partitions.land_rejected(validated(BAD[:1], source="b.csv"), dataset="interactions", out=str(tmp_path),
                             options=LOCAL)
    partitions.land_rejected(validated(GOOD, source="c.csv"), dataset="interactions", out=str(tmp_path),
                             options=LOCAL)
    assert len(list((tmp_path / "quarantine" / "interactions").glob("*.parquet"))) == 2
    counts = partitions.rejected_counts(str(tmp_path), "interactions", LOCAL)
    assert counts == {"unknown_interaction_type": 2, "missing_field": 1, "bad_timestamp": 1}
    assert partitions.rejected_counts(str(tmp_path), "items", LOCAL) == {}


def valid_events(rows):
    return batch_stage.valid_rows(validated(rows), "interactions")


def test_an_event_partition_is_deduplicated_into_one_file_that_reads_back(tmp_path):
    batch = valid_events(GOOD + GOOD[:2])
    written = partitions.write_event_partition(batch, out=str(tmp_path), options=LOCAL)
    assert written.schema == partitions.PARTITION_FILES
    assert written.to_pylist() == [{"path": written.column("path")[0].as_py(), "valid_rows": 5, "events": 3}]
    again = partitions.write_event_partition(batch, out=str(tmp_path), options=LOCAL)
    assert again.equals(written)
    assert len(list((tmp_path / "_exchange" / "events").glob("*.parquet"))) == 1
    events = partitions.read_event_partition(written.select(["path"]), out=str(tmp_path), options=LOCAL)
    assert events.schema == schemas.EVENTS
    assert events.equals(batch_stage.unique_events(batch).cast(schemas.EVENTS))
    assert partitions.write_event_partition(batch.slice(0, 0), out=str(tmp_path), options=LOCAL).num_rows == 0


def test_partitions_of_other_users_are_other_files(tmp_path):
    a = partitions.write_event_partition(valid_events(GOOD[:1] + GOOD[2:]), out=str(tmp_path), options=LOCAL)
    b = partitions.write_event_partition(valid_events(GOOD[1:2]), out=str(tmp_path), options=LOCAL)
    assert a.column("path")[0].as_py() != b.column("path")[0].as_py()
    both = partitions.read_event_partition(pa.concat_tables([a, b]).select(["path"]), out=str(tmp_path),
                                           options=LOCAL)
    assert sorted(both.column("user_id").to_pylist()) == ["u1", "u1", "u2"]


def test_user_features_of_a_partition_are_one_file_equal_to_the_stage(tmp_path):
    events = batch_stage.unique_events(valid_events(GOOD))
    feature_options = {"cutoff_us": 1_704_240_000 * US, "strategy": "time", "positive_types": ("purchase",),
                       "windows": (7, 30), "history": 5}
    written = partitions.write_user_features(events, out=str(tmp_path), options=LOCAL, **feature_options)
    assert written.column("users").to_pylist() == [2]
    path = tmp_path / written.column("path")[0].as_py()
    assert path.parent == tmp_path / "features" / "users"
    assert pq.read_table(path).equals(training_rows.user_features_at_cutoff(events, **feature_options))
    none = partitions.write_user_features(events.slice(0, 0), out=str(tmp_path), options=LOCAL, **feature_options)
    assert none.num_rows == 0
