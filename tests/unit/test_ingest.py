"""The landing core: prepare (validate + de-duplicate) and land, as every channel uses it."""

import os
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

import recsys_ray.config as config
from recsys_ray import ingest
from recsys_ray.config import ValidationConfig
from recsys_ray.ingest import prepare_batch, prepare_many
from recsys_ray.io import formats, layout, storage
from recsys_ray.io.formats import InputError
from tests.unit.io.test_reader import file_events, write_file

CFG = ValidationConfig()


def events(*rows):
    return formats.records_to_table(list(rows), "interactions")


def event(user, item, ts="2024-05-01T10:00:00Z", kind="click", **extra):
    return {"user_id": user, "item_id": item, "interaction_type": kind, "timestamp": ts, **extra}


TABLES = [
    events(event("u1", "i1", event_id="e1"), event("u1", "i2", event_id="e2"),
           event("u2", "", event_id="e3"), event("u1", "i1", event_id="e1")),
    events(event("u3", "i1", event_id="e4"), event("u3", "i9", kind="teleport", event_id="e5")),
    events(event("u4", "i4", event_id="e6"), event("u4", "i4", ts="not a time", event_id="e7"),
           event("u4", "i5", event_id="e8"), event("u4", "i5", event_id="e8")),
    events(event("u5", "i5"), event("u5", "i5"), event("u5", "i6", ts=1714557600)),
    formats.records_to_table([], "interactions"),
]


def test_prepare_many_matches_prepare_batch_on_each_table():
    assert len({t.schema for t in TABLES}) < len(TABLES), "some tables must share a schema"
    for actual, table in zip(prepare_many(TABLES, "interactions", CFG), TABLES):
        same(actual, prepare_batch(table, "interactions", CFG))


def test_prepare_many_on_items_keeps_each_requests_last_version():
    tables = [
        formats.records_to_table([{"item_id": "a", "title": "old"}, {"item_id": "a", "title": "new"}], "items"),
        formats.records_to_table([{"item_id": "a", "title": "other"}, {"item_id": "b", "title": ""}], "items"),
    ]
    prepared = prepare_many(tables, "items", CFG)
    for actual, table in zip(prepared, tables):
        same(actual, prepare_batch(table, "items", CFG))
    assert prepared[0].valid.column("title").to_pylist() == ["new"]


def test_tables_with_different_types_still_validate_separately():
    as_text = formats.records_to_table([event("u1", "i1", rating="4")], "interactions")
    as_number = formats.records_to_table([event("u1", "i1", rating=4.0)], "interactions")
    assert as_text.schema != as_number.schema
    for actual, table in zip(prepare_many([as_text, as_number], "interactions", CFG), [as_text, as_number]):
        same(actual, prepare_batch(table, "interactions", CFG))


def test_prepare_many_keeps_each_requests_copy_of_a_sharedevent():
    shared = event("u1", "i1", event_id="shared")
    tables = [events(shared, event("u1", "i2", event_id="a")), events(event("u2", "i2", event_id="b"), shared),
              events(shared, shared)]
    prepared = prepare_many(tables, "interactions", CFG)
    for actual, table in zip(prepared, tables):
        same(actual, prepare_batch(table, "interactions", CFG))
    assert [p.valid.num_rows for p in prepared] == [2, 2, 1]

def same(actual, expected):
    assert actual.dataset == expected.dataset
    assert actual.duplicates == expected.duplicates
    assert actual.valid.equals(expected.valid)
    assert actual.rejected.equals(expected.rejected)


def test_land_batch_names_both_objects_from_one_name_and_skips_an_empty_side(tmp_path):
    [with_bad, clean] = prepare_many([TABLES[0], events(event("u9", "i9"))], "interactions", CFG)
    landed = ingest.land_batch(with_bad, root=str(tmp_path), tenant="acme", object_name="batch-1")
    assert landed.objects == list(layout.landed_objects(str(tmp_path), "acme", "interactions", "batch-1"))
    assert landed.bytes_written == sum(os.path.getsize(uri) for uri in landed.objects)
    assert storage.read_table(landed.raw[0]).equals(with_bad.valid)
    assert storage.read_table(landed.quarantine[0]).equals(with_bad.rejected)
    clean_landed = ingest.land_batch(clean, root=str(tmp_path), tenant="acme", object_name="batch-2")
    assert clean_landed.quarantine == () and len(clean_landed.raw) == 1


# ---- whole files -------------------------------------------------------------------------------

