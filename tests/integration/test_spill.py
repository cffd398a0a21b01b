"""A build on a local Ray whose object store is small and spills early: Ray spills blocks
to the spill directory (`RAY_object_spilling_directory`, docs/deploy.md) and reads them
back, and the version is byte for byte the one an unspilled build writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from recsys_ray import cli
from recsys_ray.build import build_training_data
from recsys_ray.build.manifest import read_manifest
from recsys_ray.config import RecsysConfig

OBJECT_STORE_BYTES = 80 * 2**20
SPILL_THRESHOLD = 0.05

BUILD_IN_A_SMALL_STORE = """
import json, sys
import ray
from ray._private.internal_api import memory_summary
from recsys_ray.build import build_training_data
from recsys_ray.config import RecsysConfig
from recsys_ray.runtime import local_ray_options

options = local_ray_options(2)
ray.init(**{**options, "object_store_memory": int(sys.argv[1])})
manifest = build_training_data(RecsysConfig.load(build=json.loads(sys.argv[2])))
print(json.dumps({"summary": memory_summary(ray.get_runtime_context().gcs_address, stats_only=True)}))
"""


def test_a_build_that_spills_writes_the_version_an_unspilled_build_writes(ray_session, tmp_path):
    assert cli.main(["generate", "--out", str(tmp_path / "raw"), "--users", "3000", "--items", "1500",
                     "--interactions", "150000", "--seed", "9"]) == 0
    build = {"interactions": str(tmp_path / "raw" / "interactions.parquet"),
             "items": str(tmp_path / "raw" / "items.parquet"), "version": "v1", "seed": 5, "shards": 2}
    reference = build_training_data(RecsysConfig.load(build={**build, "out": str(tmp_path / "unspilled")}))

    spill_dir = tmp_path / "spill"
    # Ray spills once the store is this full (default 0.8): the build keeps little in the
    # store, so a low threshold makes sure blocks go to disk and come back.
    env = {**os.environ, "RAY_object_spilling_directory": str(spill_dir), "RAY_ADDRESS": "",
           "RAY_object_spilling_threshold": str(SPILL_THRESHOLD), "RECSYS_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-c", BUILD_IN_A_SMALL_STORE, str(OBJECT_STORE_BYTES),
                           json.dumps({**build, "out": str(tmp_path / "spilled")})],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])["summary"]
    assert "Spilled" in summary, summary  # Ray reports the bytes it spilled; none: nothing to test
    assert spill_dir.is_dir()

    spilled = read_manifest(str(tmp_path / "spilled"))
    assert spilled.counts == reference.counts
    for split in ("train", "test"):
        assert [s.rows for s in spilled.shards[split]] == [s.rows for s in reference.shards[split]]
        for a, b in zip(reference.shard_uris(split), spilled.shard_uris(split)):
            assert pq.read_table(a).equals(pq.read_table(b))
    for name in ("eval", "vocab/item_id.parquet", "features/items.parquet"):
        assert pq.read_table(Path(reference.uri) / name).equals(pq.read_table(Path(spilled.uri) / name))
