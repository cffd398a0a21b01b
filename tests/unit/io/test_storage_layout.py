import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_ray.io import layout, storage


def test_atomic_local_write_and_listing(tmp_path):
    uri = str(tmp_path / "a" / "b.parquet")
    storage.write_table(uri, pa.table({"x": [1, 2]}))
    storage.write_table(uri, pa.table({"x": [3]}))  # a rewrite replaces
    assert storage.read_table(uri).column("x").to_pylist() == [3]
    storage.write_bytes(str(tmp_path / "a" / "_SUCCESS"), b"")
    storage.write_bytes(str(tmp_path / "a" / "c.csv"), b"x\n1\n")
    names = [e.uri.rsplit("/", 1)[1] for e in storage.list_files(str(tmp_path / "a"))]
    assert names == ["b.parquet", "c.csv"]  # no temp or hidden files
    globbed = storage.list_files(str(tmp_path / "a" / "*.csv"))
    assert [e.uri.rsplit("/", 1)[1] for e in globbed] == ["c.csv"]
    assert storage.list_files(str(tmp_path / "missing")) == []


def test_layout_paths():
    assert layout.raw_object("s3://b/p", "acme", "interactions", "up-1") == \
        "s3://b/p/tenants/acme/raw/interactions/up-1.parquet"
    assert layout.training_version("/d", "acme", "v1") == "/d/tenants/acme/training/v1"


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "", ".hidden", "a\\b", "x" * 300, "a..b", "acme\n", "a\nb"])
def test_names_cannot_escape(name):
    with pytest.raises(ValueError):
        layout.raw_object("/d", name, "interactions", "x")
    with pytest.raises(ValueError):
        layout.raw_object("/d", "t", "interactions", name)


def test_unknown_dataset_rejected():
    with pytest.raises(ValueError):
        layout.raw_dir("/d", "t", "../../etc")


def test_a_failed_atomic_write_leaves_the_earlier_file_and_no_temporary(tmp_path):
    uri = str(tmp_path / "a" / "b.parquet")
    storage.write_table(uri, pa.table({"x": [1, 2]}))

    def tables():
        yield pa.table({"x": [3]})
        raise RuntimeError("the producer failed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        storage.write_tables(uri, tables(), pa.schema([("x", pa.int64())]))
    assert storage.read_table(uri).column("x").to_pylist() == [1, 2]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.parquet"]


def test_write_tables_streams_each_table_as_its_row_groups(tmp_path):
    uri = str(tmp_path / "shard.parquet")
    schema = pa.schema([("x", pa.int64())])
    seen = []

    def tables():
        for start in (0, 3, 6):
            seen.append(start)
            yield pa.table({"x": list(range(start, start + 3))}, schema=schema)

    written = storage.write_tables(uri, tables(), schema)
    assert written == (tmp_path / "shard.parquet").stat().st_size
    assert storage.read_table(uri).column("x").to_pylist() == list(range(9))
    assert pq.ParquetFile(uri).metadata.num_row_groups == 3 and seen == [0, 3, 6]


def test_read_row_groups_reads_only_the_groups_asked_for(tmp_path):
    uri = str(tmp_path / "groups.parquet")
    schema = pa.schema([("x", pa.int64())])
    storage.write_tables(uri, (pa.table({"x": [g * 10, g * 10 + 1]}, schema=schema) for g in range(4)), schema)
    assert storage.read_row_groups(uri, [1, 2]).column("x").to_pylist() == [10, 11, 20, 21]
    assert storage.read_row_groups(uri, range(3, 4)).column("x").to_pylist() == [30, 31]
    assert storage.read_row_groups(uri, []).num_rows == 0


def test_upload_file_copies_bytes_whole(tmp_path):
    local = tmp_path / "local.bin"
    local.write_bytes(bytes(range(256)) * 40_000)  # more than one copy block
    target = str(tmp_path / "out" / "copy.bin")
    assert storage.upload_file(str(local), target) == local.stat().st_size
    assert storage.read_bytes(target) == local.read_bytes()


def test_write_tables_sends_each_table_before_the_next_is_made(tmp_path):
    """Streaming: what was written so far is on its way (in the temporary file) while the
    producer makes the next table, instead of the whole object waiting in memory."""
    schema = pa.schema([("x", pa.int64())])
    sizes_while_producing = []

    def tables():
        for start in range(3):
            yield pa.table({"x": pa.array(range(start, start + 2_000_000), pa.int64())}, schema=schema)
            temporary = [p for p in tmp_path.iterdir() if p.name.startswith(".shard.parquet.tmp-")]
            sizes_while_producing.append(sum(p.stat().st_size for p in temporary))

    storage.write_tables(str(tmp_path / "shard.parquet"), tables(), schema, compression="none")
    assert sizes_while_producing[0] > 8_000_000 and sizes_while_producing[1] > sizes_while_producing[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard.parquet"]
