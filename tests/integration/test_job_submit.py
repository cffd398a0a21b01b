"""The build as a Ray job: a real Ray head started with `ray start --head` on
loopback, the README's `ray job submit --working-dir . -- python -m
recsys_ray.jobs.build ...` with inputs and output on S3 (moto)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from ray.job_submission import JobSubmissionClient

from recsys_ray import cli
from recsys_ray.io import storage
from tests.integration.ray_support import ray_command, start_head, stop_head

REPO = Path(__file__).resolve().parents[2]
AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                 "AWS_EC2_METADATA_DISABLED")


@pytest.fixture
def ray_head(s3_endpoint):
    """A Ray head of our own with the job API on a free loopback port; only its
    processes are stopped afterwards. Its environment has no S3 settings: the job
    gets them from its runtime environment, as on a real cluster."""
    temp_dir = tempfile.mkdtemp(prefix="rrjob-", dir="/tmp")  # short: Ray's socket paths must fit
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARIABLES}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    head = None
    try:
        head = start_head(env, Path(temp_dir) / "ray-start.log", temp_dir=temp_dir)
        yield head.dashboard, JobSubmissionClient(head.dashboard), env
    finally:
        if head is not None:
            stop_head(head.process, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_build_submitted_as_a_ray_job_with_s3_inputs(ray_head, s3_bucket):
    from ray.job_submission import JobStatus

    address, client, env = ray_head
    assert cli.main(["generate", "--out", f"s3://{s3_bucket}/raw", "--users", "200", "--items", "150",
                     "--interactions", "3000", "--seed", "5"]) == 0
    out = f"s3://{s3_bucket}/training/v1"
    submission_id = f"recsys-build-{uuid.uuid4().hex[:8]}"
    runtime_env = {"env_vars": {k: os.environ[k] for k in AWS_VARIABLES}}
    submit = subprocess.run(
        ray_command("job", "submit", "--address", address, "--submission-id", submission_id,
                    "--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env), "--",
                    "python", "-m", "recsys_ray.jobs.build",
                    "--interactions", f"s3://{s3_bucket}/raw/interactions.parquet",
                    "--items", f"s3://{s3_bucket}/raw/items.parquet",
                    "--out", out, "--version", "v1", "--shards", "2", "--quiet"),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=480,
    )
    logs = client.get_job_logs(submission_id)
    assert submit.returncode == 0, f"{submit.stdout[-3000:]}\n{submit.stderr[-3000:]}\n{logs[-3000:]}"
    assert client.get_job_status(submission_id) == JobStatus.SUCCEEDED
    assert f"version v1 at {out}" in logs

    manifest = json.loads(storage.read_bytes(storage.join(out, "manifest.json")))
    assert manifest["version"] == "v1"
    assert manifest["counts"]["input_rows"] == 3000
    assert [i["path"] for i in manifest["inputs"]["interactions"]] == [f"s3://{s3_bucket}/raw/interactions.parquet"]
    for split in ("train", "test"):
        shards = manifest["shards"][split]
        assert len(shards) == 2
        rows = sum(storage.read_table(storage.join(out, s["path"])).num_rows for s in shards)
        assert rows == sum(s["rows"] for s in shards) == manifest["counts"][f"{split}_rows"] > 0
    train = storage.read_table(storage.join(out, manifest["shards"]["train"][0]["path"]))
    assert train.schema.names == [f["name"] for f in manifest["schema"]]
