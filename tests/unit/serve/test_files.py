"""Whole-file uploads over HTTP: landed by the core, then their report and idempotency record."""

import json

import pyarrow as pa
import pytest

from recsys_ray import ingest
from recsys_ray.config import ValidationConfig
from recsys_ray.io import layout, storage
from recsys_ray.serve import landing
from recsys_ray.serve.reports import IdempotencyClaim
from tests.unit.io.test_reader import file_events, write_file

CFG = ValidationConfig()
BATCH = "20240501T000000Z-0123456789abcdef"


@pytest.mark.parametrize("chunk_rows", [10_000, 300])
def test_land_file_writes_chunks_then_report_and_key_record(tmp_path, chunk_rows):
    table = file_events(1000, bad_every=50)
    path = write_file(tmp_path, table, "csv")
    root = str(tmp_path / "store")
    prepared = ingest.prepare_file(path, "csv", "interactions", CFG, chunk_rows=chunk_rows,
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


def test_a_validated_only_file_reports_without_an_upload_id(tmp_path):
    path = write_file(tmp_path, file_events(100, bad_every=30), "ndjson")
    prepared = ingest.prepare_file(path, "ndjson", "interactions", CFG, chunk_rows=10, work_dir=None)
    report = landing.file_report(prepared, None, [])
    assert (report["upload_id"], report["accepted"], report["rejected"], report["objects"]) == (None, 96, 4, [])
    assert [e["row"] for e in report["errors"]] == [0, 30, 60, 90]
    assert set(report["errors"][0]) == {"row", "field", "reason", "message"}
