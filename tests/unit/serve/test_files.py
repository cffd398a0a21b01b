"""Whole-file uploads: chunked decoding, validation into local files, landing only when all of it is good."""

import json
import os

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from recsys_ray.config import ValidationConfig
from recsys_ray.ingest import prepare_batch
from recsys_ray.io import formats, layout, storage
from recsys_ray.io.formats import InputError
from recsys_ray.serve import landing
from recsys_ray.serve.reports import IdempotencyClaim

CFG = ValidationConfig()
BATCH = "20240501T000000Z-0123456789abcdef"


def _events(n: int, bad_every: int = 0) -> pa.Table:
    kinds = ["click" if not bad_every or i % bad_every else "teleport" for i in range(n)]
    return pa.table({
        "user_id": [f"u{i % 13}" for i in range(n)],
        "item_id": [f"i{i % 7}" for i in range(n)],
        "interaction_type": kinds,
        "timestamp": [f"2024-05-01T00:{i % 60:02d}:00Z" for i in range(n)],
        "event_id": [f"e{i}" for i in range(n)],
        "note": [str(i) if i < n - 1 else "text" for i in range(n)],  # an extra column whose type changes late
    })


def _write(tmp_path, table: pa.Table, fmt: str) -> str:
    path = str(tmp_path / f"input.{fmt}")
    if fmt == "csv":
        pacsv.write_csv(table, path)
    elif fmt == "parquet":
        pq.write_table(table, path, row_group_size=300)
    else:
        with open(path, "w") as out:
            out.write("\n".join(json.dumps(r) for r in table.to_pylist()))
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet", "ndjson"])
def test_chunks_hold_the_same_rows_as_whole_decoding(tmp_path, fmt):
    path = _write(tmp_path, _events(1000), fmt)
    chunks = list(formats.iter_decode_file(path, fmt, "interactions", chunk_rows=300))
    if fmt != "ndjson":
        assert len(chunks) > 1
    whole = formats.decode(open(path, "rb").read(), fmt, "interactions")
    combined = pa.concat_tables(chunks)
    for name in ("user_id", "item_id", "interaction_type", "timestamp", "event_id"):
        assert combined.column(name).to_pylist() == whole.column(name).to_pylist()


def test_header_only_csv_is_one_empty_chunk(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"user_id,item_id,interaction_type,timestamp\n")
    [chunk] = formats.iter_decode_file(str(path), "csv", "interactions")
    assert chunk.num_rows == 0 and "timestamp" in chunk.column_names


@pytest.mark.parametrize(("content", "fmt", "code"), [
    (b"", "csv", "empty_body"),
    (b"\x00\x01\x02garbage", "csv", "binary_body"),
    (b"item_id,title\n" + b"i,ok\n" * 10 + b"i,\xff\xfe\n", "csv", "invalid_utf8"),
    (b'item_id,title\n"i,unterminated\n', "csv", "invalid_csv"),
    (b"PAR1 not really parquet PAR1", "parquet", "invalid_parquet"),
])
def test_unusable_files_raise_input_errors(tmp_path, content, fmt, code):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        list(formats.iter_decode_file(str(path), fmt, "items"))
    assert info.value.code == code


def test_prepare_file_counts_like_prepare_batch_with_global_row_numbers(tmp_path):
    table = _events(1000, bad_every=97)
    path = _write(tmp_path, table, "parquet")
    work = tmp_path / "work"
    work.mkdir()
    prepared = landing.prepare_file(path, "parquet", "interactions", CFG, chunk_rows=300, work_dir=str(work),
                                    source="upload-1")
    whole = prepare_batch(table, "interactions", CFG)
    assert (prepared.accepted, prepared.rejected) == (whole.valid.num_rows, whole.rejected.num_rows)
    assert dict(prepared.reason_counts) == whole.reason_counts
    assert [e["row"] for e in prepared.errors] == whole.rejected.column("row").to_pylist()
    assert len(prepared.parts) == 4 and len(os.listdir(work)) == 8
    prepared.remove()
    assert os.listdir(work) == []


def test_a_file_broken_half_way_stores_nothing_and_leaves_nothing(tmp_path):
    good = b"user_id,item_id,interaction_type,timestamp\n" + b"u,i,click,2024-05-01T00:00:00Z\n" * 5000
    path = tmp_path / "broken.csv"
    path.write_bytes(good + b'u,"i,click\n' + b"u,i,click,2024-05-01T00:00:00Z\n" * 10)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(InputError):
        landing.prepare_file(str(path), "csv", "interactions", CFG, chunk_rows=1000, work_dir=str(work))
    assert os.listdir(work) == []


def test_missing_required_columns_is_a_file_error(tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes(b"item_id,price\ni1,3\n")
    with pytest.raises(InputError) as info:
        landing.prepare_file(str(path), "csv", "items", CFG, chunk_rows=10, work_dir=None)
    assert (info.value.code, info.value.details["missing"]) == ("missing_columns", ["title"])


@pytest.mark.parametrize("chunk_rows", [10_000, 300])
def test_land_file_writes_chunks_then_report_and_key_record(tmp_path, chunk_rows):
    table = _events(1000, bad_every=50)
    path = _write(tmp_path, table, "csv")
    root = str(tmp_path / "store")
    prepared = landing.prepare_file(path, "csv", "interactions", CFG, chunk_rows=chunk_rows,
                                    work_dir=str(tmp_path), source=f"{BATCH}.0")
    claim = IdempotencyClaim.for_request("acme", "k", "POST /v1/uploads/interactions", "d")
    report = landing.land_file(prepared, root=root, tenant="acme", batch_id=BATCH, claim=claim)
    assert (report["upload_id"], report["accepted"], report["rejected"]) == (f"{BATCH}.0", 980, 20)
    raw = [f.uri for f in storage.list_files(layout.raw_dir(root, "acme", "interactions"))]
    quarantine = [f.uri for f in storage.list_files(layout.quarantine_dir(root, "acme", "interactions"))]
    assert sorted(storage.join(root, path) for path in report["objects"]) == sorted(raw + quarantine)
    assert all(path.startswith("tenants/acme/") for path in report["objects"])
    assert (len(raw) == 1) == (chunk_rows > 1000)
    landed = pa.concat_tables([storage.read_table(uri) for uri in raw])
    assert sorted(landed.column("event_id").to_pylist()) == sorted(f"e{i}" for i in range(1000) if i % 50)
    rejected = pa.concat_tables([storage.read_table(uri) for uri in quarantine])
    assert set(rejected.column("source").to_pylist()) == {f"{BATCH}.0"}
    assert landing.read_report(root, "acme", f"{BATCH}.0") == json.loads(json.dumps(report))
    assert landing.read_idempotency_record(root, "acme", claim)["response"] == json.loads(json.dumps(report))


def test_validation_only_keeps_no_rows(tmp_path):
    path = _write(tmp_path, _events(100), "ndjson")
    prepared = landing.prepare_file(path, "ndjson", "interactions", CFG, chunk_rows=10, work_dir=None)
    assert prepared.accepted == 100 and prepared.parts == []
    assert prepared.report(None, [])["upload_id"] is None
