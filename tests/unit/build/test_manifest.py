"""The manifest model: where it lives, how it is read back, and what its paths may name."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from recsys_ray.build.manifest import Manifest, manifest_location, read_manifest, write_manifest


def manifest(**shards) -> Manifest:
    """A complete manifest (of no real build) for tests of manifest readers."""
    counts = {"input_rows": 10, "valid": 9, "rejected": {"missing_field": 1}, "duplicates": 1, "events": 8,
              "items": {"catalog": False}, "train_positives": 2, "train_negatives": 4, "train_rows": 6,
              "test_positives": 1, "test_negatives": 2, "test_rows": 3, "negative_shortfall": 0}
    return Manifest(
        version="v1", created_at=datetime(2026, 1, 2, tzinfo=timezone.utc), recsys_ray_version="0.1.0",
        tenant="acme", config={"seed": 1}, cutoff=datetime(2026, 1, 1, tzinfo=timezone.utc),
        split_strategy="time", parallelism=2, inputs={"interactions": [{"path": "/in/a.parquet", "size": 3}],
                                                      "items": []},
        counts=counts, shards=shards or {"train": [{"path": "train/part-00000.parquet", "rows": 6}],
                                         "test": [{"path": "test/part-00000.parquet", "rows": 3}]},
        features={"users": "features/users", "items": "features/items.parquet"}, quarantine="quarantine",
        columns=[{"name": "user_id", "type": "string"}], timings_s={"validate": 0.5})


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/data/v1", ("/data/v1/manifest.json", "/data/v1")),
        ("/data/v1/", ("/data/v1/manifest.json", "/data/v1")),
        ("/data/v1/manifest.json", ("/data/v1/manifest.json", "/data/v1")),
        ("manifest.json", ("manifest.json", ".")),
        ("s3://bucket/t/training/v1", ("s3://bucket/t/training/v1/manifest.json", "s3://bucket/t/training/v1")),
        ("s3://bucket/v1/manifest.json", ("s3://bucket/v1/manifest.json", "s3://bucket/v1")),
    ],
)
def test_manifest_location(uri, expected):
    assert manifest_location(uri) == expected


def test_written_and_read_back_with_its_location(tmp_path):
    written = write_manifest(manifest(), str(tmp_path / "v1"))
    stored = json.loads((tmp_path / "v1" / "manifest.json").read_text())
    assert "uri" not in stored and [(c["name"], c["type"]) for c in stored["schema"]] == [("user_id", "string")]
    read = read_manifest(str(tmp_path / "v1"))
    assert read == written and read.uri == str(tmp_path / "v1")
    assert read.shard_uris("train") == [f"{tmp_path}/v1/train/part-00000.parquet"]
    assert read.shard_uris("validation") == []


def test_a_version_without_a_manifest_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="never completed"):
        read_manifest(str(tmp_path / "v1"))


def test_unknown_fields_are_refused(tmp_path):
    data = json.loads(manifest().model_dump_json()) | {"surprise": 1}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="surprise"):
        read_manifest(str(tmp_path / "manifest.json"))


def test_shard_paths_cannot_climb_out_of_the_version():
    bad = manifest(train=[{"path": "../other/part-00000.parquet", "rows": 1}]).model_copy(update={"uri": "/data/v1"})
    with pytest.raises(ValueError, match="climbs out"):
        bad.shard_uris("train")
