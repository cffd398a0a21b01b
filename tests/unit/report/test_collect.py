"""Work units of a version and their partial summaries, run in-process on a tiny version on disk."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_ray.config import ReportConfig
from recsys_ray.io.storage import StorageOptions
from recsys_ray.report.collect import ReportError, assemble, summarize_unit, work_units
from recsys_ray.report.writer import manifest_dict
from tests.unit.build.test_manifest import manifest as a_manifest


def tiny_version(root, train_rows=(30, 10)):
    shards = {"train": [], "test": []}
    for split, sizes in (("train", train_rows), ("test", (8,))):
        for i, n in enumerate(sizes):
            path = f"{split}/part-{i:05d}.parquet"
            (root / split).mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({"user_id": [f"u{j % 4}" for j in range(n)],
                                     "item_id": [f"i{j % 3}" if split == "train" else f"i{j % 5}" for j in range(n)],
                                     "label": pa.array([1.0, 0.0] * (n // 2), pa.float32()),
                                     "user_total_interactions": list(range(n)),
                                     "user_idx": list(range(n)), "item_ctr": [0.5] * n}), root / path)
            shards[split].append({"path": path, "rows": n})
    (root / "features" / "users").mkdir(parents=True)
    pq.write_table(pa.table({"user_id": ["u0", "u1", "u2"], "user_total_interactions": [3, 1, 1]}),
                   root / "features" / "users" / "a.parquet")
    pq.write_table(pa.table({"item_id": ["i0", "i1", "i2"], "item_total_interactions": [4, 1, 0]}),
                   root / "features" / "items.parquet")
    return manifest_dict(a_manifest(**shards))


def test_sample_limits_spread_over_shards_and_units_summarise_the_version(tmp_path):
    manifest = tiny_version(tmp_path)
    settings = ReportConfig(sample_rows=20)
    units = work_units(str(tmp_path), manifest, StorageOptions(), settings)
    limits = {u["uri"].rsplit("/", 2)[-2] + "/" + u["uri"].rsplit("/", 1)[-1]: u["limit"] for u in units
              if u["kind"] == "sample"}
    # train: 40 rows > 20, so ceil(20 * 30 / 40) = 15 and ceil(20 * 10 / 40) = 5; test: 8 rows <= 20, all
    assert limits == {"train/part-00000.parquet": 15, "train/part-00001.parquet": 5, "test/part-00000.parquet": 8}
    summary = assemble(str(tmp_path), manifest, settings, units,
                       [[summarize_unit(u, StorageOptions())] for u in units])
    assert len(summary.train_sample["user_total_interactions"]) == 20
    assert list(summary.train_sample["user_total_interactions"][:15]) == list(range(15))  # the shard's first rows
    assert "user_idx" not in summary.train_sample  # vocabulary indices are not features
    # test positives: rows 0, 2, 4, 6 -> users u0, u2 (u2 known) ; items i0, i2, i4, i1
    c = summary.cold_start
    assert (c.test_users, c.cold_users, c.test_items, c.cold_items) == (2, 0, 4, 1)
    assert summary.users.count == 3 and summary.long_tail.keys == 3


def test_a_missing_shard_is_named(tmp_path):
    manifest = tiny_version(tmp_path)
    (tmp_path / "train" / "part-00001.parquet").unlink()
    with pytest.raises(ReportError, match="incomplete: .*train/part-00001.parquet is missing"):
        work_units(str(tmp_path), manifest, StorageOptions(), ReportConfig())
