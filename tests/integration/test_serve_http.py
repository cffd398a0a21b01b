"""The ingestion service over real HTTP on Ray Serve, storing on local disk and on S3 (moto).

Every test runs against both storage backends. Bad inputs are checked for
their status, their error body and that storage did not change.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import uuid
from pathlib import Path

import boto3
import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from tests.integration.serve_support import KEYS, deploy, serve_port, undeploy

MAX_ROWS = 500
MAX_REQUEST_BYTES = 64 << 10
MAX_UPLOAD_BYTES = 512 << 10


@pytest.fixture(scope="module", params=["local", "s3"])
def service(request, ray_session, s3_endpoint, tmp_path_factory):
    if request.param == "local":
        root = str(tmp_path_factory.mktemp("serve-local"))
    else:
        bucket = f"serve-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
        root = f"s3://{bucket}/recsys"
    svc = deploy(f"ingest-{request.param}", root,
                 api={"max_rows_per_request": MAX_ROWS, "max_request_bytes": MAX_REQUEST_BYTES,
                      "max_upload_bytes": MAX_UPLOAD_BYTES})
    yield svc
    undeploy(svc)


def event(user: str, item: str, kind: str = "click", ts: str = "2024-05-01T10:00:00Z", **extra) -> dict:
    return {"user_id": user, "item_id": item, "interaction_type": kind, "timestamp": ts, **extra}


def csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    return sink.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---- health, schema ------------------------------------------------------------------------------


def test_health_needs_no_key_and_readiness_sees_storage(service):
    anonymous = service.client(None)
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    assert anonymous.get("/readyz").json() == {"status": "ready"}


def test_schema_describes_each_dataset(service):
    client = service.client()
    interactions = client.get("/v1/schema/interactions").json()
    assert interactions["required"] == ["user_id", "item_id", "interaction_type", "timestamp"]
    assert client.get("/v1/schema/items").json()["required"] == ["item_id", "title"]


# ---- ingestion -----------------------------------------------------------------------------------


def test_interactions_land_with_row_level_rejections_reported(service):
    client = service.client()
    run = unique("r")
    events = [
        event(f"{run}-u1", "i1", event_id=f"{run}-e1"),
        event(f"{run}-u1", "i2", kind="PURCHASE", rating=5, event_id=f"{run}-e2"),
        event(f"{run}-u2", "i3", kind="teleport", event_id=f"{run}-e3"),
        event(f"{run}-u2", "", event_id=f"{run}-e4"),
        event(f"{run}-u3", "i4", ts="yesterday", event_id=f"{run}-e5"),
        event(f"{run}-u1", "i1", event_id=f"{run}-e1"),
    ]
    response = client.post("/v1/interactions", json=events)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["accepted"], report["rejected"], report["duplicates"]) == (2, 3, 1)
    assert [(e["row"], e["field"], e["reason"]) for e in report["errors"]] == [
        (2, "interaction_type", "unknown_interaction_type"),
        (3, "item_id", "missing_field"),
        (4, "timestamp", "bad_timestamp"),
    ]
    assert client.get(f"/v1/uploads/{report['upload_id']}").json() == report

    landed = service.rows("acme", "interactions").to_pandas()
    mine = landed[landed.user_id.str.startswith(run)]
    assert sorted(mine.event_id) == [f"{run}-e1", f"{run}-e2"]
    assert set(mine.interaction_type) == {"click", "purchase"}
    quarantined = service.rows("acme", "interactions", "quarantine").to_pandas()
    mine = quarantined[quarantined.source == report["upload_id"]]
    assert sorted(mine.reason) == ["bad_timestamp", "missing_field", "unknown_interaction_type"]


def test_ndjson_records_and_items(service):
    client = service.client()
    run = unique("n")
    lines = "\n".join(json.dumps(event(f"{run}-u{i}", f"i{i}", event_id=f"{run}-{i}")) for i in range(5))
    response = client.post("/v1/interactions", content=lines.encode(),
                           headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 200 and response.json()["accepted"] == 5

    items = [{"item_id": f"{run}-a", "title": "Old title"}, {"item_id": f"{run}-b", "title": "B", "price": 3.5},
             {"item_id": f"{run}-a", "title": "New title"}, {"item_id": f"{run}-c", "title": "C", "price": -1}]
    report = client.post("/v1/items", json=items).json()
    assert (report["accepted"], report["rejected"], report["duplicates"]) == (2, 1, 1)
    assert report["errors"][0]["reason"] == "price_out_of_range"
    catalog = service.rows("acme", "items").to_pandas().set_index("item_id")
    assert catalog.loc[f"{run}-a", "title"] == "New title"
    assert catalog.loc[f"{run}-b", "price"] == 3.5


@pytest.mark.parametrize("fmt", ["csv", "parquet", "parquet-query", "ndjson", "json"])
def test_whole_file_uploads(service, fmt):
    client = service.client()
    run = unique(fmt)
    table = pa.table({
        "user_id": [f"{run}-u{i % 7}" for i in range(300)],
        "item_id": [f"i{i % 11}" for i in range(300)],
        "interaction_type": ["view", "click", "purchase"] * 100,
        "timestamp": [f"2024-05-01T10:{i % 60:02d}:00Z" for i in range(300)],
        "event_id": [f"{run}-{i}" for i in range(300)],
    })
    records = table.to_pylist()
    records[5]["interaction_type"] = "bogus"
    bodies = {
        "csv": (csv_bytes(pa.Table.from_pylist(records)), {"Content-Type": "text/csv"}, ""),
        "parquet": (parquet_bytes(pa.Table.from_pylist(records)),
                    {"Content-Type": "application/vnd.apache.parquet"}, ""),
        "parquet-query": (parquet_bytes(pa.Table.from_pylist(records)),
                          {"Content-Type": "application/octet-stream"}, "?format=parquet"),
        "ndjson": ("\n".join(json.dumps(r) for r in records).encode(), {"Content-Type": "application/x-ndjson"}, ""),
        "json": (json.dumps(records).encode(), {"Content-Type": "application/json"}, ""),
    }
    body, headers, query = bodies[fmt]
    response = client.post(f"/v1/uploads/interactions{query}", content=body, headers=headers)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["accepted"], report["rejected"]) == (299, 1)
    assert report["errors"] == [{"row": 5, "field": "interaction_type", "reason": "unknown_interaction_type",
                                 "message": report["errors"][0]["message"]}]
    landed = service.rows("acme", "interactions").to_pandas()
    assert (landed.event_id.str.startswith(f"{run}-")).sum() == 299


def test_validate_reports_and_stores_nothing(service):
    client = service.client()
    before = service.tree()
    csv = b"user_id,item_id,interaction_type,timestamp\nu1,i1,click,2024-05-01T00:00:00Z\nu1,,view,x\n"
    response = client.post("/v1/validate/interactions", content=csv, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["upload_id"], report["accepted"], report["rejected"], report["objects"]) == (None, 1, 1, [])
    records = client.post("/v1/validate/items", json=[{"item_id": "x", "title": "X"}]).json()
    assert records["accepted"] == 1
    assert service.tree() == before


# ---- bad input -----------------------------------------------------------------------------------

GARBAGE = bytes(range(256)) * 8
GOOD_EVENT = json.dumps([event("u", "i")]).encode()
TOO_MANY = json.dumps([event("u", f"i{i}") for i in range(MAX_ROWS + 1)]).encode()
JSON = {"Content-Type": "application/json"}
CSV = {"Content-Type": "text/csv"}
PARQUET = {"Content-Type": "application/vnd.apache.parquet"}
CHUNKED = "sent in chunks, without Content-Length"


def _chunked(data: bytes, size: int = 8192):
    def chunks():
        for start in range(0, len(data), size):
            yield data[start:start + size]
    return chunks()


BAD_REQUESTS = [
    # (case, method, path, body, headers, status, code)
    ("malformed json", "POST", "/v1/interactions", b'[{"user_id": "u1",, }]', JSON, 400, "invalid_json"),
    ("truncated json", "POST", "/v1/interactions", GOOD_EVENT[:-7], JSON, 400, "invalid_json"),
    ("object not array", "POST", "/v1/interactions", json.dumps(event("u", "i")).encode(), JSON, 400,
     "expected_array"),
    ("array of scalars", "POST", "/v1/items", b"[1, 2, 3]", JSON, 400, "expected_object"),
    ("bad ndjson line", "POST", "/v1/interactions", b'{"user_id": "u"}\n{nope\n',
     {"Content-Type": "application/x-ndjson"}, 400, "invalid_json"),
    ("invalid utf-8 json", "POST", "/v1/interactions", b'[{"user_id": "\xff\xfe"}]', JSON, 400, "invalid_utf8"),
    ("binary garbage json", "POST", "/v1/items", GARBAGE, JSON, 400, "invalid_utf8"),
    ("lone surrogate escape json", "POST", "/v1/interactions",
     b'[{"user_id": "u\\ud800", "item_id": "i", "interaction_type": "view", "timestamp": 1}]', JSON, 400,
     "invalid_utf8"),
    ("csv without required columns", "POST", "/v1/uploads/interactions", b"user_id,item_id\nu1,i1\n", CSV, 422,
     "missing_columns"),
    ("binary garbage csv", "POST", "/v1/uploads/items", GARBAGE, CSV, 400, "binary_body"),
    ("invalid utf-8 csv", "POST", "/v1/uploads/items", b"item_id,title\ni1,\xff\xfe\xfa\n", CSV, 400,
     "invalid_utf8"),
    ("garbage parquet", "POST", "/v1/uploads/interactions", GARBAGE, PARQUET, 400, "invalid_parquet"),
    ("truncated parquet", "POST", "/v1/uploads/interactions",
     parquet_bytes(pa.table({"user_id": ["u"] * 100}))[:-40] + b"PAR1", PARQUET, 400, "invalid_parquet"),
    ("wrong content type records", "POST", "/v1/interactions", GOOD_EVENT, {"Content-Type": "text/plain"}, 415,
     "unsupported_media_type"),
    ("csv to record endpoint", "POST", "/v1/items", b"item_id,title\ni,t\n", CSV, 415, "unsupported_media_type"),
    ("unknown upload type", "POST", "/v1/uploads/items", b"item_id,title\n",
     {"Content-Type": "application/octet-stream"}, 415, "unsupported_media_type"),
    ("unknown format parameter", "POST", "/v1/uploads/items?format=xlsx", b"x", CSV, 415, "unsupported_format"),
    ("too many rows", "POST", "/v1/interactions", TOO_MANY, JSON, 413, "too_many_rows"),
    ("record body over limit", "POST", "/v1/interactions", b"[" + b" " * MAX_REQUEST_BYTES + b"]", JSON, 413,
     "body_too_large"),
    ("upload over limit", "POST", "/v1/uploads/interactions", b"u" * (MAX_UPLOAD_BYTES + 1), CSV, 413,
     "body_too_large"),
    ("chunked upload over limit", "POST", "/v1/uploads/interactions", CHUNKED, CSV, 413, "body_too_large"),
    ("unknown dataset upload", "POST", "/v1/uploads/users", b"a,b\n", CSV, 404, "unknown_dataset"),
    ("unknown dataset validate", "POST", "/v1/validate/users", b"[]", JSON, 404, "unknown_dataset"),
    ("unknown dataset schema", "GET", "/v1/schema/users", None, {}, 404, "unknown_dataset"),
    ("traversal upload id", "GET", "/v1/uploads/..", None, {}, 404, "not_found"),
    ("backslash traversal upload id", "GET", "/v1/uploads/..%5C..%5Cglobex", None, {}, 400, "invalid_name"),
    ("hidden upload id", "GET", "/v1/uploads/.key-x", None, {}, 400, "invalid_name"),
    ("traversal encoded upload id", "GET", "/v1/uploads/..%2F..%2Fglobex%2Fuploads", None, {}, 404, "not_found"),
    ("traversal dataset", "POST", "/v1/uploads/..%2Fitems", b"item_id,title\ni,t\n", CSV, 404, "not_found"),
    ("unknown upload id", "GET", "/v1/uploads/20240101T000000Z-0123456789abcdef.0", None, {}, 404,
     "upload_not_found"),
    ("unknown path", "GET", "/v1/secrets", None, {}, 404, "not_found"),
    ("bad idempotency key", "POST", "/v1/items", b'[{"item_id": "i", "title": "t"}]',
     {**JSON, "Idempotency-Key": "k" * 300}, 400, "invalid_idempotency_key"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_is_refused_with_a_clear_error_and_nothing_stored(service, case):
    name, method, path, body, headers, status, code = case
    client = service.client()
    before = service.tree()
    if body is CHUNKED:
        body = _chunked(b"user_id,item_id,interaction_type,timestamp\n" + b"u,i,click,1\n" * 50_000)
    # A raw path keeps '..' and '%2F' as sent instead of being normalised by the client.
    url = httpx.URL(service.url).copy_with(raw_path=httpx.URL(service.url).raw_path + path.encode())
    response = client.request(method, url, content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and isinstance(error["details"], dict)
    assert service.tree() == before


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"},
                                     {"Authorization": "Basic YWNtZTphY21l"}])
@pytest.mark.parametrize("method, path", [("POST", "/v1/interactions"), ("POST", "/v1/uploads/items"),
                                          ("POST", "/v1/validate/items"), ("GET", "/v1/schema/items"),
                                          ("GET", "/v1/uploads/20240101T000000Z-0123456789abcdef.0")])
def test_every_endpoint_but_health_needs_a_valid_key(service, headers, method, path):
    before = service.tree()
    response = service.client(None, **headers).request(method, path, json=[event("u", "i")])
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"
    assert service.tree() == before


# ---- idempotency, duplicates, tenants ------------------------------------------------------------


def test_idempotent_retry_returns_the_first_response_and_stores_once(service):
    client = service.client()
    run = unique("idem")
    events = [event(f"{run}-u", f"i{i}") for i in range(20)]
    first = client.post("/v1/interactions", json=events, headers={"Idempotency-Key": run})
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    stored = service.tree()
    retry = client.post("/v1/interactions", json=events, headers={"Idempotency-Key": run})
    assert retry.status_code == 200
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    assert service.tree() == stored

    reused = client.post("/v1/interactions", json=events[:3], headers={"Idempotency-Key": run})
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"
    # Keys are per tenant: the same key from another tenant is a new request.
    other = service.client("globex").post("/v1/interactions", json=events, headers={"Idempotency-Key": run})
    assert other.status_code == 200 and other.json()["upload_id"] != first.json()["upload_id"]
    landed = service.rows("acme", "interactions").to_pandas()
    assert (landed.user_id == f"{run}-u").sum() == 20


def test_concurrent_retries_with_one_key_land_once(service):
    run = unique("race")
    body = [event(f"{run}-u", f"i{i}") for i in range(10)]

    async def send_all():
        headers = {"Authorization": f"Bearer {KEYS['acme']}", "Idempotency-Key": run}
        async with httpx.AsyncClient(base_url=service.url, headers=headers, timeout=120) as client:
            return await asyncio.gather(*(client.post("/v1/interactions", json=body) for _ in range(8)))

    responses = asyncio.run(send_all())
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["upload_id"] for r in responses}) == 1
    landed = service.rows("acme", "interactions").to_pandas()
    assert (landed.user_id == f"{run}-u").sum() == 10


def test_repeated_events_are_stored_once(service):
    client = service.client()
    run = unique("dup")
    with_ids = [event(f"{run}-u", "i1", event_id=f"{run}-x")] * 3
    without_ids = [event(f"{run}-u", "i2", ts="2024-05-02T00:00:00Z")] * 4
    report = client.post("/v1/interactions", json=with_ids + without_ids).json()
    assert (report["accepted"], report["duplicates"]) == (2, 5)
    landed = service.rows("acme", "interactions").to_pandas()
    assert (landed.user_id == f"{run}-u").sum() == 2


def test_tenants_are_isolated(service):
    acme, globex = service.client("acme"), service.client("globex")
    run = unique("iso")
    mine = acme.post("/v1/items", json=[{"item_id": f"{run}-a", "title": "A"}]).json()
    theirs = globex.post("/v1/items", json=[{"item_id": f"{run}-g", "title": "G"}]).json()
    assert globex.get(f"/v1/uploads/{mine['upload_id']}").status_code == 404
    assert acme.get(f"/v1/uploads/{theirs['upload_id']}").status_code == 404
    assert acme.get(f"/v1/uploads/{mine['upload_id']}").status_code == 200
    assert mine["objects"] and all(path.startswith("tenants/acme/") for path in mine["objects"])
    assert theirs["objects"] and all(path.startswith("tenants/globex/") for path in theirs["objects"])
    assert not any(service.root in path for path in mine["objects"] + theirs["objects"]), \
        "answers name objects relative to the storage root"
    acme_items = set(service.rows("acme", "items").column("item_id").to_pylist())
    globex_items = set(service.rows("globex", "items").column("item_id").to_pylist())
    assert f"{run}-a" in acme_items and f"{run}-a" not in globex_items
    assert f"{run}-g" in globex_items and f"{run}-g" not in acme_items


# ---- concurrency ---------------------------------------------------------------------------------


def test_many_parallel_clients_lose_and_duplicate_nothing(service):
    run = unique("load")
    clients, requests_each, rows_each = 32, 8, 25
    before = {uri for uri in service.tree() if "/raw/interactions/" in uri}

    async def client_run(client_index: int, http: httpx.AsyncClient) -> list[dict]:
        reports = []
        for request_index in range(requests_each):
            rows = [event(f"{run}-c{client_index}", f"i{row}",
                          event_id=f"{run}-{client_index}-{request_index}-{row}") for row in range(rows_each)]
            response = await http.post("/v1/interactions", json=rows)
            assert response.status_code == 200, response.text
            reports.append(response.json())
        return reports

    async def run_all():
        headers = {"Authorization": f"Bearer {KEYS['acme']}"}
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(base_url=service.url, headers=headers, timeout=120, limits=limits) as http:
            return await asyncio.gather(*(client_run(c, http) for c in range(clients)))

    reports = [r for per_client in asyncio.run(run_all()) for r in per_client]
    total = clients * requests_each * rows_each
    assert sum(r["accepted"] for r in reports) == total
    assert len({r["upload_id"] for r in reports}) == clients * requests_each

    landed = service.rows("acme", "interactions").to_pandas()
    mine = landed[landed.event_id.str.startswith(f"{run}-")]
    assert len(mine) == total
    assert mine.event_id.nunique() == total
    new_objects = {uri for uri in service.tree() if "/raw/interactions/" in uri} - before
    assert len(new_objects) < clients * requests_each, "small requests must be written in batches"


# ---- Serve set-up --------------------------------------------------------------------------------


def test_overload_gets_429_with_retry_after(ray_session, tmp_path):
    svc = deploy("ingest-overload", str(tmp_path), serve={"max_ongoing_requests": 1, "max_queued_requests": 1,
                                                          "overload_status": 429, "retry_after_s": 3})
    release = threading.Event()
    started = [threading.Event(), threading.Event()]
    held: dict[int, httpx.Response] = {}

    def slow_body(index: int):
        yield b"["
        started[index].set()  # the headers and first bytes are on the wire
        release.wait(120)
        yield json.dumps(event(f"held-{index}", "i")).encode() + b"]"

    def hold(index: int):
        held[index] = svc.client().post("/v1/interactions", content=slow_body(index), headers=JSON)

    # One request occupies the replica's only slot, the next one the only queue place.
    holders = []
    for index in range(2):
        holders.append(threading.Thread(target=hold, args=(index,)))
        holders[-1].start()
        assert started[index].wait(60)
    try:
        probe = svc.client()
        rejected = None
        for _ in range(600):
            response = probe.get("/v1/schema/items")
            if response.status_code == 429:
                rejected = response
                break
        assert rejected is not None, "a request beyond the slot and the queue was never refused"
        assert rejected.headers["retry-after"] == "3"
    finally:
        release.set()
        for thread in holders:
            thread.join(120)
    try:
        assert [held[i].status_code for i in range(2)] == [200, 200]
        assert sorted(svc.rows("acme", "interactions").column("user_id").to_pylist()) == ["held-0", "held-1"]
    finally:
        undeploy(svc)


def test_serve_config_file_builds_the_application(ray_session, tmp_path):
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema
    from ray import serve
    import importlib

    config = ServeDeploySchema.model_validate(
        yaml.safe_load((Path(__file__).parents[2] / "deploy" / "serve_config.yaml").read_text()))
    [entry] = config.applications
    assert (entry.route_prefix, config.http_options.port) == ("/", 8000)
    module, _, attribute = entry.import_path.partition(":")
    builder = getattr(importlib.import_module(module), attribute)
    args = {**entry.args, "storage": {"root": str(tmp_path)},
            "api": {"keys": f"acme:{KEYS['acme']}"}, "serve": {"replica_cpus": 0.1}}
    application = call_user_app_builder_with_args_if_necessary(builder, args)
    port = serve_port()
    serve.run(application, name="ingest-yaml", route_prefix="/ingest-yaml")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/ingest-yaml",
                          headers={"X-API-Key": KEYS["acme"]}, timeout=60) as client:
            assert client.get("/healthz").status_code == 200
            report = client.post("/v1/items", json=[{"item_id": "i", "title": "t"}]).json()
            assert report["accepted"] == 1
            assert report["objects"][0].startswith("tenants/acme/raw/items/")
    finally:
        serve.delete("ingest-yaml")
    with pytest.raises(Exception):
        call_user_app_builder_with_args_if_necessary(builder, {"storage": {"root": "x"}, "unknown": 1})


def test_metrics_reach_rays_prometheus_endpoint(service):
    import ray

    service.client().post("/v1/items", json=[{"item_id": "m1", "title": "M"}, {"item_id": "m2", "title": ""}])
    port = ray.nodes()[0]["MetricsExportPort"]
    wanted = {"ray_recsys_ingest_requests_total", "ray_recsys_ingest_rows_total",
              "ray_recsys_ingest_rejected_rows_total", "ray_recsys_ingest_request_seconds_bucket",
              "ray_recsys_ingest_bytes_total"}
    seen: set[str] = set()
    for _ in range(120):  # Ray exports metrics every few seconds
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        seen = {line.split("{", 1)[0] for line in text.splitlines()
                if line.startswith("ray_recsys_ingest") and f'application="{service.name}"' in line}
        if wanted <= seen:
            break
        threading.Event().wait(0.5)
    assert wanted <= seen
    assert KEYS["acme"] not in text


def test_unreachable_storage_is_reported_and_nothing_acknowledged(ray_session, s3_endpoint):
    svc = deploy("ingest-nostore", f"s3://missing-{uuid.uuid4().hex[:10]}/recsys")
    try:
        anonymous = svc.client(None)
        assert anonymous.get("/healthz").status_code == 200
        ready = anonymous.get("/readyz")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "storage_unreachable"
        for path, body, headers in [("/v1/items", b'[{"item_id": "i", "title": "t"}]', JSON),
                                    ("/v1/uploads/items", b"item_id,title\ni,t\n", CSV)]:
            response = svc.client().post(path, content=body, headers=headers)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "storage_unavailable"
            assert response.headers["retry-after"] == "5"
    finally:
        undeploy(svc)