def test_prepare_file_counts_like_prepare_batch_with_global_row_numbers(tmp_path):
    table = file_events(1000, bad_every=97)
    path = write_file(tmp_path, table, "parquet")
    work = tmp_path / "work"
    work.mkdir()
    prepared = ingest.prepare_file(path, "parquet", "interactions", CFG, chunk_rows=300, work_dir=str(work),
                                   source="upload-1")
    whole = prepare_batch(table, "interactions", CFG)
    assert (prepared.accepted, prepared.rejected) == (whole.valid.num_rows, whole.rejected.num_rows)
    assert prepared.rows == 1000
    assert dict(prepared.reason_counts) == whole.reason_counts
    assert [e["row"] for e in prepared.errors()] == whole.rejected.column("row").to_pylist()
    assert len(prepared.parts) == 4 and len(os.listdir(work)) == 8
    prepared.remove()
    assert os.listdir(work) == []


def test_a_file_broken_half_way_keeps_nothing(tmp_path):
    good = b"user_id,item_id,interaction_type,timestamp\n" + b"u,i,click,2024-05-01T00:00:00Z\n" * 5000
    path = tmp_path / "broken.csv"
    path.write_bytes(good + b'u,"i,click\n' + b"u,i,click,2024-05-01T00:00:00Z\n" * 10)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(InputError):
        ingest.prepare_file(str(path), "csv", "interactions", CFG, chunk_rows=1000, work_dir=str(work))
    assert os.listdir(work) == []


def test_missing_required_columns_is_a_file_error(tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes(b"item_id,price\ni1,3\n")
    with pytest.raises(InputError) as info:
        ingest.prepare_file(str(path), "csv", "items", CFG, chunk_rows=10, work_dir=None)
    assert (info.value.code, info.value.details["missing"]) == ("missing_columns", ["title"])


def test_validation_only_keeps_no_rows(tmp_path):
    path = write_file(tmp_path, file_events(100), "ndjson")
    prepared = ingest.prepare_file(path, "ndjson", "interactions", CFG, chunk_rows=10, work_dir=None)
    assert prepared.accepted == 100 and prepared.parts == []


def test_duplicates_are_dropped_within_each_chunk_of_a_file(tmp_path):
    table = file_events(600)
    # chunks of 305 rows: rows 0-4 come again in the first chunk and again in the second
    repeated = pa.concat_tables([table.slice(0, 300), table.slice(0, 5), table.slice(300), table.slice(0, 5)])
    path = write_file(tmp_path, repeated, "parquet")
    prepared = ingest.prepare_file(path, "parquet", "interactions", CFG, chunk_rows=305, work_dir=str(tmp_path))
    assert (prepared.accepted, prepared.duplicates) == (605, 5)
    landed = ingest.land_file(prepared, root=str(tmp_path / "store"), tenant="acme", object_name="file-1")
    rows = pa.concat_tables([storage.read_table(uri) for uri in landed.raw])
    assert rows.num_rows == 605 and len(set(rows.column("event_id").to_pylist())) == 600


def test_land_file_writes_a_pair_of_objects_per_chunk_named_by_part(tmp_path):
    path = write_file(tmp_path, file_events(1000, bad_every=50), "parquet")
    root = str(tmp_path / "store")
    for chunk_rows, names in ((300, [f"f-{i:05d}" for i in range(4)]), (5000, ["f"])):
        prepared = ingest.prepare_file(path, "parquet", "interactions", CFG, chunk_rows=chunk_rows,
                                       work_dir=str(tmp_path))
        landed = ingest.land_file(prepared, root=root, tenant="acme", object_name="f")
        pairs = [layout.landed_objects(root, "acme", "interactions", name) for name in names]
        assert landed.raw == tuple(raw for raw, _ in pairs)
        assert landed.quarantine == tuple(quarantine for _, quarantine in pairs)
        assert landed.bytes_written == sum(os.path.getsize(uri) for uri in landed.objects)
        prepared.remove()


def test_every_chunk_of_a_file_accepts_the_same_time_window(tmp_path, monkeypatch):
    """The window's end is now + max_future, resolved once per file, not once per chunk."""
    start = datetime.now(timezone.utc)
    ticks = iter(range(10_000))

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return start + timedelta(hours=next(ticks))  # an hour passes at every look at the clock

    near_the_end = (start + timedelta(days=1, minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    table = file_events(900).set_column(3, "timestamp", pa.array([near_the_end] * 900))
    path = write_file(tmp_path, table, "parquet")
    monkeypatch.setattr(config, "datetime", Clock)
    prepared = ingest.prepare_file(path, "parquet", "interactions", CFG, chunk_rows=300, work_dir=None)
    assert (prepared.accepted, prepared.rejected) in ((900, 0), (0, 900))
