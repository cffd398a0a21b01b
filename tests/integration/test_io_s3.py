"""The reader, the atomic streaming write and the landing core against S3 (moto's server on loopback)."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_ray import ingest
from recsys_ray.config import RecsysConfig, ValidationConfig
from recsys_ray.io import formats, layout, reader, storage
from recsys_ray.jobs import validate_file
from tests.unit.io.test_reader import file_events

SCHEMA = pa.schema([("x", pa.int64())])


def test_a_failed_streaming_write_leaves_no_object_on_s3(s3_bucket):
    uri = f"s3://{s3_bucket}/shards/part-00000.parquet"

    def tables():
        yield pa.table({"x": pa.array(range(3_000_000), pa.int64())}, schema=SCHEMA)  # parts already sent
        raise RuntimeError("the producer failed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        storage.write_tables(uri, tables(), SCHEMA, compression="none")
    assert not storage.exists(uri)
    assert storage.list_files(f"s3://{s3_bucket}/shards") == []


def test_a_streamed_object_on_s3_holds_every_table(s3_bucket):
    uri = f"s3://{s3_bucket}/shards/part-00001.parquet"
    parts = [pa.table({"x": pa.array(range(s, s + 1_500_000), pa.int64())}, schema=SCHEMA) for s in (0, 1_500_000)]
    written = storage.write_tables(uri, iter(parts), SCHEMA, compression="none")
    assert written == storage.list_files(uri)[0].size
    assert storage.read_table(uri).equals(pa.concat_tables(parts))


def test_the_reader_reads_s3_files_in_numbered_chunks(s3_bucket, tmp_path):
    table = file_events(1000, bad_every=97)
    local = tmp_path / "events.parquet"
    pq.write_table(table, local, row_group_size=300)
    uri = f"s3://{s3_bucket}/in/events.parquet"
    storage.upload_file(str(local), uri)
    chunks = list(reader.read_file(uri, "parquet", "interactions", chunk_rows=300))
    assert [c.row_offset for c in chunks] == [0, 300, 600, 900]
    assert pa.concat_tables([c.table for c in chunks]).equals(table)
    piece = reader.read_parquet_piece(uri, row_groups=[2, 3], row_slice=(50, 100))
    assert piece.row_offset == 650 and piece.table.equals(table.slice(650, 100))
    storage.write_bytes(f"s3://{s3_bucket}/in/bad.parquet", b"not parquet at all")
    with pytest.raises(formats.InputError, match="is not a Parquet file"):
        list(reader.read_file(f"s3://{s3_bucket}/in/bad.parquet", "parquet"))


def test_validate_and_the_landing_core_read_and_write_s3(s3_bucket, tmp_path):
    table = file_events(1000, bad_every=97)
    local = tmp_path / "events.parquet"
    pq.write_table(table, local, row_group_size=300)
    uri = f"s3://{s3_bucket}/in/events.parquet"
    storage.upload_file(str(local), uri)
    report = validate_file.validate_file(uri, "interactions", RecsysConfig(), chunk_rows=300)
    assert (report.rows, report.rejected, report.duplicates) == (1000, 11, 0)
    root = f"s3://{s3_bucket}/root"
    prepared = ingest.prepare_file(uri, "parquet", "interactions", ValidationConfig(), chunk_rows=300,
                                   work_dir=str(tmp_path))
    landed = ingest.land_file(prepared, root=root, tenant="acme", object_name="file-1")
    assert landed.raw[0] == layout.landed_objects(root, "acme", "interactions", "file-1-00000")[0]
    rows = pa.concat_tables([storage.read_table(o) for o in landed.raw])
    assert rows.num_rows == 1000 - 11
    assert landed.bytes_written == sum(f.size for f in storage.list_files(f"{root}/tenants/acme"))
