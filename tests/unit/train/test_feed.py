"""Locating a version's shards from its manifest (no Ray started)."""

from __future__ import annotations

import pytest

from recsys_ray.train.feed import manifest_location, shard_uris

MANIFEST = {
    "version": "v1",
    "shards": {
        "train": [{"path": "train/part-00001.parquet", "rows": 3}, {"path": "train/part-00000.parquet", "rows": 2}],
        "test": [{"path": "test/part-00000.parquet", "rows": 1}],
    },
}


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


def test_shard_uris_are_relative_to_the_version_root_in_manifest_order():
    assert shard_uris(MANIFEST, "s3://bucket/v1") == {
        "train": ["s3://bucket/v1/train/part-00001.parquet", "s3://bucket/v1/train/part-00000.parquet"],
        "test": ["s3://bucket/v1/test/part-00000.parquet"],
    }


def test_missing_split_is_empty():
    assert shard_uris({"shards": {"train": []}}, "/v") == {"train": [], "test": []}


def test_shard_paths_cannot_climb_out_of_the_version():
    manifest = {"shards": {"train": [{"path": "../other/part-00000.parquet", "rows": 1}]}}
    with pytest.raises(ValueError, match="climbs out"):
        shard_uris(manifest, "/data/v1")
