"""Rows sent over HTTP become training data: upload to the service, then `recsys-ray build --root --tenant`."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys_ray import cli
from tests.integration.serve_support import deploy, undeploy

BASE_TS = 1_700_000_000


def _events(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "user_id": [f"u{i:03d}" for i in rng.integers(0, 60, n)],
        "item_id": [f"i{i:03d}" for i in rng.integers(0, 40, n)],
        "interaction_type": rng.choice(["view", "click", "like", "add_to_cart", "purchase"], n).tolist(),
        "timestamp": (BASE_TS + rng.integers(0, 60 * 86400, n)).tolist(),
        "event_id": [f"e{seed}-{i}" for i in range(n)],
    })


def test_uploaded_rows_are_built_into_training_data(ray_session, tmp_path, capsys):
    root = str(tmp_path / "store")
    svc = deploy("ingest-build", root)
    try:
        acme = svc.client("acme")
        whole_file = _events(1500, seed=1)
        sink = io.BytesIO()
        pacsv.write_csv(whole_file, sink)
        report = acme.post("/v1/uploads/interactions", content=sink.getvalue(),
                           headers={"Content-Type": "text/csv"}).json()
        assert report["accepted"] == 1500
        records = _events(400, seed=2).to_pylist()
        for start in range(0, 400, 100):
            assert acme.post("/v1/interactions", json=records[start:start + 100]).json()["accepted"] == 100
        # A client retry without an Idempotency-Key stores these rows a second time;
        # their event ids make the build keep one copy.
        assert acme.post("/v1/interactions", json=records[:100]).json()["accepted"] == 100
        catalog = [{"item_id": f"i{i:03d}", "title": f"Item {i}", "price": float(i)} for i in range(40)]
        assert acme.post("/v1/items", json=catalog).json()["accepted"] == 40
        svc.client("globex").post("/v1/interactions", json=records[:50])
    finally:
        undeploy(svc)

    capsys.readouterr()
    code = cli.main(["build", "--root", root, "--tenant", "acme", "--version", "v1", "--quiet", "--json"])
    assert code == 0
    manifest = json.loads(capsys.readouterr().out)
    counts = manifest["counts"]
    assert (counts["input_rows"], counts["valid"], counts["duplicates"], counts["events"]) == (2000, 2000, 100, 1900)
    assert counts["items"]
    assert all("/tenants/acme/raw/" in f["path"] for f in manifest["inputs"]["interactions"] + manifest["inputs"]["items"])
    out = os.path.join(root, "tenants", "acme", "training", "v1")
    train = pa.concat_tables([pq.read_table(os.path.join(out, s["path"])) for s in manifest["shards"]["train"]])
    assert train.num_rows == counts["train_rows"] > 0
    assert set(train.column("user_id").to_pylist()) <= {f"u{i:03d}" for i in range(60)}
    assert set(train.column("item_id").to_pylist()) <= {f"i{i:03d}" for i in range(40)}
