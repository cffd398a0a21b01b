import pyarrow as pa
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
