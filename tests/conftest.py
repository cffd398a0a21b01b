"""Shared fixtures: real services on loopback, started once per test session.

Unit tests (tests/unit) use none of them. Integration tests get a moto S3
server (reached through AWS_ENDPOINT_URL exactly like MinIO) and one local Ray
instance that every integration test shares.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
if (Path.home() / ".ray" / "auth_token").exists():
    os.environ.setdefault("RAY_AUTH_MODE", "token")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/integration" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on loopback; AWS_* variables point every client at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in
             ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
              "AWS_EC2_METADATA_DISABLED")}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh, empty bucket; returns its name."""
    import uuid

    import boto3

    name = f"recsys-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def start_shared_ray():
    """Start the session's shared local Ray instance unless it is running (needs `s3_endpoint`'s env)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # never join another cluster running on this machine
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {k: os.environ[k] for k in
                                      ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                       "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")}},
        )
    return ray


@pytest.fixture(scope="session")
def ray_session(s3_endpoint):
    """One local Ray instance for the whole test session (workers see the S3 endpoint)."""
    yield start_shared_ray()


@pytest.fixture(scope="session")
def demo_build(ray_session, tmp_path_factory):
    """Small `recsys-ray generate` inputs (with some duplicate events) and their build
    on the shared Ray instance, made once: {"inputs", "build", "out", "manifest"}, where
    `build` holds the BuildConfig fields used (minus `out`)."""
    from recsys_ray import cli
    from recsys_ray.config import RecsysConfig
    from recsys_ray.build import build_training_data

    base = tmp_path_factory.mktemp("demo-build")
    inputs = base / "raw"
    assert cli.main(["generate", "--out", str(inputs), "--users", "300", "--items", "200",
                     "--interactions", "5000", "--seed", "3", "--duplicate-fraction", "0.05"]) == 0
    build = {"interactions": str(inputs / "interactions.parquet"), "items": str(inputs / "items.parquet"),
             "version": "v1", "seed": 11, "shards": 3}
    out = base / "v1"
    manifest = build_training_data(RecsysConfig.load(build={**build, "out": str(out)}))
    return {"inputs": inputs, "build": build, "out": out, "manifest": manifest}


@pytest.fixture
def without_shared_ray(ray_session):
    """For a test that runs its own Ray cluster: the shared instance is shut down
    before the test and started again, with the same arguments, after it."""
    ray_session.shutdown()
    yield
    if ray_session.is_initialized():
        ray_session.shutdown()
    start_shared_ray()
