"""Finding the previous version and reading manifests (local disk, no Ray)."""

from __future__ import annotations

from datetime import datetime

import pytest

from recsys_ray.build.manifest import write_manifest
from recsys_ray.io.storage import StorageOptions
from recsys_ray.report.writer import ReportError, manifest_dict, previous_version, read_version
from tests.unit.build.test_manifest import manifest as a_manifest


def write_version(folder, name, created_at, tenant="acme"):
    made = a_manifest().model_copy(update={"version": name, "created_at": datetime.fromisoformat(created_at),
                                           "tenant": tenant})
    write_manifest(made, str(folder / name))
    return str(folder / name)


def test_previous_is_the_latest_earlier_version_of_the_same_tenant(tmp_path):
    training = tmp_path / "training"
    write_version(training, "v1", "2026-01-01T00:00:00+00:00")
    v2 = write_version(training, "v2", "2026-01-02T00:00:00+00:00")
    write_version(training, "other", "2026-01-02T12:00:00+00:00", tenant="globex")
    (training / "unfinished").mkdir()  # no manifest: never picked
    v3 = write_version(training, "v3", "2026-01-03T00:00:00+00:00")
    write_version(training, "v4", "2026-01-04T00:00:00+00:00")  # newer than v3: not its previous
    options = StorageOptions()
    manifest, _ = read_version(v3, options)
    assert previous_version(v3, manifest, options) == v2
    first, _ = read_version(str(training / "v1"), options)
    assert previous_version(str(training / "v1"), first, options) is None


def test_read_version_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(ReportError, match="no manifest at"):
        read_version(str(tmp_path / "missing"), StorageOptions())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(ReportError, match="not a recsys_ray manifest: 1 problem"):
        read_version(str(tmp_path / "bad"), StorageOptions())
    (tmp_path / "bad" / "manifest.json").write_text('{"hello": 1}')
    with pytest.raises(ReportError, match="not a recsys_ray manifest"):
        read_version(str(tmp_path / "bad" / "manifest.json"), StorageOptions())


def test_manifest_dict_accepts_a_model():
    made = a_manifest()
    assert manifest_dict(made)["counts"]["train_rows"] == made.counts.train_rows
    assert [c["name"] for c in manifest_dict(made)["schema"]] == ["user_id"]
