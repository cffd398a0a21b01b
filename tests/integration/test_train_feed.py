"""The Ray Train feed on a real build: datasets from the manifest, every row to
exactly one worker per epoch, and the example trainer learning."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import ray
import ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from recsys_ray import schemas
from recsys_ray.config import RecsysConfig
from recsys_ray.io import storage
from recsys_ray.train import EveryRowDataConfig, training_datasets

ROW_KEY = ["user_id", "item_id", "timestamp", "label", "split"]


@pytest.fixture(scope="module")
def demo_version(demo_build) -> tuple[Path, dict]:
    return demo_build["out"], demo_build["manifest"]


def shard_rows(version: Path, manifest, split: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(version / s.path) for s in manifest.shards[split]])


def collect(dataset) -> pa.Table:
    return pa.concat_tables(ray.get(dataset.to_arrow_refs()))


def row_keys(table: pa.Table) -> Counter:
    return Counter(zip(*(table.column(name).to_pylist() for name in ROW_KEY)))


def test_datasets_read_exactly_the_manifest_shards(demo_version):
    version, manifest = demo_version
    # A file the manifest does not list (say, of an abandoned build) is not read.
    stray = version / "train" / "part-99999.parquet"
    pq.write_table(shard_rows(version, manifest, "train").slice(0, 10), stray)
    try:
        datasets = training_datasets(str(version))
        for split in ("train", "test"):
            assert datasets[split].schema().base_schema == schemas.TRAINING
            assert datasets[split].count() == getattr(manifest.counts, f"{split}_rows")
        assert row_keys(collect(datasets["test"])) == row_keys(shard_rows(version, manifest, "test"))
    finally:
        stray.unlink()


def test_empty_split_keeps_the_training_schema(demo_version):
    version, manifest = demo_version
    no_test = manifest.model_copy(update={"shards": {"train": manifest.shards["train"], "test": []}})
    alt = version / "manifest-no-test.json"
    alt.write_text(no_test.model_dump_json())
    try:
        datasets = training_datasets(str(alt), columns=["user_id", "label"])
        assert datasets["test"].count() == 0
        assert datasets["test"].schema().base_schema == pa.schema([schemas.TRAINING.field("user_id"),
                                                                   schemas.TRAINING.field("label")])
        assert datasets["train"].schema().names == ["user_id", "label"]
    finally:
        alt.unlink()


def test_reads_a_version_on_s3(demo_version, s3_bucket):
    version, manifest = demo_version
    # A version name with '=' must not turn into a hive partition column.
    target = f"{s3_bucket}/tenants/acme/training/date=2026-01-01"
    s3, _ = storage.resolve(f"s3://{target}")
    pafs.copy_files(str(version), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)
    datasets = training_datasets(f"s3://{target}")
    assert datasets["train"].schema().base_schema == schemas.TRAINING
    assert datasets["train"].count() == manifest.counts.train_rows
    assert row_keys(collect(datasets["test"])) == row_keys(shard_rows(version, manifest, "test"))


def record_rows_per_epoch(config: dict) -> None:
    """A Train worker that writes the row keys it receives in each epoch."""
    rank = ray.train.get_context().get_world_rank()
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(config["epochs"]):
        batches = list(shard.iter_batches(batch_size=500, batch_format="pyarrow"))
        table = pa.concat_tables(batches).select(ROW_KEY) if batches else schemas.TRAINING.empty_table().select(ROW_KEY)
        pq.write_table(table, Path(config["out"]) / f"epoch{epoch}-rank{rank}.parquet")
        ray.train.report({"epoch": epoch, "rows": table.num_rows})


def test_every_row_reaches_exactly_one_worker_per_epoch(demo_version, tmp_path):
    version, manifest = demo_version
    received = tmp_path / "received"
    received.mkdir()
    trainer = TorchTrainer(
        record_rows_per_epoch,
        train_loop_config={"epochs": 2, "out": str(received)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        # Blocks of 1,000 rows, so that both workers get some (a small version reads as one block).
        datasets={"train": training_datasets(str(version))["train"].repartition(target_num_rows_per_block=1000)},
        dataset_config=EveryRowDataConfig(),
        run_config=RunConfig(name="exactly-once", storage_path=str(tmp_path / "runs")),
    )
    trainer.fit()
    expected = row_keys(shard_rows(version, manifest, "train"))
    assert sum(expected.values()) == manifest.counts.train_rows
    for epoch in range(2):
        parts = [pq.read_table(received / f"epoch{epoch}-rank{rank}.parquet") for rank in range(2)]
        assert all(part.num_rows > 0 for part in parts), "both workers get rows"
        assert row_keys(pa.concat_tables(parts)) == expected


def test_example_trainer_loss_goes_down(demo_version, tmp_path):
    from recsys_ray.train.example import train

    version, manifest = demo_version
    metrics = train(str(version), RecsysConfig.load(), epochs=2, num_workers=2, batch_size=256,
                    storage_path=str(tmp_path / "runs"))
    history = metrics["train_loss_history"]
    assert len(history) == 2 and history[-1] < history[0]
    assert metrics["train_rows"] == manifest.counts.train_rows
    assert metrics["test_rows"] == manifest.counts.test_rows
    # Better on held-out rows than always predicting the share of positives.
    p = manifest.counts.test_positives / manifest.counts.test_rows
    assert metrics["test_loss"] < -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert (Path(metrics["checkpoint"]) / "model.pt").exists()


def test_every_example_run_is_a_new_run_kept_in_the_version(demo_version, tmp_path):
    """Without a storage path, runs and checkpoints live in the version's runs/ directory,
    and a second run on the same version starts anew instead of resuming the first."""
    import shutil

    from recsys_ray.train.example import train

    version = tmp_path / "v1"
    shutil.copytree(demo_version[0], version)
    first = train(str(version), RecsysConfig.load(), epochs=1, num_workers=1, batch_size=512)
    second = train(str(version / "manifest.json"), RecsysConfig.load(), epochs=1, num_workers=1, batch_size=512)
    runs = {Path(first["run"]), Path(second["run"])}
    assert len(runs) == 2 and set((version / "runs").iterdir()) == runs
    for metrics in (first, second):
        assert Path(metrics["run"]).name.startswith(demo_version[1]["version"] + "-")
        assert Path(metrics["checkpoint"]).parent == Path(metrics["run"])
        assert (Path(metrics["checkpoint"]) / "model.pt").exists()
