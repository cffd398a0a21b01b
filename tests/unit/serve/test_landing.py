import json

import pytest

from recsys_ray.config import ValidationConfig
from recsys_ray.ingest import prepare_batch
from recsys_ray.io import formats, layout, storage
from recsys_ray.serve import landing
from recsys_ray.serve.reports import IdempotencyClaim, batch_of

CFG = ValidationConfig()


def _events(*rows):
    return formats.records_to_table(list(rows), "interactions")


def _event(user, item, ts="2024-05-01T10:00:00Z", kind="click", **extra):
    return {"user_id": user, "item_id": item, "interaction_type": kind, "timestamp": ts, **extra}


TABLES = [
    _events(_event("u1", "i1", event_id="e1"), _event("u1", "i2", event_id="e2"),
            _event("u2", "", event_id="e3"), _event("u1", "i1", event_id="e1")),
    _events(_event("u3", "i1", event_id="e4"), _event("u3", "i9", kind="teleport", event_id="e5")),
    _events(_event("u4", "i4", event_id="e6"), _event("u4", "i4", ts="not a time", event_id="e7"),
            _event("u4", "i5", event_id="e8"), _event("u4", "i5", event_id="e8")),
    _events(_event("u5", "i5"), _event("u5", "i5"), _event("u5", "i6", ts=1714557600)),
    formats.records_to_table([], "interactions"),
]


def _same(actual, expected):
    assert actual.dataset == expected.dataset
    assert actual.duplicates == expected.duplicates
    assert actual.valid.equals(expected.valid)
    assert actual.rejected.equals(expected.rejected)


def test_prepare_many_matches_prepare_batch_on_each_table():
    assert len({t.schema for t in TABLES}) < len(TABLES), "some tables must share a schema"
    for actual, table in zip(landing.prepare_many(TABLES, "interactions", CFG), TABLES):
        _same(actual, prepare_batch(table, "interactions", CFG))


def test_prepare_many_on_items_keeps_each_requests_last_version():
    tables = [
        formats.records_to_table([{"item_id": "a", "title": "old"}, {"item_id": "a", "title": "new"}], "items"),
        formats.records_to_table([{"item_id": "a", "title": "other"}, {"item_id": "b", "title": ""}], "items"),
    ]
    prepared = landing.prepare_many(tables, "items", CFG)
    for actual, table in zip(prepared, tables):
        _same(actual, prepare_batch(table, "items", CFG))
    assert prepared[0].valid.column("title").to_pylist() == ["new"]


def _tree(root):
    return sorted(entry.uri[len(str(root)):] for entry in storage.list_files(str(root)))


def test_land_uploads_writes_one_batch_and_reports_each_upload(tmp_path):
    prepared = landing.prepare_many(TABLES[:3], "interactions", CFG)
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
    prepared = landing.prepare_many([_events(_event("u1", "i1"))], "interactions", CFG)
    [report] = landing.land_uploads(prepared, root=str(tmp_path), tenant="acme", dataset="interactions")
    assert [path.split("/")[3] for path in _tree(tmp_path)] == ["raw", "uploads"]
    assert report["objects"] == [f"tenants/acme/raw/interactions/{batch_of(report['upload_id'])[0]}.parquet"]


@pytest.mark.parametrize("upload_id", ["nope", "20240501T000000Z-0123456789abcdef.0",
                                       "20240501T000000Z-0123456789abcdef.99"])
def test_unknown_uploads_have_no_report(tmp_path, upload_id):
    landing.land_uploads(landing.prepare_many([_events(_event("u", "i"))], "interactions", CFG),
                         root=str(tmp_path), tenant="acme", dataset="interactions",
                         batch_id="20240501T000000Z-0123456789abcdef")
    expected_missing = upload_id != "20240501T000000Z-0123456789abcdef.0"
    assert (landing.read_report(str(tmp_path), "acme", upload_id) is None) == expected_missing
    assert landing.read_idempotency_record(
        str(tmp_path), "acme", IdempotencyClaim.for_request("acme", "new", "POST /v1/items", "d")) is None


def test_tables_with_different_types_still_validate_separately():
    as_text = formats.records_to_table([_event("u1", "i1", rating="4")], "interactions")
    as_number = formats.records_to_table([_event("u1", "i1", rating=4.0)], "interactions")
    assert as_text.schema != as_number.schema
    for actual, table in zip(landing.prepare_many([as_text, as_number], "interactions", CFG), [as_text, as_number]):
        _same(actual, prepare_batch(table, "interactions", CFG))


def test_prepare_many_keeps_each_requests_copy_of_a_shared_event():
    shared = _event("u1", "i1", event_id="shared")
    tables = [_events(shared, _event("u1", "i2", event_id="a")), _events(_event("u2", "i2", event_id="b"), shared),
              _events(shared, shared)]
    prepared = landing.prepare_many(tables, "interactions", CFG)
    for actual, table in zip(prepared, tables):
        _same(actual, prepare_batch(table, "interactions", CFG))
    assert [p.valid.num_rows for p in prepared] == [2, 2, 1]
