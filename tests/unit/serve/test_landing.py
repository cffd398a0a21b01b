import json

import pytest

from recsys_ray.config import ValidationConfig
from recsys_ray.ingest import prepare_many
from recsys_ray.io import layout, storage
from recsys_ray.serve import landing
from recsys_ray.serve.reports import IdempotencyClaim, batch_of
from tests.unit.test_ingest import TABLES, event, events

CFG = ValidationConfig()


def _tree(root):
    return sorted(entry.uri[len(str(root)):] for entry in storage.list_files(str(root)))


def test_land_uploads_writes_one_batch_and_reports_each_upload(tmp_path):
    prepared = prepare_many(TABLES[:3], "interactions", CFG)
    claim = IdempotencyClaim.for_request("acme", "retry-me", "POST /v1/interactions", "digest")
    reports = landing.land_uploads(prepared, root=str(tmp_path), tenant="acme", dataset="interactions",
                                   claims=[None, claim, None], batch_id="20240501T000000Z-0123456789abcdef")
    batch = "20240501T000000Z-0123456789abcdef"
    assert _tree(tmp_path) == [
        f"/tenants/acme/quarantine/interactions/{batch}.parquet",
        f"/tenants/acme/raw/interactions/{batch}.parquet",
        f"/tenants/acme/uploads/{batch}.json",
        f"/tenants/acme/uploads/{claim.record}.json",
    ]
    raw = storage.read_table(layout.raw_object(str(tmp_path), "acme", "interactions", batch))
    assert sorted(raw.column("event_id").to_pylist()) == ["e1", "e2", "e4", "e6", "e8"]
    quarantine = storage.read_table(layout.quarantine_object(str(tmp_path), "acme", "interactions", batch))
    assert quarantine.select(["source", "row", "reason"]).to_pylist() == [
        {"source": f"{batch}.0", "row": 2, "reason": "missing_field"},
        {"source": f"{batch}.1", "row": 1, "reason": "unknown_interaction_type"},
        {"source": f"{batch}.2", "row": 1, "reason": "bad_timestamp"},
    ]
    assert [(r["upload_id"], r["accepted"], r["rejected"], r["duplicates"]) for r in reports] == [
        (f"{batch}.0", 2, 1, 1), (f"{batch}.1", 1, 1, 0), (f"{batch}.2", 2, 1, 1)]
    assert reports[1]["errors"] == [{"row": 1, "field": "interaction_type", "reason": "unknown_interaction_type",
                                     "message": reports[1]["errors"][0]["message"]}]
    # Objects are named relative to the storage root: answers do not show the bucket or local path.
    assert reports[0]["objects"] == [f"tenants/acme/raw/interactions/{batch}.parquet",
                                     f"tenants/acme/quarantine/interactions/{batch}.parquet"]
    for report in reports:
        assert landing.read_report(str(tmp_path), "acme", report["upload_id"]) == json.loads(json.dumps(report))
        assert landing.read_report(str(tmp_path), "globex", report["upload_id"]) is None
    record = landing.read_idempotency_record(str(tmp_path), "acme", claim)
    assert record == {"fingerprint": claim.fingerprint, "response": json.loads(json.dumps(reports[1]))}


def test_clean_uploads_write_no_quarantine_object(tmp_path):
    prepared = prepare_many([events(event("u1", "i1"))], "interactions", CFG)
    [report] = landing.land_uploads(prepared, root=str(tmp_path), tenant="acme", dataset="interactions")
    assert [path.split("/")[3] for path in _tree(tmp_path)] == ["raw", "uploads"]
    assert report["objects"] == [f"tenants/acme/raw/interactions/{batch_of(report['upload_id'])[0]}.parquet"]


@pytest.mark.parametrize("upload_id", ["nope", "20240501T000000Z-0123456789abcdef.0",
                                       "20240501T000000Z-0123456789abcdef.99"])
def test_unknown_uploads_have_no_report(tmp_path, upload_id):
    landing.land_uploads(prepare_many([events(event("u", "i"))], "interactions", CFG),
                         root=str(tmp_path), tenant="acme", dataset="interactions",
                         batch_id="20240501T000000Z-0123456789abcdef")
    expected_missing = upload_id != "20240501T000000Z-0123456789abcdef.0"
    assert (landing.read_report(str(tmp_path), "acme", upload_id) is None) == expected_missing
    assert landing.read_idempotency_record(
        str(tmp_path), "acme", IdempotencyClaim.for_request("acme", "new", "POST /v1/items", "d")) is None
