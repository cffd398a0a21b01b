"""The Ray Train feed on a real build: datasets from the manifest, every row to
exactly one worker per epoch, and the example trainer learning."""

from __future__ import annotations

import json
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
from recsys_ray.train import EveryRowDataConfig, read_manifest, training_datasets

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


def test_example_trainer_learns(demo_version, tmp_path):
    from recsys_ray.train.example import train

    version, manifest = demo_version
    metrics = train(str(version), RecsysConfig.load(), epochs=4, num_workers=2, storage_path=str(tmp_path / "runs"),
                    evaluate=False)
    history = metrics["train_loss_history"]
    assert len(history) == 4 and history[-1] < history[0]
    assert metrics["train_rows"] == manifest.counts.train_rows
    assert metrics["test_rows"] == manifest.counts.test_rows
    # Better on held-out rows than always predicting the share of positives.
    p = manifest.counts.test_positives / manifest.counts.test_rows
    assert metrics["test_loss"] < -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert (Path(metrics["checkpoint"]) / "model.pt").exists()


def test_example_trainer_ranks_the_evaluation_set_and_writes_its_metrics(demo_version, tmp_path):
    """One epoch on two workers, then full ranking of eval/ by the model and by popularity; the
    scorer's matrix is the model's own score of each (user as of the cutoff, item) pair."""
    import shutil

    import numpy as np
    import torch

    from recsys_ray.evaluation.run import evaluate, metrics_uri
    from recsys_ray.train.example import MODEL_NAME, build_model, model_scorer, train, train_attributes
    from recsys_ray.train.features import FeatureSpec, item_inputs, user_inputs
    from recsys_ray.train.schema import training_schema
    from recsys_ray.train.scoring import item_rows, read_vocabulary, user_rows

    version = tmp_path / "v1"
    shutil.copytree(demo_version[0], version)
    manifest = read_manifest(str(version))
    metrics = train(str(version), RecsysConfig.load(), epochs=1, num_workers=2, storage_path=str(tmp_path / "runs"))
    assert metrics["train_rows"] == manifest.counts.train_rows
    assert set(metrics["eval_metrics"]) == {MODEL_NAME, "popularity"}
    for name, result in metrics["eval_metrics"].items():
        written = json.loads(Path(metrics_uri(manifest, name)).read_text())
        assert metrics["eval_metrics_files"][name] == metrics_uri(manifest, name)
        assert written == result and written["users"] == manifest.eval.users > 0
        assert 0.0 <= written["ndcg@10"] <= 1.0 and 0.0 <= written["recall@20"] <= 1.0
    assert metrics["eval_metrics"]["popularity"] == evaluate(manifest, "popularity")

    # The model from the checkpoint scores eval users exactly as its forward pass scores the same
    # (user, item) rows assembled from features/ and the vocabularies.
    schema = training_schema(str(version))
    spec = FeatureSpec.from_schema(schema)
    model = build_model(json.loads((Path(metrics["checkpoint"]) / "model.json").read_text()))
    model.load_state_dict(torch.load(Path(metrics["checkpoint"]) / "model.pt", weights_only=True))
    attributes = train_attributes(training_datasets(str(version))["train"])
    scorer = model_scorer(model, manifest, spec, attributes)
    assert metrics["eval_metrics"][MODEL_NAME] == evaluate(manifest, scorer)

    eval_users = pa.concat_tables(pq.read_table(p) for p in sorted((version / "eval").glob("*.parquet")))
    eval_users = eval_users.slice(0, 5)
    scores = scorer(eval_users)
    item_vocabulary = read_vocabulary(manifest, "item_id")
    items = item_rows(schema, item_vocabulary, pq.read_table(version / "features" / "items.parquet"), attributes)
    users = user_rows(pq.read_table(version / "features" / "users"), read_vocabulary(manifest, "user_id"),
                      item_vocabulary)
    assert scores.shape == (5, schema.cardinality("item_idx")) and items.num_rows == scores.shape[1]
    position = {u: i for i, u in enumerate(users.column("user_id").to_pylist())}
    model.eval()
    for r, user in enumerate(eval_users.column("user_id").to_pylist()):
        assert user in position  # eval users here all have training-window events
        row = users.slice(position[user], 1)
        j = np.arange(2, items.num_rows)
        batch = {**user_inputs(pa.concat_tables([row] * len(j)), spec), **item_inputs(items.take(j), spec)}
        with torch.no_grad():
            expected = model({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}).numpy()
        np.testing.assert_allclose(scores[r, 2:], expected, rtol=1e-4, atol=1e-4)


def test_every_example_run_is_a_new_run_kept_in_the_version(demo_version, tmp_path):
    """Without a storage path, runs and checkpoints live in the version's runs/ directory,
    and a second run on the same version starts anew instead of resuming the first."""
    import shutil

    from recsys_ray.train.example import train

    version = tmp_path / "v1"
    shutil.copytree(demo_version[0], version)
    first = train(str(version), RecsysConfig.load(), epochs=1, num_workers=1, batch_size=512, evaluate=False)
    second = train(str(version / "manifest.json"), RecsysConfig.load(), epochs=1, num_workers=1, batch_size=512,
                   evaluate=False)
    runs = {Path(first["run"]), Path(second["run"])}
    assert len(runs) == 2 and set((version / "runs").iterdir()) == runs
    for metrics in (first, second):
        assert Path(metrics["run"]).name.startswith(demo_version[1].version + "-")
        assert Path(metrics["checkpoint"]).parent == Path(metrics["run"])
        assert (Path(metrics["checkpoint"]) / "model.pt").exists()
